# bad_write_code.asm -- misbehaving ring-3 app: writes a byte to its own code page (read-only)
# Prints a "trying" line, then stores to its entry point (#PF, write to a read-only user page);
# the kernel must kill it there.
# If it survives it prints a "SUCCEEDED" line and exits 1.
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1

start:
    lea rdi, [rip + msg_trying]
    mov esi, msg_trying_end - msg_trying
    mov eax, SYS_WRITE
    int 0x80

    lea rax, [rip + start]
    mov byte ptr [rax], 0x90            # code is mapped user read-only: #PF

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

msg_trying:     .ascii "bad_write_code: trying\n"
msg_trying_end:
msg_succeeded:  .ascii "bad_write_code: WRITE SUCCEEDED\n"
msg_succeeded_end:
