/* bad_hypercall.c -- misbehaving ring-3 app: issues a hypercall from CPL 3,
 * int 0x82 with rax = HC_EXIT: if the SPK obeyed, the whole partition would
 * end. The gate is CPL 2 only (#GP): the kernel must kill the app there; if
 * it survives it says so and exits 1. */
#include "attempt.h"
#include "spk/abi.h"

static void misdeed(void) {
    __asm__ volatile("int %[vector]" ::"a"(SPK_HC_EXIT), "D"(0x42), [vector] "i"(SPK_HYPERCALL_VECTOR) : "memory");
}

int main(void) { return attempt("bad_hypercall", "HYPERCALL", misdeed); }
