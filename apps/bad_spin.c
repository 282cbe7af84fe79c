/* bad_spin.c -- misbehaving ring-3 app: never yields, never exits. Prints one
 * line, then spins. The kernel's quantum timer preempts it so the other apps
 * still run, and its watchdog kills it once it has run WATCHDOG_TICKS of CPU
 * time without a system call (docs/guest.md). */
#include "spk/app.h"

int main(void) {
    printf("bad_spin: spinning\n");
    for (volatile unsigned long n = 0;; n++) {
    }
}
