# hello.asm -- ring-3 app: greets, reports its pid, exits 0.
# Assembled at APP_IMAGE_VADDR; entry = first byte. App syscall ABI: docs/guest.md
# (int 0x80, number in rax, args rdi rsi rdx, result in rax).
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1
.equ SYS_GETPID, 3

start:
    lea rdi, [rip + msg_hello]          # write("hello from ring 3\n")
    mov esi, msg_hello_end - msg_hello
    mov eax, SYS_WRITE
    int 0x80

    mov eax, SYS_GETPID
    int 0x80
    mov rbx, rax                        # rbx = pid (a syscall keeps rbx)

    # build "hello: my pid is <pid>\n" in a stack buffer
    sub rsp, 64
    mov rdi, rsp
    lea rsi, [rip + msg_pid]
copy_prefix:
    mov al, [rsi]
    test al, al
    jz prefix_done
    mov [rdi], al
    inc rdi
    inc rsi
    jmp copy_prefix
prefix_done:
    mov rax, rbx                        # decimal digits of the pid
    mov ecx, 10
    xor r8d, r8d
push_digit:
    xor edx, edx
    div rcx
    add dl, '0'
    push rdx
    inc r8
    test rax, rax
    jnz push_digit
pop_digit:
    pop rdx
    mov [rdi], dl
    inc rdi
    dec r8
    jnz pop_digit
    mov byte ptr [rdi], 10
    inc rdi
    mov rsi, rdi                        # write(buf, end - buf)
    mov rdi, rsp
    sub rsi, rdi
    mov eax, SYS_WRITE
    int 0x80

    mov eax, SYS_EXIT                   # exit(0)
    xor edi, edi
    int 0x80
exit_returned:                          # exit never returns
    jmp exit_returned

msg_hello:  .ascii "hello from ring 3\n"
msg_hello_end:
msg_pid:    .asciz "hello: my pid is "
