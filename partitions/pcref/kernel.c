/* pcref: an unmodified x86-64 kernel for plain PC hardware.
 *
 * It knows nothing of SPK: it runs at ring 0 (it believes), loads its own
 * GDT, IDT and TSS, builds 4-level page tables and writes CR3, programs the
 * 8259 PICs and the 8253 PIT, writes its console to the 16550 UART at
 * 0x3F8, reads CPUID, sets EFER.SCE, STAR, LSTAR and SFMASK, and runs two
 * apps at ring 3 in address spaces of their own, switching between them on
 * timer interrupts; their system calls come in by syscall and go back by
 * sysretq, their page faults are served (a demand page) or end them. It
 * also looks at what an unmodified kernel can see of its own privilege
 * (sgdt, sidt, smsw, str, sldt, CS and SS, pushf after popf) and prints it:
 * under a faithful virtual machine the output is the same as on hardware.
 *
 * The output is the same on any host speed: nothing printed depends on time
 * or on the number of timer ticks, and the timer switches apps only once the
 * running one has printed its line for the slice. The kernel ends by
 * writing its status to port 0xF4 (QEMU's isa-debug-exit device; the SPK
 * ends the partition on it); on a plain PC it halts.
 *
 * docs/fullvirt.md lists every privileged or sensitive operation used here. */
#include "pc.h"
#include "pcref.h"

/* The hardware helpers (port I/O, MSRs, the GDT/IDT/TSS, the 8259s, the
 * 8253, the UART, page-table building) are the SDK's PC library
 * (spk_sdk/pc/pc.h), shared with every bare PC kernel; the trap, interrupt
 * and system call entry stubs too (spk_sdk/pc/boot.S). What is left here
 * is this kernel's own: its address spaces, its two apps and their
 * scheduling, and what it reports. */

#define kprintf pc_printf /* the console: COM1 */
#define TICK_HZ 100

/* ---- paging ---- */

#define KERNEL_MAP_END 0x400000UL /* the identity map: the first 4 MiB */

static uint8_t page_pool[24][PC_PAGE] __attribute__((aligned(4096)));
static uint64_t *kernel_pml4, *kernel_pdpt;

/* The kernel's map: the first 4 MiB identity-mapped, supervisor, writable,
 * but page 0 (null stays a fault) and the user pages (user, read-only). The
 * upper levels allow user access; the leaves decide. */
static void build_kernel_map(void) {
    pc_pages_init(page_pool, sizeof page_pool / PC_PAGE);
    kernel_pml4 = pc_kernel_map(KERNEL_MAP_END);
    kernel_pdpt = (uint64_t *)(kernel_pml4[0] & PC_PTE_ADDR);
    write_cr3((uint64_t)kernel_pml4);
}

/* An app's space: the kernel's first GiB (shared page directory) plus its
 * own tables at APP_BASE (made by the first pc_map there). */
static uint64_t *build_app_map(void) {
    uint64_t *pml4 = pc_page_alloc(), *pdpt = pc_page_alloc();
    pml4[0] = (uint64_t)pdpt | PC_PTE_P | PC_PTE_W | PC_PTE_U;
    pdpt[0] = kernel_pdpt[0];
    return pml4;
}

/* ---- apps and scheduling ---- */

struct app {
    char name;
    int alive, wrote;         /* wrote: printed in its current slice */
    uint64_t *pml4;           /* its address space */
    struct app_info *info;    /* its info page, as the kernel reaches it */
    struct pc_frame *frame;   /* where it stopped (on its kernel stack) */
    uint8_t kstack[8192] __attribute__((aligned(16)));
};

static struct app apps[2];
static int current = -1;          /* the app on the CPU, -1 in the idle loop */
static struct pc_frame *idle_frame; /* the idle loop, as the last tick that found it left it */
static unsigned slices, demand_pages;

static void app_init(struct app *a, char name) {
    a->name = name;
    a->alive = 1;
    a->pml4 = build_app_map();
    a->info = (struct app_info *)pc_page_alloc();
    a->info->name = (uint64_t)name;
    uint64_t *stack = pc_page_alloc();
    pc_map(a->pml4, APP_INFO, (uint64_t)a->info, PC_PTE_U);                 /* read-only */
    pc_map(a->pml4, APP_STACK_TOP - PC_PAGE, (uint64_t)stack, PC_PTE_W | PC_PTE_U); /* the stack page */
    a->frame = (struct pc_frame *)(a->kstack + sizeof a->kstack) - 1; /* first entry: by iretq */
    pc_frame_user(a->frame, (uint64_t)app_main, APP_STACK_TOP - 8, PC_RFLAGS_IF);
}

/* Put app i on the CPU in a new slice: its address space, its kernel stack
 * for the next trap or system call, and the slice number it waits for. */
static struct pc_frame *run(int i) {
    struct app *a = &apps[i];
    current = i;
    a->wrote = 0;
    a->info->slice++;
    slices++;
    write_cr3((uint64_t)a->pml4);
    pc_set_kernel_stack((uint64_t)(a->kstack + sizeof a->kstack));
    return a->frame;
}

/* The next app after `after` that is still alive, round robin; -1 if none. */
static int next_app(int after) {
    for (int k = 1; k <= 2; k++) {
        int i = (after + k + 2) % 2;
        if (apps[i].alive) return i;
    }
    return -1;
}

__attribute__((noreturn)) static void finish(void) {
    kprintf("kernel: no app left after %u slices and %u demand pages; powering off\n", slices, demand_pages);
    pc_exit(0);
}

/* An app stopped for good: back to the idle loop until the next tick. */
static struct pc_frame *end_app(struct app *a) {
    a->alive = 0;
    current = -1;
    write_cr3((uint64_t)kernel_pml4);
    if (next_app(0) < 0) finish();
    return idle_frame;
}

static int last_app = 1;

static struct pc_frame *timer_tick(struct pc_frame *f) {
    outb(PC_PIC1, 0x20); /* EOI */
    if ((f->cs & 3) == 0) { /* the idle loop: start the next app */
        idle_frame = f;
        int i = next_app(last_app);
        if (i < 0) finish();
        return run(last_app = i);
    }
    struct app *a = &apps[current];
    if (!a->wrote) return f; /* not printed its line yet: keep it on */
    a->frame = f;
    return run(last_app = next_app(current));
}

static const char *pf_reason(uint64_t err) {
    static const char *const reasons[8] = {
        "not present, read, kernel", "protection, read, kernel", "not present, write, kernel",
        "protection, write, kernel", "not present, read, user",  "protection, read, user",
        "not present, write, user",  "protection, write, user",
    };
    return reasons[err & 7];
}

static struct pc_frame *user_fault(struct pc_frame *f) {
    struct app *a = &apps[current];
    if (f->vector == 14) {
        uint64_t addr = read_cr2();
        kprintf("kernel: app %c: page fault at %#lx, error %#lx (%s)", a->name, addr, f->error, pf_reason(f->error));
        if (!(f->error & PC_PTE_P) && addr >= APP_HEAP && addr < APP_HEAP + PC_PAGE) {
            pc_map(a->pml4, addr & ~(PC_PAGE - 1), (uint64_t)pc_page_alloc(), PC_PTE_W | PC_PTE_U);
            invlpg(addr);
            demand_pages++;
            kprintf(": mapped a fresh page\n");
            return f;
        }
        kprintf(": app %c ended\n", a->name);
        return end_app(a);
    }
    if (f->vector == 13 && *(const uint8_t *)f->rip == 0xFA) { /* cli at ring 3 */
        kprintf("kernel: app %c: general protection (error %#lx) on cli: skipped\n", a->name, f->error);
        f->rip += 1;
        return f;
    }
    kprintf("kernel: app %c: exception %lu (error %#lx): app ended\n", a->name, f->vector, f->error);
    return end_app(a);
}

static struct pc_frame *trap(struct pc_frame *f) {
    switch (f->vector) {
    case PC_IRQ_BASE:
        return timer_tick(f);
    case PC_IRQ_BASE + 7: /* spurious: no EOI */
        return f;
    case PC_IRQ_BASE + 15:
        outb(PC_PIC1, 0x20); /* spurious on the slave: the master saw a real IRQ 2 */
        return f;
    }
    if ((f->cs & 3) == 3) return user_fault(f);
    kprintf("kernel: exception %lu (error %#lx) at ring 0, cr2 %#lx: stopping\n", f->vector, f->error, read_cr2());
    pc_exit(3);
}

static struct pc_frame *syscall_dispatch(struct pc_frame *f) {
    struct app *a = &apps[current];
    switch (f->rax) {
    case SYS_WRITE: {
        uint64_t buf = f->rdi, len = f->rsi;
        if (buf < APP_BASE || buf >= APP_END || len > APP_END - buf || len > 256) {
            f->rax = (uint64_t)-1;
            return f;
        }
        pc_uart_write(PC_COM1, (const char *)buf, len); /* the app's pages are in the current space */
        a->wrote = 1;
        f->rax = len;
        return f;
    }
    case SYS_EXIT:
        kprintf("kernel: app %c: exit %lu\n", a->name, f->rdi);
        return end_app(a);
    default:
        f->rax = (uint64_t)-1;
        return f;
    }
}

/* ---- start-up ---- */

static void report_cpu(void) {
    uint32_t r[4], ext[4], vendor[4] = {0};
    cpuid(0, r);
    vendor[0] = r[1], vendor[1] = r[3], vendor[2] = r[2];
    cpuid(1, ext);
    uint32_t pae = ext[3] >> 6 & 1, apic = ext[3] >> 9 & 1;
    cpuid(0x80000001, ext);
    kprintf("cpuid: vendor %s, pae %u, apic %u, long mode %u, syscall %u, nx %u\n", (const char *)vendor, pae, apic,
            ext[3] >> 29 & 1, ext[3] >> 11 & 1, ext[3] >> 20 & 1);
}

/* What an unmodified kernel can see of its own privilege. */
static void report_privilege(void) {
    struct pc_table_reg gdtr, idtr;
    uint16_t msw, tr, ldtr, cs, ss;
    __asm__ volatile("sgdt %0" : "=m"(gdtr));
    __asm__ volatile("sidt %0" : "=m"(idtr));
    __asm__ volatile("smsw %0" : "=r"(msw));
    __asm__ volatile("str %0" : "=r"(tr));
    __asm__ volatile("sldt %0" : "=r"(ldtr));
    __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    kprintf("sgdt: limit %#x, base %s\n", gdtr.limit, gdtr.base == (uint64_t)pc_gdt ? "my gdt" : "NOT my gdt");
    kprintf("sidt: limit %#x, base %s\n", idtr.limit, idtr.base == (uint64_t)pc_idt ? "my idt" : "NOT my idt");
    kprintf("smsw: %#x; str: %#x; sldt: %#x\n", msw, tr, ldtr);
    kprintf("cs %#x, ss %#x: ring %u\n", cs, ss, cs & 3);
    kprintf("cr0 %#lx, cr3 %s, cr4 %#lx\n", read_cr0(), read_cr3() == (uint64_t)kernel_pml4 ? "my pml4" : "NOT my pml4",
            read_cr4());
    /* popf must change IF at ring 0 (the 8259s are all masked here) */
    cli();
    uint64_t off = read_flags() & PC_RFLAGS_IF;
    write_flags(read_flags() | PC_RFLAGS_IF);
    uint64_t on = read_flags() & PC_RFLAGS_IF;
    write_flags(read_flags() & ~PC_RFLAGS_IF);
    uint64_t off_again = read_flags() & PC_RFLAGS_IF;
    kprintf("popf: IF after cli %d, after popf(IF=1) %d, after popf(IF=0) %d; IOPL %lu\n", off != 0, on != 0,
            off_again != 0, read_flags() >> 12 & 3);
}

static void setup_syscalls(void) {
    pc_syscall_init(syscall_dispatch);
    kprintf("msr: efer %#lx, star %#lx, lstar %s, sfmask %#lx\n", rdmsr(PC_MSR_EFER), rdmsr(PC_MSR_STAR),
            rdmsr(PC_MSR_LSTAR) == (uint64_t)pc_syscall_entry ? "syscall_entry" : "NOT syscall_entry",
            rdmsr(PC_MSR_SFMASK));
}

void kernel_main(void);
void kernel_main(void) {
    /* control registers as this kernel wants them: PE MP ET NE WP PG; PAE */
    write_cr0(0x80010033UL);
    write_cr4(0x20UL);
    int uart = pc_uart_init(PC_COM1);
    kprintf("pcref: an unmodified x86-64 PC kernel\n");
    kprintf("uart: 16550 at %#x, scratch register %s\n", PC_COM1, uart ? "ok" : "missing");
    report_cpu();
    pc_gdt_init();
    pc_idt_init(trap);
    build_kernel_map();
    pc_pic_init();
    kprintf("pic: vectors %d-%d, masks %#x %#x\n", PC_IRQ_BASE, PC_IRQ_BASE + 15, inb(PC_PIC1 + 1), inb(PC_PIC2 + 1));
    report_privilege();
    setup_syscalls();
    app_init(&apps[0], 'A');
    app_init(&apps[1], 'B');
    pc_pit_init(TICK_HZ);
    pc_pic_unmask(0);
    kprintf("pit: %d Hz; pic masks %#x %#x; idle until the first tick\n", TICK_HZ, inb(PC_PIC1 + 1), inb(PC_PIC2 + 1));
    sti();
    for (;;) hlt();
}
