# Benchmark guest: gives its window up at once, forever.
# With two such partitions every window is one partition switch.
loop_top:
    mov rax, HC_YIELD
    int 0x82
    jmp loop_top
