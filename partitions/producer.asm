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
str_msg:            .asciz "msg "
str_no_port:        .asciz "producer: no port"
str_sent:           .asciz "producer: sent msg "
str_full:           .asciz "producer: queue full, retrying"
str_failed:         .asciz "producer: send failed "
str_done:           .asciz "producer: done"
