/* The PC-guest library of the C guest SDK (spk_sdk/pc/): what every bare
 * PC kernel (spgs/cbuild.py kind "pc": partitions/pcref, partitions/fvecho,
 * the benchmark and fuzz kernels) needs of plain PC hardware, written once.
 *
 * A kernel built with it is an unmodified x86-64 PC kernel: nothing here
 * knows of SPK or hypercalls. It boots on QEMU's multiboot loader through
 * _start32 (boot.S) and under the SPK through the ELF's e_entry, _start64;
 * both reach the kernel's own `void kernel_main(void)` in 64-bit mode with
 * interrupts off, on a 16 KiB boot stack, with at least the first 4 MiB
 * identity-mapped. From there the kernel calls what it wants:
 *
 *   port I/O, MSRs, CPUID, flags, control registers   inline, below
 *   pc_uart_*, pc_printf, pc_exit                     uart.c
 *   pc_gdt_init, pc_idt_init, pc_syscall_init, ...    cpu.c (+ boot.S stubs)
 *   pc_pic_*                                          pic.c
 *   pc_pit_init                                       pit.c
 *   pc_pages_init, pc_page_alloc, pc_pte, pc_map, ... paging.c
 *
 * Every function of the library is in its own section: the link keeps only
 * what the kernel calls. The libc subset (spk/libc.h: memset, snprintf, ...)
 * comes with it. The names are prefixed pc_ but for the one-instruction
 * hardware helpers (outb, rdmsr, ...), which are static inline. */
#ifndef SPK_PC_H
#define SPK_PC_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "spk/libc.h"

/* ---- the machine's fixed numbers ---- */

#define PC_PAGE 4096UL
#define PC_COM1 0x3F8 /* IRQ 4 */
#define PC_COM2 0x2F8 /* IRQ 3 */
#define PC_COM3 0x3E8 /* IRQ 4 */
#define PC_COM4 0x2E8 /* IRQ 3 */
#define PC_DEBUG_EXIT_PORT 0xF4 /* QEMU's isa-debug-exit; the SPK ends the partition on it */
#define PC_PIC1 0x20
#define PC_PIC2 0xA0
#define PC_IRQ_BASE 32 /* pc_pic_init puts IRQ n at vector 32 + n */
#define PC_PIT_HZ 1193182

#define PC_RFLAGS_IF 0x200UL
#define PC_RFLAGS_TF 0x100UL
#define PC_RFLAGS_DF 0x400UL
#define PC_MSR_EFER 0xC0000080U
#define PC_MSR_STAR 0xC0000081U
#define PC_MSR_LSTAR 0xC0000082U
#define PC_MSR_SFMASK 0xC0000084U

/* The GDT pc_gdt_init loads (the order sysret's selector arithmetic expects). */
#define PC_KERNEL_CS 0x08 /* 64-bit code, DPL 0 */
#define PC_KERNEL_DS 0x10 /* data, DPL 0 */
#define PC_USER32_CS 0x18 /* 32-bit code, DPL 3: unused, the slot STAR names */
#define PC_USER_DS 0x20   /* data, DPL 3 (use with RPL 3: 0x23) */
#define PC_USER_CS 0x28   /* 64-bit code, DPL 3 (use with RPL 3: 0x2B) */
#define PC_TSS_SEL 0x30   /* the 64-bit TSS (two slots) */

/* Page-table entry bits. */
#define PC_PTE_P 0x1UL
#define PC_PTE_W 0x2UL
#define PC_PTE_U 0x4UL
#define PC_PTE_PS 0x80UL
#define PC_PTE_NX (1UL << 63)
#define PC_PTE_ADDR 0x000FFFFFFFFFF000UL

/* ---- port I/O ---- */

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port) {
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port) {
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* ---- the CPU ---- */

static inline uint64_t rdmsr(uint32_t msr) {
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
/* r[0..3] = eax, ebx, ecx, edx of CPUID leaf `leaf`, subleaf 0. */
static inline void cpuid(uint32_t leaf, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}
static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}
static inline uint64_t read_flags(void) {
    uint64_t f;
    __asm__ volatile("pushfq; popq %0" : "=r"(f));
    return f;
}
static inline void write_flags(uint64_t f) { __asm__ volatile("pushq %0; popfq" : : "r"(f) : "memory", "cc"); }
static inline void cli(void) { __asm__ volatile("cli" : : : "memory"); }
static inline void sti(void) { __asm__ volatile("sti" : : : "memory"); }
static inline void hlt(void) { __asm__ volatile("hlt" : : : "memory"); }
static inline uint64_t read_cr0(void) {
    uint64_t v;
    __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    return v;
}
static inline uint64_t read_cr2(void) {
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}
static inline uint64_t read_cr3(void) {
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}
static inline uint64_t read_cr4(void) {
    uint64_t v;
    __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}
static inline void write_cr0(uint64_t v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline void write_cr3(uint64_t v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void write_cr4(uint64_t v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static inline void invlpg(uint64_t va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }

/* ---- traps, interrupts, system calls (cpu.c, boot.S) ---- */

/* What every trap, interrupt and system call leaves on the kernel stack
 * (boot.S pushes it): the general registers, the vector (256 for a system
 * call) and error code (0 when the vector has none), then the CPU's iret
 * frame (syscall entry builds the same one). */
struct pc_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
#define PC_SYSCALL_VECTOR 256

/* A trap or system call handler: gets the frame, returns the frame to
 * resume (the same one, or another thread's: a context switch; a frame
 * on another stack is resumed with iretq). */
typedef struct pc_frame *(*pc_handler_fn)(struct pc_frame *f);

struct pc_tss {
    uint32_t reserved0;
    uint64_t rsp0, rsp1, rsp2;
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3, iomap_base;
} __attribute__((packed));

struct pc_idt_gate {
    uint16_t offset_lo, selector;
    uint8_t ist, type_attr;
    uint16_t offset_mid;
    uint32_t offset_hi, zero;
} __attribute__((packed));

struct pc_table_reg { /* what lgdt/lidt take and sgdt/sidt store */
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

extern uint64_t pc_gdt[8];         /* the GDT pc_gdt_init loads (selectors above) */
extern struct pc_tss pc_tss;       /* its TSS: no I/O bitmap (ring 3 has no port) */
extern struct pc_idt_gate pc_idt[256];
extern char pc_syscall_entry[];    /* what pc_syscall_init puts in LSTAR */

/* Loads pc_gdt (null, kernel code/data, user 32-bit code, user data, user
 * code, TSS), reloads CS by a far return and DS/ES/SS (kernel data), FS/GS
 * (null), then ltr and lldt 0. */
void pc_gdt_init(void);
/* Loads the GDT `gdtr` names and the library's selectors from it (what
 * pc_gdt_init does with pc_gdt): CS by a far return, DS/ES/SS the kernel
 * data, FS/GS null, TR PC_TSS_SEL, LDTR 0. For a kernel with a GDT of its
 * own in pc_gdt's layout (more entries after it are fine). */
void pc_gdt_load(const struct pc_table_reg *gdtr);
/* Fills the IDT with the library's stubs for vectors 0-47 (exceptions and
 * the 16 IRQs at 32-47), interrupt gates at DPL 0, and loads it (limit
 * 0xFFF). Every one of them calls `handler` with the frame. */
void pc_idt_init(pc_handler_fn handler);
/* (Re)install the library's stub for `vector` (0-47, or 128) with gate
 * DPL `dpl` (3: `int` from ring 3 allowed). */
void pc_idt_set(int vector, int dpl);
/* The kernel stack top for the next trap from ring 3 (TSS.rsp0) and the
 * next system call (the same stack). */
void pc_set_kernel_stack(uint64_t top);
/* EFER.SCE on; STAR (sysret to PC_USER32_CS|3, syscall to PC_KERNEL_CS),
 * LSTAR = pc_syscall_entry, SFMASK = IF|TF|DF. A `syscall` from ring 3
 * then calls `handler` on the kernel stack with a frame of vector 256
 * (rax, rdi, rsi, ... as the app left them); returning the same frame
 * goes back by sysretq (rax as the handler set it), another by iretq. */
void pc_syscall_init(pc_handler_fn handler);
/* Fills `f` to enter ring 3 at `rip` with stack `rsp` and `rflags` (IF
 * for a preemptible thread: PC_RFLAGS_IF), CS 0x2B, SS 0x23, general
 * registers 0: what a handler returns (or pc_resume takes) to start it. */
void pc_frame_user(struct pc_frame *f, uint64_t rip, uint64_t rsp, uint64_t rflags);
/* Resume `f` (a frame on a kernel stack, as a handler would return it) by
 * iretq; used to start the first thread from kernel_main. */
__attribute__((noreturn)) void pc_resume(struct pc_frame *f);

/* ---- the 16550 UARTs (uart.c) ---- */

/* 115200 baud 8N1, FIFOs on (trigger 14), DTR and RTS, no interrupt;
 * returns whether the scratch register reads back (a UART is there). */
int pc_uart_init(uint16_t port);
/* pc_uart_init with `fifo` 1; with 0 the FIFOs are left as they are (off
 * after reset: a 16450, one byte at a time) and FCR is not written, so a
 * byte the line delivered before this call is kept (enabling or clearing
 * the FIFO drops it). */
int pc_uart_open(uint16_t port, int fifo);
void pc_uart_write(uint16_t port, const char *s, size_t n); /* polls LSR.THRE per byte */
int pc_uart_rx_ready(uint16_t port);                        /* LSR.DR */
int pc_uart_getc(uint16_t port);                            /* a received byte, or -1 if none */
/* Receive interrupts on (IER.RDI, and MCR.OUT2, which gates the IRQ line on
 * real hardware) or off. */
void pc_uart_rx_irq(uint16_t port, int on);
/* Reads bytes into buf until '\n' (kept) or until n - 1 bytes; NUL-ends
 * them; returns the length. Polls (hlt is not used: no interrupt needed). */
size_t pc_uart_read_line(uint16_t port, char *buf, size_t n);
/* printf to `port`, lines of up to 255 bytes, with interrupts off while the
 * bytes go out (the caller's IF is restored by popf). */
__attribute__((format(printf, 2, 3))) void pc_uart_printf(uint16_t port, const char *fmt, ...);
/* The same on the console (COM1). */
__attribute__((format(printf, 1, 2))) void pc_printf(const char *fmt, ...);
/* Writes `status` to port 0xF4 (QEMU exits with (status << 1) | 1, the
 * SPK ends the partition: 0 a clean exit, anything else a kernel panic);
 * on a plain PC, halts for ever. */
__attribute__((noreturn)) void pc_exit(uint8_t status);

/* ---- the 8259 pair (pic.c) and the 8253 timer (pit.c) ---- */

/* ICW1-4: edge, cascade on IRQ 2, vectors PC_IRQ_BASE.. +15, 8086 mode;
 * every IRQ masked. */
void pc_pic_init(void);
void pc_pic_unmask(int irq); /* 0-15; unmasking 8-15 also unmasks IRQ 2 */
void pc_pic_mask(int irq);
void pc_pic_eoi(int irq); /* non-specific EOI to the master (and the slave for 8-15) */
/* Channel 0, mode 2 (rate generator), `hz` interrupts a second on IRQ 0. */
void pc_pit_init(unsigned hz);

/* ---- page tables (paging.c) ---- */

/* Page frames come from a pool the kernel gives (page-aligned, `pages`
 * pages, identity-mapped: a frame's address is its physical address). */
void pc_pages_init(void *pool, size_t pages);
uint64_t *pc_page_try_alloc(void); /* a zeroed page, or NULL when the pool is empty */
/* A zeroed page; an empty pool prints "kernel: out of pages" and pc_exit(3). */
uint64_t *pc_page_alloc(void);
size_t pc_pages_used(void);
/* The level-1 entry mapping `va` under `pml4`; missing tables are
 * allocated (pc_page_alloc) with P|W|U when `create` (the leaves decide),
 * else NULL is returned where one is missing (or a 2 MiB/1 GiB leaf). */
uint64_t *pc_pte(uint64_t *pml4, uint64_t va, int create);
/* Maps the 4 KiB page at `va` to `pa` with `flags` (PC_PTE_P added); no invlpg. */
void pc_map(uint64_t *pml4, uint64_t va, uint64_t pa, uint64_t flags);
/* pc_map of every page of [va, va + size) to [pa, ...). */
void pc_map_range(uint64_t *pml4, uint64_t va, uint64_t pa, uint64_t size, uint64_t flags);
/* The linker script's user pages (the code of user*.c files and the libc
 * subset), page-aligned. */
extern char __user_start[], __user_end[];
/* A new address space with the usual kernel map: [4 KiB, end) identity-
 * mapped supervisor read-write, but the user pages (user, read-only) and
 * page 0 (unmapped: null stays a fault). Its PML4; not loaded. */
uint64_t *pc_kernel_map(uint64_t end);
/* Clears the entry of `va` (if mapped) and invlpg's it (for the current space). */
void pc_unmap(uint64_t *pml4, uint64_t va);

#endif /* SPK_PC_H */
