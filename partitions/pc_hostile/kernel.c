/* A full guest that attacks its own virtual hardware (tests/test_fullvirt.py, spk review).
 *
 * The first byte received on COM1 picks the attack (`stdin = "1"` in
 * partitions.toml, Machine.serial_input from a test):
 *   1  a call gate in its own GDT to a DPL 0 code segment, then a far call
 *      through it from ring 0 (real CPL 1): the CPL-0 tripwire must end it;
 *   2  a page-table entry naming memory far beyond its quota, then a read
 *      through it: the guest gets a page fault (its memory ends there);
 *   3  CR3 naming memory beyond its quota: #GP;
 *   4  an IDT with no gates, then a page fault: #DF cannot be delivered
 *      either, a triple fault ends it;
 *   5  rdtsc twice with work between: virtual time, and the same numbers
 *      on every run (determinism).
 * It prints what it saw, then exits through the debug-exit port. */
#include "pc.h"

static uint8_t pool[16][PC_PAGE] __attribute__((aligned(4096)));
static volatile int faults;

static struct pc_frame *trap(struct pc_frame *f)
{
    if (f->vector == 14 || f->vector == 13) {
        faults++;
        pc_printf("trap %lu error %#lx cr2 %#lx\n", f->vector, f->error, f->vector == 14 ? read_cr2() : 0UL);
        pc_exit(0);
    }
    pc_printf("unexpected vector %lu\n", f->vector);
    pc_exit(3);
}

void kernel_main(void);
void kernel_main(void)
{
    pc_uart_init(PC_COM1);
    pc_gdt_init();
    pc_idt_init(trap);
    pc_pages_init(pool, 16);
    uint64_t *pml4 = pc_kernel_map(0x400000);
    write_cr3((uint64_t)pml4);
    int mode;
    while ((mode = pc_uart_getc(PC_COM1)) < 0) {
    }
    switch (mode - '0') {
    case 1: {
    /* Its own GDT: pc_gdt's eight entries plus a 64-bit call gate (16 bytes) at
     * selector 0x40, DPL 3 (usable from any ring), to 0x08:hostile_target; then a far call through it. */
    static uint64_t gdt[10];
    extern char hostile_target[];
    uint64_t target = (uint64_t)hostile_target;
    for (int i = 0; i < 8; i++) gdt[i] = pc_gdt[i];
    gdt[8] = (target & 0xFFFF) | (0x08UL << 16) | (0xECUL << 40) | (((target >> 16) & 0xFFFF) << 48);
    gdt[9] = target >> 32;
    struct pc_table_reg gdtr = {sizeof gdt - 1, (uint64_t)gdt};
    __asm__ volatile("lgdt %0" : : "m"(gdtr));
    static uint8_t ring0_stack[4096] __attribute__((aligned(16)));
    pc_set_kernel_stack((uint64_t)(ring0_stack + sizeof ring0_stack)); /* the gate's ring-0 stack */
    pc_printf("calling through a gate\n");
    static const struct { uint32_t offset; uint16_t selector; } __attribute__((packed)) far = {0, 0x40};
    __asm__ volatile("lcall *%0\n.globl hostile_target\nhostile_target:\n nop" : : "m"(far) : "memory");
    pc_printf("reached ring 0 through the gate\n");
    pc_exit(0);
    }
    case 2: {
    uint64_t far_frame = 0x40000000UL; /* 1 GiB: beyond a few MiB of quota */
    pc_map(pml4, 0x800000, far_frame, PC_PTE_P | PC_PTE_W);
    pc_printf("reading beyond my memory\n");
    volatile uint64_t *p = (volatile uint64_t *)0x800000;
    pc_printf("read %#lx\n", *p);
    pc_exit(0);
    }
    case 3:
    pc_printf("cr3 beyond my memory\n");
    write_cr3(0x7F000000UL);
    pc_printf("cr3 accepted\n");
    pc_exit(0);
    case 4: {
    struct pc_table_reg empty = {0, 0};
    __asm__ volatile("lidt %0" : : "m"(empty));
    pc_printf("no IDT, now a page fault\n");
    *(volatile uint64_t *)0x10 = 1; /* page 0 is not mapped */
    pc_printf("survived\n");
    pc_exit(0);
    }
    case 5: {
    uint64_t a = rdtsc();
    for (volatile int i = 0; i < 1000; i++) {
    }
    uint64_t b = rdtsc();
    pc_printf("tsc %lu then %lu\n", a, b);
    pc_exit(0);
    }
    default:
        pc_printf("no attack %d\n", mode);
        pc_exit(3);
    }
}
