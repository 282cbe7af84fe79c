/* Benchmark guest: a realistic compute kernel (spk bench's "typical" workload).
 *
 * bench_work() (spk/bench_work.h, the workload every benchmark guest shares)
 * fills an array with a xorshift sequence, sorts it (shell sort) and folds
 * it into an FNV-1a hash, `rounds` times. It is self-contained on
 * purpose: position-independent, no globals, no calls, only its stack. So
 * spk bench runs the very same bytes on the bare engine (its raw baseline)
 * as this kernel runs under the SPK, and compares the rounds per second.
 * The kernel makes one hypercall per round (TIME_NOW), which is how the
 * bench counts rounds: a round is some 100,000 instructions, so the
 * hypercall is noise. */
#include "spk/bench_work.h"
#include "spk/kernel.h"

long kmain(const struct spk_start_info *si) {
    (void)si;
    uint64_t hash = 0;
    for (;;) {
        hash ^= bench_work(1);
        spk_hc1(SPK_HC_TIME_NOW, hash);
    }
}
