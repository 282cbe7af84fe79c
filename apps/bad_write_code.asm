# bad_write_code.asm -- misbehaving ring-3 app: writes a byte to its own code page (read-only)
# Prints a "trying" line, then stores to its entry point (#PF, write to a read-only user page);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    lea rax, [rip + start]
    mov byte ptr [rax], 0x90            # code is mapped user read-only: #PF

.include "attempt_end"

msg_trying:     .ascii "bad_write_code: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_write_code: WRITE SUCCEEDED\n"
msg_succeeded_end:
