# refkernel.asm -- the SPK reference guest kernel (ring 2).
#
# A small round-robin kernel for up to MAX_APPS ring-3 apps, written against
# spk/abi.py. The build prepends spk.abi.asm_equates() (HC_*, E_*, ENTRY_*, MAP_*,
# layout constants) and assembles this file at KERNEL_IMAGE_VADDR; the entry
# point is the first byte. docs/guest.md describes the design and the app
# system-call ABI.
#
# Keystone rules followed throughout: no sections; a 64-bit address is always
# loaded into a register first (an absolute [imm64] operand is silently
# truncated), or reached rip-relative.
#
# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------
#   image      KERNEL_IMAGE_VADDR   code and constant strings (never written)
#   data area  KERNEL_DATA_VADDR    all mutable state, zeroed by the SPK:
#       +0x000  D_CUR      u64  slot index of the current (last entered) app
#       +0x008  D_NAPPS    u64  number of slots in use (= apps started at boot)
#       +0x010  D_LIVE     u64  apps not yet exited or killed
#       +0x018  D_CURREC   u64  address of the current app's record
#       +0x100  D_LINEBUF  256 bytes: a console line is built here
#       +0x400  D_APPS     MAX_APPS records of APP_REC_SIZE bytes (below)
#   stack      KERNEL_STACK_TOP     the boot stack, and after boot the kernel
#                                   stack of every entry (HC_SET_KERNEL_STACK).
#                                   The kernel never nests and never returns to
#                                   a kernel frame once it enters an app, so one
#                                   stack serves both.
#
# Per-app record (APP_REC_SIZE = 256 bytes, slot i holds pid i+1):
#       +0    R_FRAME      144 bytes: the saved user registers in the HC_IRET
#                          frame layout: rax rcx rdx rbx rsp rbp rsi rdi
#                          r8 .. r15 rip rflags (F_* offsets below), so the
#                          record address itself is the frame HC_IRET takes.
#       +144  R_STATE      ST_FREE / ST_RUNNABLE / ST_SLEEPING
#       +152  R_PID        slot + 1
#       +160  R_ASPACE     address-space handle (HC_ASPACE_CREATE)
#       +168  R_STACK_MFN  frame of the user stack page (HC_FRAME_ALLOC)
#       +176  R_WAKE       virtual time a sleeping app becomes runnable
#       +184  R_PAGES      number of image pages mapped
#
# App address space: image pages at APP_IMAGE_VADDR (user, read-only), one
# stack page at APP_STACK_PAGE (user, read-write), initial rsp APP_STACK_TOP.
#
# ---------------------------------------------------------------------------
# Entries (all three run on KERNEL_STACK_TOP, CR3 = the app's space)
# ---------------------------------------------------------------------------
#   syscall  [rsp] = iret frame (rip cs rflags rsp ss), app registers live
#   timer    same as syscall
#   trap     [rsp] = vector, error code, fault address, then the iret frame
# In every case the iret frame sits at IRET_AT = KERNEL_STACK_TOP - 40.
#
# Returning to an app: a syscall that keeps the same app running (write,
# getpid, unknown number) restores the registers and returns with a native
# iretq through the entry's iret frame. Everything else goes through
# `schedule`, which enters the chosen app with HC_IRET.
#
# Internal calling convention: helpers preserve rbx, rbp, r12-r15 and clobber
# rax, rcx, rdx, rsi, rdi, r8-r11. (A hypercall clobbers only rax.)

# ---- tunables --------------------------------------------------------------
.equ MAX_APPS, 8
.equ QUANTUM, 20000                # virtual-time slice of an app (instructions)
.equ REFK_ABI_MAJOR, 1             # the ABI major version this kernel speaks

# ---- app layout --------------------------------------------------------------
.equ APP_STACK_PAGE, 0x7FF000
.equ APP_STACK_TOP, 0x800000
.equ MAX_APP_PAGES, (APP_STACK_PAGE - APP_IMAGE_VADDR) / PAGE_SIZE
.equ SIM_NAME_MAX, 31              # longest module name (NUL padded to 32)

