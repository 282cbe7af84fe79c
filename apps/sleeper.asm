# sleeper.asm -- ring-3 app: sleeps 50000 units of virtual time, then exits 0.
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1
.equ SYS_SLEEP, 4
.equ NAP, 50000

start:
    lea rdi, [rip + msg_sleeping]
    mov esi, msg_sleeping_end - msg_sleeping
    mov eax, SYS_WRITE
    int 0x80

    mov edi, NAP                        # sleep(NAP)
    mov eax, SYS_SLEEP
    int 0x80

    lea rdi, [rip + msg_awake]
    mov esi, msg_awake_end - msg_awake
    mov eax, SYS_WRITE
    int 0x80

    mov eax, SYS_EXIT                   # exit(0)
    xor edi, edi
    int 0x80
exit_returned:
    jmp exit_returned

msg_sleeping:   .ascii "sleeper: sleeping\n"
msg_sleeping_end:
msg_awake:      .ascii "sleeper: awake\n"
msg_awake_end:
