// Reset and exception vectors of a Cortex-M4F program for qemu's mps2-an386: the FPU is
// enabled before anything else runs, .data copied from flash, .bss zeroed, the static
// constructors run, then main(); its result ends the emulation (semihosting exit).
#include <stdint.h>

#include "semihosting.h"

extern uint32_t __data_load__, __data_start__, __data_end__;
extern uint32_t __bss_start__, __bss_end__;
extern uint32_t __stack_top__;
typedef void (*Constructor)(void);
extern Constructor __preinit_array_start[], __preinit_array_end[];
extern Constructor __init_array_start[], __init_array_end[];

int main(void);
void edgeflow_systick_handler(void);

// What crtbegin.o defines and -nostartfiles leaves out: the handle C++ static objects'
// destructors are registered under (__cxa_atexit); never run here, main's end exits.
void* __dso_handle = 0;

#define SCB_CPACR (*(volatile uint32_t*)0xE000ED88u)

// Not newlib's crt0 (-nostartfiles): rdimon's asks the host where the heap and stack
// are (SYS_HEAPINFO), and qemu answers with addresses outside this board's RAM.
void Reset_Handler(void) {
  // CP10 and CP11 (the FPU) full access: code built with -mfloat-abi=hard faults
  // (UsageFault NOCP) on its first floating-point instruction without it.
  SCB_CPACR |= (0xFu << 20);
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  for (uint32_t *from = &__data_load__, *to = &__data_start__; to < &__data_end__;) {
    *to++ = *from++;
  }
  for (uint32_t* to = &__bss_start__; to < &__bss_end__;) {
    *to++ = 0;
  }
  for (Constructor* call = __preinit_array_start; call < __preinit_array_end; ++call) {
    (*call)();
  }
  for (Constructor* call = __init_array_start; call < __init_array_end; ++call) {
    (*call)();
  }
  semihost_exit(main() == 0);
}

// A fault ends the run (qemu exits 1) instead of spinning until the timeout.
static void Fault_Handler(void) {
  static const char message[] = "error fault: the CPU took an exception\n";
  const int console = semihost_open(":tt", 1);  // ":tt" opened for writing: qemu's stdout
  semihost_write(console, message, sizeof message - 1);
  semihost_exit(0 == 1);
}

__attribute__((section(".vectors"), used)) static const void* const vectors[16] = {
    &__stack_top__,
    (const void*)Reset_Handler,
    (const void*)Fault_Handler,  // NMI
    (const void*)Fault_Handler,  // HardFault
    (const void*)Fault_Handler,  // MemManage
    (const void*)Fault_Handler,  // BusFault
    (const void*)Fault_Handler,  // UsageFault
    0, 0, 0, 0,
    (const void*)Fault_Handler,  // SVCall
    (const void*)Fault_Handler,  // DebugMonitor
    0,
    (const void*)Fault_Handler,  // PendSV
    (const void*)edgeflow_systick_handler,
};
