/* pvbench: the paravirtual half of the full-virtualization benchmark.
 *
 * A C guest kernel (CPL 2, the SDK's hypercall ABI) that runs the same work
 * as the unmodified PC kernel partitions/fvbench/, operation by operation
 * (bench_ops.h, one source for both): its one app drives the run with
 * system calls, and the kernel prints each operation's two console lines.
 * What each operation is here, next to the PC kernel's:
 *
 *   syscall        the app's `syscall`: an SPK bounce into the kernel's
 *                  syscall entry, a native iretq back (PC: syscall, sysretq)
 *   port_io        TIME_NOW: the cheapest device operation a paravirtual
 *                  kernel has, a read of the virtual timer through one
 *                  hypercall (PC: `in` of the UART's scratch register)
 *   timer          a timer upcall into the kernel's timer entry, re-armed by
 *                  TIMER_SET for at once (PC: a PIT interrupt through the
 *                  IDT, EOI to the 8259)
 *   page_fault     the app's first touch of a page: a trap upcall, one MAP
 *                  hypercall (PC: #PF through the IDT, a PTE store)
 *   page_table     BENCH_PT_PAGES MAP hypercalls, then as many UNMAPs (PC:
 *                  PTE stores, then PTE clears each with invlpg)
 *   aspace_switch  ASPACE_SWITCH between the app's space and the boot space
 *                  (PC: mov to CR3 between two PML4s)
 *   compute        the app's bench_work, native at CPL 3 in both
 *
 * Frames: the page-fault and page-table operations map frames the kernel
 * takes from its quota at boot, so allocation is not part of what is
 * measured (the PC kernel owns its physical memory outright). The page
 * tables of both regions exist before the run (a page mapped and unmapped
 * in each), as the PC kernel builds its tables before it starts the app.
 *
 * Exit codes: 0 done; 2 boot failed; 3 an unexpected trap or a failing
 * hypercall during the run. */
#include "spk/kernel.h"
#include "spk/libc.h"
#include "spk/loader.h"

#include "bench_ops.h"

#define APP_STACK_PAGE 0x7FF000ULL
#define APP_STACK_TOP 0x800000ULL
#define SCRATCH_VA (SPK_KERNEL_BASE + 0x1000000ULL)
#define MODULE_WINDOW (SCRATCH_VA + SPK_PAGE_SIZE)
#define POOL_PAGES (BENCH_N_PAGE_FAULT > BENCH_PT_PAGES ? BENCH_N_PAGE_FAULT : BENCH_PT_PAGES)
#define TABLE_SPAN 0x200000ULL /* what one page table maps */
#define USER_RW (SPK_MAP_USER | SPK_MAP_WRITE)

static struct spk_app_frame app_frame;
static struct spk_loaded_app loaded;
static long app_space;
static uint64_t pool[POOL_PAGES]; /* frames for the page-fault and page-table operations */
static uint64_t faults_served;
static uint64_t timer_left;
static volatile uint64_t *timer_flag; /* in the app's space: the app spins on it */

__attribute__((noreturn)) static void die(const char *what, long status, int code) {
    kprintf("pvbench: %s (error %ld)\n", what, status);
    spk_exit(code);
}

static void check(long status, const char *what) {
    if (status < 0) die(what, status, 3);
}

static void mark(uint64_t op, uint64_t n) {
    if (op >= OP_COUNT) return;
    if (n == BENCH_DONE) kprintf("bench %s done\n", bench_op_names[op]);
    else kprintf("bench %s %lu\n", bench_op_names[op], n);
}

/* The operations the kernel performs itself, between their two lines. */
static void kernel_op(uint64_t op) {
    uint64_t n = bench_op_counts[op];
    long status = 0;
    mark(op, n);
    switch (op) {
    case OP_PORT_IO:
        for (uint64_t i = 0; i < n; i++) status |= (long)spk_time_now();
        break;
    case OP_PAGE_TABLE:
        for (uint64_t r = 0; r < n; r++) {
            for (uint64_t i = 0; i < BENCH_PT_PAGES; i++)
                status |= spk_map(app_space, BENCH_PT_VA + i * SPK_PAGE_SIZE, pool[i], USER_RW);
            for (uint64_t i = 0; i < BENCH_PT_PAGES; i++) status |= spk_unmap(app_space, BENCH_PT_VA + i * SPK_PAGE_SIZE);
        }
        break;
    case OP_ASPACE_SWITCH: /* pairs: the boot space, then the app's (it resumes in its own) */
        for (uint64_t i = 0; i < n; i++) status |= spk_aspace_switch(i % 2 ? app_space : 0);
        break;
    default:
        return;
    }
    check(status, bench_op_names[op]);
    mark(op, BENCH_DONE);
}

void spk_on_syscall(struct spk_app_frame *f) {
    uint64_t nr = f->rax;
    f->rax = 0;
    switch (nr) {
    case BSYS_NULL:
        return;
    case BSYS_MARK:
        mark(f->rdi, f->rsi);
        return;
    case BSYS_KERNEL:
        kernel_op(f->rdi);
        return;
    case BSYS_TIMER: /* a deadline in the past: the upcall is pending at once, and again after each re-arm */
        timer_left = f->rdi;
        timer_flag = (volatile uint64_t *)(uintptr_t)f->rsi;
        check(spk_timer_set(1), "timer_set");
        return;
    case BSYS_HASH:
        kprintf("bench hash %#lx\n", f->rdi);
        return;
    case BSYS_EXIT:
        kprintf("pvbench: done, %lu page faults served\n", faults_served);
        spk_exit(0);
    default:
        f->rax = (uint64_t)-1;
        return;
    }
}

void spk_on_timer(struct spk_app_frame *f) {
    (void)f;
    if (timer_left > 1) {
        timer_left--;
        check(spk_timer_set(1), "timer_set");
        return;
    }
    timer_left = 0;
    *timer_flag = 1;
}

void spk_on_trap(struct spk_app_frame *f, const struct spk_trap_info *trap) {
    uint64_t page = trap->address & ~(SPK_PAGE_SIZE - 1);
    if (trap->vector == SPK_VEC_PF && !(trap->error & 1) && page >= BENCH_DEMAND_VA &&
        page < BENCH_DEMAND_VA + BENCH_N_PAGE_FAULT * SPK_PAGE_SIZE && faults_served < BENCH_N_PAGE_FAULT) {
        check(spk_map(app_space, page, pool[faults_served++], USER_RW), "map of a demand page");
        return; /* the app retries its store */
    }
    kprintf("pvbench: app trapped: vector %lu at rip %#lx addr %#lx err %#lx\n", trap->vector, f->rip, trap->address,
            trap->error);
    spk_exit(3);
}

/* Map the app module read-only into the module window; its view. */
static struct spk_module_view map_module(const struct spk_module *m) {
    if (m->pages == 0 || m->bytes > m->pages * SPK_PAGE_SIZE) die("bad module", SPK_E_INVALID_ARGUMENT, 2);
    for (uint64_t k = 0; k < m->pages; k++) {
        long status = spk_map(0, MODULE_WINDOW + k * SPK_PAGE_SIZE, m->first_mfn + k, 0);
        if (status < 0) die("map of a module page", status, 2);
    }
    return (struct spk_module_view){(const uint8_t *)(uintptr_t)MODULE_WINDOW, m->bytes, m->first_mfn, m->pages};
}

/* Create the page tables under [va, va + pages): one page mapped and unmapped per table. */
static void make_tables(uint64_t va, uint64_t pages) {
    for (uint64_t a = va; a < va + pages * SPK_PAGE_SIZE; a += TABLE_SPAN) {
        long status = spk_map(app_space, a, pool[0], USER_RW);
        if (status >= 0) status = spk_unmap(app_space, a);
        if (status < 0) die("page tables of a region", status, 2);
    }
}

long kmain(const struct spk_start_info *si) {
    if (si->magic != SPK_START_INFO_MAGIC || si->module_count != 1) {
        kprintf("pvbench: needs the start-info page and exactly one module (the app)\n");
        return 2;
    }
    const char *step = "";
    long status = spk_install_entries(&step);
    if (status < 0) die(step, status, 2);
    struct spk_module_view view = map_module(&si->modules[0]);
    if ((app_space = spk_aspace_create()) < 0) die("aspace_create", app_space, 2);
    long stack = spk_frame_alloc();
    if (stack < 0) die("frame_alloc of the stack", stack, 2);
    if ((status = spk_map(app_space, APP_STACK_PAGE, (uint64_t)stack, USER_RW)) < 0) die("map of the stack", status, 2);
    const char *why = "";
    status = spk_app_load(app_space, &view, SPK_APP_IMAGE_VADDR, APP_STACK_PAGE, SCRATCH_VA, &loaded, &why);
    if (status < 0) die(why, status, 2);
    for (uint64_t i = 0; i < POOL_PAGES; i++) {
        long mfn = spk_frame_alloc();
        if (mfn < 0) die("frame_alloc of the page pool (quota too small)", mfn, 2);
        pool[i] = (uint64_t)mfn;
    }
    make_tables(BENCH_DEMAND_VA, BENCH_N_PAGE_FAULT);
    make_tables(BENCH_PT_VA, BENCH_PT_PAGES);
    kprintf("pvbench: paravirtual kernel, %d operations\n", OP_COUNT);
    app_frame = (struct spk_app_frame){.rip = loaded.entry, .rsp = APP_STACK_TOP, .rflags = SPK_RFLAGS_FIXED};
    spk_current_frame = &app_frame;
    status = spk_iret(app_space, &app_frame);
    die("iret into the app", status, 2);
}
