# bad_hypercall.asm -- misbehaving ring-3 app: issues a hypercall from CPL 3
# Prints a "trying" line, then executes int 0x82 with rax = HC_EXIT (the gate is CPL 2 only: #GP);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1

start:
    lea rdi, [rip + msg_trying]
    mov esi, msg_trying_end - msg_trying
    mov eax, SYS_WRITE
    int 0x80

    mov eax, HC_EXIT                    # if the SPK obeyed, the whole
    mov edi, 0x42                       # partition would end here
    int 0x82                            # refused from CPL 3: #GP

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

msg_trying:     .ascii "bad_hypercall: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_hypercall: HYPERCALL SUCCEEDED\n"
msg_succeeded_end:
