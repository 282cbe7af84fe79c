# counter.asm -- ring-3 app: prints "counter: 1" .. "counter: 5", yielding
# between lines, then exits 0. Uses the `syscall` instruction (not int 0x80),
# so rcx and r11 are clobbered by each call, as on hardware.
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1
.equ SYS_YIELD, 2
.equ COUNT_TO, 5

start:
    mov r12d, 1                         # r12 = the count
    sub rsp, 32                         # rsp -> "counter: N\n" buffer
    lea rsi, [rip + msg_prefix]
    mov rdi, rsp
copy_prefix:                            # copy "counter: " once
    mov al, [rsi]
    test al, al
    jz count_loop
    mov [rdi], al
    inc rdi
    inc rsi
    jmp copy_prefix

count_loop:                             # the digit goes right after the prefix
    mov eax, r12d
    add al, '0'
    mov [rsp + msg_prefix_len], al
    mov byte ptr [rsp + msg_prefix_len + 1], 10
    mov rdi, rsp                        # write(buf, prefix + 2)
    mov esi, msg_prefix_len + 2
    mov eax, SYS_WRITE
    syscall
    mov eax, SYS_YIELD
    syscall
    inc r12d
    cmp r12d, COUNT_TO
    jbe count_loop

    mov eax, SYS_EXIT                   # exit(0)
    xor edi, edi
    syscall
exit_returned:
    jmp exit_returned

msg_prefix: .asciz "counter: "
.equ msg_prefix_len, 9
