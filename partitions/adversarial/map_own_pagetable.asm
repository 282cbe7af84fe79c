# map_own_pagetable.asm -- attacker kernel: get a writable mapping of its own
# page tables (adversarial suite, class map_own_page_table_writable).
#
# Xen's rule: a page-table frame is never mappable writable (the SPK is
# stricter: never mappable at all), or the guest could write any PTE.
#
# 1. Predict the frames of the next page tables without any help: FRAME_ALLOC
#    returns the lowest free frame of the quota, and page tables come from
#    the quota too. It takes a data frame D, allocates four frames P0..P3 and
#    frees them again (recorded), then creates a space S (its PML4 is P0) and
#    maps D in it at an address that needs three new tables (P1..P3).
# 2. try_frames (attack.inc) on P0..P3 and on the tables the host names in
#    D_PARAMS (word 2: count, then frame numbers: its boot space's PML4,
#    kernel-half tables): ring-3 writable, kernel-half writable and ring-3
#    read-only mappings, then FRAME_FREE. Every one must be refused (DENIED).
#    Should a writable kernel mapping be granted, it writes the PTE the host
#    chose (words 0 and 1: entry offset and a PTE pointing at another
#    partition's frame) into the table, as a real exploit would.
# 3. Prints "map_own_pagetable: done, N records" and exits with 0.
.include "attack"

.equ V_DATA, D_SCRATCH                  # u64: frame D
.equ V_PREDICTED, D_SCRATCH + 8         # 4 u64: P0..P3
.equ MAPPED_VA, 0x40000000              # 1 GiB: a fresh PDPT entry, PD and PT

main:
    mov r12, KERNEL_DATA_VADDR
    mov eax, HC_FRAME_ALLOC             # D
    call attempt
    mov [r12 + V_DATA], rax
    xor ebx, ebx
alloc_next:                             # P0..P3
    mov eax, HC_FRAME_ALLOC
    call attempt
    mov [r12 + rbx*8 + V_PREDICTED], rax
    inc rbx
    cmp rbx, 4
    jb alloc_next
    xor ebx, ebx
free_next:                              # back to the quota, lowest first
    mov rdi, [r12 + rbx*8 + V_PREDICTED]
    mov eax, HC_FRAME_FREE
    call attempt
    inc rbx
    cmp rbx, 4
    jb free_next

    mov eax, HC_ASPACE_CREATE           # S: its PML4 is P0
    call attempt
    mov r14, rax
    mov [r12 + D_SPACE], rax
    mov rdi, r14                        # needs a PDPT, a PD and a PT: P1..P3
    mov rsi, MAPPED_VA
    mov rdx, [r12 + V_DATA]
    mov r10d, MAP_USER
    mov eax, HC_MAP
    call attempt

    lea rsi, [r12 + V_PREDICTED]        # the predicted tables, S for ring-3 tries
    mov ecx, 4
    xor ebx, ebx
    call try_frames
    lea rax, [r12 + D_PARAMS]           # the boot tables the host names
    mov rcx, [rax + 16]
    lea rsi, [rax + 24]
    call try_frames
    jmp finish

str_name:           .asciz "map_own_pagetable"
