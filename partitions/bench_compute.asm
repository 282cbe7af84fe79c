# Benchmark guest: a compute-bound loop, no traps. spk bench runs the same
# bytes on the bare engine (the loop body is position independent).
loop_top:
    add rax, 1
    dec rcx
    jnz loop_top
    jmp loop_top
