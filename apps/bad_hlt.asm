# bad_hlt.asm -- misbehaving ring-3 app: executes hlt at CPL 3
# Prints a "trying" line, then executes hlt (#GP);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1

start:
    lea rdi, [rip + msg_trying]
    mov esi, msg_trying_end - msg_trying
    mov eax, SYS_WRITE
    int 0x80

    hlt                                 # privileged: #GP

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

msg_trying:     .ascii "bad_hlt: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_hlt: HLT SUCCEEDED\n"
msg_succeeded_end:
