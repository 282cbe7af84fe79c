# bad_ud2.asm -- misbehaving ring-3 app: executes an undefined opcode (ud2).
# Expected: #UD (vector 6) reflected to its guest kernel, which kills it;
# the others run on. If it survives it prints a "SUCCEEDED" line and exits 1.
.include "attempt_begin"

    ud2                                 # undefined opcode: #UD

.include "attempt_end"

msg_trying:     .ascii "bad_ud2: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_ud2: UD2 SUCCEEDED\n"
msg_succeeded_end:
