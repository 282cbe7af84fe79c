# Benchmark guest: queuing-port ping-pong, the "pong" side: every message
# received on "in" is sent back on "out"; with nothing to read it yields.
    lea rdi, [rip + out_name]
    mov rsi, 3
    mov rax, HC_PORT_OPEN
    int 0x82
    mov r12, rax
    lea rdi, [rip + in_name]
    mov rsi, 2
    mov rax, HC_PORT_OPEN
    int 0x82
    mov r13, rax
    mov rbx, KERNEL_DATA_VADDR
wait_ping:
    mov rdi, r13
    mov rsi, rbx
    mov rdx, 8
    mov rax, HC_PORT_RECEIVE
    int 0x82
    cmp rax, 0
    jg answer
    mov rax, HC_YIELD
    int 0x82
    jmp wait_ping
answer:
    mov rdi, r12
    mov rsi, rbx
    mov rdx, 8
    mov rax, HC_PORT_SEND
    int 0x82
    jmp wait_ping
out_name: .ascii "out"
in_name: .ascii "in"
