# manager.asm -- example system-partition kernel (role "system", ring 2).
#
# The whole partition: no apps, entry = first byte, stack at KERNEL_STACK_TOP.
# Uses the management hypercalls only a system partition may call:
#   1. HC_PART_LIST (at most 16 entries) and print the table,
#   2. HC_PART_CONTROL(id, PART_START) for every declared partition (state 5).
#      Ring 1 carries the requests out when this partition's run ends,
#   3. give up two windows (HC_YIELD), list and print again,
#   4. HC_PART_QUERY of its own id (start-info SI_PARTITION_ID) and print the
#      first counter, its instructions so far, then exit with 0.
#
# Lines:  manager: <n> partitions
#         manager: id <id> <name> state <state>      (one per entry)
#         manager: starting <name>
#         manager: start <name> failed <error>
#         manager: my instructions <n>
#         manager: part_list failed <error>          (exit 1)
#         manager: part_query failed <error>         (exit 2)
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK):
.equ D_LINE, 0x000                      # 256 bytes: console line buffer
.equ D_LIST, 0x200                      # MAX_ENTRIES * PART_ENTRY_SIZE (768)
.equ D_QUERY, 0x600                     # 9 u64: the PART_QUERY record
.equ MAX_ENTRIES, 16

# One PART_LIST entry (PART_ENTRY_SIZE bytes): id, state, name.
.equ ENT_ID, 0
.equ ENT_STATE, 8
.equ ENT_NAME, 16                       # 32 bytes, NUL padded
.equ NAME_LEN, 32
.equ STATE_DECLARED, 5                  # PartState.DECLARED
.equ Q_INSTRUCTIONS, 0                  # first word of the PART_QUERY record

start:
    call show_list                      # r13 = entries in D_LIST
    test rax, rax
    js list_failed
    mov r13, rax

    # Start every declared partition. rbx = entry, r12 = entries left.
    mov rbx, KERNEL_DATA_VADDR + D_LIST
    mov r12, r13
start_next:
    test r12, r12
    jz start_done
    cmp qword ptr [rbx + ENT_STATE], STATE_DECLARED
    jne start_skip
    mov rdi, [rbx + ENT_ID]             # HC_PART_CONTROL(id, PART_START)
    mov esi, PART_START
    mov eax, HC_PART_CONTROL
    int 0x82
    test rax, rax
    js start_refused
    call line_start                     # "manager: starting <name>"
    lea rsi, [rip + str_starting]
    call put_str
    lea rsi, [rbx + ENT_NAME]
    call put_name
    call line_end
    jmp start_skip
start_refused:
    push rax                            # "manager: start <name> failed <error>"
    call line_start
    lea rsi, [rip + str_start]
    call put_str
    lea rsi, [rbx + ENT_NAME]
    call put_name
    lea rsi, [rip + str_failed]
    call put_str
    pop rax
    call put_dec
    call line_end
start_skip:
    add rbx, PART_ENTRY_SIZE
    dec r12
    jmp start_next
start_done:

    # Two windows pass: ring 1 has acted on the requests by then.
    mov eax, HC_YIELD
    int 0x82
    mov eax, HC_YIELD
    int 0x82
    call show_list
    test rax, rax
    js list_failed

    # Own usage: HC_PART_QUERY(own id, D_QUERY).
    mov rax, START_INFO_VADDR           # a 64-bit address: through a register
    mov rdi, [rax + SI_PARTITION_ID]
    mov rsi, KERNEL_DATA_VADDR + D_QUERY
    mov eax, HC_PART_QUERY
    int 0x82
    test rax, rax
    js query_failed
    mov rax, KERNEL_DATA_VADDR + D_QUERY
    mov rax, [rax + Q_INSTRUCTIONS]
    lea rsi, [rip + str_instructions]   # "manager: my instructions <n>"
    call print_str_dec
    xor edi, edi
    jmp exit

list_failed:
    lea rsi, [rip + str_list_failed]
    call print_str_dec
    mov edi, 1
    jmp exit

query_failed:
    lea rsi, [rip + str_query_failed]
    call print_str_dec
    mov edi, 2
    jmp exit

# show_list: HC_PART_LIST into D_LIST (at most MAX_ENTRIES) and print
# "manager: <n> partitions" and one line per entry written. Returns rax =
# the number of entries in D_LIST, or the negative error (nothing printed).
# Keeps rbx, r12-r15.
show_list:
    push rbx
    push r12
    push r13
    mov rdi, KERNEL_DATA_VADDR + D_LIST
    mov esi, MAX_ENTRIES
    mov eax, HC_PART_LIST
    int 0x82
    test rax, rax
    js show_list_ret
    mov r12, rax                        # r12 = partitions in the system
    call line_start
    lea rsi, [rip + str_prefix]
    call put_str
    mov rax, r12
    call put_dec
    lea rsi, [rip + str_partitions]
    call put_str
    call line_end
    cmp r12, MAX_ENTRIES                # only MAX_ENTRIES were written
    jbe show_list_count_ok
    mov r12d, MAX_ENTRIES
show_list_count_ok:
    mov r13, r12                        # r13 = entries to return
    mov rbx, KERNEL_DATA_VADDR + D_LIST
show_list_next:
    test r12, r12
    jz show_list_done
    call line_start                     # "manager: id <id> <name> state <s>"
    lea rsi, [rip + str_id]
    call put_str
    mov rax, [rbx + ENT_ID]
    call put_dec
    mov byte ptr [rdi], ' '
    inc rdi
    lea rsi, [rbx + ENT_NAME]
    call put_name
    lea rsi, [rip + str_state]
    call put_str
    mov rax, [rbx + ENT_STATE]
    call put_dec
    call line_end
    add rbx, PART_ENTRY_SIZE
    dec r12
    jmp show_list_next
show_list_done:
    mov rax, r13
show_list_ret:
    pop r13
    pop r12
    pop rbx
    ret

# put_name: append the name at rsi: up to NAME_LEN bytes, ending at a NUL.
put_name:
    mov ecx, NAME_LEN
put_name_loop:
    mov al, [rsi]
    test al, al
    jz put_name_done
    mov [rdi], al
    inc rdi
    inc rsi
    dec ecx
    jnz put_name_loop
put_name_done:
    ret

# Console helpers (line_start, put_str, put_bytes, put_dec, line_end,
# print_line, print_str_dec, exit): partitions/console.inc. It needs D_LINE,
# the offset of a line buffer in the data area.
.include "console"

# =============================================================================
# Constant strings
# =============================================================================
str_prefix:         .asciz "manager: "
str_partitions:     .asciz " partitions"
str_id:             .asciz "manager: id "
str_state:          .asciz " state "
str_starting:       .asciz "manager: starting "
str_start:          .asciz "manager: start "
str_failed:         .asciz " failed "
str_instructions:   .asciz "manager: my instructions "
str_list_failed:    .asciz "manager: part_list failed "
str_query_failed:   .asciz "manager: part_query failed "
