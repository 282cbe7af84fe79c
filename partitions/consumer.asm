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
str_port:           .asciz "in"
str_no_port:        .asciz "consumer: no port"
str_got:            .asciz "consumer: got "
str_failed:         .asciz "consumer: receive failed "
str_done:           .asciz "consumer: done"
