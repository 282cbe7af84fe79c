/* bad_hlt.c -- misbehaving ring-3 app: executes hlt at CPL 3 (#GP).
 * The kernel must kill it there; if it survives it says so and exits 1. */
#include "attempt.h"

static void misdeed(void) { __asm__ volatile("hlt"); }

int main(void) { return attempt("bad_hlt", "HLT", misdeed); }
