# consumer.asm -- example kernel: the destination end of a queuing channel (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Opens its port "in" and receives messages, oldest first, into a 64-byte
# buffer, printing each. An empty queue (E_NOT_FOUND) gives up the rest of
# the window. After 5 messages it prints "consumer: done" and exits with 0.
#
# Lines:  consumer: got <message text>
#         consumer: no port                  (exit 1: no port "in" configured)
#         consumer: receive failed <error>   (exit 2: any other receive error)
#         consumer: done                     (exit 0)
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_BUF, 0x100                       # 64 bytes: receive buffer
.equ BUF_SIZE, 64
.equ MESSAGES, 5

# Registers kept across the loop: r12 = port handle, rbx = messages received.
start:
    lea rdi, [rip + str_port]           # HC_PORT_OPEN("in")
    mov esi, 2
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

receive:
    mov rdi, r12                        # HC_PORT_RECEIVE(handle, buf, 64)
    mov rsi, KERNEL_DATA_VADDR + D_BUF
    mov edx, BUF_SIZE
    mov eax, HC_PORT_RECEIVE
    int 0x82
    cmp rax, E_NOT_FOUND
    je queue_empty
    test rax, rax
    js receive_failed

    push rax                            # "consumer: got <text>" (rax = length)
    call line_start
    lea rsi, [rip + str_got]
    call put_str
    pop rcx
    mov rsi, KERNEL_DATA_VADDR + D_BUF
    call put_bytes
    call line_end
    inc rbx
    cmp rbx, MESSAGES
    jb receive

    lea rsi, [rip + str_done]
    call print_line
    xor edi, edi
    jmp exit

queue_empty:
    mov eax, HC_YIELD                   # nothing waiting: come back next window
    int 0x82
    jmp receive

receive_failed:
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
str_port:           .asciz "in"
str_no_port:        .asciz "consumer: no port"
str_got:            .asciz "consumer: got "
str_failed:         .asciz "consumer: receive failed "
str_done:           .asciz "consumer: done"
