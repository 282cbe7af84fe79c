/* Start-up of a C guest kernel: the SPK enters here (the ELF entry point)
 * with rdi = the start-info page and rsp = SPK_KERNEL_STACK_TOP. Calls
 * kmain(start_info); its return value is the partition's exit code. */
#include "spk/abi.h"
    .intel_syntax noprefix
    .section .text.start, "ax"
    .globl _start
    .type _start, @function
_start:
    and rsp, -16
    xor ebp, ebp
    call kmain
    mov rdi, rax
    mov eax, SPK_HC_EXIT
    int SPK_HYPERCALL_VECTOR
1:  jmp 1b
    .size _start, . - _start
    .section .note.GNU-stack, "", @progbits
