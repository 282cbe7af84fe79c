# bad_mov_cr3.asm -- misbehaving ring-3 app: loads CR3 at CPL 3
# Prints a "trying" line, then executes mov cr3, rax (#GP);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    xor eax, eax
    mov cr3, rax                        # privileged: #GP

.include "attempt_end"

msg_trying:     .ascii "bad_mov_cr3: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_mov_cr3: MOV CR3 SUCCEEDED\n"
msg_succeeded_end:
