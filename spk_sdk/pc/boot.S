/* The start-up code of every bare PC kernel (spk_sdk/pc/pc.h): the
 * multiboot header and 32-bit entry that real PC firmware and boot loaders
 * (QEMU's -kernel) use, the 64-bit entry the SPK uses, and the trap,
 * interrupt and system call entry stubs.
 *
 * Two entries:
 *   _start32  multiboot (v1) entry, named by the header's entry_addr (the
 *             a.out-kludge fields, so a loader needs no ELF64 support):
 *             32-bit protected mode, paging off. It builds identity page
 *             tables for the first GiB (2 MiB pages), enables PAE and
 *             EFER.LME, turns paging on and far-jumps to _start64.
 *   _start64  the ELF's e_entry: 64-bit long mode, paging on with at least
 *             the first 4 MiB identity-mapped, interrupts off, any GDT,
 *             any stack. Everything from here on is the same whichever
 *             entry was taken: the boot stack, then the kernel's
 *             kernel_main (which does not return; if it did, hlt for ever). */

#include "pc_asm.h"

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00010000 /* bit 16: the address fields below are valid */

    .section .multiboot, "a"
    .align 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header   /* header_addr */
    .long __image_start /* load_addr */
    .long __load_end  /* load_end_addr: file bytes up to here */
    .long __bss_end   /* bss_end_addr: zeroed up to here */
    .long _start32    /* entry_addr */

    .section .text.boot, "ax"
    .code32
    .globl _start32
_start32:
    cli
    movl $boot_stack_top, %esp
    /* boot page tables: PML4[0] -> PDPT[0] -> PD of 512 2 MiB pages */
    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(3 * 4096 / 4), %ecx
    rep stosl
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt
    movl $boot_pd, %edi
    movl $0x83, %eax /* present, writable, 2 MiB */
    movl $512, %ecx
1:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax /* PAE */
    movl %eax, %cr4
    movl $0xC0000080, %ecx /* EFER */
    rdmsr
    orl $0x100, %eax /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax /* PG | PE */
    movl %eax, %cr0
    lgdt boot_gdtr
    ljmp $0x08, $_start64

    .code64
    .globl _start64
    .type _start64, @function
_start64: /* segments are loaded by kernel_main, from its own GDT */
    cli
    leaq boot_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call kernel_main
2:  hlt
    jmp 2b

    .section .rodata.boot, "a"
    .align 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF /* 64-bit code */
    .quad 0x00CF92000000FFFF /* data */
boot_gdtr:
    .word 3 * 8 - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .align 4096
boot_pml4: .space 4096
boot_pdpt: .space 4096
boot_pd: .space 4096
    .globl boot_stack_top
boot_stack: .space 16384
boot_stack_top:

/* ---- traps and interrupts ----
 * Every vector pushes (error code or 0, vector) and the fifteen general
 * registers, so the stack holds a struct pc_frame and the handler
 * pc_idt_init was given gets a pointer to it. It returns the frame to
 * resume: the same one, or another thread's (a context switch). */
    .text
.macro ISR_NOERR n
    .globl pc_isr\n
pc_isr\n:
    pushq $0
    pushq $\n
    jmp pc_trap_common
.endm
.macro ISR_ERR n
    .globl pc_isr\n
pc_isr\n:
    pushq $\n
    jmp pc_trap_common
.endm

ISR_NOERR 0
ISR_NOERR 1
ISR_NOERR 2
ISR_NOERR 3
ISR_NOERR 4
ISR_NOERR 5
ISR_NOERR 6
ISR_NOERR 7
ISR_ERR 8
ISR_NOERR 9
ISR_ERR 10
ISR_ERR 11
ISR_ERR 12
ISR_ERR 13
ISR_ERR 14
ISR_NOERR 15
ISR_NOERR 16
ISR_ERR 17
ISR_NOERR 18
ISR_NOERR 19
ISR_NOERR 20
ISR_ERR 21
ISR_NOERR 22
ISR_NOERR 23
ISR_NOERR 24
ISR_NOERR 25
ISR_NOERR 26
ISR_NOERR 27
ISR_NOERR 28
ISR_ERR 29
ISR_ERR 30
ISR_NOERR 31
/* the 16 IRQs of the 8259 pair as pc_pic_init programs it */
ISR_NOERR 32
ISR_NOERR 33
ISR_NOERR 34
ISR_NOERR 35
ISR_NOERR 36
ISR_NOERR 37
ISR_NOERR 38
ISR_NOERR 39
ISR_NOERR 40
ISR_NOERR 41
ISR_NOERR 42
ISR_NOERR 43
ISR_NOERR 44
ISR_NOERR 45
ISR_NOERR 46
ISR_NOERR 47
ISR_NOERR 128 /* a software interrupt (int $0x80), installed by pc_idt_set */

pc_trap_common:
    PC_PUSH_GPRS
    movq %rsp, %rdi
    cld
    call *pc_trap_handler(%rip)
    .globl pc_resume_frame
pc_resume_frame: /* rax: the frame to resume */
    movq %rax, %rsp
    PC_POP_GPRS
    addq $16, %rsp
    iretq

    .globl pc_resume
    .type pc_resume, @function
pc_resume: /* pc_resume(struct pc_frame *f): never returns */
    movq %rdi, %rax
    jmp pc_resume_frame

/* syscall: rcx = the app's rip, r11 = its rflags, IF cleared by SFMASK.
 * Switch to the running thread's kernel stack, build the same frame as an
 * interrupt would (vector 256), call the handler pc_syscall_init was
 * given. It returns the frame to resume: the same one goes back with
 * sysretq, another one (a switch, or the app ended) with iretq. */
    .globl pc_syscall_entry
pc_syscall_entry:
    movq %rsp, pc_user_rsp_scratch(%rip)
    movq pc_kernel_rsp(%rip), %rsp
    pushq $0x23                       /* ss */
    pushq pc_user_rsp_scratch(%rip)   /* rsp */
    pushq %r11                        /* rflags */
    pushq $0x2B                       /* cs */
    pushq %rcx                        /* rip */
    pushq $0
    pushq $256
    PC_PUSH_GPRS
    movq %rsp, %rdi
    cld
    call *pc_syscall_handler(%rip)
    cmpq %rsp, %rax
    jne pc_resume_frame
    PC_POP_GPRS
    addq $16, %rsp
    movq 0(%rsp), %rcx   /* rip */
    movq 16(%rsp), %r11  /* rflags */
    movq 24(%rsp), %rsp  /* the app's stack */
    sysretq

    .bss
    .align 8
pc_user_rsp_scratch: .quad 0
    .globl pc_kernel_rsp
pc_kernel_rsp: .quad 0 /* the running thread's kernel stack top (also TSS.rsp0) */
    .globl pc_trap_handler
pc_trap_handler: .quad 0 /* set by pc_idt_init */
    .globl pc_syscall_handler
pc_syscall_handler: .quad 0 /* set by pc_syscall_init */
