// See semihosting.h. Operation numbers and argument blocks: Arm's "Semihosting for
// AArch32 and AArch64", section 6.
#include "semihosting.h"

#include <string.h>

enum {
  SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE = 0x05, SYS_READ = 0x06,
  SYS_FLEN = 0x0C, SYS_EXIT = 0x18,
};
// SYS_OPEN modes: ISO C fopen's "rb" and "wb".
enum { MODE_READ_BINARY = 1, MODE_WRITE_BINARY = 5 };
// SYS_EXIT reasons: qemu exits 0 for ApplicationExit, 1 for any other.
enum { ADP_STOPPED_APPLICATION_EXIT = 0x20026, ADP_STOPPED_RUNTIME_ERROR = 0x20023 };

static int call(int operation, const void* argument) {
  register int r0 __asm__("r0") = operation;
  register const void* r1 __asm__("r1") = argument;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

int semihost_open(const char* path, int write) {
  const uintptr_t block[3] = {(uintptr_t)path,
                              write ? MODE_WRITE_BINARY : MODE_READ_BINARY, strlen(path)};
  return call(SYS_OPEN, block);
}

size_t semihost_read(int handle, void* buffer, size_t len) {
  const uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buffer, len};
  return len - (size_t)call(SYS_READ, block);  // the call returns the bytes NOT read
}

int semihost_write(int handle, const void* buffer, size_t len) {
  const uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buffer, len};
  return call(SYS_WRITE, block);  // the bytes not written
}

long semihost_length(int handle) {
  const uintptr_t block[1] = {(uintptr_t)handle};
  return call(SYS_FLEN, block);
}

void semihost_close(int handle) {
  const uintptr_t block[1] = {(uintptr_t)handle};
  call(SYS_CLOSE, block);
}

void semihost_exit(int success) {
  // On AArch32 the reason itself is the argument, not a block's address.
  call(SYS_EXIT, (const void*)(uintptr_t)(success ? ADP_STOPPED_APPLICATION_EXIT
                                                  : ADP_STOPPED_RUNTIME_ERROR));
  for (;;) {
  }
}
