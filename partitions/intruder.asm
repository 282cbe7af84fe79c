# intruder.asm -- example guest-role kernel that oversteps (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# A partition of role "guest" tries what it was not given and prints each
# raw result (a negative rax is -Status):
#   HC_PART_LIST                -> E_DENIED (-2): not a system partition
#   HC_PART_CONTROL(1, HALT)    -> E_DENIED (-2)
#   HC_PORT_OPEN("out")         -> E_NOT_FOUND (-8): no such port configured
# then exits with 0.
#
# Lines:  intruder: part_list <rax>
#         intruder: part_control <rax>
#         intruder: port_open <rax>
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_LIST, 0x200                      # room for MAX_ENTRIES entries
.equ MAX_ENTRIES, 16
.equ VICTIM, 1                          # the partition it tries to halt

start:
    mov rdi, KERNEL_DATA_VADDR + D_LIST # HC_PART_LIST(D_LIST, 16)
    mov esi, MAX_ENTRIES
    mov eax, HC_PART_LIST
    int 0x82
    lea rsi, [rip + str_part_list]
    call print_str_dec

    mov edi, VICTIM                     # HC_PART_CONTROL(1, PART_HALT)
    mov esi, PART_HALT
    mov eax, HC_PART_CONTROL
    int 0x82
    lea rsi, [rip + str_part_control]
    call print_str_dec

    lea rdi, [rip + str_port]           # HC_PORT_OPEN("out")
    mov esi, 3
    mov eax, HC_PORT_OPEN
    int 0x82
    lea rsi, [rip + str_port_open]
    call print_str_dec

    xor edi, edi
    jmp exit

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
str_port:           .asciz "out"
str_part_list:      .asciz "intruder: part_list "
str_part_control:   .asciz "intruder: part_control "
str_port_open:      .asciz "intruder: port_open "
