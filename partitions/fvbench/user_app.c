/* The ring-3 app of fvbench: the benchmark's operations in order
 * (bench_ops.h, shared with the paravirtual guest's app). Linked into the
 * kernel image's user pages (files named user*.c): code and constants
 * only; its stack is the pages the kernel maps for it. */
#include "bench_ops.h"

void app_main(void);
void app_main(void) {
    bench_app(); /* ends with the exit system call */
    for (;;) {
    }
}
