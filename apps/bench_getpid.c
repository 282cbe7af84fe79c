/* Benchmark app: getpid through int 0x80, forever (the kernel returns with a
 * native iretq, so each call is one SPK bounce plus the guest's own work). */
#include "spk/app.h"

int main(void) {
    for (;;) sys_getpid();
}
