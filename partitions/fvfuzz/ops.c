/* fvfuzz's operations (but the page-table ones, paging.c): privileged
 * instructions with random operands, crafted returns to ring 0 and ring 3,
 * the call gate, software interrupts and exceptions, port I/O to random
 * ports and to the devices, and interrupt storms.
 *
 * Each operation saves what it is about to break, runs under fz_try (an
 * exception ends it, see boot.S) and puts the machine back: the GDT and
 * IDT registers, TR and LDTR, the segment registers, CR0/CR3/CR4, the MSR
 * it wrote, the flags, the 8259s (all masked between operations), the
 * UART. So the next operation starts from a sane kernel on a real PC too.
 * The log line is "NNN name" before the operation and " args -> result"
 * after it. */
#include "fvfuzz.h"

char result[160];
int unsafe;       /* seed bit 62: operations a real PC may not survive (marked "!" in the log) */
int reach_beyond; /* seed bit 61: touch what random mappings name beyond the kernel's 4 MiB */
int gate;         /* seed bit 60: far calls through the call gate */
static char args[200];

const char *trap_result(int trapped) {
    static char text[80];
    if (!trapped) return "ok";
    if (fz_syscall_seen) {
        fz_syscall_seen = 0;
        return "syscall";
    }
    uint64_t v = last_trap.vector;
    int has_error = v == 8 || (v >= 10 && v <= 14) || v == 17;
    if (v == 14)
        snprintf(text, sizeof text, "#%lu/%lx@%lx", v, last_trap.error, last_trap.cr2);
    else if (has_error)
        snprintf(text, sizeof text, "#%lu/%lx", v, last_trap.error);
    else
        snprintf(text, sizeof text, "#%lu", v);
    return text;
}

/* Values on the edges, and anything. */
static uint64_t any_value(void) {
    static const uint64_t edges[] = {0, 1, 0xFFFFFFFFFFFFFFFFUL, 0x8000000000000000UL, 0x00007FFFFFFFFFFFUL,
                                     0xFFFF800000000000UL, 0x100000, 0xFFFFFFFF, 0x400000, 0xFEE00000UL};
    return chance(30) ? edges[below(10)] : chance(50) ? rnd() : rnd() & 0xFFFFFFFF;
}

/* ---- descriptor tables ---- */

static void do_lgdt_pair(void *arg) {
    const struct pc_table_reg *bad = arg;
    __asm__ volatile("lgdt %0; lgdt %1" : : "m"(*bad), "m"(good_gdtr) : "memory");
}
static void do_lidt_pair(void *arg) {
    const struct pc_table_reg *bad = arg;
    __asm__ volatile("lidt %0; lidt %1" : : "m"(*bad), "m"(good_idtr) : "memory");
}
static void do_lgdt_ptr(void *arg) { __asm__ volatile("lgdt (%0)" : : "r"(arg) : "memory"); }
static void do_lidt_ptr(void *arg) { __asm__ volatile("lidt (%0)" : : "r"(arg) : "memory"); }

static const char *op_lgdt_lidt(int idt) {
    struct pc_table_reg bad = {(uint16_t)rnd(), any_value()};
    int trapped;
    if (chance(25)) { /* the operand itself unmapped or non-canonical */
        uint64_t ptr = chance(50) ? any_value() : 0x8000000000UL + below(1UL << 30);
        trapped = fz_try(idt ? do_lidt_ptr : do_lgdt_ptr, (void *)ptr);
        snprintf(args, sizeof args, "operand at %lx", ptr);
    } else {
        trapped = fz_try(idt ? do_lidt_pair : do_lgdt_pair, &bad);
        snprintf(args, sizeof args, "base %lx limit %x", bad.base, bad.limit);
    }
    __asm__ volatile("lgdt %0; lidt %1" : : "m"(good_gdtr), "m"(good_idtr));
    snprintf(result, sizeof result, "%s -> %s", args, trap_result(trapped));
    return result;
}

/* sgdt, sidt, smsw, str, sldt, CS and SS: what the kernel sees must be its own. */
static const char *op_store_descriptors(void) {
    struct pc_table_reg g, i;
    uint16_t msw, tr, ldtr, cs, ss;
    __asm__ volatile("sgdt %0; sidt %1" : "=m"(g), "=m"(i));
    __asm__ volatile("smsw %0; str %1; sldt %2" : "=r"(msw), "=r"(tr), "=r"(ldtr));
    __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    int same = g.base == good_gdtr.base && g.limit == good_gdtr.limit && i.base == good_idtr.base &&
               i.limit == good_idtr.limit && tr == PC_TSS_SEL && ldtr == 0 && cs == PC_KERNEL_CS && ss == PC_KERNEL_DS;
    snprintf(result, sizeof result, "msw %x -> %s", msw, same ? "mine" : "NOT MINE");
    return result;
}

static uint16_t any_selector(void) {
    static const uint16_t known[] = {0, PC_KERNEL_CS, PC_KERNEL_DS, PC_USER32_CS, PC_USER_DS | 3, PC_USER_CS | 3, PC_TSS_SEL,
                                     TSS2_SEL, GATE_SEL, LDT_SEL, JUNK_SEL, 0x78, 0xF8, 0x100, 0x4 | 8, 0xC | 3};
    return chance(60) ? (uint16_t)(known[below(16)] | (chance(20) ? below(4) : 0)) : (uint16_t)rnd();
}

static void do_ltr(void *arg) { __asm__ volatile("ltr %0" : : "r"((uint16_t)(uint64_t)arg)); }
static void do_lldt(void *arg) { __asm__ volatile("lldt %0" : : "r"((uint16_t)(uint64_t)arg)); }

static const char *op_ltr_lldt(int ldt) {
    uint16_t sel = any_selector();
    int trapped = fz_try(ldt ? do_lldt : do_ltr, (void *)(uint64_t)sel);
    uint16_t now;
    if (ldt)
        __asm__ volatile("sldt %0" : "=r"(now));
    else
        __asm__ volatile("str %0" : "=r"(now));
    snprintf(result, sizeof result, "%x -> %s, now %x", sel, trap_result(trapped), now);
    if (ldt)
        __asm__ volatile("lldt %0" : : "r"((uint16_t)0));
    else
        tss_restore();
    return result;
}

/* Random bits in the junk descriptors (0x70-0xF8) that selectors may name. */
static const char *op_junk_descriptors(void) {
    unsigned first = JUNK_SEL / 8 + (unsigned)below(GDT_ENTRIES - JUNK_SEL / 8);
    uint64_t d = chance(50) ? rnd() : (rnd() & 0x00FF0F00FFFFFFFFUL) | (0x80ULL | below(0x80)) << 40;
    gdt[first] = d;
    snprintf(result, sizeof result, "gdt[%#x] = %lx -> ok", first * 8, d);
    return result;
}

struct seg_args {
    uint16_t sel;
    int reg;
};
static void do_movseg(void *arg) {
    struct seg_args *s = arg;
    switch (s->reg) {
    case 0: __asm__ volatile("mov %0, %%ds" : : "r"(s->sel)); break;
    case 1: __asm__ volatile("mov %0, %%es" : : "r"(s->sel)); break;
    case 2: __asm__ volatile("mov %0, %%fs" : : "r"(s->sel)); break;
    case 3: __asm__ volatile("mov %0, %%gs" : : "r"(s->sel)); break;
    default: __asm__ volatile("mov %0, %%ss" : : "r"(s->sel)); break;
    }
}

static const char *op_movseg(void) {
    static const char *const names[] = {"ds", "es", "fs", "gs", "ss"};
    struct seg_args s = {any_selector(), (int)below(5)};
    pc_printf("%s=%x ", names[s.reg], s.sel);
    int trapped = fz_try(do_movseg, &s);
    __asm__ volatile("mov %0, %%ds; mov %0, %%es; mov %0, %%ss; mov %1, %%fs; mov %1, %%gs"
                     :
                     : "r"((uint16_t)PC_KERNEL_DS), "r"((uint16_t)0));
    snprintf(result, sizeof result, "-> %s", trap_result(trapped));
    return result;
}

/* ---- control registers ---- */

struct cr_args {
    uint64_t value, seen;
    int reg;
};
static void do_write_cr(void *arg) {
    struct cr_args *c = arg;
    switch (c->reg) {
    case 0: write_cr0(c->value); c->seen = read_cr0(); break;
    case 3: write_cr3(c->value); c->seen = read_cr3(); break;
    case 4: write_cr4(c->value); c->seen = read_cr4(); break;
    default: WRITE_CR8(c->value); c->seen = READ_CR8(); break;
    }
}

static const char *op_write_cr(int reg, int fatal) {
    uint64_t cr0 = read_cr0(), cr4 = read_cr4(), cr3 = read_cr3();
    struct cr_args c = {0, 0, reg};
    uint64_t bit = 1UL << below(64);
    static const unsigned cr0_bits[] = {1, 2, 3, 5, 16, 18, 29, 30};     /* MP EM TS NE WP AM NW CD */
    static const unsigned cr4_bits[] = {0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 4, 7, 9}; /* QEMU 7.2 hangs on UMIP, LA57, VMXE, SMXE, FSGSBASE */
    if (unsafe && reg != 8 && chance(40)) { /* any value: a PC may not survive it (seed bit 62) */
        pc_printf("! ");
        c.value = chance(50) ? any_value() : (reg == 0 ? cr0 : reg == 4 ? cr4 : cr3) ^ bit;
    } else if (reg == 0)
        c.value = cr0 ^ 1UL << cr0_bits[below(8)];
    else if (reg == 4)
        c.value = cr4 ^ 1UL << cr4_bits[below(13)];
    else if (reg == 8)
        c.value = chance(80) ? below(16) : any_value();
    else if (fatal) /* a root in no memory at all, or with reserved high bits (QEMU takes those too) */
        c.value = chance(50) ? ((64UL << 20) + below(1UL << 27) * PC_PAGE) : cr3 | 1UL << (40 + below(24));
    else /* the kernel's own root with its low bits (PWT, PCD, ignored ones) random */
        c.value = cr3 | (rnd() & 0xFFF);


    int trapped = fz_try(do_write_cr, &c);
    write_cr3(cr3);
    write_cr4(cr4);
    write_cr0(cr0);
    WRITE_CR8(0);
    snprintf(result, sizeof result, "%lx -> %s", c.value, trap_result(trapped));
    if (!trapped) snprintf(result + strlen(result), sizeof result - strlen(result), " reads %lx", c.seen);
    return result;
}

static void do_read_cr(void *arg) {
    uint64_t *v = arg;
    switch (v[0]) {
    case 0: v[1] = read_cr0(); break;
    case 2: v[1] = read_cr2(); break;
    case 3: v[1] = read_cr3(); break;
    case 4: v[1] = read_cr4(); break;
    case 8: v[1] = READ_CR8(); break;
    case 1: __asm__ volatile("mov %%cr1, %0" : "=r"(v[1])); break; /* #UD */
    default: __asm__ volatile("mov %%dr7, %0" : "=r"(v[1])); break;
    }
}

static const char *op_read_cr(void) {
    static const uint64_t regs[] = {0, 2, 3, 4, 8, 1, 7};
    uint64_t v[2] = {regs[below(7)], 0};
    int trapped = fz_try(do_read_cr, v);
    snprintf(result, sizeof result, "%s%lu -> %s %lx", v[0] == 7 ? "dr" : "cr", v[0], trap_result(trapped), v[1]);
    return result;
}

/* ---- MSRs ---- */

struct msr_args {
    uint32_t msr;
    uint64_t value;
};
static void do_rdmsr(void *arg) {
    struct msr_args *m = arg;
    m->value = rdmsr(m->msr);
}
static void do_wrmsr(void *arg) {
    struct msr_args *m = arg;
    wrmsr(m->msr, m->value);
}

static uint32_t any_msr(void) {
    static const uint32_t msrs[] = {PC_MSR_EFER, PC_MSR_STAR, PC_MSR_LSTAR, 0xC0000083, PC_MSR_SFMASK, 0xC0000100, 0xC0000101,
                                    0xC0000102, 0xC0000103, 0x10, 0x1B, 0x174, 0x175, 0x176, 0x277, 0x1A0, 0x2FF,
                                    0x200, 0x201, 0x179, 0x17A, 0x3A, 0x48, 0x8B, 0xC0010114, 0x40000000};
    return chance(75) ? msrs[below(sizeof msrs / sizeof msrs[0])] : (uint32_t)rnd();
}

static const char *op_msr(int write) {
    struct msr_args m = {any_msr(), 0};
    int unreadable = fz_try(do_rdmsr, &m);
    uint64_t old = m.value;
    if (!write) {
        snprintf(result, sizeof result, "%x -> %s", m.msr, trap_result(unreadable));
        return result;
    }
    uint64_t bit = 1UL << below(64);
    m.value = chance(50) ? old ^ bit : any_value();
    if ((m.msr == PC_MSR_EFER || m.msr == 0x1B) && unsafe && chance(40)) {
        pc_printf("! "); /* EFER without LME or the APIC moved or off: QEMU takes either */
    } else if (m.msr == PC_MSR_EFER) {
        m.value = (m.value | 0x500) & ~0x400UL; /* keep LME and LMA */
        m.value |= old & 0x400;
    } else if (m.msr == 0x1B) {
        m.value = old;
    }
    uint64_t value = m.value;
    int trapped = fz_try(do_wrmsr, &m);
    if (!unreadable) {
        m.value = old;
        fz_try(do_wrmsr, &m);
    }
    snprintf(result, sizeof result, "%x = %lx -> %s", m.msr, value, trap_result(trapped));
    return result;
}

/* ---- flags, hlt, invlpg ---- */

static void do_flags(void *arg) {
    uint64_t *f = arg; /* in: the flags to load; out: what pushf shows */
    __asm__ volatile("pushq %1; popfq; pushfq; popq %0; pushq $2; popfq" : "=r"(f[1]) : "r"(f[0]) : "memory", "cc");
}
static void do_cli_sti(void *arg) {
    uint64_t *f = arg;
    __asm__ volatile("sti; nop; pushfq; popq %0; cli; pushfq; popq %1" : "=r"(f[0]), "=r"(f[1]) : : "memory");
}

static const char *op_flags(void) {
    if (chance(30)) {
        uint64_t f[2] = {0, 0};
        int trapped = fz_try(do_cli_sti, f);
        snprintf(result, sizeof result, "sti/cli -> %s IF %lu %lu", trap_result(trapped), f[0] >> 9 & 1, f[1] >> 9 & 1);
        return result;
    }
    uint64_t f[2] = {any_value() & ~0x8000UL, 0};
    if (chance(70)) f[0] &= ~PC_RFLAGS_TF;
    int trapped = fz_try(do_flags, f);
    snprintf(result, sizeof result, "popf %lx -> %s pushf %lx", f[0], trap_result(trapped), f[1] & 0x3F7FD5);
    return result;
}

static void do_hlt(void *arg) {
    (void)arg;
    __asm__ volatile("sti; hlt; cli");
}

static const char *op_hlt(void) {
    uint64_t before = last_trap.irqs;
    pic_setup(0x20, 0x28, 0xFE, 0xFF);
    pit_setup(0x34, (uint16_t)(100 + below(2000))); /* 0.6 to 12 kHz: a wake-up within 1.8 ms */
    int trapped = fz_try(do_hlt, 0);
    pic_setup(0x20, 0x28, 0xFF, 0xFF);
    snprintf(result, sizeof result, "-> %s, woken %s", trap_result(trapped), last_trap.irqs > before ? "yes" : "NO");
    return result;
}

static void do_invlpg(void *arg) { __asm__ volatile("invlpg (%0)" : : "r"(arg) : "memory"); }

static const char *op_invlpg(void) {
    uint64_t va = any_value();
    int trapped = fz_try(do_invlpg, (void *)va);
    snprintf(result, sizeof result, "%lx -> %s", va, trap_result(trapped));
    return result;
}

/* ---- crafted returns, the call gate, interrupts, exceptions ---- */

static uint64_t user_target(void) {
    if (chance(20)) return (uint64_t)user_int_table + 4 * below(256);
    if (chance(10)) return any_value();
    uint64_t stub = below(USER_STUBS);
    if (stub == 5 && !gate) stub = 0; /* the far call through the call gate: only with seed bit 60 */
    return (uint64_t)user_stubs + 16 * stub;
}

/* A return target that may run at ring 0: the landing pad, or an address
 * the kernel does not map (running its own code at a random place would
 * corrupt it on a PC as anywhere). */
static uint64_t ring0_target(uint64_t rip) {
    return rip < MAP_END ? (uint64_t)fz_back : rip;
}

static uint64_t any_flags(void) {
    uint64_t f = chance(50) ? 0x202 : (rnd() & 0x3F7FD5) | 2;
    if (chance(70)) f &= ~PC_RFLAGS_TF;
    return f;
}

static const char *returned(int trapped) {
    const char *r = trap_result(trapped);
    if (fz_landed) {
        uint64_t where = fz_landed;
        fz_landed = 0;
        return where == 2 ? "target reached" : "landed";
    }
    return r;
}

static const char *op_iretq(void) {
    uint64_t frame[5];
    uint64_t user_top = (uint64_t)user_stack + PC_PAGE - 64, kernel_top = (uint64_t)alt_stack + sizeof alt_stack - 64;
    unsigned kind = (unsigned)below(3);
    if (kind == 0) { /* to ring 0 */
        frame[0] = (uint64_t)fz_back, frame[1] = PC_KERNEL_CS, frame[2] = any_flags(), frame[3] = kernel_top;
        frame[4] = chance(80) ? PC_KERNEL_DS : 0;
    } else if (kind == 1) { /* to ring 3 */
        frame[0] = user_target(), frame[1] = PC_USER_CS | 3, frame[2] = any_flags(), frame[3] = user_top;
        frame[4] = PC_USER_DS | 3;
    } else { /* anything */
        frame[0] = chance(50) ? (uint64_t)fz_back : ring0_target(user_target()), frame[1] = any_selector();
        frame[2] = any_flags(), frame[3] = chance(50) ? user_top : any_value(), frame[4] = any_selector();
    }
    int trapped = fz_try((void (*)(void *))fz_iretq, frame);
    snprintf(result, sizeof result, "rip %lx cs %lx fl %lx rsp %lx ss %lx -> %s", frame[0], frame[1], frame[2],
             frame[3], frame[4], returned(trapped));
    return result;
}

static const char *op_lretq(void) {
    uint64_t frame[4];
    if (chance(40))
        frame[0] = (uint64_t)fz_back, frame[1] = PC_KERNEL_CS | (chance(20) ? below(4) : 0);
    else if (chance(50))
        frame[0] = user_target(), frame[1] = PC_USER_CS | 3;
    else
        frame[0] = chance(50) ? (uint64_t)fz_back : ring0_target(any_value()), frame[1] = any_selector();
    frame[2] = (uint64_t)user_stack + PC_PAGE - 64;
    frame[3] = chance(70) ? PC_USER_DS | 3 : any_selector();
    int trapped = fz_try((void (*)(void *))fz_lretq, frame);
    snprintf(result, sizeof result, "rip %lx cs %lx rsp %lx ss %lx -> %s", frame[0], frame[1], frame[2], frame[3],
             returned(trapped));
    return result;
}

static void do_sysretq(void *arg) {
    uint64_t *a = arg;
    fz_sysretq(a[0], a[1], a[2]);
}

static const char *op_sysretq(void) {
    uint64_t a[3] = {user_target(), any_flags(), (uint64_t)user_stack + PC_PAGE - 64};
    if (!unsafe || chance(70)) a[1] &= ~0x20000UL; /* VM: the CPU masks it, QEMU 7.2 loads it (a VM86 ring 0) */
    int trapped = fz_try(do_sysretq, a);
    snprintf(result, sizeof result, "rip %lx fl %lx -> %s", a[0], a[1], returned(trapped));
    return result;
}

static void do_callgate(void *arg) {
    (void)arg;
    fz_callgate();
}

/* A far call through the DPL 3 call gate to the kernel's DPL 0 code: from
 * ring 0 here, or from ring 3 by a crafted iretq to the user stub. */
static const char *op_callgate(void) {
    int trapped;
    const char *from = "ring 0";
    if (chance(50)) {
        trapped = fz_try(do_callgate, 0);
    } else {
        uint64_t frame[5] = {(uint64_t)user_stubs + 16 * 5, PC_USER_CS | 3, 0x2, (uint64_t)user_stack + PC_PAGE - 64,
                             PC_USER_DS | 3};
        trapped = fz_try((void (*)(void *))fz_iretq, frame);
        from = "ring 3";
    }
    int landed = fz_landed == 2;
    fz_landed = 0;
    snprintf(result, sizeof result, "from %s -> %s%s", from, trap_result(trapped), landed ? ", target reached" : "");
    return result;
}

static void do_int(void *arg) { fz_int((unsigned)(uint64_t)arg); }

static const char *op_int(void) {
    unsigned n = chance(40) ? (unsigned)below(32) : (unsigned)below(256);
    uint64_t before = last_trap.irqs;
    int trapped = fz_try(do_int, (void *)(uint64_t)n);
    snprintf(result, sizeof result, "%u -> %s%s", n, trap_result(trapped), last_trap.irqs > before ? " (handled)" : "");
    return result;
}

static void do_exception(void *arg) {
    switch ((uint64_t)arg) {
    case 0: __asm__ volatile("ud2"); break;
    case 1: __asm__ volatile("int3"); break;
    case 2: __asm__ volatile(".byte 0xCE"); break; /* into: #UD in 64-bit mode */
    case 3: {
        uint64_t zero = 0, a = 1, d = 0;
        __asm__ volatile("divq %2" : "+a"(a), "+d"(d) : "r"(zero));
        break;
    }
    case 4: __asm__ volatile(".byte 0xF1"); break; /* int1 (icebp) */
    case 5: __asm__ volatile("movq (%0), %%rax" : : "r"(0x8000000000000000UL) : "rax"); break; /* non-canonical */
    case 6: __asm__ volatile("syscall" : : : "rcx", "r11", "memory"); break; /* from ring 0 */
    default: __asm__ volatile("pushq %0; popfq; nop" : : "r"(0x302UL) : "cc"); break; /* TF: #DB */
    }
}

static const char *op_exception(void) {
    static const char *const names[] = {"ud2", "int3", "into", "div0", "icebp", "noncanon", "syscall", "tf"};
    unsigned k = (unsigned)below(8);
    int trapped = fz_try(do_exception, (void *)(uint64_t)k);
    snprintf(result, sizeof result, "%s -> %s", names[k], trap_result(trapped));
    return result;
}

/* ---- port I/O ---- */

/* Ports a real PC must not be sent random bytes on (reset, power off, SMI,
 * PCI configuration, the debug exit, PC_COM1 which carries the log). */
static int denied(uint16_t port, unsigned width) {
    for (unsigned k = 0; k < width; k++) {
        uint16_t p = (uint16_t)(port + k);
        if ((p >= 0x60 && p <= 0x64) || p == 0x92 || p == 0xB2 || p == 0xB3 || (p >= 0xF0 && p <= 0xF7) ||
            (p >= 0x3F8 && p <= 0x3FF) || (p >= 0x400 && p <= 0x7FF) || (p >= 0xAE00 && p <= 0xAFFF) ||
            (p >= 0xCF8 && p <= 0xCFF) || p >= 0xC000)
            return 1;
    }
    return 0;
}

static uint16_t any_port(unsigned width) {
    static const uint16_t devices[] = {0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0x80,
                                       0x2F8, 0x2F9, 0x2FB, 0x2FD, 0x3E8, 0x3EA, 0x2E8, 0x2ED, 0xED, 0x3C0, 0x1F0};
    for (;;) {
        uint16_t p = chance(60) ? devices[below(sizeof devices / sizeof devices[0])] : (uint16_t)rnd();
        if (!denied(p, width)) return p;
    }
}

struct io_args {
    uint16_t port;
    unsigned width;
    uint32_t value;
};
static void do_out(void *arg) {
    struct io_args *a = arg;
    if (a->width == 1) __asm__ volatile("outb %b0, %w1" : : "a"(a->value), "Nd"(a->port));
    if (a->width == 2) __asm__ volatile("outw %w0, %w1" : : "a"(a->value), "Nd"(a->port));
    if (a->width == 4) __asm__ volatile("outl %0, %w1" : : "a"(a->value), "Nd"(a->port));
}
static void do_in(void *arg) {
    struct io_args *a = arg;
    uint32_t v = 0;
    if (a->width == 1) __asm__ volatile("inb %w1, %b0" : "+a"(v) : "Nd"(a->port));
    if (a->width == 2) __asm__ volatile("inw %w1, %w0" : "+a"(v) : "Nd"(a->port));
    if (a->width == 4) __asm__ volatile("inl %w1, %0" : "+a"(v) : "Nd"(a->port));
    a->value = v;
}

static const char *op_port(int out) {
    static const unsigned widths[] = {1, 1, 1, 2, 4};
    struct io_args a = {0, widths[below(5)], (uint32_t)rnd()};
    a.port = any_port(a.width);
    int trapped = fz_try(out ? do_out : do_in, &a);
    pic_setup(0x20, 0x28, 0xFF, 0xFF); /* whatever the write did to the 8259s: masked again */
    snprintf(result, sizeof result, "%x/%u%s%x -> %s", a.port, a.width, out ? " = " : ": ", out ? a.value : 0,
             trap_result(trapped));
    if (!out && !trapped) snprintf(result + strlen(result), sizeof result - strlen(result), " %x", a.value);
    return result;
}

/* rep insb/outsb: a buffer of the kernel's, or an unmapped or kernel-text address. */
struct string_io {
    uint16_t port;
    uint64_t address, count, df;
    int in;
};
static void do_string_io(void *arg) {
    struct string_io *s = arg;
    uint64_t a = s->address, c = s->count;
    if (s->df) __asm__ volatile("std");
    if (s->in)
        __asm__ volatile("rep insb" : "+D"(a), "+c"(c) : "d"(s->port) : "memory");
    else
        __asm__ volatile("rep outsb" : "+S"(a), "+c"(c) : "d"(s->port) : "memory");
    __asm__ volatile("cld");
}

static const char *op_string_io(void) {
    struct string_io s = {any_port(1), (uint64_t)io_buffer + 64 + below(PC_PAGE - 128), below(48), chance(20), chance(50)};
    if (chance(20)) s.address = chance(50) ? 0x8000000000UL + below(1UL << 30) : 0x100000 + below(0x10000);
    if (s.in && s.address < (uint64_t)io_buffer) s.in = 0; /* never into the kernel's own text */
    int trapped = fz_try(do_string_io, &s);
    pic_setup(0x20, 0x28, 0xFF, 0xFF);
    snprintf(result, sizeof result, "rep %s %x %lx x%lu%s -> %s", s.in ? "insb" : "outsb", s.port, s.address,
             s.count, s.df ? " std" : "", trap_result(trapped));
    return result;
}

/* ---- the devices ---- */

static const char *op_pic(void) {
    unsigned n = 1 + (unsigned)below(6);
    for (unsigned k = 0; k < n; k++) {
        uint16_t port = (uint16_t)((chance(50) ? PC_PIC1 : PC_PIC2) + below(2));
        outb(port, (uint8_t)(chance(50) ? rnd() : (0x11 | (below(4) << 1)) ^ (below(2) << 4)));
    }
    uint8_t irr, isr;
    outb(PC_PIC1, 0x0A);
    irr = inb(PC_PIC1);
    outb(PC_PIC1, 0x0B);
    isr = inb(PC_PIC1);
    uint8_t mask = inb(PC_PIC1 + 1);
    pic_setup(0x20, 0x28, 0xFF, 0xFF);
    snprintf(result, sizeof result, "%u writes -> irr %x isr %x imr %x", n, irr, isr, mask);
    return result;
}

static const char *op_pit(void) {
    uint8_t command = (uint8_t)rnd();
    if (chance(60)) command &= 0x3F; /* channel 0 */
    uint16_t divisor = chance(40) ? (uint16_t)below(4) : (uint16_t)rnd();
    outb(PIT_CMD, command);
    unsigned channel = command >> 6;
    if (channel < 3) {
        outb((uint16_t)(PIT_CH0 + channel), (uint8_t)divisor);
        outb((uint16_t)(PIT_CH0 + channel), (uint8_t)(divisor >> 8));
    }
    snprintf(result, sizeof result, "command %x count %x -> ok", command, divisor);
    return result;
}

/* An interrupt storm: the 8259s at random vectors (32 and up), IRQ 0 and
 * others unmasked, the PIT at an extreme rate, maybe the UART's
 * transmitter interrupt on, interrupts on for a while, software interrupts
 * in between. */
struct storm {
    unsigned spins;
    unsigned soft;
};
static void do_storm(void *arg) {
    struct storm *s = arg;
    __asm__ volatile("sti");
    for (unsigned i = 0; i < s->spins; i++) {
        if (s->soft && i % 64 == 0) fz_int(32 + (unsigned)(i / 64 % 224));
        __asm__ volatile("pause");
    }
    __asm__ volatile("cli");
}

static const char *op_storm(void) {
    uint8_t master = (uint8_t)(0x20 + 8 * below(28)), slave = (uint8_t)(0x20 + 8 * below(28));
    uint8_t mask1 = (uint8_t)(chance(50) ? 0xFE : rnd() & 0xFE), mask2 = (uint8_t)(chance(50) ? 0xFF : rnd());
    static const uint16_t rates[] = {1, 2, 3, 8, 50, 1193, 11932, 0};
    uint16_t divisor = chance(70) ? rates[below(8)] : (uint16_t)rnd();
    uint8_t mode = (uint8_t)(0x30 | (below(6) << 1));
    int thri = chance(20);
    struct storm s = {100 + (unsigned)below(500), chance(30)};
    uint64_t before = last_trap.irqs;
    pic_setup(master, slave, mask1, mask2);
    pit_setup(mode, divisor);
    if (thri) outb(PC_COM1 + 1, 0x02);
    int trapped = fz_try(do_storm, &s);
    outb(PC_COM1 + 1, 0x00);
    pic_setup(0x20, 0x28, 0xFF, 0xFF);
    pit_setup(0x34, 0);
    snprintf(result, sizeof result, "pic %x/%x masks %x/%x pit %x/%u%s spins %u%s -> %s, %s", master, slave, mask1,
             mask2, mode, divisor, thri ? " uart-thri" : "", s.spins, s.soft ? " +int" : "", trap_result(trapped),
             last_trap.irqs > before ? "interrupted" : "quiet");
    return result;
}

static const char *op_uart(void) {
    static const uint8_t regs[] = {1, 2, 3, 4, 7};
    unsigned n = 1 + (unsigned)below(4);
    for (unsigned k = 0; k < n; k++) outb((uint16_t)(PC_COM1 + regs[below(5)]), (uint8_t)rnd());
    uint8_t iir = inb(PC_COM1 + 2), lsr = inb(PC_COM1 + 5), msr = inb(PC_COM1 + 6);
    pc_uart_init(PC_COM1);
    snprintf(result, sizeof result, "%u writes -> iir %x lsr %x msr %x", n, iir, lsr, msr);
    return result;
}

/* ---- the rest of the privileged and sensitive instructions ---- */

static void do_misc(void *arg) {
    uint64_t *a = arg;
    uint32_t lo, hi;
    switch (a[0]) {
    case 0: __asm__ volatile("wbinvd"); break;
    case 1: __asm__ volatile("invd"); break;
    case 2: __asm__ volatile("clts"); break;
    case 3: __asm__ volatile("swapgs; swapgs"); break;
    case 4: __asm__ volatile("lmsw %w0" : : "r"(a[1]) : "memory"); break;
    case 5: __asm__ volatile("mov %0, %%dr0" : : "r"(a[1])); break;
    case 6: __asm__ volatile("mov %0, %%dr7" : : "r"((a[1] & ~0x20FFUL) | 0x400)); break;
    case 7: __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); a[2] = lo != 0 || hi != 0; break;
    case 8: __asm__ volatile("rdpmc" : "=a"(lo), "=d"(hi) : "c"((uint32_t)a[1])); break;
    case 9: __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); break;
    case 10: __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi) : : "rcx"); break;
    case 11: __asm__ volatile("monitor" : : "a"(io_buffer), "c"(0), "d"(0)); break;
    case 12: __asm__ volatile("cpuid" : "=a"(lo), "=d"(hi) : "a"((uint32_t)a[1]), "c"(0) : "rbx"); a[2] = lo; break;
    case 13: __asm__ volatile("mov %%cs, %%ax; verr %%ax; verw %%ax; lar %%ax, %%ax; lsl %%ax, %%ax" : : : "rax", "cc"); break;
    default: __asm__ volatile("sgdt (%0)" : : "r"(a[1]) : "memory"); break;
    }
}

static const char *op_misc(void) {
    static const char *const names[] = {"wbinvd", "invd", "clts", "swapgs", "lmsw", "dr0", "dr7", "rdtsc",
                                        "rdpmc", "xgetbv", "rdtscp", "monitor", "cpuid", "verr", "sgdt-to"};
    uint64_t cr0 = read_cr0();
    uint64_t a[3] = {below(15), chance(30) ? below(16) : any_value(), 0};
    if (a[0] == 12) a[1] = chance(50) ? below(0x20) : 0x80000000 + below(0x20);
    if (a[0] == 14) a[1] = chance(50) ? (uint64_t)io_buffer + below(PC_PAGE - 16) : any_value();
    if (a[0] == 14 && a[1] < MAP_END + 16 && (a[1] < (uint64_t)io_buffer || a[1] + 16 > (uint64_t)io_buffer + PC_PAGE))
        a[1] = (uint64_t)io_buffer; /* never over the kernel itself (its GDT, its tables) */
    int trapped = fz_try(do_misc, a);
    write_cr0(cr0);
    __asm__ volatile("mov %0, %%dr7" : : "r"(0x400UL));
    snprintf(result, sizeof result, "%s %lx -> %s", names[a[0]], a[1], trap_result(trapped));
    if (a[0] == 12 && !trapped) snprintf(result + strlen(result), sizeof result - strlen(result), " eax %lx", a[2]);
    return result;
}

/* ---- the fatal endings (seed bit 63): a PC does not survive them ---- */

static void fatal_end_op(void) {
    unsigned k = (unsigned)below(4);
    static const char *const names[] = {"fatal-triple", "fatal-cr3", "fatal-exit", "fatal-ring0-jump"};
    pc_printf("end %s", names[k]);
    if (k == 0) { /* an IDT of limit 0: int3 -> #GP -> #DF -> shutdown */
        struct pc_table_reg none = {0, 0};
        __asm__ volatile("lidt %0; int3" : : "m"(none));
    } else if (k == 1) {
        op_write_cr(3, 1);
    } else if (k == 2) {
        outb(PC_DEBUG_EXIT_PORT, (uint8_t)(1 + below(255)));
    } else {
        ((void (*)(void))(MAP_END + below(60UL << 20)))();
    }
    pc_printf(" -> survived\n");
}

/* ---- the schedule ---- */

struct op {
    const char *name;
    unsigned weight;
};
static struct op ops[] = {
    {"lgdt", 3}, {"lidt", 3}, {"sdesc", 2}, {"ltr", 3}, {"lldt", 2}, {"movseg", 3}, {"junkdesc", 2},
    {"wrcr0", 3}, {"wrcr3", 3}, {"wrcr4", 3}, {"wrcr8", 1}, {"rdcr", 2}, {"wrmsr", 5}, {"rdmsr", 3},
    {"invlpg", 2}, {"hlt", 2}, {"flags", 4}, {"iretq", 5}, {"lretq", 3}, {"sysretq", 4}, {"callgate", 1},
    {"int", 5}, {"exception", 3}, {"out", 6}, {"in", 4}, {"strio", 2}, {"pic", 3}, {"pit", 3}, {"storm", 3},
    {"uart", 1}, {"ptmap", 10}, {"ptunmap", 4}, {"ptself", 3}, {"ptlive", 4}, {"ptroot", 3}, {"misc", 5},
};
#define N_OPS (sizeof ops / sizeof ops[0])

static const char *run_op(unsigned k) {
    switch (k) {
    case 0: return op_lgdt_lidt(0);
    case 1: return op_lgdt_lidt(1);
    case 2: return op_store_descriptors();
    case 3: return op_ltr_lldt(0);
    case 4: return op_ltr_lldt(1);
    case 5: return op_movseg();
    case 6: return op_junk_descriptors();
    case 7: return op_write_cr(0, 0);
    case 8: return op_write_cr(3, 0);
    case 9: return op_write_cr(4, 0);
    case 10: return op_write_cr(8, 0);
    case 11: return op_read_cr();
    case 12: return op_msr(1);
    case 13: return op_msr(0);
    case 14: return op_invlpg();
    case 15: return op_hlt();
    case 16: return op_flags();
    case 17: return op_iretq();
    case 18: return op_lretq();
    case 19: return op_sysretq();
    case 20: return op_callgate();
    case 21: return op_int();
    case 22: return op_exception();
    case 23: return op_port(1);
    case 24: return op_port(0);
    case 25: return op_string_io();
    case 26: return op_pic();
    case 27: return op_pit();
    case 28: return op_storm();
    case 29: return op_uart();
    case 30: return op_pt_map();
    case 31: return op_pt_unmap();
    case 32: return op_pt_selfref();
    case 33: return op_pt_live();
    case 34: return op_pt_altroot();
    default: return op_misc();
    }
}

void run_ops(unsigned count, int fatal_end) {
    unsigned total = 0;
    if (!gate) ops[20].weight = 0; /* callgate */
    for (unsigned k = 0; k < N_OPS; k++) total += ops[k].weight;
    for (unsigned i = 0; i < count; i++) {
        unsigned pick = (unsigned)below(total), k = 0;
        while (pick >= ops[k].weight) pick -= ops[k++].weight;
        pc_printf("%03u %s ", i, ops[k].name);
        const char *r = run_op(k);
        pc_printf("%s\n", r);
    }
    if (fatal_end) fatal_end_op();
}
