/* Segments, interrupt gates and system calls of a bare PC kernel (pc.h):
 * the GDT with its TSS, the IDT of the library's stubs (boot.S), the
 * syscall MSRs. */
#include "pc.h"

uint64_t pc_gdt[8] __attribute__((aligned(16)));
struct pc_tss pc_tss __attribute__((aligned(16)));
struct pc_idt_gate pc_idt[256] __attribute__((aligned(4096)));

/* boot.S */
extern pc_handler_fn pc_trap_handler, pc_syscall_handler;
extern uint64_t pc_kernel_rsp;
extern char pc_isr0[], pc_isr1[], pc_isr2[], pc_isr3[], pc_isr4[], pc_isr5[], pc_isr6[], pc_isr7[], pc_isr8[],
    pc_isr9[], pc_isr10[], pc_isr11[], pc_isr12[], pc_isr13[], pc_isr14[], pc_isr15[], pc_isr16[], pc_isr17[],
    pc_isr18[], pc_isr19[], pc_isr20[], pc_isr21[], pc_isr22[], pc_isr23[], pc_isr24[], pc_isr25[], pc_isr26[],
    pc_isr27[], pc_isr28[], pc_isr29[], pc_isr30[], pc_isr31[], pc_isr32[], pc_isr33[], pc_isr34[], pc_isr35[],
    pc_isr36[], pc_isr37[], pc_isr38[], pc_isr39[], pc_isr40[], pc_isr41[], pc_isr42[], pc_isr43[], pc_isr44[],
    pc_isr45[], pc_isr46[], pc_isr47[], pc_isr128[];

static char *const stubs[48] = {
    pc_isr0,  pc_isr1,  pc_isr2,  pc_isr3,  pc_isr4,  pc_isr5,  pc_isr6,  pc_isr7,  pc_isr8,  pc_isr9,
    pc_isr10, pc_isr11, pc_isr12, pc_isr13, pc_isr14, pc_isr15, pc_isr16, pc_isr17, pc_isr18, pc_isr19,
    pc_isr20, pc_isr21, pc_isr22, pc_isr23, pc_isr24, pc_isr25, pc_isr26, pc_isr27, pc_isr28, pc_isr29,
    pc_isr30, pc_isr31, pc_isr32, pc_isr33, pc_isr34, pc_isr35, pc_isr36, pc_isr37, pc_isr38, pc_isr39,
    pc_isr40, pc_isr41, pc_isr42, pc_isr43, pc_isr44, pc_isr45, pc_isr46, pc_isr47,
};

void pc_gdt_init(void) {
    pc_gdt[0] = 0;
    pc_gdt[PC_KERNEL_CS / 8] = 0x00AF9A000000FFFFULL; /* 64-bit code, DPL 0 */
    pc_gdt[PC_KERNEL_DS / 8] = 0x00CF92000000FFFFULL; /* data, DPL 0 */
    pc_gdt[PC_USER32_CS / 8] = 0x00CFFA000000FFFFULL; /* 32-bit code, DPL 3 */
    pc_gdt[PC_USER_DS / 8] = 0x00CFF2000000FFFFULL;   /* data, DPL 3 */
    pc_gdt[PC_USER_CS / 8] = 0x00AFFA000000FFFFULL;   /* 64-bit code, DPL 3 */
    uint64_t base = (uint64_t)&pc_tss, limit = sizeof pc_tss - 1;
    pc_gdt[PC_TSS_SEL / 8] = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89ULL << 40 /* present, 64-bit TSS */
                             | ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56;
    pc_gdt[PC_TSS_SEL / 8 + 1] = base >> 32;
    pc_tss.iomap_base = sizeof pc_tss; /* no I/O bitmap: ring 3 has no port */
    struct pc_table_reg gdtr = {sizeof pc_gdt - 1, (uint64_t)pc_gdt};
    pc_gdt_load(&gdtr);
}

void pc_gdt_load(const struct pc_table_reg *gdtr) {
    __asm__ volatile("lgdt %0" : : "m"(*gdtr));
    /* reload CS with a far return, then the data segments and SS */
    __asm__ volatile("pushq %0; leaq 1f(%%rip), %%rax; pushq %%rax; lretq; 1:" : : "i"(PC_KERNEL_CS) : "rax", "memory");
    __asm__ volatile("mov %0, %%ds; mov %0, %%es; mov %0, %%ss; mov %1, %%fs; mov %1, %%gs"
                     :
                     : "r"((uint16_t)PC_KERNEL_DS), "r"((uint16_t)0));
    __asm__ volatile("ltr %0" : : "r"((uint16_t)PC_TSS_SEL));
    __asm__ volatile("lldt %0" : : "r"((uint16_t)0));
}

static void set_gate(int vector, const void *stub, int dpl) {
    uint64_t a = (uint64_t)stub;
    pc_idt[vector] = (struct pc_idt_gate){(uint16_t)a, PC_KERNEL_CS, 0, (uint8_t)(0x8E | (dpl & 3) << 5),
                                          (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0};
}

void pc_idt_set(int vector, int dpl) {
    if (vector >= 0 && vector < 48) set_gate(vector, stubs[vector], dpl);
    else if (vector == 128) set_gate(vector, pc_isr128, dpl);
}

void pc_idt_init(pc_handler_fn handler) {
    pc_trap_handler = handler;
    for (int v = 0; v < 48; v++) set_gate(v, stubs[v], 0);
    struct pc_table_reg idtr = {sizeof pc_idt - 1, (uint64_t)pc_idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

void pc_frame_user(struct pc_frame *f, uint64_t rip, uint64_t rsp, uint64_t rflags) {
    memset(f, 0, sizeof *f);
    f->rip = rip;
    f->cs = PC_USER_CS | 3;
    f->rflags = rflags;
    f->rsp = rsp;
    f->ss = PC_USER_DS | 3;
}

void pc_set_kernel_stack(uint64_t top) { pc_tss.rsp0 = pc_kernel_rsp = top; }

void pc_syscall_init(pc_handler_fn handler) {
    pc_syscall_handler = handler;
    wrmsr(PC_MSR_EFER, rdmsr(PC_MSR_EFER) | 1); /* SCE */
    wrmsr(PC_MSR_STAR, (uint64_t)(PC_USER32_CS | 3) << 48 | (uint64_t)PC_KERNEL_CS << 32);
    wrmsr(PC_MSR_LSTAR, (uint64_t)pc_syscall_entry);
    wrmsr(PC_MSR_SFMASK, PC_RFLAGS_IF | PC_RFLAGS_TF | PC_RFLAGS_DF);
}
