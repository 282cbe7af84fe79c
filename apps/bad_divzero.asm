# bad_divzero.asm -- misbehaving ring-3 app: divides by zero
# Prints a "trying" line, then divides by zero (#DE);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    mov eax, 1
    xor edx, edx
    xor ecx, ecx
    div ecx                             # #DE

.include "attempt_end"

msg_trying:     .ascii "bad_divzero: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_divzero: DIVIDE SUCCEEDED\n"
msg_succeeded_end:
