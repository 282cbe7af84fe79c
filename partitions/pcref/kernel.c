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
#include <stdint.h>

#include "pcref.h"
#include "spk/libc.h"

/* ---- hardware access ---- */

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint64_t rdmsr(uint32_t msr) {
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static inline void cpuid(uint32_t leaf, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}
static inline uint64_t read_flags(void) {
    uint64_t f;
    __asm__ volatile("pushfq; popq %0" : "=r"(f));
    return f;
}
static inline void write_flags(uint64_t f) { __asm__ volatile("pushq %0; popfq" : : "r"(f) : "memory", "cc"); }
static inline void write_cr3(uint64_t v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
#define READ_CR(n)                                                                                                     \
    ({                                                                                                                 \
        uint64_t v_;                                                                                                   \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v_));                                                              \
        v_;                                                                                                            \
    })

#define RFLAGS_IF 0x200UL
#define MSR_EFER 0xC0000080U
#define MSR_STAR 0xC0000081U
#define MSR_LSTAR 0xC0000082U
#define MSR_SFMASK 0xC0000084U
#define DEBUG_EXIT_PORT 0xF4

/* ---- console: the 16550 UART at 0x3F8 ---- */

#define COM1 0x3F8
#define LSR_THRE 0x20

static int uart_init(void) {
    outb(COM1 + 1, 0x00); /* IER: no UART interrupts, the kernel polls */
    outb(COM1 + 3, 0x80); /* LCR: DLAB, to reach the divisor */
    outb(COM1 + 0, 0x01); /* DLL: 115200 baud */
    outb(COM1 + 1, 0x00); /* DLM */
    outb(COM1 + 3, 0x03); /* LCR: 8 bits, no parity, one stop bit */
    outb(COM1 + 2, 0xC7); /* FCR: FIFOs on and cleared, trigger at 14 bytes */
    outb(COM1 + 4, 0x03); /* MCR: DTR, RTS */
    outb(COM1 + 7, 0x5A); /* the scratch register reads back on a 16450/16550 */
    return inb(COM1 + 7) == 0x5A;
}

static void uart_write(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        while (!(inb(COM1 + 5) & LSR_THRE)) {
        }
        outb(COM1, (uint8_t)s[i]);
    }
}

/* The console may be called from the idle loop and from traps: the line is
 * written with interrupts off and the caller's IF restored by popf. */
__attribute__((format(printf, 1, 2))) static void kprintf(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    uint64_t flags = read_flags();
    __asm__ volatile("cli");
    uart_write(line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    write_flags(flags);
}

__attribute__((noreturn)) static void power_off(uint8_t status) {
    outb(DEBUG_EXIT_PORT, status); /* QEMU: exits with (status << 1) | 1 */
    for (;;) __asm__ volatile("cli; hlt");
}

/* ---- segments: GDT, TSS, IDT ---- */

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define USER32_CS 0x18 /* unused: the slot sysret's selector arithmetic expects */
#define USER_DS 0x20
#define USER_CS 0x28
#define TSS_SEL 0x30

struct tss {
    uint32_t reserved0;
    uint64_t rsp0, rsp1, rsp2;
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3, iomap_base;
} __attribute__((packed));

struct idt_gate {
    uint16_t offset_lo, selector;
    uint8_t ist, type_attr;
    uint16_t offset_mid;
    uint32_t offset_hi, zero;
} __attribute__((packed));

struct table_reg {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static uint64_t gdt[8] __attribute__((aligned(16)));
static struct tss tss __attribute__((aligned(16)));
static struct idt_gate idt[256] __attribute__((aligned(4096)));

static void load_gdt(void) {
    gdt[0] = 0;
    gdt[KERNEL_CS / 8] = 0x00AF9A000000FFFFULL; /* 64-bit code, DPL 0 */
    gdt[KERNEL_DS / 8] = 0x00CF92000000FFFFULL; /* data, DPL 0 */
    gdt[USER32_CS / 8] = 0x00CFFA000000FFFFULL; /* 32-bit code, DPL 3 */
    gdt[USER_DS / 8] = 0x00CFF2000000FFFFULL;   /* data, DPL 3 */
    gdt[USER_CS / 8] = 0x00AFFA000000FFFFULL;   /* 64-bit code, DPL 3 */
    uint64_t base = (uint64_t)&tss, limit = sizeof tss - 1;
    gdt[TSS_SEL / 8] = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89ULL << 40 /* present, 64-bit TSS */
                       | ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56;
    gdt[TSS_SEL / 8 + 1] = base >> 32;
    tss.iomap_base = sizeof tss; /* no I/O bitmap: ring 3 has no port */
    struct table_reg gdtr = {sizeof gdt - 1, (uint64_t)gdt};
    __asm__ volatile("lgdt %0" : : "m"(gdtr));
    /* reload CS with a far return, then the data segments and SS */
    __asm__ volatile("pushq %0; leaq 1f(%%rip), %%rax; pushq %%rax; lretq; 1:" : : "i"(KERNEL_CS) : "rax", "memory");
    __asm__ volatile("mov %0, %%ds; mov %0, %%es; mov %0, %%ss; mov %1, %%fs; mov %1, %%gs"
                     :
                     : "r"((uint16_t)KERNEL_DS), "r"((uint16_t)0));
    __asm__ volatile("ltr %0" : : "r"((uint16_t)TSS_SEL));
    __asm__ volatile("lldt %0" : : "r"((uint16_t)0));
}

extern char isr0[], isr1[], isr2[], isr3[], isr4[], isr5[], isr6[], isr7[], isr8[], isr9[], isr10[], isr11[],
    isr12[], isr13[], isr14[], isr15[], isr16[], isr17[], isr18[], isr19[], isr20[], isr21[], isr22[], isr23[],
    isr24[], isr25[], isr26[], isr27[], isr28[], isr29[], isr30[], isr31[], isr32[], isr39[], isr47[];

static void set_gate(int vector, void *handler) {
    uint64_t a = (uint64_t)handler;
    idt[vector] = (struct idt_gate){(uint16_t)a, KERNEL_CS, 0, 0x8E /* present, DPL 0, interrupt gate */,
                                    (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0};
}

static void load_idt(void) {
    void *exceptions[32] = {isr0,  isr1,  isr2,  isr3,  isr4,  isr5,  isr6,  isr7,  isr8,  isr9,  isr10,
                            isr11, isr12, isr13, isr14, isr15, isr16, isr17, isr18, isr19, isr20, isr21,
                            isr22, isr23, isr24, isr25, isr26, isr27, isr28, isr29, isr30, isr31};
    for (int v = 0; v < 32; v++) set_gate(v, exceptions[v]);
    set_gate(32, isr32);
    set_gate(39, isr39);
    set_gate(47, isr47);
    struct table_reg idtr = {sizeof idt - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

/* ---- paging ---- */

#define PTE_P 0x1UL
#define PTE_W 0x2UL
#define PTE_U 0x4UL
#define PAGE 4096UL
#define KERNEL_MAP_END 0x400000UL /* the identity map: the first 4 MiB */

extern char __user_start[], __user_end[];

static uint8_t page_pool[24][PAGE] __attribute__((aligned(4096)));
static unsigned pages_used;

static uint64_t *page_alloc(void) {
    if (pages_used == sizeof page_pool / PAGE) {
        kprintf("kernel: out of pages\n");
        power_off(3);
    }
    uint8_t *p = page_pool[pages_used++];
    memset(p, 0, PAGE);
    return (uint64_t *)p;
}

static uint64_t *kernel_pml4, *kernel_pdpt;

/* The kernel's map: the first 4 MiB identity-mapped, supervisor, writable,
 * but page 0 (null stays a fault) and the user pages (user, read-only). The
 * upper levels allow user access; the leaves decide. */
static void build_kernel_map(void) {
    kernel_pml4 = page_alloc();
    kernel_pdpt = page_alloc();
    uint64_t *pd = page_alloc();
    kernel_pml4[0] = (uint64_t)kernel_pdpt | PTE_P | PTE_W | PTE_U;
    kernel_pdpt[0] = (uint64_t)pd | PTE_P | PTE_W | PTE_U;
    for (uint64_t a = 0; a < KERNEL_MAP_END; a += PAGE) {
        uint64_t *pt;
        if (!(pd[a >> 21] & PTE_P)) {
            pt = page_alloc();
            pd[a >> 21] = (uint64_t)pt | PTE_P | PTE_W | PTE_U;
        }
        pt = (uint64_t *)(pd[a >> 21] & ~0xFFFUL);
        int user = a >= (uint64_t)__user_start && a < (uint64_t)__user_end;
        pt[(a >> 12) & 511] = a == 0 ? 0 : a | PTE_P | (user ? PTE_U : PTE_W);
    }
    write_cr3((uint64_t)kernel_pml4);
}

/* An app's space: the kernel's first GiB (shared page directory) plus its
 * own page table at APP_BASE. Returns the PML4; *pt gets the app's table. */
static uint64_t *build_app_map(uint64_t **pt_out) {
    uint64_t *pml4 = page_alloc(), *pdpt = page_alloc(), *pd = page_alloc(), *pt = page_alloc();
    pml4[0] = (uint64_t)pdpt | PTE_P | PTE_W | PTE_U;
    pdpt[0] = kernel_pdpt[0];
    pdpt[APP_BASE >> 30] = (uint64_t)pd | PTE_P | PTE_W | PTE_U;
    pd[(APP_BASE >> 21) & 511] = (uint64_t)pt | PTE_P | PTE_W | PTE_U;
    *pt_out = pt;
    return pml4;
}

/* ---- the 8259 PICs and the 8253 PIT ---- */

#define PIC1 0x20
#define PIC2 0xA0
#define IRQ_BASE 32
#define PIT_HZ 1193182
#define TICK_HZ 100

static void pic_init(void) {
    outb(PIC1 + 1, 0xFF); /* mask everything while reprogramming */
    outb(PIC2 + 1, 0xFF);
    outb(PIC1, 0x11); /* ICW1: edge, cascade, ICW4 follows */
    outb(PIC2, 0x11);
    outb(PIC1 + 1, IRQ_BASE); /* ICW2: vectors 32..39 */
    outb(PIC2 + 1, IRQ_BASE + 8);
    outb(PIC1 + 1, 0x04); /* ICW3: slave on IRQ 2 */
    outb(PIC2 + 1, 0x02);
    outb(PIC1 + 1, 0x01); /* ICW4: 8086 mode */
    outb(PIC2 + 1, 0x01);
    outb(PIC1 + 1, 0xFF); /* OCW1: all masked until the timer is set */
    outb(PIC2 + 1, 0xFF);
}

static void pit_init(void) {
    uint16_t divisor = (PIT_HZ + TICK_HZ / 2) / TICK_HZ;
    outb(0x43, 0x34); /* channel 0, low then high byte, mode 2 (rate generator), binary */
    outb(0x40, (uint8_t)divisor);
    outb(0x40, (uint8_t)(divisor >> 8));
}

/* ---- apps and scheduling ---- */

struct frame { /* as boot.S pushes it */
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU (or by syscall_entry) */
};

struct app {
    char name;
    int alive, wrote;         /* wrote: printed in its current slice */
    uint64_t *pml4, *pt;      /* its address space */
    struct app_info *info;    /* its info page, as the kernel reaches it */
    struct frame *frame;      /* where it stopped (on its kernel stack) */
    uint8_t kstack[8192] __attribute__((aligned(16)));
};

static struct app apps[2];
static int current = -1;       /* the app on the CPU, -1 in the idle loop */
static struct frame *idle_frame; /* the idle loop, as the last tick that found it left it */
static unsigned slices, demand_pages;
extern uint64_t kernel_rsp;
extern char syscall_entry[];

static void app_init(struct app *a, char name) {
    a->name = name;
    a->alive = 1;
    a->pml4 = build_app_map(&a->pt);
    a->info = (struct app_info *)page_alloc();
    a->info->name = (uint64_t)name;
    uint64_t *stack = page_alloc();
    a->pt[0] = (uint64_t)a->info | PTE_P | PTE_U;                        /* APP_INFO, read-only */
    a->pt[1] = (uint64_t)stack | PTE_P | PTE_W | PTE_U;                  /* the stack page */
    struct frame *f = (struct frame *)(a->kstack + sizeof a->kstack) - 1; /* first entry: by iretq */
    memset(f, 0, sizeof *f);
    f->rip = (uint64_t)app_main;
    f->cs = USER_CS | 3;
    f->rflags = RFLAGS_IF;
    f->rsp = APP_STACK_TOP - 8;
    f->ss = USER_DS | 3;
    a->frame = f;
}

/* Put app i on the CPU in a new slice: its address space, its kernel stack
 * for the next trap or system call, and the slice number it waits for. */
static struct frame *run(int i) {
    struct app *a = &apps[i];
    current = i;
    a->wrote = 0;
    a->info->slice++;
    slices++;
    write_cr3((uint64_t)a->pml4);
    tss.rsp0 = kernel_rsp = (uint64_t)(a->kstack + sizeof a->kstack);
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
    power_off(0);
}

/* An app stopped for good: back to the idle loop until the next tick. */
static struct frame *end_app(struct app *a) {
    a->alive = 0;
    current = -1;
    write_cr3((uint64_t)kernel_pml4);
    if (next_app(0) < 0) finish();
    return idle_frame;
}

static int last_app = 1;

static struct frame *timer_tick(struct frame *f) {
    outb(PIC1, 0x20); /* EOI */
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

static struct frame *user_fault(struct frame *f) {
    struct app *a = &apps[current];
    if (f->vector == 14) {
        uint64_t addr = READ_CR(2);
        kprintf("kernel: app %c: page fault at %#lx, error %#lx (%s)", a->name, addr, f->error, pf_reason(f->error));
        if (!(f->error & PTE_P) && addr >= APP_HEAP && addr < APP_HEAP + PAGE) {
            a->pt[(addr >> 12) & 511] = (uint64_t)page_alloc() | PTE_P | PTE_W | PTE_U;
            __asm__ volatile("invlpg (%0)" : : "r"(addr) : "memory");
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

struct frame *trap(struct frame *f);
struct frame *trap(struct frame *f) {
    switch (f->vector) {
    case IRQ_BASE:
        return timer_tick(f);
    case IRQ_BASE + 7: /* spurious: no EOI */
        return f;
    case IRQ_BASE + 15:
        outb(PIC1, 0x20); /* spurious on the slave: the master saw a real IRQ 2 */
        return f;
    }
    if ((f->cs & 3) == 3) return user_fault(f);
    kprintf("kernel: exception %lu (error %#lx) at ring 0, cr2 %#lx: stopping\n", f->vector, f->error, READ_CR(2));
    power_off(3);
}

struct frame *syscall_dispatch(struct frame *f);
struct frame *syscall_dispatch(struct frame *f) {
    struct app *a = &apps[current];
    switch (f->rax) {
    case SYS_WRITE: {
        uint64_t buf = f->rdi, len = f->rsi;
        if (buf < APP_BASE || buf >= APP_END || len > APP_END - buf || len > 256) {
            f->rax = (uint64_t)-1;
            return f;
        }
        uart_write((const char *)buf, len); /* the app's pages are in the current space */
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
    struct table_reg gdtr, idtr;
    uint16_t msw, tr, ldtr, cs, ss;
    __asm__ volatile("sgdt %0" : "=m"(gdtr));
    __asm__ volatile("sidt %0" : "=m"(idtr));
    __asm__ volatile("smsw %0" : "=r"(msw));
    __asm__ volatile("str %0" : "=r"(tr));
    __asm__ volatile("sldt %0" : "=r"(ldtr));
    __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    kprintf("sgdt: limit %#x, base %s\n", gdtr.limit, gdtr.base == (uint64_t)gdt ? "my gdt" : "NOT my gdt");
    kprintf("sidt: limit %#x, base %s\n", idtr.limit, idtr.base == (uint64_t)idt ? "my idt" : "NOT my idt");
    kprintf("smsw: %#x; str: %#x; sldt: %#x\n", msw, tr, ldtr);
    kprintf("cs %#x, ss %#x: ring %u\n", cs, ss, cs & 3);
    kprintf("cr0 %#lx, cr3 %s, cr4 %#lx\n", READ_CR(0), READ_CR(3) == (uint64_t)kernel_pml4 ? "my pml4" : "NOT my pml4",
            READ_CR(4));
    /* popf must change IF at ring 0 (the 8259s are all masked here) */
    __asm__ volatile("cli");
    uint64_t off = read_flags() & RFLAGS_IF;
    write_flags(read_flags() | RFLAGS_IF);
    uint64_t on = read_flags() & RFLAGS_IF;
    write_flags(read_flags() & ~RFLAGS_IF);
    uint64_t off_again = read_flags() & RFLAGS_IF;
    kprintf("popf: IF after cli %d, after popf(IF=1) %d, after popf(IF=0) %d; IOPL %lu\n", off != 0, on != 0,
            off_again != 0, read_flags() >> 12 & 3);
}

static void setup_syscalls(void) {
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | 1); /* SCE */
    wrmsr(MSR_STAR, (uint64_t)(USER32_CS | 3) << 48 | (uint64_t)KERNEL_CS << 32);
    wrmsr(MSR_LSTAR, (uint64_t)syscall_entry);
    wrmsr(MSR_SFMASK, RFLAGS_IF | 0x100 /* TF */ | 0x400 /* DF */);
    kprintf("msr: efer %#lx, star %#lx, lstar %s, sfmask %#lx\n", rdmsr(MSR_EFER), rdmsr(MSR_STAR),
            rdmsr(MSR_LSTAR) == (uint64_t)syscall_entry ? "syscall_entry" : "NOT syscall_entry", rdmsr(MSR_SFMASK));
}

void kernel_main(void);
void kernel_main(void) {
    /* control registers as this kernel wants them: PE MP ET NE WP PG; PAE */
    __asm__ volatile("mov %0, %%cr0" : : "r"(0x80010033UL));
    __asm__ volatile("mov %0, %%cr4" : : "r"(0x20UL));
    int uart = uart_init();
    kprintf("pcref: an unmodified x86-64 PC kernel\n");
    kprintf("uart: 16550 at %#x, scratch register %s\n", COM1, uart ? "ok" : "missing");
    report_cpu();
    load_gdt();
    load_idt();
    build_kernel_map();
    pic_init();
    kprintf("pic: vectors %d-%d, masks %#x %#x\n", IRQ_BASE, IRQ_BASE + 15, inb(PIC1 + 1), inb(PIC2 + 1));
    report_privilege();
    setup_syscalls();
    app_init(&apps[0], 'A');
    app_init(&apps[1], 'B');
    pit_init();
    outb(PIC1 + 1, 0xFE); /* unmask IRQ 0 */
    kprintf("pit: %d Hz; pic masks %#x %#x; idle until the first tick\n", TICK_HZ, inb(PIC1 + 1), inb(PIC2 + 1));
    __asm__ volatile("sti");
    for (;;) __asm__ volatile("hlt");
}
