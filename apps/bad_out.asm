# bad_out.asm -- misbehaving ring-3 app: port I/O at CPL 3
# Prints a "trying" line, then executes out 0x80, al (#GP, raised by the SPK: IOPL is 0);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    xor eax, eax
    out 0x80, al                        # no I/O permission at CPL 3: #GP

.include "attempt_end"

msg_trying:     .ascii "bad_out: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_out: OUT SUCCEEDED\n"
msg_succeeded_end:
