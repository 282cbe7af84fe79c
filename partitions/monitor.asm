# monitor.asm -- example kernel: the destination end of a sampling channel (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Opens its port "value" and, once per window for 6 windows, reads the latest
# 8-byte sample (sampling messages are not consumed) and asks HC_PORT_STATUS
# for its age in virtual time. Then it exits with 0.
#
# Lines:  monitor: no value yet              (nothing written so far)
#         monitor: value <v> age <age>
#         monitor: no port                   (exit 1: no port "value" configured)
#         monitor: receive failed <error>    (any other error, it goes on)
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_VALUE, 0x100                     # u64: the sample received
.equ WINDOWS, 6

# Registers kept across the loop: r12 = port handle, rbx = windows done,
# r13 = age.
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
    xor ebx, ebx

window:
    mov rdi, r12                        # HC_PORT_RECEIVE(handle, &value, 8)
    mov rsi, KERNEL_DATA_VADDR + D_VALUE
    mov edx, 8
    mov eax, HC_PORT_RECEIVE
    int 0x82
    cmp rax, E_NOT_FOUND
    je no_value
    test rax, rax
    js receive_failed

    mov rdi, r12                        # HC_PORT_STATUS(handle) = age
    mov eax, HC_PORT_STATUS
    int 0x82
    mov r13, rax

    call line_start                     # "monitor: value <v> age <age>"
    lea rsi, [rip + str_value]
    call put_str
    mov rax, KERNEL_DATA_VADDR + D_VALUE
    mov rax, [rax]
    call put_dec
    lea rsi, [rip + str_age]
    call put_str
    mov rax, r13
    call put_dec
    call line_end
    jmp next_window

no_value:
    lea rsi, [rip + str_no_value]
    call print_line
    jmp next_window

receive_failed:
    lea rsi, [rip + str_failed]
    call print_str_dec

next_window:
    mov eax, HC_YIELD
    int 0x82
    inc rbx
    cmp rbx, WINDOWS
    jb window

    xor edi, edi
    jmp exit

# Console helpers (line_start, put_str, put_bytes, put_dec, line_end,
# print_line, print_str_dec, exit): partitions/console.inc. It needs D_LINE,
# the offset of a line buffer in the data area.
.include "console"

# =============================================================================
# Constant strings
# =============================================================================
str_port:           .asciz "value"
str_no_port:        .asciz "monitor: no port"
str_no_value:       .asciz "monitor: no value yet"
str_value:          .asciz "monitor: value "
str_age:            .asciz " age "
str_failed:         .asciz "monitor: receive failed "
