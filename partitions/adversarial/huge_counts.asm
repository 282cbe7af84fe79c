# huge_counts.asm -- attacker kernel: huge counts and lengths, and exhausting
# every resource ring 0 keeps for it (adversarial suite, class huge_counts).
#
# 1. Lengths near 2^64 and just past each limit (CONSOLE_MAX, MEASURE_MAX,
#    NONCE_MAX, PORT_NAME_MAX): INVALID_ARGUMENT before any memory is read;
#    PART_LIST with 2^64-1 entries: DENIED (a guest partition).
# 2. One CONSOLE_WRITE of 3.5 KiB of line ends: ring 0 emits a bounded number
#    of console lines for it (the host counts them).
# 3. Repeats until refused, recording the count and the last result
#    (REC_LOOP): ASPACE_CREATE (bounded by MAX_SPACES and the quota),
#    FRAME_ALLOC (bounded by its quota: NO_MEMORY), MEASURE (bounded by the
#    event log: NO_MEMORY). Other partitions' quotas are untouched.
# Then it prints "huge_counts: done, N records" and exits with 0.
.include "attack"

.equ BUF, KERNEL_DATA_VADDR + D_SCRATCH
.equ FLOOD, 0xE00                       # bytes of line ends (the scratch area)
.equ ALL_ONES, 0xFFFFFFFFFFFFFFFF
.equ MEASURE_LIMIT, 0x1000000           # MEASURE_MAX (16 MiB)

main:
    lea rsi, [rip + table]
    lea rcx, [rip + table_end]
    call run_table

    mov rdi, BUF                        # 2. the flood
    mov ecx, FLOOD
    mov al, 10
    rep stosb
    mov rdi, BUF
    mov esi, FLOOD
    mov eax, HC_CONSOLE_WRITE
    call attempt

    mov eax, HC_ASPACE_CREATE           # 3. until refused
    call repeat
    mov eax, HC_FRAME_ALLOC
    call repeat
    mov rdi, BUF
    mov esi, 1
    mov rdx, BUF
    mov r10d, 1
    mov eax, HC_MEASURE
    call repeat
    jmp finish

# repeat: make hypercall rax (arguments as given) until it fails; record
# REC_LOOP: number, successes, last result. Keeps every register but rax.
repeat:
    push rbx
    push rcx
    push rdi
    push rsi
    mov rbx, rax
    xor ecx, ecx
repeat_next:
    mov rax, rbx
    int 0x82
    test rax, rax
    js repeat_done
    inc rcx
    jmp repeat_next
repeat_done:
    mov rsi, rax                        # REC_LOOP: number, successes, result
    mov rdi, rcx
    mov eax, REC_LOOP
    call record
    pop rsi
    pop rdi
    pop rcx
    pop rbx
    ret

# number, rdi, rsi, rdx, r10
table:
    .quad HC_CONSOLE_WRITE, BUF, ALL_ONES, 0, 0
    .quad HC_CONSOLE_WRITE, BUF, 4097, 0, 0                     # CONSOLE_MAX + 1
    .quad HC_MEASURE, BUF, ALL_ONES, BUF, 4
    .quad HC_MEASURE, BUF, MEASURE_LIMIT + 1, BUF, 4
    .quad HC_MEASURE, BUF, 16, BUF, 0x8000000000000000          # name length
    .quad HC_MEASURE, BUF, 16, BUF, 65                          # MEASURE_NAME_MAX + 1
    .quad HC_ATTEST, BUF, ALL_ONES, BUF, 4096                   # nonce length
    .quad HC_ATTEST, BUF, 65, BUF, 4096                         # NONCE_MAX + 1
    .quad HC_PORT_OPEN, BUF, ALL_ONES, 0, 0
    .quad HC_PORT_OPEN, BUF, 32, 0, 0                           # PORT_NAME_MAX + 1
    .quad HC_PART_LIST, BUF, ALL_ONES, 0, 0
table_end:

str_name:           .asciz "huge_counts"
