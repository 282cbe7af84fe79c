/* bad_ud2.c -- misbehaving ring-3 app: executes an undefined opcode (#UD).
 * The kernel must kill it there; if it survives it says so and exits 1. */
#include "attempt.h"

static void misdeed(void) { __asm__ volatile("ud2"); }

int main(void) { return attempt("bad_ud2", "UD2", misdeed); }
