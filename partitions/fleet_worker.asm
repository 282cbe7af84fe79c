# fleet_worker.asm -- example kernel of spk fleet (ring 2): works forever.
#
# The whole partition: no apps, entry = first byte. It writes a running
# counter into every 8-byte word of its data area (KERNEL_DATA_SIZE bytes,
# four pages), over and over, so each window dirties those frames again:
# what live migration's pre-copy rounds must send again (docs/fleet.md).
# It never traps: its windows end when ring 0's window does.
start:
    xor ebx, ebx                        # rbx = the counter
next_fill:
    mov rdi, KERNEL_DATA_VADDR
    mov ecx, 0x800                      # KERNEL_DATA_SIZE / 8 words
next_word:
    inc rbx
    mov [rdi], rbx
    add rdi, 8
    dec rcx
    jnz next_word
    jmp next_fill
