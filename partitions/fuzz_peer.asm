# Fuzz peer: the far end of the fuzz agent's channels (fuzz/campaigns/channels.py).
#
# It boots by opening its four ports (a name ring 1 did not give it leaves a
# negative handle, and that port is skipped) and yields. Then, every window:
#   in0  (queuing destination): receive up to DRAIN messages, oldest first;
#   in1  (sampling destination): receive the latest message once;
#   out0, out1 (sources): send one 16-byte message: u64 sequence number (the
#        messages this port sent so far), u64 port index (0 or 1);
# and yield. Every message received goes into the next slot of that port's
# log, straight from PORT_RECEIVE: the host reads the logs and the counters
# after the window and checks each message against what the agent sent. A
# warm restart keeps the data area, hence the counts and logs.
#
# Data area (KERNEL_DATA_VADDR, zeroed by the SPK at a cold start):
.equ D_HANDLES, 0x000                   # 4 u64: in0, in1, out0, out1
.equ D_RECEIVED, 0x040                  # 2 u64: messages received on in0, in1
.equ D_SENT, 0x080                      # 2 u64: messages sent on out0, out1
.equ D_MESSAGE, 0x100                   # 16 bytes: the message being sent
.equ D_LOG, 0x1000                      # 2 logs (in0, in1) of LOG_SIZE bytes
.equ LOG_SHIFT, 11                      # LOG_SIZE = 0x800: SLOTS slots of SLOT_SIZE
.equ SLOT_SHIFT, 7                      # SLOT_SIZE = 0x80: u64 length, message at +8
.equ SLOT_MASK, 15                      # SLOTS - 1
.equ MESSAGE_MAX, 64                    # receive buffer of a slot
.equ DRAIN, 8                           # most messages taken from in0 per window

# rbx = data area for the whole run; r12 = port index, r13 = receives left.
start:
    mov rbx, KERNEL_DATA_VADDR
    lea rdi, [rip + name_in0]
    mov esi, 3
    mov eax, HC_PORT_OPEN
    int 0x82
    mov [rbx + D_HANDLES], rax
    lea rdi, [rip + name_in1]
    mov esi, 3
    mov eax, HC_PORT_OPEN
    int 0x82
    mov [rbx + D_HANDLES + 8], rax
    lea rdi, [rip + name_out0]
    mov esi, 4
    mov eax, HC_PORT_OPEN
    int 0x82
    mov [rbx + D_HANDLES + 16], rax
    lea rdi, [rip + name_out1]
    mov esi, 4
    mov eax, HC_PORT_OPEN
    int 0x82
    mov [rbx + D_HANDLES + 24], rax
    mov eax, HC_YIELD
    int 0x82

window:
    xor r12d, r12d                      # in0: drain
    mov r13d, DRAIN
    call receive_some
    mov r12d, 1                         # in1: the latest message, once
    mov r13d, 1
    call receive_some
    xor r12d, r12d                      # out0
    call send_one
    mov r12d, 1                         # out1
    call send_one
    mov eax, HC_YIELD
    int 0x82
    jmp window

# receive_some: up to r13 messages from destination port r12 into its log.
receive_some:
    lea r14, [rbx + D_HANDLES]
    mov rdi, [r14 + r12*8]
    test rdi, rdi
    js receive_done
    lea r14, [rbx + D_RECEIVED]
    mov rax, [r14 + r12*8]              # slot = log(r12) + (count % SLOTS) * SLOT_SIZE
    and rax, SLOT_MASK
    shl rax, SLOT_SHIFT
    mov r15, r12
    shl r15, LOG_SHIFT
    add rax, r15
    lea r15, [rbx + D_LOG]
    add r15, rax
    lea rsi, [r15 + 8]
    mov edx, MESSAGE_MAX
    mov eax, HC_PORT_RECEIVE
    int 0x82
    test rax, rax
    jle receive_done                    # nothing (or an error): this port is done
    mov [r15], rax
    inc qword ptr [r14 + r12*8]
    dec r13
    jnz receive_some
receive_done:
    ret

# send_one: one message on source port r12 (handle at D_HANDLES + 16 + 8*r12).
send_one:
    lea r14, [rbx + D_HANDLES]
    mov rdi, [r14 + r12*8 + 16]
    test rdi, rdi
    js send_done
    lea r14, [rbx + D_SENT]
    mov rax, [r14 + r12*8]
    lea rsi, [rbx + D_MESSAGE]
    mov [rsi], rax
    mov [rsi + 8], r12
    mov edx, 16
    mov eax, HC_PORT_SEND
    int 0x82
    test rax, rax
    jnz send_done                       # BUSY (a full queue) or an error: not counted
    inc qword ptr [r14 + r12*8]
send_done:
    ret

name_in0:   .ascii "in0"
name_in1:   .ascii "in1"
name_out0:  .ascii "out0"
name_out1:  .ascii "out1"
