# Migration benchmark guest: a partition under write load.
# It takes every frame of its quota (FRAME_ALLOC), maps each in its kernel
# half from HEAP on and fills it once with a pattern, so nearly all of the
# quota holds data; then it writes one word of each of its first WORKING
# pages, round and round, forever (a hot working set, as a server's).
# spgs.migration.measure() migrates it while it runs.
.equ HEAP, KERNEL_BASE + 0x1000000
.equ WORKING, 8
    mov r12, HEAP
take:
    mov rax, HC_FRAME_ALLOC
    int 0x82
    test rax, rax
    js hot
    mov rdx, rax
    xor edi, edi
    mov rsi, r12
    mov r10, MAP_WRITE
    mov rax, HC_MAP
    int 0x82
    test rax, rax
    js hot
    mov rdi, r12
    mov rcx, 512
fill:
    mov [rdi], rdi
    add rdi, 8
    dec rcx
    jnz fill
    add r12, 0x1000
    jmp take
hot:
    mov rbx, HEAP
    mov rcx, WORKING
write:
    inc qword ptr [rbx]
    add rbx, 0x1000
    dec rcx
    jnz write
    jmp hot
