# cpl3_attempts.asm -- attacker app (CPL 3) of the adversarial suite, class
# cpl3_hypercall_and_privileged; its kernel is
# partitions/adversarial/cpl3_host.asm.
#
# Entered with rdi = the attempt to make, it makes that one and, should it
# not trap, tells its kernel with syscall 0 (survived). Attempt 0 reports the
# rflags ring 0 gave it (syscall 1); past the last attempt it calls syscall 2
# (done). Its own attempts: `int 0x82` asking for HC_EXIT (the partition
# would end), a gate it may not use, a store into its kernel's data, a load
# from ring 0's GDT, an iretq and a stack-segment load into CPL 2's
# selectors, a prefixed syscall, vmcall, ud2; then the instructions reserved
# to CPL 0 of partitions/adversarial/privileged.inc (shared with the CPL 2
# attacker). Each must trap to its kernel: #GP, #PF or #UD (the suite's
# expectations; with the QEMU64 CPU model sysret and rdpmc are #UD).
.equ SYS_SURVIVED, 0
.equ SYS_REPORT, 1
.equ SYS_DONE, 2
.equ GDT, 0xFFFFFF8000000000            # spk.abi.GDT_VADDR: ring 0's slot
.equ GUEST_CODE, 0x1A                   # spk.abi.SEL_GUEST_CODE (CPL 2)
.equ GUEST_DATA, 0x22                   # spk.abi.SEL_GUEST_DATA

start:
    pushfq                              # the rflags ring 0 gave (attempt 0)
    pop r14
    mov r15, rdi
    mov rbx, rdi
    lea rsi, [rip + own_attempts]
    lea rdi, [rip + own_attempts_end]
    call find_attempt
    test rax, rax
    jz all_done
    jmp qword ptr [rax]
all_done:
    mov eax, SYS_DONE
    int 0x80
hang:
    jmp hang
survived:
    mov rsi, rax
    mov rdi, r15
    mov eax, SYS_SURVIVED
    int 0x80
    jmp hang

a_rflags:   mov rsi, r14
            mov rdi, r15
            mov eax, SYS_REPORT
            int 0x80
            jmp hang
a_int82:    mov eax, HC_EXIT
            mov edi, 0x42
            int 0x82
            jmp survived
a_int81:    int 0x81
            jmp survived
a_kernel:   mov rax, KERNEL_DATA_VADDR  # store into its kernel's data
            mov [rax], rax
            jmp survived
a_gdt:      mov rax, GDT                # read ring 0's GDT
            mov rax, [rax]
            jmp survived
a_iretq:    mov rax, rsp                # an iret frame into CPL 2's code
            push GUEST_DATA
            push rax
            pushfq
            push GUEST_CODE
            lea rax, [rip + survived]
            push rax
            iretq
a_mov_ss:   mov eax, GUEST_DATA
            mov ss, ax
            jmp survived
a_syscall:  .byte 0x66, 0x66, 0x0f, 0x05    # a prefixed syscall
            jmp survived
a_vmcall:   vmcall
            jmp survived
a_ud2:      ud2
            jmp survived

own_attempts:
    .quad a_rflags, a_rflags
    .quad a_int82, a_int82
    .quad a_int81, a_int81
    .quad a_kernel, a_kernel
    .quad a_gdt, a_gdt
    .quad a_iretq, a_iretq
    .quad a_mov_ss, a_mov_ss
    .quad a_syscall, a_syscall
    .quad a_vmcall, a_vmcall
    .quad a_ud2, a_ud2
own_attempts_end:

.include "privileged"
