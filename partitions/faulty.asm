# faulty.asm -- example kernel that crashes on purpose (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Prints "faulty: booting", then "faulty: tick 1" .. "faulty: tick 3", one per
# window (HC_YIELD), then writes to address 0. Page 0 is never mapped, so this
# is a kernel memory violation: the SPK stops the partition and ring 1's
# health monitor applies its policy (e.g. a cold restart). It keeps no state
# across a cold restart: a restarted faulty simply starts over.
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ TICKS, 3

# rbx = tick number.
start:
    lea rsi, [rip + str_booting]
    call print_line
    mov ebx, 1
tick:
    lea rsi, [rip + str_tick]           # "faulty: tick <n>"
    mov rax, rbx
    call print_str_dec
    mov eax, HC_YIELD
    int 0x82
    inc rbx
    cmp rbx, TICKS
    jbe tick

    xor eax, eax                        # the fault: a store to address 0
    mov qword ptr [rax], 1
crashed:                                # never reached
    jmp crashed

# Console helpers (line_start, put_str, put_bytes, put_dec, line_end,
# print_line, print_str_dec, exit): partitions/console.inc. It needs D_LINE,
# the offset of a line buffer in the data area.
.include "console"

# =============================================================================
# Constant strings
# =============================================================================
str_booting:        .asciz "faulty: booting"
str_tick:           .asciz "faulty: tick "
