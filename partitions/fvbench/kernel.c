/* fvbench: the full-virtualization half of the benchmark, an unmodified PC kernel.
 *
 * It runs the same work as the paravirtual kernel partitions/pvbench/,
 * operation by operation (bench_ops.h, one source for both), on plain PC
 * hardware as it believes: its ring-3 app drives the run by `syscall`, the
 * kernel prints each operation's two console lines on the 16550 and does
 * the kernel-side work with the instructions a PC kernel uses:
 *
 *   syscall        syscall in, sysretq out (the SDK's PC library entry)
 *   port_io        `in` of the UART's scratch register (COM1 + 7)
 *   timer          IRQ 0 through the IDT while the app spins: an EOI to the
 *                  8259, then the PIT re-armed one-shot (mode 0) for one
 *                  PIT clock, two `out`s (a periodic PIT at such a rate
 *                  would be an interrupt storm QEMU's own timers cannot
 *                  keep up with)
 *   page_fault     #PF from ring 3 through the IDT, CR2 read, one PTE store
 *                  (not present to present: no invlpg, as Linux does)
 *   page_table     BENCH_PT_PAGES PTE stores, then as many PTE clears each
 *                  followed by invlpg, in the app's page tables
 *   aspace_switch  mov to CR3 between the kernel's PML4 and the app's
 *   compute        the app's bench_work, at ring 3
 *
 * Memory: the kernel's image and page-table pool in the first 4 MiB
 * (identity-mapped, supervisor); the frames the page-fault and page-table
 * operations map are physical [FRAMES_BASE, +4 MiB), which the kernel never
 * touches itself: the machine needs 16 MiB (QEMU -m 32; the SPK's quota).
 * The page tables of both regions exist and have been used (a page mapped,
 * touched and unmapped in each table) before the run starts.
 *
 * Same output on QEMU and under the SPK, but for nothing: the lines carry
 * no time. The run ends by writing 0 to port 0xF4 (3 on an unexpected
 * exception). */
#include "bench_ops.h"
#include "pc.h"

#define KERNEL_MAP_END 0x400000UL /* the kernel's identity map: the first 4 MiB */
#define FRAMES_BASE 0x800000UL    /* physical frames the benchmark maps (never the kernel's) */
#define APP_STACK_VA 0x40000000UL /* the app's stack pages, user read-write */
#define APP_STACK_PAGES 4
#define TABLE_SPAN 0x200000UL /* what one page table maps */
#define USER_RW (PC_PTE_P | PC_PTE_W | PC_PTE_U)
#define PIT_CONTROL 0x43
#define PIT_CHANNEL0 0x40
#define PIT_ONE_SHOT 0x30 /* channel 0, low then high byte, mode 0 (interrupt on terminal count) */

_Static_assert(BENCH_N_PAGE_FAULT <= 1024 && BENCH_PT_PAGES <= 1024, "the frames are 4 MiB");

static uint8_t page_pool[32][PC_PAGE] __attribute__((aligned(4096)));
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
static uint64_t *kernel_pml4, *app_pml4;
static uint64_t *demand_tables[2], *pt_tables[2]; /* the level-1 tables of each region */
static uint64_t faults_served, timer_left;
static volatile uint64_t *timer_flag; /* in the app's space: the app spins on it */

void app_main(void); /* user_app.c */

/* The level-1 entry of page i of a region whose tables are `tables`. */
static inline uint64_t *entry(uint64_t **tables, uint64_t i) { return &tables[i / 512][i % 512]; }

/* One timer interrupt, one PIT clock from now (mode 0 restarts on a new count). */
static void timer_arm(void) {
    outb(PIT_CHANNEL0, 1);
    outb(PIT_CHANNEL0, 0);
}

static void mark(uint64_t op, uint64_t n) {
    if (op >= OP_COUNT) return;
    if (n == BENCH_DONE) pc_printf("bench %s done\n", bench_op_names[op]);
    else pc_printf("bench %s %lu\n", bench_op_names[op], n);
}

/* The operations the kernel performs itself, between their two lines. */
static void kernel_op(uint64_t op) {
    uint64_t n = bench_op_counts[op];
    volatile uint8_t sink = 0;
    mark(op, n);
    switch (op) {
    case OP_PORT_IO:
        for (uint64_t i = 0; i < n; i++) sink ^= inb(PC_COM1 + 7);
        break;
    case OP_PAGE_TABLE:
        for (uint64_t r = 0; r < n; r++) {
            for (uint64_t i = 0; i < BENCH_PT_PAGES; i++) *entry(pt_tables, i) = (FRAMES_BASE + i * PC_PAGE) | USER_RW;
            for (uint64_t i = 0; i < BENCH_PT_PAGES; i++) {
                *entry(pt_tables, i) = 0;
                invlpg(BENCH_PT_VA + i * PC_PAGE);
            }
        }
        break;
    case OP_ASPACE_SWITCH: /* pairs: the kernel's space, then the app's (it resumes in its own) */
        for (uint64_t i = 0; i < n; i++) write_cr3((uint64_t)(i % 2 ? app_pml4 : kernel_pml4));
        break;
    default:
        return;
    }
    mark(op, BENCH_DONE);
}

static struct pc_frame *syscall_dispatch(struct pc_frame *f) {
    uint64_t nr = f->rax;
    f->rax = 0;
    switch (nr) {
    case BSYS_NULL:
        break;
    case BSYS_MARK:
        mark(f->rdi, f->rsi);
        break;
    case BSYS_KERNEL:
        kernel_op(f->rdi);
        break;
    case BSYS_TIMER:
        timer_left = f->rdi;
        timer_flag = (volatile uint64_t *)f->rsi;
        outb(PIT_CONTROL, PIT_ONE_SHOT);
        timer_arm();
        pc_pic_unmask(0);
        break;
    case BSYS_HASH:
        pc_printf("bench hash %#lx\n", f->rdi);
        break;
    case BSYS_EXIT:
        pc_printf("fvbench: done, %lu page faults served\n", faults_served);
        pc_exit(0);
    default:
        f->rax = (uint64_t)-1;
    }
    return f;
}

static struct pc_frame *trap(struct pc_frame *f) {
    if (f->vector == PC_IRQ_BASE) {
        pc_pic_eoi(0);
        if (timer_left > 1) {
            timer_left--;
            timer_arm();
        } else if (timer_left == 1) {
            timer_left = 0;
            pc_pic_mask(0);
            *timer_flag = 1;
        }
        return f;
    }
    if (f->vector == PC_IRQ_BASE + 7) return f; /* spurious: no EOI */
    if (f->vector == 14 && (f->cs & 3) == 3 && !(f->error & PC_PTE_P)) {
        uint64_t page = read_cr2() & ~(PC_PAGE - 1);
        if (page >= BENCH_DEMAND_VA && page < BENCH_DEMAND_VA + BENCH_N_PAGE_FAULT * PC_PAGE &&
            faults_served < BENCH_N_PAGE_FAULT) {
            *entry(demand_tables, (page - BENCH_DEMAND_VA) / PC_PAGE) = (FRAMES_BASE + faults_served++ * PC_PAGE) | USER_RW;
            return f; /* the app retries its store */
        }
    }
    pc_printf("fvbench: exception %lu (error %#lx) at rip %#lx, cr2 %#lx\n", f->vector, f->error, f->rip, read_cr2());
    pc_exit(3);
}

/* The level-1 tables of a region of `pages` pages at `va` in the app's
 * space, made and used: a page mapped, touched and unmapped in each. */
static void make_tables(uint64_t va, uint64_t pages, uint64_t **tables) {
    for (uint64_t k = 0; k * TABLE_SPAN < pages * PC_PAGE; k++) {
        uint64_t a = va + k * TABLE_SPAN;
        pc_map(app_pml4, a, FRAMES_BASE, PC_PTE_W | PC_PTE_U);
        (void)*(volatile uint8_t *)a;
        tables[k] = (uint64_t *)((uint64_t)pc_pte(app_pml4, a, 0) & ~(PC_PAGE - 1));
        pc_unmap(app_pml4, a);
    }
}

void kernel_main(void);
void kernel_main(void) {
    write_cr0(0x80010033UL); /* PE MP ET NE WP PG */
    write_cr4(0x20UL);       /* PAE */
    pc_uart_init(PC_COM1);
    pc_printf("fvbench: unmodified PC kernel, %d operations\n", OP_COUNT);
    pc_gdt_init();
    pc_idt_init(trap);
    pc_pages_init(page_pool, sizeof page_pool / PC_PAGE);
    kernel_pml4 = pc_kernel_map(KERNEL_MAP_END);
    /* the app's space: the kernel's first GiB (its page directory shared), then its own regions */
    app_pml4 = pc_page_alloc();
    uint64_t *pdpt = pc_page_alloc();
    app_pml4[0] = (uint64_t)pdpt | USER_RW;
    pdpt[0] = ((uint64_t *)(kernel_pml4[0] & PC_PTE_ADDR))[0];
    for (uint64_t k = 0; k < APP_STACK_PAGES; k++)
        pc_map(app_pml4, APP_STACK_VA + k * PC_PAGE, (uint64_t)pc_page_alloc(), PC_PTE_W | PC_PTE_U);
    write_cr3((uint64_t)app_pml4);
    make_tables(BENCH_DEMAND_VA, BENCH_N_PAGE_FAULT, demand_tables);
    make_tables(BENCH_PT_VA, BENCH_PT_PAGES, pt_tables);
    pc_pic_init();
    pc_syscall_init(syscall_dispatch);
    pc_set_kernel_stack((uint64_t)(kernel_stack + sizeof kernel_stack));
    struct pc_frame *f = (struct pc_frame *)(kernel_stack + sizeof kernel_stack) - 1;
    pc_frame_user(f, (uint64_t)app_main, APP_STACK_VA + APP_STACK_PAGES * PC_PAGE - 8, PC_RFLAGS_IF);
    pc_resume(f);
}
