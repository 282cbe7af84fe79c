/* Assembler macros of the PC library, for every bare PC kernel's .S files
 * (spk_sdk/pc/boot.S, and a kernel's own stubs: #include "pc_asm.h").
 *
 * PC_PUSH_GPRS / PC_POP_GPRS save and restore the 15 general registers in
 * the order struct pc_frame (pc.h) lays them out: rax pushed first, r15
 * last, so that after PC_PUSH_GPRS %rsp points at a struct pc_frame's r15. */
#ifndef SPK_PC_ASM_H
#define SPK_PC_ASM_H

.macro PC_PUSH_GPRS
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
.endm

.macro PC_POP_GPRS
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
.endm

#endif
