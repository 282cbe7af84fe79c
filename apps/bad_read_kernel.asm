# bad_read_kernel.asm -- misbehaving ring-3 app: reaches for kernel memory.
# 1. asks the kernel to write(KERNEL_BASE, 16): the kernel must refuse (-1),
#    or it would print its own memory for the app; prints "KERNEL LEAKED" if not.
# 2. reads a u64 at KERNEL_BASE (supervisor page: #PF); the kernel must kill it
#    there. If it survives it prints "READ SUCCEEDED" and exits 1.
.include "attempt_begin"

    mov rdi, KERNEL_BASE                # write(KERNEL_BASE, 16) must give -1
    mov esi, 16
    mov eax, SYS_WRITE
    int 0x80
    cmp rax, -1
    je write_refused
    lea rdi, [rip + msg_leaked]
    mov esi, msg_leaked_end - msg_leaked
    mov eax, SYS_WRITE
    int 0x80
write_refused:

    mov rax, KERNEL_BASE
    mov rax, [rax]                      # supervisor page: #PF

.include "attempt_end"

msg_trying:     .ascii "bad_read_kernel: trying\n"
msg_trying_end:
msg_leaked:     .ascii "bad_read_kernel: KERNEL LEAKED\n"
msg_leaked_end:
msg_succeeded:  .ascii "bad_read_kernel: READ SUCCEEDED\n"
msg_succeeded_end:
