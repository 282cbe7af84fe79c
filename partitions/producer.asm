# producer.asm -- example kernel: the source end of a queuing channel (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Opens its port "out" and sends "msg 1" .. "msg 5", one message per window
# (HC_YIELD after each send). When a destination's queue is full the send
# fails with E_BUSY: it says so, gives up the window and tries again in the
# next one. Then it prints "producer: done" and exits with 0.
#
# Lines:  producer: sent msg <n>
#         producer: queue full, retrying
#         producer: no port                  (exit 1: no port "out" configured)
#         producer: send failed <error>      (exit 2: any other send error)
#         producer: done                     (exit 0)
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_MSG, 0x100                       # 64 bytes: the message being sent
.equ MESSAGES, 5

# Registers kept across the loop: r12 = port handle, rbx = n, r13 = length.
start:
    lea rdi, [rip + str_port]           # HC_PORT_OPEN("out")
    mov esi, 3
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

next_message:
    # Build "msg <n>" at D_MSG, r13 = its length.
    mov rdi, KERNEL_DATA_VADDR + D_MSG
    lea rsi, [rip + str_msg]
    call put_str
    mov rax, rbx
    call put_dec
    mov r13, rdi
    mov rax, KERNEL_DATA_VADDR + D_MSG
    sub r13, rax

try_send:
    mov rdi, r12                        # HC_PORT_SEND(handle, msg, len)
    mov rsi, KERNEL_DATA_VADDR + D_MSG
    mov rdx, r13
    mov eax, HC_PORT_SEND
    int 0x82
    cmp rax, E_BUSY
    je queue_full
    test rax, rax
    js send_failed

    lea rsi, [rip + str_sent]           # "producer: sent msg <n>"
    mov rax, rbx
    call print_str_dec
    mov eax, HC_YIELD                   # one message per window
    int 0x82
    inc rbx
    cmp rbx, MESSAGES
    jbe next_message

    lea rsi, [rip + str_done]
    call print_line
    xor edi, edi
    jmp exit

queue_full:
    lea rsi, [rip + str_full]
    call print_line
    mov eax, HC_YIELD                   # let the consumer drain the queue
    int 0x82
    jmp try_send

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
str_port:           .asciz "out"
str_msg:            .asciz "msg "
str_no_port:        .asciz "producer: no port"
str_sent:           .asciz "producer: sent msg "
str_full:           .asciz "producer: queue full, retrying"
str_failed:         .asciz "producer: send failed "
str_done:           .asciz "producer: done"
