# cpl2_privileged.asm -- attacker kernel: privileged instructions at CPL 2
# (adversarial suite, class cpl2_privileged_instructions).
#
# A guest kernel runs at a real CPL 2: every instruction reserved to CPL 0
# must fault, and a kernel fault stops the partition (ring 1 decides what
# next). So it tries ONE instruction per life: the suite gives it a health
# table that warm-restarts it (a warm restart keeps the data area, hence
# D_NEXT and the log). Its own attempts first (`int 0x80` and `syscall`, which
# only an app may use), then those of privileged.inc (shared with the CPL 3
# attacker). Each life records REC_TRY (attempt, rip of the instruction that
# must fault, entry) and makes the attempt; should it not fault, it records
# REC_SURVIVED and goes on to the next one in the same life. After the last
# attempt it prints "cpl2_privileged: done, N records" and exits with 0.
.include "attack"

main:
    mov r12, KERNEL_DATA_VADDR
next:
    mov rbx, [r12 + D_NEXT]
    lea rsi, [rip + own_attempts]
    lea rdi, [rip + own_attempts_end]
    call find_attempt
    test rax, rax
    jz finish
    inc qword ptr [r12 + D_NEXT]
    mov rdi, [rax + 8]                  # the instruction that must fault
    mov rsi, [rax]                      # where the attempt starts
    mov eax, REC_TRY
    call record
    jmp rsi
survived:                               # it did not fault
    mov rdi, rax
    mov rbx, [r12 + D_NEXT]
    dec rbx
    mov eax, REC_SURVIVED
    call record
    jmp next

a_int80:    int 0x80
            jmp survived
a_syscall:  syscall
            jmp survived

own_attempts:
    .quad a_int80, a_int80
    .quad a_syscall, a_syscall
own_attempts_end:

.include "privileged"

str_name:           .asciz "cpl2_privileged"
