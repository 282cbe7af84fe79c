# sensor.asm -- example kernel: the source end of a sampling channel (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Opens its port "value" and, once per window, writes the 8-byte
# little-endian value i*10 (i = 1..6): each write replaces the previous
# sample. After the sixth it exits with 0.
#
# Lines:  sensor: wrote <v>
#         sensor: no port                    (exit 1: no port "value" configured)
#         sensor: send failed <error>        (exit 2)
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_VALUE, 0x100                     # u64: the sample being sent
.equ SAMPLES, 6

# Registers kept across the loop: r12 = port handle, rbx = i, r13 = value.
start:
    lea rdi, [rip + str_port]           # HC_PORT_OPEN("value")
    mov esi, 5
    mov eax, HC_PORT_OPEN
    int 0x82
    test rax, rax
    jns port_ok
    lea rsi, [rip + str_no_port]
    call print_line
    mov edi, 1
    jmp exit
port_ok:
    mov r12, rax
    mov ebx, 1

next_sample:
    imul r13, rbx, 10                   # value = i * 10
    mov rsi, KERNEL_DATA_VADDR + D_VALUE
    mov [rsi], r13                      # little-endian u64
    mov rdi, r12                        # HC_PORT_SEND(handle, &value, 8)
    mov edx, 8
    mov eax, HC_PORT_SEND
    int 0x82
    test rax, rax
    js send_failed

    lea rsi, [rip + str_wrote]          # "sensor: wrote <v>"
    mov rax, r13
    call print_str_dec
    mov eax, HC_YIELD                   # one sample per window
    int 0x82
    inc rbx
    cmp rbx, SAMPLES
    jbe next_sample

    xor edi, edi
    jmp exit

send_failed:
    lea rsi, [rip + str_failed]
    call print_str_dec
    mov edi, 2
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
str_port:           .asciz "value"
str_no_port:        .asciz "sensor: no port"
str_wrote:          .asciz "sensor: wrote "
str_failed:         .asciz "sensor: send failed "
