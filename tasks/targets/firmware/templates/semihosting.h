// Arm semihosting calls (the host's files and exit), as qemu-system-arm serves them with
// -semihosting-config enable=on,target=native: a BKPT 0xAB with the operation in r0 and
// its argument block's address in r1; the result comes back in r0.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Opens a host file (path relative to qemu's working folder); mode "rb" or "wb".
// Returns the handle, or -1.
int semihost_open(const char* path, int write);
// Reads up to len bytes; returns how many were read.
size_t semihost_read(int handle, void* buffer, size_t len);
// Writes all len bytes; returns 0 when all were written.
int semihost_write(int handle, const void* buffer, size_t len);
long semihost_length(int handle);
void semihost_close(int handle);
// Ends the emulation: qemu exits 0 for success, 1 otherwise.
__attribute__((noreturn)) void semihost_exit(int success);

#ifdef __cplusplus
}
#endif
