/* fvfuzz's ring-3 code: the targets of crafted iretq, lretq and sysretq
 * frames. Linked into the user pages (files named user* go there, see
 * spk_sdk/ld/pc.ld.S). Every path ends in a trap back to ring 0 (ud2 at
 * the latest), which the kernel's recovery turns into the operation's
 * result. */
#define GATE_SEL 0x50

    .text
    .globl user_stubs
    .align 16
user_stubs: /* USER_STUBS entries, 16 bytes apart (kernel.c names them) */
    .align 16
    ud2                         /* 0: #UD */
    .align 16
    syscall                     /* 1: back by syscall */
    ud2
    .align 16
    cli                         /* 2: #GP (IOPL 0 at ring 3) */
    ud2
    .align 16
    inb $0x80, %al              /* 3: #GP (no I/O bitmap) */
    ud2
    .align 16
    hlt                         /* 4: #GP */
    ud2
    .align 16
    lcall *user_gate_ptr(%rip)  /* 5: through the call gate to ring 0 and back */
    ud2
    .align 16
    movq 0x100000, %rax         /* 6: kernel memory: #PF */
    ud2
    .align 16
    movl $3000, %ecx            /* 7: spin, so interrupts land at ring 3 */
1:  decl %ecx
    jnz 1b
    ud2
    .align 16
    mov %cr3, %rax              /* 8: #GP */
    ud2
    .align 16
    pushfq                      /* 9: pushf/popf at ring 3, then #UD */
    popfq
    ud2
    .align 16
    int3                        /* 10: #BP (a DPL 3 gate) */
    ud2
    .align 16
    int $0x80                   /* 11: a DPL 3 interrupt gate, back to ring 3 */
    ud2

    .globl user_int_table
    .align 16
user_int_table: /* 256 entries of 4 bytes: int $n; ud2 */
    .set vec, 0
    .rept 256
    .byte 0xCD, vec
    ud2
    .set vec, vec + 1
    .endr

    .section .rodata
    .align 8
user_gate_ptr:
    .long 0
    .word GATE_SEL | 3
