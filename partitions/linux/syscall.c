/* syscall.c -- the Linux x86-64 system calls: the dispatch table and the ENOSYS report.
 *
 * The entry stub (spk_sdk/crt/kernel_entries.S) saves the app's registers
 * into the current process's frame; spk_on_syscall looks the number up in
 * one table and returns the result in rax; the stub resumes the app
 * natively (rcx and r11 already hold what `syscall` put there). A call
 * that waits returns -EWOULDBLOCK_RETRY and the process blocks (proc.c).
 * A number with no entry returns -ENOSYS and is counted by name; the counts
 * are reported when the first process exits (main.c).
 *
 * The calls themselves: sys_fs.c, sys_mm.c, sys_proc.c. Every pointer an
 * app passes goes through mm.c's user-access helpers.
 */
#include "linux.h"

#include "sys.h"

u64 enosys_count[NR_SYSCALLS + 1];

static const sys_fn table[NR_SYSCALLS] = {
    [0] = sys_read,
    [1] = sys_write,
    [2] = sys_open,
    [3] = sys_close,
    [4] = sys_stat,
    [5] = sys_fstat,
    [6] = sys_lstat,
    [7] = sys_poll,
    [8] = sys_lseek,
    [9] = sys_mmap,
    [10] = sys_mprotect,
    [11] = sys_munmap,
    [12] = sys_brk,
    [13] = sys_rt_sigaction,
    [14] = sys_rt_sigprocmask,
    [16] = sys_ioctl,
    [17] = sys_pread64,
    [19] = sys_readv,
    [20] = sys_writev,
    [21] = sys_access,
    [22] = sys_pipe,
    [23] = sys_select,
    [24] = sys_sched_yield,
    [25] = sys_mremap,
    [28] = sys_madvise,
    [32] = sys_dup,
    [33] = sys_dup2,
    [35] = sys_nanosleep,
    [36] = sys_getitimer,
    [37] = sys_ok,
    [38] = sys_itimer,
    [39] = sys_getpid,
    [40] = sys_sendfile,
    [56] = sys_clone,
    [57] = sys_fork,
    [58] = sys_fork,
    [59] = sys_execve,
    [60] = sys_exit,
    [61] = sys_wait4,
    [62] = sys_kill,
    [63] = sys_uname,
    [72] = sys_fcntl,
    [74] = sys_fsync,
    [75] = sys_fsync,
    [77] = sys_ftruncate,
    [79] = sys_getcwd,
    [80] = sys_chdir,
    [81] = sys_fchdir,
    [82] = sys_rename,
    [83] = sys_mkdir,
    [84] = sys_rmdir,
    [86] = sys_link,
    [87] = sys_unlink,
    [88] = sys_symlink,
    [89] = sys_readlink,
    [90] = sys_chmod,
    [91] = sys_fchmod,
    [92] = sys_chown,
    [93] = sys_fchown,
    [94] = sys_chown,
    [95] = sys_umask,
    [96] = sys_gettimeofday,
    [97] = sys_getrlimit,
    [98] = sys_getrusage,
    [99] = sys_sysinfo,
    [100] = sys_times,
    [102] = sys_zero,
    [104] = sys_zero,
    [107] = sys_zero,
    [108] = sys_zero,
    [109] = sys_setpgid,
    [110] = sys_getppid,
    [111] = sys_getpgrp,
    [112] = sys_setsid,
    [115] = sys_zero,
    [121] = sys_getpgid,
    [124] = sys_getsid,
    [131] = sys_sigaltstack,
    [137] = sys_statfs,
    [138] = sys_fstatfs,
    [157] = sys_prctl,
    [158] = sys_arch_prctl,
    [160] = sys_ok,
    [162] = sys_ok,
    [186] = sys_gettid,
    [200] = sys_tkill,
    [201] = sys_time,
    [204] = sys_sched_getaffinity,
    [217] = sys_getdents64,
    [218] = sys_set_tid_address,
    [228] = sys_clock_gettime,
    [229] = sys_clock_getres,
    [230] = sys_clock_nanosleep,
    [231] = sys_exit_group,
    [234] = sys_tgkill,
    [247] = sys_waitid,
    [257] = sys_openat,
    [258] = sys_mkdirat,
    [260] = sys_fchownat,
    [262] = sys_newfstatat,
    [263] = sys_unlinkat,
    [264] = sys_renameat,
    [265] = sys_link,
    [266] = sys_symlinkat,
    [267] = sys_readlinkat,
    [268] = sys_fchmodat,
    [269] = sys_faccessat,
    [270] = sys_pselect6,
    [271] = sys_ppoll,
    [273] = sys_set_robust_list,
    [280] = sys_utimensat,
    [292] = sys_dup3,
    [293] = sys_pipe2,
    [302] = sys_prlimit64,
    [316] = sys_renameat2,
    [318] = sys_getrandom,
    [332] = sys_statx,
    [334] = sys_rseq,
    [439] = sys_faccessat,
};

long dispatch(u64 nr, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    if (nr < NR_SYSCALLS && table[nr]) return table[nr](a0, a1, a2, a3, a4, a5);
    enosys_count[nr < NR_SYSCALLS && syscall_names[nr] ? nr : NR_SYSCALLS]++; /* nameless: "unknown" */
    return -ENOSYS;
}

void spk_on_syscall(struct spk_app_frame *f) {
    u64 nr = f->rax;
    long r = dispatch(nr, f->rdi, f->rsi, f->rdx, f->r10, f->r8, f->r9);
    if (r == -EWOULDBLOCK_RETRY) {
        struct proc *p = cur;
        p->restart = 1;
        p->rnr = nr;
        p->rargs[0] = f->rdi;
        p->rargs[1] = f->rsi;
        p->rargs[2] = f->rdx;
        p->rargs[3] = f->r10;
        p->rargs[4] = f->r8;
        p->rargs[5] = f->r9;
        p->state = P_BLOCKED;
        schedule();
    }
    f->rax = (u64)r;
}

/* The report of unsupported calls: "name=count, ..." sorted by name. */
void print_enosys_report(void) {
    static char line[2048];
    u64 used = 0;
    const char *last = "";
    for (;;) { /* selection by name: at most a few dozen entries */
        const char *best = 0;
        u64 best_count = 0;
        for (u64 nr = 0; nr <= NR_SYSCALLS; nr++) {
            if (!enosys_count[nr]) continue;
            const char *name = nr < NR_SYSCALLS && syscall_names[nr] ? syscall_names[nr] : "unknown";
            if (strcmp(name, last) > 0 && (!best || strcmp(name, best) < 0)) {
                best = name;
                best_count = enosys_count[nr];
            }
        }
        if (!best) break;
        int n = snprintf(line + used, sizeof line - used, "%s%s=%lu", used ? ", " : "", best, best_count);
        if (n < 0 || (u64)n >= sizeof line - used) break;
        used += (u64)n;
        last = best;
    }
    if (used) kprintf("linux: unsupported syscalls: %s\n", line);
}
