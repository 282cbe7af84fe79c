# bad_hypercall.asm -- misbehaving ring-3 app: issues a hypercall from CPL 3
# Prints a "trying" line, then executes int 0x82 with rax = HC_EXIT (the gate is CPL 2 only: #GP);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    mov eax, HC_EXIT                    # if the SPK obeyed, the whole
    mov edi, 0x42                       # partition would end here
    int 0x82                            # refused from CPL 3: #GP

.include "attempt_end"

msg_trying:     .ascii "bad_hypercall: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_hypercall: HYPERCALL SUCCEEDED\n"
msg_succeeded_end:
