/* The three guest-kernel entries (docs/abi.md, "Entry frames").
 *
 * On every entry the SPK switches to the kernel stack with the app's
 * registers live: [rsp] is the iret frame (rip, cs, rflags, rsp, ss); the
 * trap entry first has vector, error code and fault address. Each stub saves
 * the app's registers, rip, rflags and rsp into *spk_current_frame (HC_IRET
 * order), calls the kernel's C handler on a 16-byte aligned stack, and if
 * the handler returns, resumes the app natively from that frame with iretq. */
#include "spk/abi.h"
    .intel_syntax noprefix

    .section .bss.spk_current_frame, "aw", @nobits
    .balign 8
    .globl spk_current_frame
spk_current_frame:
    .zero 8

    .text
/* Save every GPR but rbx (pushed at [rsp]) into the frame at rbx; then pop
 * the app's rbx into it. r12 = the iret frame afterwards. */
.macro SAVE_APP skip
    mov [rbx + 0], rax
    mov [rbx + 8], rcx
    mov [rbx + 16], rdx
    mov [rbx + 40], rbp
    mov [rbx + 48], rsi
    mov [rbx + 56], rdi
    mov [rbx + 64], r8
    mov [rbx + 72], r9
    mov [rbx + 80], r10
    mov [rbx + 88], r11
    mov [rbx + 96], r12
    mov [rbx + 104], r13
    mov [rbx + 112], r14
    mov [rbx + 120], r15
    pop rax
    mov [rbx + 24], rax
    lea r12, [rsp + \skip]
    mov rax, [r12 + 0]
    mov [rbx + 128], rax
    mov rax, [r12 + 16]
    mov [rbx + 136], rax
    mov rax, [r12 + 24]
    mov [rbx + 32], rax
.endm

    .globl spk_syscall_entry
    .type spk_syscall_entry, @function
spk_syscall_entry:
    push rbx
    mov rbx, [rip + spk_current_frame]
    SAVE_APP 0
    mov rdi, rbx
    and rsp, -16
    call spk_on_syscall
    jmp spk_resume_native
    .size spk_syscall_entry, . - spk_syscall_entry

    .globl spk_timer_entry
    .type spk_timer_entry, @function
spk_timer_entry:
    push rbx
    mov rbx, [rip + spk_current_frame]
    SAVE_APP 0
    mov rdi, rbx
    and rsp, -16
    call spk_on_timer
    jmp spk_resume_native
    .size spk_timer_entry, . - spk_timer_entry

    .globl spk_trap_entry
    .type spk_trap_entry, @function
spk_trap_entry:
    push rbx
    mov rbx, [rip + spk_current_frame]
    SAVE_APP 24
    mov rdi, rbx
    lea rsi, [r12 - 24]
    and rsp, -16
    call spk_on_trap
    jmp spk_resume_native
    .size spk_trap_entry, . - spk_trap_entry

/* Resume the app whose frame is rbx through the iret frame at r12 (both
 * callee-saved, so the handler kept them). */
spk_resume_native:
    mov rsp, r12
    mov rax, [rbx + 128]
    mov [rsp + 0], rax
    mov rax, [rbx + 136]
    mov [rsp + 16], rax
    mov rax, [rbx + 32]
    mov [rsp + 24], rax
    mov rax, [rbx + 0]
    mov rcx, [rbx + 8]
    mov rdx, [rbx + 16]
    mov rbp, [rbx + 40]
    mov rsi, [rbx + 48]
    mov rdi, [rbx + 56]
    mov r8, [rbx + 64]
    mov r9, [rbx + 72]
    mov r10, [rbx + 80]
    mov r11, [rbx + 88]
    mov r12, [rbx + 96]
    mov r13, [rbx + 104]
    mov r14, [rbx + 112]
    mov r15, [rbx + 120]
    mov rbx, [rbx + 24]
    iretq
    .section .note.GNU-stack, "", @progbits
