# Misbehaving app: executes an undefined opcode (ud2). Expected: #UD (vector 6)
# reflected to its guest kernel, which kills it; the others run on.
    lea rdi, [rip + trying]
    mov rsi, trying_len
    mov rax, 0
    int 0x80
    ud2
    lea rdi, [rip + survived]
    mov rsi, survived_len
    mov rax, 0
    int 0x80
    mov rdi, 1
    mov rax, 1
    int 0x80
trying: .ascii "bad_ud2: trying\n"
.equ trying_len, 16
survived: .ascii "bad_ud2: SUCCEEDED\n"
.equ survived_len, 19
