# Benchmark app: getpid through int 0x80, forever (the kernel returns with a
# native iretq, so each call is one SPK bounce plus the guest's own work).
loop_top:
    mov rax, 3
    int 0x80
    jmp loop_top
