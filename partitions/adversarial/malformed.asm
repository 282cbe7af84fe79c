# malformed.asm -- attacker kernel: malformed hypercall arguments (adversarial
# suite, class malformed_arguments).
#
# Bad handles (address spaces never created, ports never opened), reserved
# bits in MAP flags, addresses unaligned or in the wrong half, frame numbers
# past RAM, entry kinds out of range, management calls from a guest
# partition, unknown hypercall numbers (among them HC_EXIT with bit 32 set:
# a number the SPK truncated to 32 bits would end the partition), and IRET
# frames whose rip or rsp leaves the user half. Every call must fail with the
# status docs/abi.md gives, and change nothing. Then it prints
# "malformed: done, N records" and exits with 0.
.include "attack"

.equ BUF, KERNEL_DATA_VADDR + D_SCRATCH
.equ FRAME, D_SCRATCH + 0x100           # an 18-word IRET frame in the data area
.equ ALL_ONES, 0xFFFFFFFFFFFFFFFF
.equ BIT63, 0x8000000000000000
.equ APP_VA, APP_IMAGE_VADDR

main:
    lea rsi, [rip + table]
    lea rcx, [rip + table_end]
    call run_table
    mov r12, KERNEL_DATA_VADDR          # IRET frames, all else zero
    lea r13, [r12 + FRAME]
    mov rax, KERNEL_BASE                # rip in the kernel half
    mov [r13 + 128], rax
    mov rsi, r13
    call iret_space0
    mov qword ptr [r13 + 128], 0        # rip 0: below the user half
    call iret_space0
    mov qword ptr [r13 + 128], APP_VA   # a user rip but rsp past the user half
    mov rax, ALL_ONES - 7
    mov [r13 + 32], rax
    call iret_space0
    mov edi, 99                         # a space never created
    mov eax, HC_IRET
    call attempt
    jmp finish

# iret_space0: IRET(0, rsi), recorded (it must fail and come back).
iret_space0:
    xor edi, edi
    mov eax, HC_IRET
    jmp attempt

# number, rdi, rsi, rdx, r10
table:
    .quad HC_ASPACE_SWITCH, 7, 0, 0, 0                          # never created
    .quad HC_ASPACE_SWITCH, ALL_ONES, 0, 0, 0
    .quad HC_ASPACE_DESTROY, 0, 0, 0, 0                         # the boot space
    .quad HC_ASPACE_DESTROY, 99, 0, 0, 0
    .quad HC_MAP, 99, APP_VA, 0, MAP_USER                       # bad handle
    .quad HC_MAP, 0, APP_VA, 0, 4                               # reserved flag bit 2
    .quad HC_MAP, 0, APP_VA, 0, BIT63 + MAP_USER                # reserved flag bit 63
    .quad HC_MAP, 0, APP_VA + 1, 0, MAP_USER                    # unaligned
    .quad HC_MAP, 0, 0, 0, MAP_USER                             # page 0
    .quad HC_MAP, 0, USER_END, 0, MAP_USER                      # past the user half
    .quad HC_MAP, 0, KERNEL_BASE + 0x40000000, 0, MAP_USER      # user mapping, kernel half
    .quad HC_MAP, 0, APP_VA, 0, MAP_WRITE                       # kernel mapping, user half
    .quad HC_MAP, 0, ADV_GDT_VADDR, 0, MAP_WRITE                # ring 0's slot
    .quad HC_MAP, 0, APP_VA, ALL_ONES, MAP_USER                 # no such frame
    .quad HC_UNMAP, 0, APP_VA + 1, 0, 0                         # unaligned
    .quad HC_UNMAP, 0, ADV_GDT_VADDR, 0, 0                      # ring 0's GDT
    .quad HC_UNMAP, 0, APP_VA, 0, 0                             # nothing there
    .quad HC_UNMAP, 42, APP_VA, 0, 0                            # bad handle
    .quad HC_SET_ENTRY, 3, KERNEL_BASE, 0, 0                    # no entry kind 3
    .quad HC_SET_ENTRY, ALL_ONES, KERNEL_BASE, 0, 0
    .quad HC_SET_KERNEL_STACK, KERNEL_STACK_TOP - 4, 0, 0, 0    # unaligned
    .quad HC_SET_KERNEL_STACK, KERNEL_BASE, 0, 0, 0             # must be above KERNEL_BASE
    .quad HC_FRAME_FREE, ALL_ONES, 0, 0, 0                      # no such frame
    .quad HC_FRAME_FREE, 0, 0, 0, 0                             # frame 0: ring 0's
    .quad HC_PORT_SEND, ALL_ONES, BUF, 8, 0                     # no such port
    .quad HC_PORT_RECEIVE, 5, BUF, 64, 0
    .quad HC_PORT_STATUS, 0, 0, 0, 0                            # no port opened
    .quad HC_PORT_OPEN, BUF, 0, 0, 0                            # empty name
    .quad HC_PORT_OPEN, BUF, 32, 0, 0                           # name too long
    .quad HC_PART_CONTROL, 1, 99, 0, 0                          # guest role, bad op
    .quad HC_PART_QUERY, 1, BUF, 0, 0                           # guest role
    .quad HC_PART_LIST, BUF, 1, 0, 0                            # guest role
    .quad 27, 0, 0, 0, 0                                        # unknown numbers
    .quad 0x82, 0, 0, 0, 0
    .quad 0x7FFFFFFF, 0, 0, 0, 0
    .quad 0x100000000 + HC_EXIT, 0, 0, 0, 0                     # HC_EXIT with bit 32 set
    .quad 0xFFFFFFFF00000000 + HC_YIELD, 0, 0, 0, 0             # HC_YIELD, high half set
    .quad BIT63, 0, 0, 0, 0
    .quad ALL_ONES, 0, 0, 0, 0
table_end:

str_name:           .asciz "malformed"
