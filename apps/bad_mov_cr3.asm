# bad_mov_cr3.asm -- misbehaving ring-3 app: loads CR3 at CPL 3
# Prints a "trying" line, then executes mov cr3, rax (#GP);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1

start:
    lea rdi, [rip + msg_trying]
    mov esi, msg_trying_end - msg_trying
    mov eax, SYS_WRITE
    int 0x80

    xor eax, eax
    mov cr3, rax                        # privileged: #GP

survived:                               # the fault did not happen: report it
    lea rdi, [rip + msg_succeeded]
    mov esi, msg_succeeded_end - msg_succeeded
    mov eax, SYS_WRITE
    int 0x80
    mov eax, SYS_EXIT                   # exit(1)
    mov edi, 1
    int 0x80
exit_returned:
    jmp exit_returned

msg_trying:     .ascii "bad_mov_cr3: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_mov_cr3: MOV CR3 SUCCEEDED\n"
msg_succeeded_end:
