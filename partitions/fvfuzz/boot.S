/* fvfuzz's exception and interrupt stubs, the recovery path and the
 * assembly probes the fuzzer needs whole instructions for. The start-up
 * code (multiboot entry for QEMU, 64-bit entry for the SPK) is the PC
 * library's (spk_sdk/pc/boot.S), which calls kernel_main.
 *
 * Recovery. The fuzzer runs each operation inside fz_try(fn, arg): fz_try
 * saves the callee-saved registers and the stack pointer, arms the recovery
 * point and calls fn. Any exception (vectors 0-31), any `syscall` and any
 * exception taken at ring 3 lands in fz_trap (kernel.c), which records it;
 * when the recovery point is armed, execution resumes at fz_try's recovery
 * label with the saved stack, interrupts off and the kernel's data
 * segments, and fz_try returns 1. So an operation needs no instruction
 * decoder to be skipped, and survives a faulting frame, a bad stack or a
 * trip through ring 3. Interrupts (vectors 32-255, hardware or `int n`)
 * return by iretq to where they came from. */

#include "pc_asm.h"

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

/* ---- the 256 vector stubs, 16 bytes apart from isr_base ----
 * Each pushes (error code or 0, vector) and jumps to trap_common. A
 * software `int n` of an error-code vector pushes no error code; the frame
 * is then off by one word, which the recovery path never reads. */
    .text
    .align 16
    .globl isr_base
isr_base:
    .set vec, 0
    .rept 256
    .align 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    nop
    nop
    .else
    pushq $0
    .endif
    pushq $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

trap_common:
    PC_PUSH_GPRS
    movq %rsp, %rdi
    cld
    call fz_trap
    testq %rax, %rax
    jz fz_recover
    PC_POP_GPRS
    addq $16, %rsp
    iretq

/* syscall (from ring 3, or from ring 0 itself): RSP is the caller's. */
    .globl syscall_entry
syscall_entry:
    movq $0x100, fz_syscall_seen(%rip)
    jmp fz_recover

/* Resume at the armed recovery point: its stack, IF and DF clear, the
 * kernel's data segments (the exception may have come from ring 3, or from
 * an operation that loaded others). Unarmed: the kernel itself faulted. */
    .globl fz_recover
fz_recover:
    cmpq $0, fz_armed(%rip)
    jne fz_recover_clean
    leaq boot_stack_top(%rip), %rsp
    call fz_unarmed
4:  hlt
    jmp 4b

/* int fz_try(void (*fn)(void *), void *arg): 0 when fn returned, 1 when an
 * exception (or a syscall) ended it. */
    .globl fz_try
    .type fz_try, @function
fz_try:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, fz_recover_rsp(%rip)
    leaq 5f(%rip), %rax
    movq %rax, fz_recover_rip(%rip)
    movq $1, fz_armed(%rip)
    movq %rdi, %rax
    movq %rsi, %rdi
    call *%rax
    movq $0, fz_armed(%rip)
    xorl %eax, %eax
    jmp 6f
5:  movq $0, fz_armed(%rip)
    movl $1, %eax
6:  popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

/* void fz_iretq(const uint64_t frame[5]): iretq with a crafted frame
 * (rip, cs, rflags, rsp, ss). A ring-0 frame may name fz_back. */
    .globl fz_iretq
fz_iretq:
    pushq 32(%rdi)
    pushq 24(%rdi)
    pushq 16(%rdi)
    pushq 8(%rdi)
    pushq 0(%rdi)
    iretq

/* void fz_lretq(const uint64_t frame[4]): lretq with (rip, cs, rsp, ss);
 * rsp and ss are popped only by a return to an outer ring. */
    .globl fz_lretq
fz_lretq:
    pushq 24(%rdi)
    pushq 16(%rdi)
    pushq 8(%rdi)
    pushq 0(%rdi)
    lretq

/* A ring-0 target of crafted returns and of the call gate: back into
 * fz_try's recovery by a deliberate ud2-free path (the fuzzer counts it as
 * "landed"). */
    .globl fz_back
fz_back:
    movq $1, fz_landed(%rip)
    jmp fz_recover_clean

fz_recover_clean: /* fz_recover when armed, and a ring-0 return that landed on purpose */
    movq fz_recover_rsp(%rip), %rsp
    movl $KERNEL_DS, %eax
    movw %ax, %ss
    movw %ax, %ds
    movw %ax, %es
    pushq $2
    popfq
    jmpq *fz_recover_rip(%rip)

/* void fz_sysretq(uint64_t rip, uint64_t rflags, uint64_t rsp) */
    .globl fz_sysretq
fz_sysretq:
    movq %rdi, %rcx
    movq %rsi, %r11
    movq %rdx, %rsp
    sysretq

/* The call gate's target: a far return to the caller (same ring: RIP, CS;
 * from ring 3: RIP, CS, RSP, SS). */
    .globl gate_target
gate_target: /* 2: the kernel reports "target reached" (code at DPL 0 ran through the gate) */
    movq $2, fz_landed(%rip)
    lretq

/* void fz_callgate(void): a far call through the gate in the GDT. */
    .globl fz_callgate
fz_callgate:
    lcall *gate_far_ptr(%rip)
    ret

/* uint64_t fz_int(unsigned n): `int n` from the table below. */
    .globl fz_int
fz_int:
    movl %edi, %eax
    shlq $3, %rax
    leaq int_table(%rip), %rdx
    addq %rdx, %rax
    call *%rax
    ret
    .align 8
int_table: /* 256 entries of 8 bytes: int $n; ret; padding */
    .set vec, 0
    .rept 256
    .byte 0xCD, vec
    ret
    .byte 0x90, 0x90, 0x90, 0x90, 0x90
    .set vec, vec + 1
    .endr

    .section .rodata
    .align 8
gate_far_ptr:
    .long 0
    .word 0x50 /* GATE_SEL */

    .bss
    .align 8
    .globl fz_armed, fz_recover_rsp, fz_recover_rip, fz_landed, fz_syscall_seen
fz_armed: .quad 0
fz_recover_rsp: .quad 0
fz_recover_rip: .quad 0
fz_landed: .quad 0
fz_syscall_seen: .quad 0
