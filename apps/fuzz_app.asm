# fuzz_app.asm -- the ring-3 fuzz app: performs, for real at CPL 3 under the
# reference kernel, the actions an isolation campaign writes into its mailbox,
# one per wake-up. The host side is fuzz/app_agent.py (it keeps the offsets
# below in step); docs/guest.md describes the kernel it runs under.
#
# The same image runs twice in the partition. Pid 1 is the fuzz app. Any other
# pid is a bystander that sleeps forever and never writes its memory: the
# campaign checks that nothing the fuzz app does reaches it.
#
# The mailbox is the first bytes of the app's only writable page, its stack
# page (APP_STACK_PAGE = 0x7FF000, which the kernel maps user RW and
# no-execute); the host writes it through physical RAM. u64 words:
#   +0    command: 0 nap, 1 system call, 2 call the code at code_area
#   +8    gate of a system call: 0 int 0x80, 1 syscall
#   +16   started: set to 1 when the app takes the command
#   +24   done: set to 1 when the app has recorded the outcome
#   +32   rflags loaded (popfq) just before the system call or the code
#   +40   rflags right after it
#   +48   16 GPRs loaded before it, in HC_IRET order (rax rcx rdx rbx rsp rbp
#         rsi rdi r8..r15; rsp is not loaded: it is the stack top)
#   +176  the 16 GPRs right after it (rsp as it was left)
#   the stack grows down from 0x800000 towards them
#
# The code bytes (the host appends a ret) go in code_area, the image's second
# page (0x401000): executable, and read-only to the app.
#
# Between actions the app naps: sleep(NAP). With the bystander asleep too,
# the kernel blocks the partition, so a window ends as soon as an action is
# done; the host wakes the partition by letting virtual time reach the nap's
# deadline. The code runs with every GPR from the mailbox, rsp at the stack
# top with the return address on it.
.equ SYS_SLEEP, 4
.equ SYS_GETPID, 3
.equ NAP, 1000000
.equ MAILBOX, 0x7FF000
.equ STACK_TOP, 0x800000
.equ MB_COMMAND, 0
.equ MB_GATE, 8
.equ MB_STARTED, 16
.equ MB_DONE, 24
.equ MB_FLAGS_IN, 32
.equ MB_FLAGS_OUT, 40
.equ IN_RAX, 48
.equ IN_RCX, 56
.equ IN_RDX, 64
.equ IN_RBX, 72
.equ IN_RBP, 88
.equ IN_RSI, 96
.equ IN_RDI, 104
.equ IN_R8, 112
.equ IN_R9, 120
.equ IN_R10, 128
.equ IN_R11, 136
.equ IN_R12, 144
.equ IN_R13, 152
.equ IN_R14, 160
.equ IN_R15, 168
.equ OUT_RAX, 176
.equ OUT_RCX, 184
.equ OUT_RDX, 192
.equ OUT_RBX, 200
.equ OUT_RBP, 216
.equ OUT_RSI, 224
.equ OUT_RDI, 232
.equ OUT_R8, 240
.equ OUT_R9, 248
.equ OUT_R10, 256
.equ OUT_R11, 264
.equ OUT_R12, 272
.equ OUT_R13, 280
.equ OUT_R14, 288
.equ OUT_R15, 296
.equ OUT_RSP_AT, MAILBOX + 208        # the rsp word of the registers after, absolute

start:
    mov eax, SYS_GETPID
    int 0x80
    cmp rax, 1
    jne bystander

top:
    mov rsp, STACK_TOP                  # nothing survives an action on the stack
    cld
    mov ebx, MAILBOX
    mov rax, [rbx + MB_COMMAND]
    cmp rax, 1
    je do_syscall
    cmp rax, 2
    je do_code
nap:
    mov eax, SYS_SLEEP
    mov edi, NAP
    int 0x80
    jmp top

# ---- command 1: one system call, every other register a known pattern -------
do_syscall:
    mov qword ptr [rbx + MB_COMMAND], 0
    mov qword ptr [rbx + MB_STARTED], 1
    push qword ptr [rbx + MB_FLAGS_IN]
    cmp qword ptr [rbx + MB_GATE], 0    # ZF survives the loads (mov keeps flags)
    call load_registers
    jne via_syscall
    popfq
    int 0x80
    jmp record
via_syscall:
    popfq
    syscall
    jmp record

# ---- command 2: call the host's bytes (they end with a ret) -----------------
do_code:
    mov qword ptr [rbx + MB_COMMAND], 0
    mov qword ptr [rbx + MB_STARTED], 1
    lea rax, [rip + record]
    push rax                            # where the code's ret comes back
    lea rax, [rip + code_area]
    push rax                            # the code, entered by the ret below
    push qword ptr [rbx + MB_FLAGS_IN]
    call load_registers
    popfq
    ret

# ---- both: what the registers and flags are now -------------------------------
record:
    mov [OUT_RSP_AT], rsp               # first: the code may have moved rsp anywhere
    mov rsp, STACK_TOP
    pushfq
    push rbx
    mov ebx, MAILBOX
    mov [rbx + OUT_RAX], rax
    mov [rbx + OUT_RCX], rcx
    mov [rbx + OUT_RDX], rdx
    mov [rbx + OUT_RBP], rbp
    mov [rbx + OUT_RSI], rsi
    mov [rbx + OUT_RDI], rdi
    mov [rbx + OUT_R8], r8
    mov [rbx + OUT_R9], r9
    mov [rbx + OUT_R10], r10
    mov [rbx + OUT_R11], r11
    mov [rbx + OUT_R12], r12
    mov [rbx + OUT_R13], r13
    mov [rbx + OUT_R14], r14
    mov [rbx + OUT_R15], r15
    pop rax
    mov [rbx + OUT_RBX], rax
    pop rax
    mov [rbx + MB_FLAGS_OUT], rax
    mov qword ptr [rbx + MB_DONE], 1
    jmp top                             # the command word is 0 again: nap

# load_registers: every GPR but rsp from the mailbox (rbx = MAILBOX; rbx
# last). Keeps the flags. Its own return address is popped by the ret, so the
# caller's stack is as it was.
load_registers:
    mov rax, [rbx + IN_RAX]
    mov rcx, [rbx + IN_RCX]
    mov rdx, [rbx + IN_RDX]
    mov rbp, [rbx + IN_RBP]
    mov rsi, [rbx + IN_RSI]
    mov rdi, [rbx + IN_RDI]
    mov r8, [rbx + IN_R8]
    mov r9, [rbx + IN_R9]
    mov r10, [rbx + IN_R10]
    mov r11, [rbx + IN_R11]
    mov r12, [rbx + IN_R12]
    mov r13, [rbx + IN_R13]
    mov r14, [rbx + IN_R14]
    mov r15, [rbx + IN_R15]
    mov rbx, [rbx + IN_RBX]
    ret

# ---- any pid but 1: sleep forever, touch nothing --------------------------------
bystander:
    mov eax, SYS_SLEEP
    mov rdi, -1                         # the kernel saturates: wake at 2^64-1
    int 0x80
    jmp bystander

# ---- the host's code bytes: the image's second page ------------------------------
.align 4096
code_area:
.space 4096
