/* bad_mov_cr3.c -- misbehaving ring-3 app: loads CR3 at CPL 3 (#GP).
 * The kernel must kill it there; if it survives it says so and exits 1. */
#include "attempt.h"

static void misdeed(void) { __asm__ volatile("xor %%eax, %%eax; mov %%rax, %%cr3" ::: "rax"); }

int main(void) { return attempt("bad_mov_cr3", "MOV CR3", misdeed); }
