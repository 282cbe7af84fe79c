/* The app of pvbench (partitions/pvbench/kernel.c): the benchmark's
 * operations in order (bench_ops.h, shared with the full-virtualization
 * guest partitions/fvbench/). */
#include "spk/app.h"

#include "bench_ops.h"

int main(void) {
    bench_app();
    return 0;
}
