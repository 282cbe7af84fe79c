# bad_hlt.asm -- misbehaving ring-3 app: executes hlt at CPL 3
# Prints a "trying" line, then executes hlt (#GP);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    hlt                                 # privileged: #GP

.include "attempt_end"

msg_trying:     .ascii "bad_hlt: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_hlt: HLT SUCCEEDED\n"
msg_succeeded_end:
