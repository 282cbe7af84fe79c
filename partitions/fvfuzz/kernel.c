/* fvfuzz: an unmodified x86-64 PC kernel that fuzzes the machine it runs on.
 *
 * It reads an 8-byte seed from PC_COM1's receive buffer, sets up a normal PC
 * kernel's state (GDT with TSS, LDT and a call gate, IDT for all 256
 * vectors, its own page tables, 8259s, 8253, EFER/STAR/LSTAR) and then,
 * driven by a PRNG, performs random privileged instructions, page-table
 * writes, port I/O and interrupt storms (ops.c, paging.c). Each operation
 * runs under the recovery harness of boot.S: an exception ends it and the
 * kernel goes on. It logs one line per operation on PC_COM1, written in two
 * halves: "NNN name args" before the operation, " -> result" after, so a
 * machine that stops the kernel mid-operation leaves the culprit as the
 * last, unterminated line. It ends with "fvfuzz: end ..." and status 0 on
 * port 0xF4 (QEMU's isa-debug-exit; the SPK ends the partition there).
 *
 * On a real PC (QEMU) every operation is survivable but for the one
 * optional fatal ending (seed bit 63, docs/fuzzing.md): the kernel keeps its
 * own state sane around each operation and restores it after. */
#include "fvfuzz.h"

#define SEED_POLLS 4000000 /* LSR polls per seed byte before giving up (seconds on QEMU; the SPK has them at once) */

/* The seed: 8 bytes, little-endian, from COM1's receive buffer (read before
 * pc_uart_init, whose FIFO reset would drop a byte already received). */
static uint64_t read_seed(int *got) {
    uint64_t seed = 0;
    *got = 0;
    for (int i = 0; i < 8; i++) {
        long polls = SEED_POLLS;
        while (!pc_uart_rx_ready(PC_COM1) && --polls) {
        }
        if (!polls) return seed;
        seed |= (uint64_t)(pc_uart_getc(PC_COM1) & 0xFF) << (8 * i);
        *got = i + 1;
    }
    return seed;
}

/* ---- PRNG ---- */

static uint64_t prng_state;

uint64_t rnd(void) {
    uint64_t x = prng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    prng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- segments ---- */


uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(16)));
static uint64_t ldt[4] __attribute__((aligned(16)));
static struct pc_tss tss[2] __attribute__((aligned(16)));
static struct pc_idt_gate idt[256] __attribute__((aligned(4096)));
struct pc_table_reg good_gdtr, good_idtr;
static uint8_t kstack[2 * PC_PAGE] __attribute__((aligned(16)));    /* TSS.RSP0: traps from ring 3 */
static uint8_t ist_stack[2 * PC_PAGE] __attribute__((aligned(16))); /* IST1: every exception */
uint8_t user_stack[PC_PAGE] __attribute__((aligned(4096)));
uint8_t alt_stack[2 * PC_PAGE] __attribute__((aligned(16)));
uint8_t io_buffer[PC_PAGE] __attribute__((aligned(4096)));
uint8_t ret_page[PC_PAGE] __attribute__((aligned(4096)));

static uint64_t system_descriptor(uint64_t base, uint64_t limit, uint64_t type, uint64_t *high) {
    *high = base >> 32;
    return (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | type << 40 | ((limit >> 16) & 0xF) << 48 |
           ((base >> 24) & 0xFF) << 56;
}

/* Both TSS descriptors available again and TR back on the first (after an ltr of a random selector). */
void tss_restore(void) {
    gdt[PC_TSS_SEL / 8] &= ~(2ULL << 40);
    gdt[TSS2_SEL / 8] &= ~(2ULL << 40);
    __asm__ volatile("ltr %0" : : "r"((uint16_t)PC_TSS_SEL));
}

static void load_segments(void) {
    gdt[0] = 0;
    gdt[PC_KERNEL_CS / 8] = 0x00AF9A000000FFFFULL;
    gdt[PC_KERNEL_DS / 8] = 0x00CF92000000FFFFULL;
    gdt[PC_USER32_CS / 8] = 0x00CFFA000000FFFFULL;
    gdt[PC_USER_DS / 8] = 0x00CFF2000000FFFFULL;
    gdt[PC_USER_CS / 8] = 0x00AFFA000000FFFFULL;
    for (int i = 0; i < 2; i++) {
        tss[i].rsp0 = (uint64_t)(kstack + sizeof kstack);
        tss[i].ist[0] = (uint64_t)(ist_stack + sizeof ist_stack);
        tss[i].iomap_base = sizeof tss[i];
        int slot = (i ? TSS2_SEL : PC_TSS_SEL) / 8;
        gdt[slot] = system_descriptor((uint64_t)&tss[i], sizeof tss[i] - 1, 0x89, &gdt[slot + 1]);
    }
    /* the call gate: type 0xC (64-bit call gate), present, DPL 3, to PC_KERNEL_CS:gate_target */
    uint64_t target = (uint64_t)gate_target;
    gdt[GATE_SEL / 8] = (target & 0xFFFF) | (uint64_t)PC_KERNEL_CS << 16 | 0xECULL << 40 | (target >> 16 & 0xFFFF) << 48;
    gdt[GATE_SEL / 8 + 1] = target >> 32;
    ldt[1] = 0x00CFF2000000FFFFULL; /* an LDT data segment, DPL 3 */
    ldt[2] = 0x00AF9A000000FFFFULL; /* and a DPL 0 code segment */
    gdt[LDT_SEL / 8] = system_descriptor((uint64_t)ldt, sizeof ldt - 1, 0x82, &gdt[LDT_SEL / 8 + 1]);
    good_gdtr = (struct pc_table_reg){sizeof gdt - 1, (uint64_t)gdt};
    pc_gdt_load(&good_gdtr);
}

static void load_idt(void) {
    for (int v = 0; v < 256; v++) {
        uint64_t a = (uint64_t)isr_base + 16 * (uint64_t)v;
        int user = v == 3 || v == 4 || v == 0x80; /* int3, into and int 0x80 reachable from ring 3 */
        idt[v] = (struct pc_idt_gate){(uint16_t)a, PC_KERNEL_CS, (uint8_t)(v < 32 ? 1 : 0),
                                   (uint8_t)(user ? 0xEE : 0x8E), (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0};
    }
    good_idtr = (struct pc_table_reg){sizeof idt - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" : : "m"(good_idtr));
}

/* ---- 8259s and 8253 ---- */

void pic_setup(uint8_t master_base, uint8_t slave_base, uint8_t master_mask, uint8_t slave_mask) {
    outb(PC_PIC1 + 1, 0xFF);
    outb(PC_PIC2 + 1, 0xFF);
    outb(PC_PIC1, 0x11);
    outb(PC_PIC2, 0x11);
    outb(PC_PIC1 + 1, master_base);
    outb(PC_PIC2 + 1, slave_base);
    outb(PC_PIC1 + 1, 0x04);
    outb(PC_PIC2 + 1, 0x02);
    outb(PC_PIC1 + 1, 0x01);
    outb(PC_PIC2 + 1, 0x01);
    outb(PC_PIC1 + 1, master_mask);
    outb(PC_PIC2 + 1, slave_mask);
}

void pit_setup(uint8_t command, uint16_t divisor) {
    outb(PIT_CMD, command);
    outb(PIT_CH0, (uint8_t)divisor);
    outb(PIT_CH0, (uint8_t)(divisor >> 8));
}

/* ---- traps ---- */

struct frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

struct trap_record last_trap;
extern uint64_t fz_armed;

/* Every vector comes here. Interrupts (32-255, from a device or `int n`)
 * are counted, acknowledged at both 8259s and resumed; exceptions record
 * what happened and resume at the armed recovery point (return 0). */
uint64_t fz_trap(struct frame *f);
uint64_t fz_trap(struct frame *f) {
    if (f->vector >= 32) {
        last_trap.irqs++;
        outb(PC_PIC2, 0x20);
        outb(PC_PIC1, 0x20);
        return 1;
    }
    last_trap.count++;
    last_trap.vector = f->vector;
    last_trap.error = f->error;
    last_trap.cs = f->cs;
    last_trap.cr2 = f->vector == 14 ? read_cr2() : 0;
    return 0;
}

/* An exception with no operation running: the kernel itself is broken. */
void fz_unarmed(void);
void fz_unarmed(void) {
    __asm__ volatile("lgdt %0; lidt %1" : : "m"(good_gdtr), "m"(good_idtr));
    pc_uart_init(PC_COM1);
    pc_printf("\nfvfuzz: exception %lu (error %#lx, cr2 %#lx) outside an operation: stopping\n", last_trap.vector,
            last_trap.error, last_trap.cr2);
    pc_exit(3);
}

/* ---- start-up ---- */

void kernel_main(void);
void kernel_main(void) {
    __asm__ volatile("mov %0, %%cr0" : : "r"(0x80010033UL));
    __asm__ volatile("mov %0, %%cr4" : : "r"(0x20UL));
    int got;
    uint64_t seed = read_seed(&got);
    pc_uart_init(PC_COM1);
    prng_state = seed ? seed : 0x9E3779B97F4A7C15ULL;
    unsigned ops = 32 + (unsigned)(seed >> 48 & 63);
    int fatal_end = (int)(seed >> 63);
    unsafe = (int)(seed >> 62 & 1);
    reach_beyond = (int)(seed >> 61 & 1);
    gate = (int)(seed >> 60 & 1);
    pc_printf("fvfuzz: seed %016lx (%d bytes), %u ops%s%s%s%s\n", seed, got, ops, gate ? ", gate" : "",
              reach_beyond ? ", beyond" : "", unsafe ? ", unsafe" : "", fatal_end ? ", fatal end" : "");
    load_segments();
    load_idt();
    paging_init();
    pic_setup(0x20, 0x28, 0xFF, 0xFF);
    wrmsr(PC_MSR_EFER, rdmsr(PC_MSR_EFER) | 1 | 1 << 11); /* SCE, NXE */
    wrmsr(PC_MSR_STAR, (uint64_t)(PC_USER32_CS | 3) << 48 | (uint64_t)PC_KERNEL_CS << 32);
    wrmsr(PC_MSR_LSTAR, (uint64_t)syscall_entry);
    wrmsr(PC_MSR_SFMASK, PC_RFLAGS_IF | PC_RFLAGS_TF | 0x400);
    memset(ret_page, 0xC3, sizeof ret_page);
    pc_printf("fvfuzz: ready\n");
    run_ops(ops, fatal_end);
    pc_printf("fvfuzz: end, %u ops, %lu exceptions\n", ops, last_trap.count);
    pc_exit(0);
}
