/* bad_read_kernel.c -- misbehaving ring-3 app: reaches for kernel memory.
 * 1. asks the kernel to write(KERNEL_BASE, 16): the kernel must refuse (-1),
 *    or it would print its own memory for the app;
 * 2. reads a u64 at KERNEL_BASE (supervisor page: #PF): the kernel must kill
 *    it there. */
#include "attempt.h"
#include "spk/abi.h"

static void misdeed(void) {
    if (sys_write((const void *)(uintptr_t)SPK_KERNEL_BASE, 16) != -1) printf("bad_read_kernel: KERNEL LEAKED\n");
    (void)*(volatile uint64_t *)(uintptr_t)SPK_KERNEL_BASE;
}

int main(void) { return attempt("bad_read_kernel", "READ", misdeed); }