# ---- app system calls --------------------------------------------------------
.equ SYS_WRITE, 0
.equ SYS_EXIT, 1
.equ SYS_YIELD, 2
.equ SYS_GETPID, 3
.equ SYS_SLEEP, 4
.equ SYS_WRITE_MAX, 4096

# ---- data area ---------------------------------------------------------------
.equ D_CUR, 0x000
.equ D_NAPPS, 0x008
.equ D_LIVE, 0x010
.equ D_CURREC, 0x018
.equ D_LINEBUF, 0x100
.equ LINEBUF_SIZE, 256
.equ D_APPS, 0x400

# ---- per-app record ----------------------------------------------------------
.equ F_RAX, 0
.equ F_RCX, 8
.equ F_RDX, 16
.equ F_RBX, 24
.equ F_RSP, 32
.equ F_RBP, 40
.equ F_RSI, 48
.equ F_RDI, 56
.equ F_R8, 64
.equ F_R9, 72
.equ F_R10, 80
.equ F_R11, 88
.equ F_R12, 96
.equ F_R13, 104
.equ F_R14, 112
.equ F_R15, 120
.equ F_RIP, 128
.equ F_RFLAGS, 136
.equ R_STATE, 144
.equ R_PID, 152
.equ R_ASPACE, 160
.equ R_STACK_MFN, 168
.equ R_WAKE, 176
.equ R_PAGES, 184
.equ APP_REC_SIZE, 256

.equ ST_FREE, 0
.equ ST_RUNNABLE, 1
.equ ST_SLEEPING, 2

# ---- entry frames --------------------------------------------------------------
.equ IRET_AT, KERNEL_STACK_TOP - 40    # iret frame of every entry
.equ IRET_RIP, 0
.equ IRET_RFLAGS, 16
.equ IRET_RSP, 24
.equ TRAP_VECTOR, 0                    # trap entry, relative to rsp at entry
.equ TRAP_ERROR, 8
.equ TRAP_ADDR, 16
.equ TRAP_RIP, 24

.equ VEC_DE, 0
.equ VEC_UD, 6
.equ VEC_GP, 13
.equ VEC_PF, 14

.equ EXIT_BAD_START_INFO, 1
.equ EXIT_BOOT_FAILED, 2
.equ EXIT_FATAL, 3

# =============================================================================
# Boot
# =============================================================================
kernel_entry:
    # -- start info -------------------------------------------------------------
    mov r12, START_INFO_VADDR
    mov rax, START_INFO_MAGIC
    cmp [r12], rax
    je boot_magic_ok
    lea rsi, [rip + str_bad_magic]
    call print_line
    mov eax, HC_EXIT
    mov edi, EXIT_BAD_START_INFO
    int 0x82
exit_returned:                          # HC_EXIT never returns; never go on
    jmp exit_returned

boot_magic_ok:
    mov eax, HC_VERSION
    int 0x82
    mov rcx, rax
    shr rcx, 16
    cmp rcx, REFK_ABI_MAJOR
    je boot_version_ok
    lea rsi, [rip + str_f_version]
    jmp boot_fail

boot_version_ok:
    # r13 = number of apps to start = min(module count, MAX_APPS)
    mov r13, [r12 + SI_MODULE_COUNT]
    cmp r13, MAX_APPS
    jbe boot_count_ok
    lea rsi, [rip + str_too_many]
    call print_line
    mov r13d, MAX_APPS
