# double_fetch.asm -- attacker kernel: change a hypercall's buffer after ring 0
# has looked at it (adversarial suite, class double_fetch).
#
# One vCPU, and a guest kernel is never interrupted at CPL 2: ring 0 handles
# a hypercall between two guest instructions, so no guest code can run while
# ring 0 reads guest memory and a concurrent double fetch cannot happen here.
# What this attacker checks is the copy-once semantics that make it safe
# with more vCPUs, using its private loop channel (adv_tx -> adv_rx):
# 1. PORT_SEND of "ORIGINAL-MESSAGE", then it overwrites its buffer with
#    "CHANGED-AFTER-TX" and receives into D_SCRATCH + 0x100: ring 0 copied
#    the message at the send, so the receiver must get the original.
# 2. ATTEST with the nonce and the output buffer aliased (D_SCRATCH + 0x200):
#    ring 0 must copy the nonce in before writing the quote over it, so the
#    quote's nonce is "NONCE-ALIASED-01".
# 3. MEASURE, CONSOLE_WRITE, PORT_OPEN and IRET with distinct ranges: the
#    host counts ring 0's reads of guest memory per hypercall (once each).
# Then it prints "double_fetch: done, N records" and exits with 0.
.include "attack"

.equ SENT, D_SCRATCH                    # the send buffer, changed afterwards
.equ RECEIVED, D_SCRATCH + 0x100        # what the receiver got
.equ QUOTE, D_SCRATCH + 0x200           # nonce in, quote out (aliased)
.equ QUOTE_ROOM, 0xB00
.equ FRAME, D_SCRATCH + 0xD00           # an IRET frame of zeros (rip 0)

main:
    mov r12, KERNEL_DATA_VADDR
    lea rdi, [rip + name_tx]            # handles 0 and 1
    mov esi, 6
    mov eax, HC_PORT_OPEN
    call attempt
    lea rdi, [rip + name_rx]
    mov eax, HC_PORT_OPEN
    call attempt

    lea rsi, [rip + original]           # 1. send, change, receive
    lea rdi, [r12 + SENT]
    call copy16
    xor edi, edi
    lea rsi, [r12 + SENT]
    mov edx, 16
    mov eax, HC_PORT_SEND
    call attempt
    lea rsi, [rip + changed]
    lea rdi, [r12 + SENT]
    call copy16
    mov edi, 1
    lea rsi, [r12 + RECEIVED]
    mov edx, 64
    mov eax, HC_PORT_RECEIVE
    call attempt

    lea rsi, [rip + nonce]              # 2. nonce and quote aliased
    lea rdi, [r12 + QUOTE]
    call copy16
    lea rdi, [r12 + QUOTE]
    mov esi, 16
    mov rdx, rdi
    mov r10d, QUOTE_ROOM
    mov eax, HC_ATTEST
    call attempt

    lea rdi, [rip + original]           # 3. one read per range
    mov esi, 16
    lea rdx, [rip + changed]
    mov r10d, 16
    mov eax, HC_MEASURE
    call attempt
    lea rdi, [rip + str_line]
    mov esi, 19
    mov eax, HC_CONSOLE_WRITE
    call attempt
    lea rdi, [rip + name_tx]
    mov esi, 6
    mov eax, HC_PORT_OPEN
    call attempt
    mov qword ptr [r12 + FRAME + 128], 0
    xor edi, edi
    lea rsi, [r12 + FRAME]
    mov eax, HC_IRET
    call attempt
    jmp finish

# copy16: copy 16 bytes from rsi to rdi.
copy16:
    mov rax, [rsi]
    mov [rdi], rax
    mov rax, [rsi + 8]
    mov [rdi + 8], rax
    ret

name_tx:            .ascii "adv_tx"
name_rx:            .ascii "adv_rx"
original:           .ascii "ORIGINAL-MESSAGE"
changed:            .ascii "CHANGED-AFTER-TX"
nonce:              .ascii "NONCE-ALIASED-01"
str_line:           .ascii "double_fetch: read\n"
str_name:           .asciz "double_fetch"
