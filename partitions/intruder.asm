# intruder.asm -- example guest-role kernel that oversteps (ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# A partition of role "guest" tries what it was not given and prints each
# raw result (a negative rax is -Status):
#   HC_PART_LIST                -> E_DENIED (-2): not a system partition
#   HC_PART_CONTROL(1, HALT)    -> E_DENIED (-2)
#   HC_PORT_OPEN("out")         -> E_NOT_FOUND (-8): no such port configured
# then exits with 0.
#
# Lines:  intruder: part_list <rax>
#         intruder: part_control <rax>
#         intruder: port_open <rax>
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_LIST, 0x200                      # room for MAX_ENTRIES entries
.equ MAX_ENTRIES, 16
.equ VICTIM, 1                          # the partition it tries to halt

start:
    mov rdi, KERNEL_DATA_VADDR + D_LIST # HC_PART_LIST(D_LIST, 16)
    mov esi, MAX_ENTRIES
    mov eax, HC_PART_LIST
    int 0x82
    lea rsi, [rip + str_part_list]
    call print_str_dec

    mov edi, VICTIM                     # HC_PART_CONTROL(1, PART_HALT)
    mov esi, PART_HALT
    mov eax, HC_PART_CONTROL
    int 0x82
    lea rsi, [rip + str_part_control]
    call print_str_dec

    lea rdi, [rip + str_port]           # HC_PORT_OPEN("out")
    mov esi, 3
    mov eax, HC_PORT_OPEN
    int 0x82
    lea rsi, [rip + str_port_open]
    call print_str_dec

    xor edi, edi
    jmp exit

# Console helpers (line_start, put_str, put_bytes, put_dec, line_end,
# print_line, print_str_dec, exit): partitions/console.inc. It needs D_LINE,
# the offset of a line buffer in the data area.
.include "console"

# =============================================================================
# Constant strings
# =============================================================================
str_port:           .asciz "out"
str_part_list:      .asciz "intruder: part_list "
str_part_control:   .asciz "intruder: part_control "
str_port_open:      .asciz "intruder: port_open "
