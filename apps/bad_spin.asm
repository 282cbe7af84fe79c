# bad_spin.asm -- misbehaving ring-3 app: never yields, never exits.
# Prints one line, then spins forever. The kernel's quantum timer must preempt
# it so the other apps still run; the partition itself ends only when the SPK's
# max-ticks bound (or its time window policy) stops it.
.equ SYS_WRITE, 0

start:
    lea rdi, [rip + msg_spinning]
    mov esi, msg_spinning_end - msg_spinning
    mov eax, SYS_WRITE
    int 0x80
    xor ecx, ecx
spin:                                   # busy loop, no syscall, no fault
    inc rcx
    jmp spin

msg_spinning:   .ascii "bad_spin: spinning\n"
msg_spinning_end:
