# crash.asm -- attacker kernel: crashes its own kernel (adversarial suite,
# class guest_kernel_crash).
#
# Prints "crash: booting", gives one window up, prints "crash: overflowing
# the kernel stack" and recurses until its boot stack runs into the unmapped
# page below it: a kernel #PF (memory_violation) at
# KERNEL_STACK_TOP - KERNEL_STACK_SIZE - 8. Ring 0 stops the partition and
# reports the fault; ring 1 applies the partition's health table (halt,
# restart, ...), while every other partition runs on untouched. It keeps no
# state, so a restarted crash starts over.
.include "attack"

main:
    lea rsi, [rip + str_booting]
    call print_line
    mov eax, HC_YIELD
    int 0x82
    lea rsi, [rip + str_overflow]
    call print_line
recurse:
    call recurse

str_name:           .asciz "crash"
str_booting:        .asciz "crash: booting"
str_overflow:       .asciz "crash: overflowing the kernel stack"
