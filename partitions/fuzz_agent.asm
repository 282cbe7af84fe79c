# Fuzz agent: a guest kernel that executes, for real at CPL 2, the actions a
# fuzz campaign writes into its mailbox (the first words of its data area),
# one per window, and yields. The campaign (fuzz/agent.py) is the host side.
#
# Mailbox at KERNEL_DATA_VADDR (u64 words):
#   +0   command: low byte 0 idle, 1 hypercall, 2 run code at CPL 2 (the
#        bytes at code_area, the image's last page: the data area is
#        no-execute); the bits above are the host's sequence number
#   +8   hypercall number
#   +16  arguments: rdi, rsi, rdx, r10, r8 (5 words)
#   +56  result (rax after the hypercall)
#   +64  completed actions (incremented after each one)
#   +72  rcx, rdx, rsi, rdi, r8, r9, r10, r11 after the hypercall (what ring 0
#        left in the registers it does not return a result in: observations
#        for the noninterference campaign)
#   +136 the command word of the last hypercall whose result is at +56: a
#        result belongs to a command only if this matches it (a YIELD or
#        BLOCK hypercall ends the window before its result is stored)
.equ MB_COMMAND, 0
.equ MB_NUMBER, 8
.equ MB_RDI, 16
.equ MB_RSI, 24
.equ MB_RDX, 32
.equ MB_R10, 40
.equ MB_R8, 48
.equ MB_RESULT, 56
.equ MB_DONE, 64
.equ MB_OUT_RCX, 72
.equ MB_OUT_RDX, 80
.equ MB_OUT_RSI, 88
.equ MB_OUT_RDI, 96
.equ MB_OUT_R8, 104
.equ MB_OUT_R9, 112
.equ MB_OUT_R10, 120
.equ MB_OUT_R11, 128
.equ MB_ACK, 136

top:
    mov rbx, KERNEL_DATA_VADDR
    mov rax, [rbx + MB_COMMAND]
    mov r12, rax
    and rax, 0xff
    cmp rax, 1
    je do_hypercall
    cmp rax, 2
    je do_code
idle:
    mov rax, HC_YIELD
    int 0x82
    jmp top

do_hypercall:
    mov qword ptr [rbx + MB_COMMAND], 0
    mov rax, [rbx + MB_NUMBER]
    mov rdi, [rbx + MB_RDI]
    mov rsi, [rbx + MB_RSI]
    mov rdx, [rbx + MB_RDX]
    mov r10, [rbx + MB_R10]
    mov r8, [rbx + MB_R8]
    int 0x82
    mov rbx, KERNEL_DATA_VADDR
    mov [rbx + MB_RESULT], rax
    mov [rbx + MB_OUT_RCX], rcx
    mov [rbx + MB_OUT_RDX], rdx
    mov [rbx + MB_OUT_RSI], rsi
    mov [rbx + MB_OUT_RDI], rdi
    mov [rbx + MB_OUT_R8], r8
    mov [rbx + MB_OUT_R9], r9
    mov [rbx + MB_OUT_R10], r10
    mov [rbx + MB_OUT_R11], r11
    mov [rbx + MB_ACK], r12
    inc qword ptr [rbx + MB_DONE]
    jmp top

do_code:
    mov qword ptr [rbx + MB_COMMAND], 0
    inc qword ptr [rbx + MB_DONE]
    lea rax, [rip + code_area]
    mov rsp, KERNEL_STACK_TOP
    call rax
    jmp idle

# Where the host writes the code to run: a page of the image, which ring 0
# maps writable and executable (a flat image is).
.align 4096
code_area:
.space 4096
