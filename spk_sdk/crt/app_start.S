/* Start-up of a C app of the reference kernel: entered at the ELF entry
 * point with rsp = the top of its stack. Calls main(); its return value is
 * the exit code. */
    .intel_syntax noprefix
    .section .text.start, "ax"
    .globl _start
    .type _start, @function
_start:
    and rsp, -16
    xor ebp, ebp
    call main
    mov edi, eax
    mov eax, 1              /* SYS_EXIT (spk/app.h) */
    int 0x80
1:  jmp 1b
    .size _start, . - _start
    .section .note.GNU-stack, "", @progbits
