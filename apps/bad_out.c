/* bad_out.c -- misbehaving ring-3 app: port I/O at CPL 3 (#GP, raised by the SPK: IOPL is 0).
 * The kernel must kill it there; if it survives it says so and exits 1. */
#include "attempt.h"

static void misdeed(void) { __asm__ volatile("xor %%eax, %%eax; outb %%al, $0x80" ::: "rax"); }

int main(void) { return attempt("bad_out", "OUT", misdeed); }
