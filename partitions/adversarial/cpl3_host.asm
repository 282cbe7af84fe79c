# cpl3_host.asm -- attacker kernel: hosts one hostile app at CPL 3
# (adversarial suite, class cpl3_hypercall_and_privileged; the app is
# apps/adversarial/cpl3_attempts.asm, boot module 0).
#
# It maps the app (read-only for ring 3) and a stack page in a new space,
# registers its syscall and trap entries, and enters the app with IRET for
# attempt D_NEXT (the app's rdi), asking for rflags with every bit set (IOPL
# 3 included: ring 0 must keep only the user bits). The app makes one
# misdeed per entry: an `int 0x82` hypercall, a privileged instruction, a
# store into its kernel. Each must trap to this kernel's trap entry, which
# records REC_TRAP (attempt, vector, error code, fault address, rip) and
# enters the app again for the next attempt. The app's syscalls: 0 survived
# (REC_SURVIVED: attempt, value), 1 report (REC_REPORT: attempt, value),
# 2 done: it prints "cpl3_host: done, N records" and exits with 0.
.include "attack"

.equ SYS_SURVIVED, 0
.equ SYS_REPORT, 1
.equ SYS_DONE, 2
.equ APP_STACK_PAGE, 0x7FF000
.equ APP_STACK_TOP, 0x800000
.equ MOD0_PAGES, SI_MODULES + SIM_PAGES  # module 0 (SIM_FIRST_MFN is 0)
.equ FRAME, D_SCRATCH                   # the 18-word IRET frame
.equ FRAME_RSP, 32
.equ FRAME_RDI, 56
.equ FRAME_RIP, 128
.equ FRAME_RFLAGS, 136

main:
    mov edi, ENTRY_SYSCALL
    lea rsi, [rip + syscall_entry]
    mov eax, HC_SET_ENTRY
    call attempt
    mov edi, ENTRY_TRAP
    lea rsi, [rip + trap_entry]
    mov eax, HC_SET_ENTRY
    call attempt
    mov rdi, KERNEL_STACK_TOP
    mov eax, HC_SET_KERNEL_STACK
    call attempt
    mov eax, HC_ASPACE_CREATE
    call attempt
    mov r13, rax
    mov r12, KERNEL_DATA_VADDR
    mov [r12 + D_SPACE], rax
    mov r14, START_INFO_VADDR
    mov r15, [r14 + SI_MODULES]         # first frame of module 0
    xor ebx, ebx
map_next:                               # the app's pages, read-only for ring 3
    cmp rbx, [r14 + MOD0_PAGES]
    jae map_done
    mov rdi, r13
    mov rsi, rbx
    shl rsi, 12
    add rsi, APP_IMAGE_VADDR
    lea rdx, [r15 + rbx]
    mov r10d, MAP_USER
    mov eax, HC_MAP
    call attempt
    inc rbx
    jmp map_next
map_done:
    mov eax, HC_FRAME_ALLOC             # its stack page
    call attempt
    mov rdi, r13
    mov esi, APP_STACK_PAGE
    mov rdx, rax
    mov r10d, MAP_USER + MAP_WRITE
    mov eax, HC_MAP
    call attempt

# enter_app: enter the app for attempt D_NEXT, on a fresh kernel stack.
enter_app:
    mov rsp, KERNEL_STACK_TOP
    mov r12, KERNEL_DATA_VADDR
    lea rdi, [r12 + FRAME]
    xor eax, eax
    mov ecx, 18
    rep stosq
    lea rsi, [r12 + FRAME]
    mov rax, [r12 + D_NEXT]
    mov [rsi + FRAME_RDI], rax
    mov qword ptr [rsi + FRAME_RIP], APP_IMAGE_VADDR
    mov qword ptr [rsi + FRAME_RSP], APP_STACK_TOP
    mov qword ptr [rsi + FRAME_RFLAGS], -1
    mov rdi, [r12 + D_SPACE]
    mov eax, HC_IRET
    call attempt                        # back here only if refused: stop
    jmp finish

# trap_entry: [rsp] = vector, error code, fault address, then the iret frame.
trap_entry:
    mov rax, KERNEL_DATA_VADDR
    mov rbx, [rax + D_NEXT]
    mov rdi, [rsp]
    mov rsi, [rsp + 8]
    mov rdx, [rsp + 16]
    mov r10, [rsp + 24]
    mov eax, REC_TRAP
    call record
    jmp next_attempt

# syscall_entry: rax = SYS_*, rdi = the attempt, rsi = a value.
syscall_entry:
    cmp rax, SYS_DONE
    je finish
    mov rbx, rdi
    mov rdi, rsi
    cmp rax, SYS_REPORT
    mov eax, REC_SURVIVED
    jne syscall_record
    mov eax, REC_REPORT
syscall_record:
    call record
next_attempt:
    mov rax, KERNEL_DATA_VADDR
    inc qword ptr [rax + D_NEXT]
    jmp enter_app

str_name:           .asciz "cpl3_host"