boot_count_ok:
    call line_start                     # "refkernel: booting N apps\n"
    lea rsi, [rip + str_booting]
    call put_str
    mov rax, r13
    call put_dec
    lea rsi, [rip + str_apps_nl]
    call put_str
    call line_flush

    # -- entries and kernel stack ------------------------------------------------
    mov eax, HC_SET_ENTRY
    mov edi, ENTRY_SYSCALL
    lea rsi, [rip + syscall_entry]
    int 0x82
    lea rsi, [rip + str_f_entry_syscall]
    test rax, rax
    js boot_fail

    mov eax, HC_SET_ENTRY
    mov edi, ENTRY_TRAP
    lea rsi, [rip + trap_entry]
    int 0x82
    lea rsi, [rip + str_f_entry_trap]
    test rax, rax
    js boot_fail

    mov eax, HC_SET_ENTRY
    mov edi, ENTRY_TIMER
    lea rsi, [rip + timer_entry]
    int 0x82
    lea rsi, [rip + str_f_entry_timer]
    test rax, rax
    js boot_fail

    mov eax, HC_SET_KERNEL_STACK
    mov rdi, KERNEL_STACK_TOP
    int 0x82
    lea rsi, [rip + str_f_kstack]
    test rax, rax
    js boot_fail

    # -- one address space per module ----------------------------------------------
    # Every slot counts as live up front; an app whose measurement fails is
    # reaped at once (reap decrements D_LIVE and leaves its slot ST_FREE).
    mov rax, KERNEL_DATA_VADDR
    mov [rax + D_NAPPS], r13
    mov [rax + D_LIVE], r13
    # r14 = slot index, r15 = module entry, rbx = app record, rbp = page index
    # (then the module name length), r12 = HC_MEASURE's status
    mov r15, START_INFO_VADDR + SI_MODULES
    mov rbx, KERNEL_DATA_VADDR + D_APPS
    xor r14d, r14d
boot_app_loop:
    cmp r14, r13
    jae boot_apps_done

    mov rax, [r15 + SIM_PAGES]          # 1 <= pages <= MAX_APP_PAGES
    mov [rbx + R_PAGES], rax
    lea rsi, [rip + str_f_module_size]
    test rax, rax
    jz boot_fail_einval
    cmp rax, MAX_APP_PAGES
    ja boot_fail_einval

    mov eax, HC_ASPACE_CREATE
    int 0x82
    lea rsi, [rip + str_f_aspace]
    test rax, rax
    js boot_fail
    mov [rbx + R_ASPACE], rax

    xor ebp, ebp                        # image: user read-only, page by page
boot_map_loop:
    cmp rbp, [rbx + R_PAGES]
    jae boot_map_done
    mov eax, HC_MAP
    mov rdi, [rbx + R_ASPACE]
    mov rsi, rbp
    shl rsi, 12
    add rsi, APP_IMAGE_VADDR
    mov rdx, [r15 + SIM_FIRST_MFN]
    add rdx, rbp
    mov r10d, MAP_USER
    int 0x82
    lea rsi, [rip + str_f_map_image]
    test rax, rax
    js boot_fail
    inc rbp
    jmp boot_map_loop
boot_map_done:

    mov eax, HC_FRAME_ALLOC             # stack: one fresh frame, user RW
    int 0x82
    lea rsi, [rip + str_f_alloc]
    test rax, rax
    js boot_fail
    mov [rbx + R_STACK_MFN], rax

    mov eax, HC_MAP
    mov rdi, [rbx + R_ASPACE]
    mov esi, APP_STACK_PAGE
    mov rdx, [rbx + R_STACK_MFN]
    mov r10d, MAP_USER | MAP_WRITE
    int 0x82
    lea rsi, [rip + str_f_map_stack]
    test rax, rax
    js boot_fail

    # measure the image into the APPS register, in module order: from the
    # app's own space, HC_MEASURE(APP_IMAGE_VADDR, module bytes, module name,
    # strlen of the name). The name is read through the kernel half, which
    # every space of the partition shares.
    xor ebp, ebp                        # rbp = strlen of the NUL-padded name
boot_name_len:
    cmp rbp, SIM_NAME_MAX
    jae boot_name_done
    cmp byte ptr [r15 + rbp + SIM_NAME], 0
    je boot_name_done
    inc rbp
    jmp boot_name_len
