# faulty.asm -- example kernel that crashes on purpose (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Prints "faulty: booting", then "faulty: tick 1" .. "faulty: tick 3", one per
# window (HC_YIELD), then writes to address 0. Page 0 is never mapped, so this
# is a kernel memory violation: the SPK stops the partition and ring 1's
# health monitor applies its policy (e.g. a cold restart). It keeps no state
# across a cold restart: a restarted faulty simply starts over.
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ TICKS, 3

# rbx = tick number.
start:
    lea rsi, [rip + str_booting]
    call print_line
    mov ebx, 1
tick:
    lea rsi, [rip + str_tick]           # "faulty: tick <n>"
    mov rax, rbx
    call print_str_dec
    mov eax, HC_YIELD
    int 0x82
    inc rbx
    cmp rbx, TICKS
    jbe tick

    xor eax, eax                        # the fault: a store to address 0
    mov qword ptr [rax], 1
crashed:                                # never reached
    jmp crashed

# =============================================================================
# Console helpers (the same block in every example kernel)
# =============================================================================
# A line is built in the data area at D_LINE: line_start points rdi at it,
# put_* append at rdi and advance it, line_end adds "\n" and writes the line
# with HC_CONSOLE_WRITE. They clobber rax, rcx, rdx, rsi, rdi, r8 and keep
# rbx, rbp, r12-r15 (a hypercall itself changes only rax).

# line_start: rdi = start of the line buffer.
line_start:
    mov rdi, KERNEL_DATA_VADDR + D_LINE
    ret

# put_str: append the NUL-terminated string at rsi.
put_str:
    mov al, [rsi]
    test al, al
    jz put_str_done
    mov [rdi], al
    inc rdi
    inc rsi
    jmp put_str
put_str_done:
    ret

# put_bytes: append rcx bytes from rsi (rcx may be 0).
put_bytes:
    test rcx, rcx
    jz put_bytes_done
put_bytes_loop:
    mov al, [rsi]
    mov [rdi], al
    inc rdi
    inc rsi
    dec rcx
    jnz put_bytes_loop
put_bytes_done:
    ret

# put_dec: append rax as a signed decimal number ('-' then the magnitude).
put_dec:
    test rax, rax
    jns put_dec_digits
    mov byte ptr [rdi], '-'
    inc rdi
    neg rax                             # INT64_MIN stays 2^63: right unsigned
put_dec_digits:
    mov ecx, 10
    xor r8d, r8d                        # digits pushed
put_dec_push:
    xor edx, edx
    div rcx
    add dl, '0'
    push rdx
    inc r8
    test rax, rax
    jnz put_dec_push
put_dec_pop:
    pop rdx
    mov [rdi], dl
    inc rdi
    dec r8
    jnz put_dec_pop
    ret

# line_end: append "\n" and write the line from D_LINE up to rdi.
line_end:
    mov byte ptr [rdi], 10
    inc rdi
    mov rsi, rdi
    mov rdi, KERNEL_DATA_VADDR + D_LINE
    sub rsi, rdi
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    ret

# print_line: write the NUL-terminated string at rsi as one line.
print_line:
    call line_start
    call put_str
    jmp line_end

# print_str_dec: write the string at rsi followed by rax in decimal, as a line.
print_str_dec:
    push rax
    call line_start
    call put_str
    pop rax
    call put_dec
    jmp line_end

# exit: end the partition with the code in rdi (HC_EXIT does not return).
exit:
    mov eax, HC_EXIT
    int 0x82
exit_hang:                              # never reached: never run on
    jmp exit_hang

# =============================================================================
# Constant strings
# =============================================================================
str_booting:        .asciz "faulty: booting"
str_tick:           .asciz "faulty: tick "
