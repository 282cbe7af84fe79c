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

# Console helpers (line_start, put_str, put_bytes, put_dec, line_end,
# print_line, print_str_dec, exit): partitions/console.inc. It needs D_LINE,
# the offset of a line buffer in the data area.
.include "console"

# =============================================================================
# Constant strings
# =============================================================================
str_port:           .asciz "value"
str_no_port:        .asciz "sensor: no port"
str_wrote:          .asciz "sensor: wrote "
str_failed:         .asciz "sensor: send failed "
