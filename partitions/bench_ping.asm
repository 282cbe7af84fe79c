# Benchmark guest: queuing-port ping-pong, the "ping" side. Each round it
# sends one 8-byte message on "out" and waits (yielding its window) for the
# answer on "in". spk bench counts the messages ring 0 carried.
    lea rdi, [rip + out_name]
    mov rsi, 3
    mov rax, HC_PORT_OPEN
    int 0x82
    mov r12, rax                 # handle of "out"
    lea rdi, [rip + in_name]
    mov rsi, 2
    mov rax, HC_PORT_OPEN
    int 0x82
    mov r13, rax                 # handle of "in"
    mov rbx, KERNEL_DATA_VADDR
round:
    mov rdi, r12
    mov rsi, rbx
    mov rdx, 8
    mov rax, HC_PORT_SEND
    int 0x82
wait_answer:
    mov rdi, r13
    mov rsi, rbx
    mov rdx, 8
    mov rax, HC_PORT_RECEIVE
    int 0x82
    cmp rax, 0
    jg round
    mov rax, HC_YIELD
    int 0x82
    jmp wait_answer
out_name: .ascii "out"
in_name: .ascii "in"