boot_name_done:

    mov eax, HC_ASPACE_SWITCH
    mov rdi, [rbx + R_ASPACE]
    int 0x82
    lea rsi, [rip + str_f_switch_app]
    test rax, rax
    js boot_fail

    mov eax, HC_MEASURE
    mov edi, APP_IMAGE_VADDR
    mov rsi, [r15 + SIM_BYTES]
    lea rdx, [r15 + SIM_NAME]
    mov r10, rbp
    int 0x82
    mov r12, rax

    mov eax, HC_ASPACE_SWITCH           # back to the boot space
    xor edi, edi
    int 0x82
    lea rsi, [rip + str_f_switch_boot]
    test rax, rax
    js boot_fail

    test r12, r12
    jns boot_measured
    # "refkernel: measuring <name> failed (<status>)\n"; the app never runs
    call line_start
    lea rsi, [rip + str_measuring]
    call put_str
    lea rsi, [r15 + SIM_NAME]           # NUL-terminated: at most 31 bytes
    call put_str
    lea rsi, [rip + str_m_failed]
    call put_str
    mov rax, r12
    call put_dec
    lea rsi, [rip + str_close_nl]
    call put_str
    call line_flush
    call reap                           # its space, its stack; slot stays free
    jmp boot_app_next
boot_measured:

    # register frame: all GPRs zero (the data area starts zeroed)
    mov qword ptr [rbx + F_RIP], APP_IMAGE_VADDR
    mov qword ptr [rbx + F_RSP], APP_STACK_TOP
    mov qword ptr [rbx + F_RFLAGS], RFLAGS_FIXED
    lea rax, [r14 + 1]
    mov [rbx + R_PID], rax
    mov qword ptr [rbx + R_STATE], ST_RUNNABLE

boot_app_next:
    inc r14
    add r15, SI_MODULE_SIZE
    add rbx, APP_REC_SIZE
    jmp boot_app_loop

boot_apps_done:
    mov r12, KERNEL_DATA_VADDR          # D_NAPPS and D_LIVE are set already
    lea rax, [r13 - 1]                  # so that the first pick is slot 0
    mov [r12 + D_CUR], rax
    jmp schedule                        # (with no app it prints "all apps done")

# Boot failure: rsi = what failed (NUL-terminated), rax = negative status.
# Prints "refkernel: boot failed: <what> (error <rax>)" and exits with 2.
boot_fail_einval:
    mov rax, E_INVALID_ARGUMENT
boot_fail:
    mov r12d, EXIT_BOOT_FAILED
    lea rdi, [rip + str_boot_failed]
    jmp die

# Runtime failure of a hypercall that cannot fail in a correct system.
fatal:
    mov r12d, EXIT_FATAL
    lea rdi, [rip + str_fatal]
# die: rdi = prefix, rsi = what, rax = status, r12 = exit code. No return.
die:
    mov r13, rax
    mov r14, rsi
    mov r15, rdi
    call line_start
    mov rsi, r15
    call put_str
    mov rsi, r14
    call put_str
    lea rsi, [rip + str_error_open]
    call put_str
    mov rax, r13
    call put_dec
    lea rsi, [rip + str_close_nl]
    call put_str
    call line_flush
    mov eax, HC_EXIT
    mov rdi, r12
    int 0x82
    jmp exit_returned

# =============================================================================
# Scheduler
# =============================================================================
# schedule: pick the next runnable app after D_CUR (round-robin), arm the
# quantum and enter it with HC_IRET. Wakes due sleepers; blocks when every
# remaining app sleeps; exits the partition when no app remains. No return.
schedule:
    mov rsp, KERNEL_STACK_TOP           # nothing on the kernel stack survives
    mov r12, KERNEL_DATA_VADDR
sched_again:
    cmp qword ptr [r12 + D_LIVE], 0
    je all_done

    mov eax, HC_TIME_NOW
    int 0x82
    mov r13, rax                        # r13 = now

    # wake due sleepers; r15 = earliest wake time of those still asleep
    mov r15, -1
    mov rcx, [r12 + D_NAPPS]
    lea rbx, [r12 + D_APPS]
sched_wake_loop:
    cmp qword ptr [rbx + R_STATE], ST_SLEEPING
    jne sched_wake_next
    mov rax, [rbx + R_WAKE]
    cmp rax, r13
    ja sched_still_asleep
    mov qword ptr [rbx + R_STATE], ST_RUNNABLE
    jmp sched_wake_next
sched_still_asleep:
    cmp rax, r15
    jae sched_wake_next
    mov r15, rax
sched_wake_next:
    add rbx, APP_REC_SIZE
    dec rcx
    jnz sched_wake_loop

    # pick: slots D_CUR+1, D_CUR+2, ... (mod D_NAPPS), D_CUR itself last
    mov rcx, [r12 + D_NAPPS]
    mov rdx, [r12 + D_CUR]
sched_pick_loop:
    inc rdx
    cmp rdx, [r12 + D_NAPPS]
    jb sched_pick_idx
    xor edx, edx
sched_pick_idx:
    imul rbx, rdx, APP_REC_SIZE
    lea rbx, [r12 + rbx + D_APPS]
    cmp qword ptr [rbx + R_STATE], ST_RUNNABLE
    je sched_found
    dec rcx
    jnz sched_pick_loop

    # nobody runnable, but D_LIVE > 0: all remaining apps sleep (r15 valid).
    mov eax, HC_TIMER_SET
    mov rdi, r15
    int 0x82
    lea rsi, [rip + str_f_timer]
    test rax, rax
    js fatal
    mov eax, HC_BLOCK
    int 0x82
    lea rsi, [rip + str_f_block]
    test rax, rax
    js fatal
    jmp sched_again

sched_found:
    mov [r12 + D_CUR], rdx
    mov [r12 + D_CURREC], rbx
    # deadline = min(now + QUANTUM, earliest wake of a sleeper)
    lea rdi, [r13 + QUANTUM]
    cmp r15, rdi
    jae sched_arm
    mov rdi, r15
sched_arm:
    mov eax, HC_TIMER_SET
    int 0x82
    lea rsi, [rip + str_f_timer]
    test rax, rax
    js fatal
    mov eax, HC_IRET                    # enter the app; no return on success
    mov rdi, [rbx + R_ASPACE]
    mov rsi, rbx                        # the frame is at offset 0 of the record
    int 0x82
    lea rsi, [rip + str_f_iret]
    jmp fatal

all_done:
    lea rsi, [rip + str_all_done]
    call print_line
    mov eax, HC_EXIT
    xor edi, edi
    int 0x82
    jmp exit_returned

# =============================================================================
# Entries
# =============================================================================

# save_app: store the interrupted app's registers into its record.
# In: rbx = record, [rsp + 8] = the app's rbx (pushed by the entry stub), every
# other GPR still the app's, the iret frame at IRET_AT.
# Clobbers rax, rcx (after saving them).
save_app:
    mov [rbx + F_RAX], rax
    mov [rbx + F_RCX], rcx
    mov [rbx + F_RDX], rdx
    mov [rbx + F_RBP], rbp
    mov [rbx + F_RSI], rsi
    mov [rbx + F_RDI], rdi
    mov [rbx + F_R8], r8
    mov [rbx + F_R9], r9
    mov [rbx + F_R10], r10
    mov [rbx + F_R11], r11
    mov [rbx + F_R12], r12
    mov [rbx + F_R13], r13
    mov [rbx + F_R14], r14
    mov [rbx + F_R15], r15
    mov rax, [rsp + 8]
    mov [rbx + F_RBX], rax
    mov rax, IRET_AT
    mov rcx, [rax + IRET_RIP]
    mov [rbx + F_RIP], rcx
    mov rcx, [rax + IRET_RFLAGS]
    mov [rbx + F_RFLAGS], rcx
    mov rcx, [rax + IRET_RSP]
    mov [rbx + F_RSP], rcx
    ret

# resume_native: return to the current app (rbx = its record) through the
# iret frame the entry left at IRET_AT, restoring every GPR from the record
# (the syscall result is in F_RAX). Same address space, no hypercall.
resume_native:
    mov rsp, IRET_AT
    mov rax, [rbx + F_RAX]
    mov rcx, [rbx + F_RCX]
    mov rdx, [rbx + F_RDX]
    mov rbp, [rbx + F_RBP]
    mov rsi, [rbx + F_RSI]
    mov rdi, [rbx + F_RDI]
    mov r8, [rbx + F_R8]
    mov r9, [rbx + F_R9]
    mov r10, [rbx + F_R10]
    mov r11, [rbx + F_R11]
    mov r12, [rbx + F_R12]
    mov r13, [rbx + F_R13]
    mov r14, [rbx + F_R14]
    mov r15, [rbx + F_R15]
    mov rbx, [rbx + F_RBX]
    iretq

# ---- timer: the current app's quantum (or a sleeper's wake time) is over ---
timer_entry:
    push rbx
    mov rbx, KERNEL_DATA_VADDR
    mov rbx, [rbx + D_CURREC]
    call save_app
    jmp schedule

# ---- syscall: int 0x80 or syscall from the current app ---------------------
syscall_entry:
    push rbx
    mov rbx, KERNEL_DATA_VADDR
    mov rbx, [rbx + D_CURREC]
    call save_app
    mov rax, [rbx + F_RAX]
    cmp rax, SYS_WRITE
    je sys_write
    cmp rax, SYS_EXIT
    je sys_exit
    cmp rax, SYS_YIELD
    je sys_yield
    cmp rax, SYS_GETPID
    je sys_getpid
    cmp rax, SYS_SLEEP
    je sys_sleep
sys_fail:                               # unknown number, or a refused call
    mov qword ptr [rbx + F_RAX], -1
    jmp resume_native

# write(buf = rdi, len = rsi) -> bytes written, or -1.
# [buf, buf + len) must lie in the user half (no wrap) and len <= 4096: the
# SPK would accept a kernel-half pointer from this kernel, so the kernel must
# refuse it on the app's behalf.
sys_write:
    mov rdi, [rbx + F_RDI]
    mov rsi, [rbx + F_RSI]
    cmp rsi, SYS_WRITE_MAX
    ja sys_fail
    mov rax, rdi
    add rax, rsi
    jc sys_fail
    mov rcx, USER_END
    cmp rax, rcx
    ja sys_fail
    xor eax, eax
    test rsi, rsi
    jz sys_write_done                   # nothing to write
    mov eax, HC_CONSOLE_WRITE           # CR3 is the app's: buf works as is
    int 0x82
    test rax, rax
    js sys_fail                         # e.g. an unmapped page
sys_write_done:
    mov [rbx + F_RAX], rax
    jmp resume_native

# exit(code = rdi): report, free the app, run the others.
sys_exit:
    call line_start                     # "refkernel: app P exited (C)\n"
    lea rsi, [rip + str_app]
    call put_str
    mov rax, [rbx + R_PID]
    call put_dec
    lea rsi, [rip + str_exited]
    call put_str
    mov rax, [rbx + F_RDI]
    call put_dec
    lea rsi, [rip + str_close_nl]
    call put_str
    call line_flush
    call reap
    jmp schedule

# yield() -> 0 when the app next runs.
sys_yield:
    mov qword ptr [rbx + F_RAX], 0
    jmp schedule

# getpid() -> pid.
sys_getpid:
    mov rax, [rbx + R_PID]
    mov [rbx + F_RAX], rax
    jmp resume_native

# sleep(ticks = rdi) -> 0, no earlier than ticks units of virtual time later.
sys_sleep:
    mov eax, HC_TIME_NOW
    int 0x82
    add rax, [rbx + F_RDI]
    jnc sys_sleep_set
    mov rax, -1                         # saturate: sleep "forever"
sys_sleep_set:
    mov [rbx + R_WAKE], rax
    mov qword ptr [rbx + R_STATE], ST_SLEEPING
    mov qword ptr [rbx + F_RAX], 0
    jmp schedule

