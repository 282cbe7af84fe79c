# channel_abuse.asm -- attacker kernel: abuse channels and ports (adversarial
# suite, class channel_abuse).
#
# The suite gives it one private queuing channel, from its port adv_tx to its
# own port adv_rx (message_size 16, depth 2), so that every abuse has a real
# target without touching the configuration's channels. It tries:
# 1. to open every port the configuration gives OTHER partitions, by name
#    (D_PARAMS: count, then entries of five u64: name length, 32 name bytes):
#    NOT_FOUND, a partition reaches only its own ports;
# 2. its own ports (handles 0 and 1), then: a send on the destination port
#    and a receive on the source port (DENIED); messages of 17 bytes, 0 bytes
#    and 2^64-1 bytes (INVALID_ARGUMENT); three sends into a queue of depth 2
#    (the third BUSY, all-or-nothing); receives into a 4-byte buffer
#    (NO_MEMORY), into ring 0's GDT, its read-only start-info page and a
#    range wrapping past 2^64 (BAD_ADDRESS): none consumes the message, so the
#    queue still holds 2; three receives (16, 16, then NOT_FOUND); handle 2,
#    never opened (BAD_HANDLE).
# Then it prints "channel_abuse: done, N records" and exits with 0.
.include "attack"

.equ TX, 0
.equ RX, 1
.equ BUF, KERNEL_DATA_VADDR + D_SCRATCH
.equ WRAP_8, 0xFFFFFFFFFFFFFFF8

main:
    mov r12, KERNEL_DATA_VADDR + D_PARAMS
    mov r13, [r12]                      # names of other partitions' ports
    lea r12, [r12 + 8]
foreign_next:
    test r13, r13
    jz foreign_done
    lea rdi, [r12 + 8]
    mov rsi, [r12]
    mov eax, HC_PORT_OPEN
    call attempt
    add r12, 40
    dec r13
    jmp foreign_next
foreign_done:
    lea rsi, [rip + table]
    lea rcx, [rip + table_end]
    call run_table
    jmp finish

# number, rdi, rsi, rdx, r10
table:
    .quad HC_PORT_OPEN, name_tx, 6, 0, 0                        # handle 0
    .quad HC_PORT_OPEN, name_rx, 6, 0, 0                        # handle 1
    .quad HC_PORT_SEND, RX, message, 8, 0                       # wrong direction
    .quad HC_PORT_RECEIVE, TX, BUF, 64, 0                       # wrong direction
    .quad HC_PORT_SEND, TX, message, 17, 0                      # larger than message_size
    .quad HC_PORT_SEND, TX, message, 0, 0                       # empty
    .quad HC_PORT_SEND, TX, message, 0xFFFFFFFFFFFFFFFF, 0
    .quad HC_PORT_SEND, TX, message, 16, 0                      # fills the queue
    .quad HC_PORT_SEND, TX, message, 16, 0
    .quad HC_PORT_SEND, TX, message, 16, 0                      # overflow
    .quad HC_PORT_STATUS, RX, 0, 0, 0                           # 2 waiting
    .quad HC_PORT_RECEIVE, RX, BUF, 4, 0                        # buffer too small
    .quad HC_PORT_RECEIVE, RX, ADV_GDT_VADDR, 64, 0             # into ring 0's GDT
    .quad HC_PORT_RECEIVE, RX, START_INFO_VADDR, 64, 0          # into its read-only page
    .quad HC_PORT_RECEIVE, RX, WRAP_8, 64, 0                    # wraps past 2^64
    .quad HC_PORT_STATUS, RX, 0, 0, 0                           # still 2 waiting
    .quad HC_PORT_RECEIVE, RX, BUF, 64, 0
    .quad HC_PORT_RECEIVE, RX, BUF, 64, 0
    .quad HC_PORT_RECEIVE, RX, BUF, 64, 0                       # empty
    .quad HC_PORT_STATUS, 2, 0, 0, 0                            # never opened
table_end:

name_tx:            .ascii "adv_tx"
name_rx:            .ascii "adv_rx"
message:            .ascii "adversary-msg-16"
                    .ascii "X"                                  # byte 17
str_name:           .asciz "channel_abuse"
