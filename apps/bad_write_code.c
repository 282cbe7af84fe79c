/* bad_write_code.c -- misbehaving ring-3 app: writes a byte to its own code
 * (mapped user read-only: #PF). The kernel must kill it there; if it survives
 * it says so and exits 1. */
#include "attempt.h"

static void misdeed(void) { *(volatile unsigned char *)(uintptr_t)main = 0x90; }

int main(void) { return attempt("bad_write_code", "WRITE", misdeed); }
