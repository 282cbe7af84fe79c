/* bad_divzero.c -- misbehaving ring-3 app: divides by zero (#DE).
 * The kernel must kill it there; if it survives it says so and exits 1. */
#include "attempt.h"

static void misdeed(void) { __asm__ volatile("mov $1, %%eax; xor %%edx, %%edx; xor %%ecx, %%ecx; div %%ecx" ::: "rax", "rcx", "rdx"); }

int main(void) { return attempt("bad_divzero", "DIVIDE", misdeed); }
