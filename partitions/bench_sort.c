/* Benchmark guest: a realistic compute kernel (spk bench's "typical" workload).
 *
 * bench_work() fills an array with a xorshift sequence, sorts it (shell sort)
 * and folds it into an FNV-1a hash, `rounds` times. It is self-contained on
 * purpose: position-independent, no globals, no calls, only its stack. So
 * spk bench runs the very same bytes on the bare engine (its raw baseline)
 * as this kernel runs under the SPK, and compares the rounds per second.
 * The kernel makes one hypercall per round (TIME_NOW), which is how the
 * bench counts rounds: a round is some 100,000 instructions, so the
 * hypercall is noise. */
#include "spk/kernel.h"

#define N 128

__attribute__((noinline, used)) uint64_t bench_work(uint64_t rounds) {
    uint64_t a[N];
    uint64_t hash = 0xcbf29ce484222325ull;
    for (uint64_t r = 0; r < rounds; r++) {
        uint64_t x = 0x9e3779b97f4a7c15ull ^ (r + 1);
        for (int i = 0; i < N; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            a[i] = x;
        }
        for (int gap = N / 2; gap > 0; gap /= 2) {
            for (int i = gap; i < N; i++) {
                uint64_t v = a[i];
                int j = i;
                while (j >= gap && a[j - gap] > v) {
                    a[j] = a[j - gap];
                    j -= gap;
                }
                a[j] = v;
            }
        }
        for (int i = 0; i < N; i++) {
            for (int b = 0; b < 64; b += 8) {
                hash ^= (a[i] >> b) & 0xff;
                hash *= 0x100000001b3ull;
            }
        }
    }
    return hash;
}

long kmain(const struct spk_start_info *si) {
    (void)si;
    uint64_t hash = 0;
    for (;;) {
        hash ^= bench_work(1);
        spk_hc1(SPK_HC_TIME_NOW, hash);
    }
}
