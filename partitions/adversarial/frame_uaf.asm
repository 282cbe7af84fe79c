# frame_uaf.asm -- attacker kernel: free frames twice and use them after free
# (adversarial suite, class frame_double_free_use_after_free).
#
# A frame must never be freed while a mapping still reaches it (else the
# stale mapping would reach the frame's next owner), never freed twice, and
# never mapped once freed. In order, each call recorded:
#   A = FRAME_ALLOC, MAP(0, VA_A, A, W), a pattern stored through it
#   FRAME_FREE(A) while mapped: BUSY
#   S = ASPACE_CREATE, MAP(S, USER_VA, A, MAP_USER), UNMAP(0, VA_A)
#   FRAME_FREE(A), still mapped in S: BUSY
#   ASPACE_DESTROY(S), FRAME_FREE(A): 0, FRAME_FREE(A) again: DENIED
#   MAP(0, VA_A, A, W) after the free: DENIED
#   B = FRAME_ALLOC (A again: the lowest free frame), MAP(0, VA_B, B, 0),
#   read it (REC_READ: must be 0, not the pattern), UNMAP, FRAME_FREE(B)
#   C = FRAME_ALLOC, MAP(0, VA_C, C, W), store and load through it (the
#   translation is now cached), UNMAP(0, VA_C), FRAME_FREE(C), then a load
#   through VA_C (REC_TRY first): it must fault (a kernel memory_violation at
#   VA_C), a stale translation must not survive the unmapping. Should the
#   load succeed, it records REC_SURVIVED with the value and exits with 1.
.include "attack"

.equ VA_A, KERNEL_BASE + 0x40000000     # unused kernel-half addresses
.equ VA_B, KERNEL_BASE + 0x40001000
.equ VA_C, KERNEL_BASE + 0x40002000
.equ USER_VA, 0x10000000
.equ PATTERN, 0x5A5A5A5A5A5A5A5A

main:
    mov eax, HC_FRAME_ALLOC             # A, mapped and written
    call attempt
    mov r12, rax
    xor edi, edi
    mov rsi, VA_A
    mov rdx, r12
    mov r10d, MAP_WRITE
    mov eax, HC_MAP
    call attempt
    mov rax, PATTERN
    mov [rsi], rax
    mov rdi, r12                        # freed while mapped
    mov eax, HC_FRAME_FREE
    call attempt

    mov eax, HC_ASPACE_CREATE           # a second mapping, in S
    call attempt
    mov r13, rax
    mov rdi, r13
    mov esi, USER_VA
    mov rdx, r12
    mov r10d, MAP_USER
    mov eax, HC_MAP
    call attempt
    xor edi, edi
    mov rsi, VA_A
    mov eax, HC_UNMAP
    call attempt
    mov rdi, r12                        # still mapped in S
    mov eax, HC_FRAME_FREE
    call attempt
    mov rdi, r13
    mov eax, HC_ASPACE_DESTROY
    call attempt
    mov rdi, r12                        # now it may go
    mov eax, HC_FRAME_FREE
    call attempt
    mov eax, HC_FRAME_FREE              # double free
    call attempt
    xor edi, edi                        # map after free
    mov rsi, VA_A
    mov rdx, r12
    mov r10d, MAP_WRITE
    mov eax, HC_MAP
    call attempt

    mov eax, HC_FRAME_ALLOC             # B: A again, zeroed?
    call attempt
    mov r13, rax
    xor edi, edi
    mov rsi, VA_B
    mov rdx, r13
    xor r10d, r10d
    mov eax, HC_MAP
    call attempt
    mov rbx, rsi                        # REC_READ: address, value
    mov rdi, [rsi]
    mov eax, REC_READ
    call record
    xor edi, edi
    mov eax, HC_UNMAP
    call attempt
    mov rdi, r13
    mov eax, HC_FRAME_FREE
    call attempt

    mov eax, HC_FRAME_ALLOC             # C: a cached translation, then unmapped
    call attempt
    mov r13, rax
    xor edi, edi
    mov rsi, VA_C
    mov rdx, r13
    mov r10d, MAP_WRITE
    mov eax, HC_MAP
    call attempt
    mov rax, PATTERN
    mov [rsi], rax
    mov rax, [rsi]
    mov eax, HC_UNMAP
    call attempt
    mov rdi, r13
    mov eax, HC_FRAME_FREE
    call attempt
    xor ebx, ebx                        # REC_TRY: attempt 0 at stale_load
    lea rdi, [rip + stale_load]
    mov eax, REC_TRY
    call record
    mov rsi, VA_C
stale_load:
    mov rax, [rsi]                      # must fault
    mov rdi, rax
    mov eax, REC_SURVIVED
    call record
    mov edi, 1
    jmp exit

str_name:           .asciz "frame_uaf"