# ---- trap: the current app faulted; kill it, keep the others -----------------
# "refkernel: app P killed: vector V (#XX) at rip 0x.. [addr 0x.. err 0x..]\n"
trap_entry:
    mov r13, rsp                        # r13 = trap frame
    mov rbx, KERNEL_DATA_VADDR
    mov rbx, [rbx + D_CURREC]
    call line_start
    lea rsi, [rip + str_app]
    call put_str
    mov rax, [rbx + R_PID]
    call put_dec
    lea rsi, [rip + str_killed]
    call put_str
    mov rax, [r13 + TRAP_VECTOR]
    call put_dec
    mov rax, [r13 + TRAP_VECTOR]        # mnemonic of the common vectors
    lea rsi, [rip + str_de]
    cmp rax, VEC_DE
    je trap_name
    lea rsi, [rip + str_ud]
    cmp rax, VEC_UD
    je trap_name
    lea rsi, [rip + str_gp]
    cmp rax, VEC_GP
    je trap_name
    lea rsi, [rip + str_pf]
    cmp rax, VEC_PF
    jne trap_rip
trap_name:
    call put_str
trap_rip:
    lea rsi, [rip + str_at_rip]
    call put_str
    mov rax, [r13 + TRAP_RIP]
    call put_hex
    cmp qword ptr [r13 + TRAP_VECTOR], VEC_PF
    jne trap_eol
    lea rsi, [rip + str_addr]
    call put_str
    mov rax, [r13 + TRAP_ADDR]
    call put_hex
    lea rsi, [rip + str_err]
    call put_str
    mov rax, [r13 + TRAP_ERROR]
    call put_hex
trap_eol:
    lea rsi, [rip + str_nl]
    call put_str
    call line_flush
    call reap
    jmp schedule

# reap: free the app whose record is rbx (its space may be the current one).
# Leaves the boot address space loaded. A failing step is reported as a
# warning: the app is gone from the run queue either way.
reap:
    mov eax, HC_ASPACE_SWITCH           # never destroy the loaded space
    xor edi, edi
    int 0x82
    lea rsi, [rip + str_w_switch]
    call warn_if_neg
    mov eax, HC_ASPACE_DESTROY          # also drops the image and stack mappings
    mov rdi, [rbx + R_ASPACE]
    int 0x82
    lea rsi, [rip + str_w_destroy]
    call warn_if_neg
    mov eax, HC_FRAME_FREE
    mov rdi, [rbx + R_STACK_MFN]
    int 0x82
    lea rsi, [rip + str_w_free]
    call warn_if_neg
    mov qword ptr [rbx + R_STATE], ST_FREE
    mov rax, KERNEL_DATA_VADDR
    dec qword ptr [rax + D_LIVE]
    ret

# warn_if_neg: if rax < 0 print "refkernel: warning: <rsi> failed (error <rax>)".
warn_if_neg:
    test rax, rax
    jns warn_done
    push r12
    push r13
    mov r12, rax
    mov r13, rsi
    call line_start
    lea rsi, [rip + str_warning]
    call put_str
    mov rsi, r13
    call put_str
    lea rsi, [rip + str_error_open]
    call put_str
    mov rax, r12
    call put_dec
    lea rsi, [rip + str_close_nl]
    call put_str
    call line_flush
    pop r13
    pop r12
warn_done:
    ret

# =============================================================================
# Console line builder: line_start, put_* append at rdi, line_flush writes.
# Lines are short; callers keep them under LINEBUF_SIZE bytes.
# =============================================================================

# line_start: rdi = start of the line buffer, with the "refkernel: " prefix.
line_start:
    mov rdi, KERNEL_DATA_VADDR + D_LINEBUF
    lea rsi, [rip + str_prefix]
    jmp put_str

# put_str: append the NUL-terminated string at rsi. Clobbers al, rsi.
put_str:
    mov al, [rsi]
    test al, al
    jz put_str_done
    mov [rdi], al
    inc rdi
    inc rsi
    jmp put_str
put_str_done:
    ret

# put_dec: append rax as a signed decimal number. Clobbers rax, rcx, rdx, r8.
put_dec:
    test rax, rax
    jns put_dec_digits
    mov byte ptr [rdi], '-'
    inc rdi
    neg rax                             # INT64_MIN stays 2^63: right unsigned
