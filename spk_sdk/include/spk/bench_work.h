/* The benchmarks' typical compute workload: bench_work(rounds) fills an
 * array with a xorshift sequence, shell-sorts it and folds it into an
 * FNV-1a hash, `rounds` times; its result is the same on every run.
 *
 * One source for every guest that runs it (partitions/bench_sort.c, the
 * paravirtual and the PC benchmark kernels of spk_tools/bench_fullvirt.py).
 * No globals, no calls: only registers and its stack, so spk bench can run
 * the very bytes on the bare engine. Never inlined or specialised (noipa),
 * so every guest that includes it runs the same machine code (a test
 * compares the bytes); static, and emitted only where it is called. */
#ifndef SPK_BENCH_WORK_H
#define SPK_BENCH_WORK_H

#include <stdint.h>

__attribute__((noipa, unused)) static uint64_t bench_work(uint64_t rounds) {
    enum { N = 128 };
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

#endif
