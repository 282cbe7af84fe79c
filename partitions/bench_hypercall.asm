# Benchmark guest: null hypercalls (VERSION) in a loop, forever.
# spk bench divides the wall time of a window by the hypercalls counted.
loop_top:
    mov rax, HC_VERSION
    int 0x82
    jmp loop_top