put_dec_digits:
    mov ecx, 10
    xor r8d, r8d                        # digits pushed
put_dec_push:
    xor edx, edx
    div rcx
    add dl, '0'
    push rdx
    inc r8
    test rax, rax
    jnz put_dec_push
put_dec_pop:
    pop rdx
    mov [rdi], dl
    inc rdi
    dec r8
    jnz put_dec_pop
    ret

# put_hex: append rax as "0x" and hex digits, no leading zeros.
# Clobbers rax, rcx, rdx, r8, r9.
put_hex:
    mov byte ptr [rdi], '0'
    mov byte ptr [rdi + 1], 'x'
    add rdi, 2
    mov rdx, rax
    mov ecx, 60                         # shift of the current nibble
    xor r9d, r9d                        # nonzero once a digit is out
    lea r8, [rip + hex_digits]
put_hex_loop:
    mov rax, rdx
    shr rax, cl
    and eax, 15
    jnz put_hex_emit
    test r9d, r9d
    jnz put_hex_emit
    test ecx, ecx                       # the last nibble is always written
    jnz put_hex_next
put_hex_emit:
    mov r9d, 1
    mov al, [r8 + rax]
    mov [rdi], al
    inc rdi
put_hex_next:
    sub ecx, 4
    jns put_hex_loop
    ret

# line_flush: write the line buffer up to rdi to the console.
line_flush:
    mov rsi, rdi
    mov rdi, KERNEL_DATA_VADDR + D_LINEBUF
    sub rsi, rdi
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    ret

# print_line: write "refkernel: " and the NUL-terminated string at rsi.
print_line:
    push rsi
    call line_start
    pop rsi
    call put_str
    jmp line_flush

# =============================================================================
# Constant strings
# =============================================================================
hex_digits:         .ascii "0123456789abcdef"
str_prefix:         .asciz "refkernel: "
str_bad_magic:      .asciz "bad start-info magic, giving up\n"
str_too_many:       .asciz "more modules than slots, starting the first 8\n"
str_booting:        .asciz "booting "
str_apps_nl:        .asciz " apps\n"
str_all_done:       .asciz "all apps done\n"
str_app:            .asciz "app "
str_exited:         .asciz " exited ("
str_killed:         .asciz " killed: vector "
str_de:             .asciz " (#DE)"
str_ud:             .asciz " (#UD)"
str_gp:             .asciz " (#GP)"
str_pf:             .asciz " (#PF)"
str_at_rip:         .asciz " at rip "
str_addr:           .asciz " addr "
str_err:            .asciz " err "
str_nl:             .asciz "\n"
str_error_open:     .asciz " (error "
str_close_nl:       .asciz ")\n"
str_boot_failed:    .asciz "boot failed: "
str_fatal:          .asciz "fatal: "
str_warning:        .asciz "warning: "
str_f_version:      .asciz "unsupported ABI major version"
str_f_entry_syscall: .asciz "set_entry syscall"
str_f_entry_trap:   .asciz "set_entry trap"
str_f_entry_timer:  .asciz "set_entry timer"
str_f_kstack:       .asciz "set_kernel_stack"
str_f_module_size:  .asciz "module page count"
str_f_aspace:       .asciz "aspace_create"
str_f_map_image:    .asciz "map of an image page"
str_f_alloc:        .asciz "frame_alloc for a stack"
str_f_map_stack:    .asciz "map of a stack page"
str_f_switch_app:   .asciz "aspace_switch to an app space"
str_f_switch_boot:  .asciz "aspace_switch back to the boot space"
str_measuring:      .asciz "measuring "
str_m_failed:       .asciz " failed ("
str_f_timer:        .asciz "timer_set"
str_f_block:        .asciz "block"
str_f_iret:         .asciz "iret into an app"
str_w_switch:       .asciz "aspace_switch to the boot space"
str_w_destroy:      .asciz "aspace_destroy"
str_w_free:         .asciz "frame_free of a stack"
