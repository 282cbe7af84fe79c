# bad_pointers.asm -- attacker kernel: hypercall pointers into ranges it does
# not own or that wrap (adversarial suite, class hypercall_pointer_ranges).
#
# Every guest range a hypercall names must lie inside the caller's own space,
# canonical, in one half, without wrapping past 2^64, and be writable when
# ring 0 writes it. The table below names ranges that break each rule: the
# unmapped page above page 0, the end of the user half running into
# non-canonical addresses, ranges wrapping past 2^64, the end of its data
# area, the end of the kernel half, ring 0's slot 511 (its GDT: readable by
# design, never writable), and its own read-only start-info page as an output.
# D_PARAMS word 0 (from the host) is the physical address of another
# partition's frame, tried as a pointer: ring 0 never takes physical addresses.
# Every call must be refused: BAD_ADDRESS, or INVALID_ARGUMENT when an IRET
# frame read from the GDT names no user rip. D_TAIL must stay zero (a refused
# ATTEST writes nothing). Then "bad_pointers: done, N records", exit 0.
.include "attack"

.equ NONCE, KERNEL_DATA_VADDR + D_SCRATCH          # 8 readable bytes
.equ DATA_END, KERNEL_DATA_VADDR + KERNEL_DATA_SIZE
.equ WRAP_16, 0xFFFFFFFFFFFFFFF0                   # 16 bytes below 2^64
.equ STACK_BELOW, KERNEL_STACK_TOP - ADV_KERNEL_STACK_SIZE

main:
    lea rsi, [rip + table]
    lea rcx, [rip + table_end]
    call run_table
    mov rax, KERNEL_DATA_VADDR + D_PARAMS       # a victim's physical address
    mov rdi, [rax]
    mov esi, 16
    mov eax, HC_CONSOLE_WRITE
    call attempt
    jmp finish

# number, rdi, rsi, rdx, r10
table:
    .quad HC_CONSOLE_WRITE, ADV_USER_BASE, 16, 0, 0             # unmapped user page
    .quad HC_CONSOLE_WRITE, USER_END - 8, 16, 0, 0              # runs out of the user half
    .quad HC_CONSOLE_WRITE, WRAP_16, 32, 0, 0                   # wraps past 2^64
    .quad HC_CONSOLE_WRITE, KERNEL_BASE - 8, 16, 0, 0           # starts non-canonical
    .quad HC_CONSOLE_WRITE, DATA_END - 8, 16, 0, 0              # crosses the end of its data area
    .quad HC_CONSOLE_WRITE, ADV_KERNEL_END - 8, 16, 0, 0        # crosses the end of the kernel half
    .quad HC_CONSOLE_WRITE, ADV_GDT_VADDR + 0x1000, 16, 0, 0    # ring 0's slot past the GDT
    .quad HC_CONSOLE_WRITE, STACK_BELOW - 8, 16, 0, 0           # below its stack (the guard)
    .quad HC_MEASURE, NONCE, 8, WRAP_16, 32                     # name wraps
    .quad HC_MEASURE, USER_END - 16, 32, NONCE, 4               # data leaves the user half
    .quad HC_MEASURE, KERNEL_DATA_VADDR, 0x1000000, NONCE, 4    # 16 MiB from its data area
    .quad HC_ATTEST, NONCE, 8, START_INFO_VADDR, 4096           # output: its read-only page
    .quad HC_ATTEST, NONCE, 8, ADV_GDT_VADDR, 4096              # output: ring 0's GDT
    .quad HC_ATTEST, NONCE, 8, DATA_END - 128, 4096             # output crosses its data end
    .quad HC_ATTEST, WRAP_16 + 8, 16, NONCE, 4096               # nonce wraps
    .quad HC_ATTEST, NONCE, 8, WRAP_16 - 0xF0, 4096             # output wraps
    .quad HC_PORT_OPEN, WRAP_16 + 14, 4, 0, 0                   # name wraps
    .quad HC_PORT_OPEN, ADV_KERNEL_END - 2, 4, 0, 0             # name leaves the kernel half
    .quad HC_IRET, 0, WRAP_16 + 8, 0, 0                         # frame wraps
    .quad HC_IRET, 0, DATA_END - 64, 0, 0                       # frame crosses its data end
    .quad HC_IRET, 0, ADV_GDT_VADDR, 0, 0                       # frame read from ring 0's GDT
    .quad HC_SET_ENTRY, ENTRY_TRAP, ADV_GDT_VADDR, 0, 0         # entry in ring 0's slot
    .quad HC_SET_ENTRY, ENTRY_SYSCALL, APP_IMAGE_VADDR, 0, 0    # entry in the user half
    .quad HC_SET_KERNEL_STACK, ADV_GDT_VADDR + 0x1000, 0, 0, 0  # stack in ring 0's slot
    .quad HC_SET_KERNEL_STACK, ADV_KERNEL_END + 8, 0, 0, 0      # stack past the kernel half
table_end:

str_name:           .asciz "bad_pointers"
