/* The work of the full-virtualization benchmark (spk bench, docs/fullvirt.md),
 * shared by its two guests: partitions/fvbench/ (an unmodified PC kernel)
 * and partitions/pvbench/ (the same work through the SPK's hypercall ABI).
 * partitions/pvbench/bench_ops.h and partitions/pvbench/app/bench_ops.h are
 * links to this file: one source, so both run the very same loops.
 *
 * Each operation runs BENCH_N_<OP> times between two console lines,
 *     bench <op> <n>
 *     bench <op> done
 * printed by the kernel; the host timestamps the lines as they arrive
 * (spk_tools/bench_fullvirt.py) and divides the time between them by n. The
 * last operation, "marker", does nothing: its time is what the two lines
 * themselves cost once everything is warm, which the host subtracts from
 * the others.
 *
 * The app (ring 3) drives the run by system calls (the `syscall`
 * instruction in both guests): number in rax, arguments in rdi and rsi,
 * result in rax; rcx and r11 are clobbered, as on hardware. */
#ifndef BENCH_OPS_H
#define BENCH_OPS_H

#include <stdint.h>

#include "bench_profile.h"

/* The operations, in the order they run. */
enum bench_op {
    OP_SYSCALL,       /* app: a null system call, syscall and back */
    OP_PORT_IO,       /* kernel: the cheapest device access (see each kernel) */
    OP_TIMER,         /* app spins; the kernel counts timer interrupts (upcalls) */
    OP_PAGE_FAULT,    /* app: first touch of a fresh page; the kernel maps it */
    OP_PAGE_TABLE,    /* kernel: map then unmap BENCH_PT_PAGES pages, one round */
    OP_ASPACE_SWITCH, /* kernel: load the other address space, or back */
    OP_COMPUTE,       /* app: one round of bench_work */
    OP_MARKER,        /* nothing: the cost of the two console lines */
    OP_COUNT
};

__attribute__((unused)) static const char *const bench_op_names[OP_COUNT] = {
    "syscall", "port_io", "timer", "page_fault", "page_table", "aspace_switch", "compute", "marker",
};

__attribute__((unused)) static const uint64_t bench_op_counts[OP_COUNT] = {
    BENCH_N_SYSCALL, BENCH_N_PORT_IO, BENCH_N_TIMER, BENCH_N_PAGE_FAULT, BENCH_N_PAGE_TABLE,
    BENCH_N_ASPACE_SWITCH, BENCH_N_COMPUTE, 0,
};

/* Pages each page-table round maps and then unmaps. */
#define BENCH_PT_PAGES 1000

/* Where both guests put the pages of the app's space the benchmark works
 * on (above the first GiB, which a PC kernel keeps for itself): the
 * demand-paged region of the page-fault operation, and the region the
 * page-table rounds map and unmap. Each is 2 MiB aligned and spans at most
 * two page tables. */
#define BENCH_DEMAND_VA 0x80000000UL
#define BENCH_PT_VA 0xC0000000UL
_Static_assert(BENCH_N_PAGE_FAULT <= 1024, "the demand region spans two page tables at most");
_Static_assert(BENCH_N_ASPACE_SWITCH % 2 == 0, "address-space switches come in pairs (the app's space last)");

/* The app's system calls. */
#define BSYS_NULL 0   /* returns 0 */
#define BSYS_MARK 1   /* (op, n): prints "bench <op> <n>", or "bench <op> done" for n = BENCH_DONE */
#define BSYS_KERNEL 2 /* (op): the kernel runs op (port_io, page_table, aspace_switch) between its marks */
#define BSYS_TIMER 3  /* (n, flag): n timer interrupts from now on; the kernel sets *flag = 1 after the n-th */
#define BSYS_HASH 4   /* (value): prints "bench hash <value>" (the compute result: the same in every run) */
#define BSYS_EXIT 5   /* ends the run */
#define BENCH_DONE UINT64_MAX

static inline long bench_syscall(long nr, uint64_t a, uint64_t b) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}

#include "spk/bench_work.h" /* the compute work, one source for every benchmark guest */

/* The app: every operation in order. The BENCH_N_PAGE_FAULT pages from
 * BENCH_DEMAND_VA are mapped by nothing yet: each first touch is a page
 * fault its kernel answers with a fresh page. */
static inline void bench_app(void) {
    volatile uint8_t *demand = (volatile uint8_t *)BENCH_DEMAND_VA;
    bench_syscall(BSYS_MARK, OP_SYSCALL, BENCH_N_SYSCALL);
    for (uint64_t i = 0; i < BENCH_N_SYSCALL; i++) bench_syscall(BSYS_NULL, 0, 0);
    bench_syscall(BSYS_MARK, OP_SYSCALL, BENCH_DONE);

    bench_syscall(BSYS_KERNEL, OP_PORT_IO, 0);

    volatile uint64_t fired = 0;
    bench_syscall(BSYS_MARK, OP_TIMER, BENCH_N_TIMER);
    bench_syscall(BSYS_TIMER, BENCH_N_TIMER, (uint64_t)(uintptr_t)&fired);
    while (!fired) {
    }
    bench_syscall(BSYS_MARK, OP_TIMER, BENCH_DONE);

    bench_syscall(BSYS_MARK, OP_PAGE_FAULT, BENCH_N_PAGE_FAULT);
    for (uint64_t i = 0; i < BENCH_N_PAGE_FAULT; i++) demand[i * 4096] = (uint8_t)i;
    bench_syscall(BSYS_MARK, OP_PAGE_FAULT, BENCH_DONE);

    bench_syscall(BSYS_KERNEL, OP_PAGE_TABLE, 0);
    bench_syscall(BSYS_KERNEL, OP_ASPACE_SWITCH, 0);

    bench_work(1); /* translated (and, in a full partition, scanned) before the clock starts: steady state */
    bench_syscall(BSYS_MARK, OP_COMPUTE, BENCH_N_COMPUTE);
    uint64_t hash = bench_work(BENCH_N_COMPUTE);
    bench_syscall(BSYS_MARK, OP_COMPUTE, BENCH_DONE);

    bench_syscall(BSYS_MARK, OP_MARKER, 0);
    bench_syscall(BSYS_MARK, OP_MARKER, BENCH_DONE);
    bench_syscall(BSYS_HASH, hash, 0);
    bench_syscall(BSYS_EXIT, 0, 0);
}

#endif /* BENCH_OPS_H */
