/* A first C app: it runs at CPL 3 under the reference kernel, with its own
 * initialised data and bss (its kernel gives it private copies), and calls
 * its kernel through the system calls of spk/app.h. */
#include "spk/app.h"

static int greetings = 3;        /* .data: a private, writable copy */
static char seen[64];            /* .bss: zeroed by its kernel */

int main(void) {
    for (int i = 0; i < greetings; i++) {
        seen[i] = 1;
        printf("app: hello %d from pid %ld\n", i + 1, sys_getpid());
        sys_yield();
    }
    greetings = 0;
    printf("app: bss was zero: %s\n", seen[sizeof seen - 1] == 0 ? "yes" : "no");
    return 0;
}
