# spin.asm -- attacker kernel: never gives its window up (adversarial suite,
# class time_budget_overrun).
#
# Prints "spin: spinning", arms its timer in the past (an upcall is then
# pending, which a guest kernel at CPL 2 never receives: no way out there
# either), and loops forever with interrupts as they are. Ring 0 must preempt
# it exactly at the end of each of its windows, every other partition keeps
# its windows, and ring 1 applies the overrun policy of the partition's table.
.include "attack"

main:
    lea rsi, [rip + str_spinning]
    call print_line
    mov edi, 1                          # a deadline long past: pending at once
    mov eax, HC_TIMER_SET
    call attempt
spin:
    inc rbx
    jmp spin

str_name:           .asciz "spin"
str_spinning:       .asciz "spin: spinning"
