/* sys_proc.c -- processes, signals (recorded, never delivered), time and system information. */
#include "sys.h"

static char exec_buf[EXEC_MAX];

/* ---- processes ---- */
long sys_getpid(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return cur->pid;
}

long sys_getppid(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return cur->ppid;
}

long sys_zero(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { /* getuid and friends: root */
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return 0;
}

long sys_getpgrp(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return cur->pgid;
}

long sys_getpgid(u64 pid, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    struct proc *p = pid ? proc_by_pid((s32)pid) : cur;
    return p ? p->pgid : -ESRCH;
}

long sys_getsid(u64 pid, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    struct proc *p = pid ? proc_by_pid((s32)pid) : cur;
    return p ? p->sid : -ESRCH;
}

long sys_setpgid(u64 pid, u64 pgid, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct proc *p = pid ? proc_by_pid((s32)pid) : cur;
    if (!p) return -ESRCH;
    if ((s64)pgid < 0) return -EINVAL;
    p->pgid = pgid ? (s32)pgid : p->pid;
    return 0;
}

long sys_setsid(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    if (cur->pgid == cur->pid) return -EPERM;
    cur->sid = cur->pgid = cur->pid;
    return cur->pid;
}

long sys_fork(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return proc_fork(0, 0);
}

#define CLONE_VM 0x100
#define CLONE_FS 0x200
#define CLONE_FILES 0x400
#define CLONE_SIGHAND 0x800
#define CLONE_VFORK 0x4000
#define CLONE_THREAD 0x10000
#define CLONE_SETTLS 0x80000
#define CLONE_PARENT_SETTID 0x100000

long sys_clone(u64 flags, u64 stack, u64 ptid, u64 ctid, u64 tls, u64 a5) {
    (void)a5;
    if (flags & (CLONE_THREAD | CLONE_SIGHAND | CLONE_FS | CLONE_FILES)) return -EINVAL; /* no threads */
    if ((flags & CLONE_VM) && !(flags & CLONE_VFORK)) return -EINVAL;
    if (stack >= SPK_USER_END || ((flags & CLONE_SETTLS) && tls >= SPK_USER_END)) return -EINVAL;
    long pid = proc_fork(flags, ctid);
    if (pid < 0) return pid;
    struct proc *c = proc_by_pid((s32)pid);
    if (stack) c->frame.rsp = stack;
    if (flags & CLONE_SETTLS) c->fsbase = tls;
    if (flags & CLONE_PARENT_SETTID) {
        u32 tid = (u32)pid;
        copy_to_user(cur->mm, ptid, &tid, 4);
    }
    return pid;
}

long sys_execve(u64 upath, u64 uargv, u64 uenvp, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    long r = get_path(path_a, upath);
    if (r < 0) return r;
    u64 used = 0, counts[2] = {0, 0};
    u64 vec[2] = {uargv, uenvp};
    for (int part = 0; part < 2; part++) {
        if (!vec[part]) continue;
        for (u64 i = 0;; i++) {
            u64 ptr;
            if (i > 4096) return -E2BIG;
            if (copy_from_user(cur->mm, &ptr, vec[part] + i * 8, 8) < 0) return -EFAULT;
            if (!ptr) break;
            long n = strncpy_from_user(cur->mm, exec_buf + used, ptr, EXEC_MAX - used);
            if (n == -ENAMETOOLONG) return -E2BIG;
            if (n < 0) return n;
            used += (u64)n + 1;
            counts[part]++;
        }
    }
    struct inode *ino;
    if ((r = vfs_lookup(0, path_a, 1, &ino)) < 0) return r;
    if (ino->kind == I_DIR) return -EACCES;
    return do_execve(cur, ino, path_a, exec_buf, counts[0], counts[1], used);
}

long sys_exit(u64 code, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    proc_exit(cur, (int)((code & 0xff) << 8));
}

long sys_wait4(u64 pid, u64 status, u64 options, u64 rusage, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    if (options & ~(u64)(1 | 2 | 8 | 0x40000000 | 0x80000000)) return -EINVAL;
    return proc_wait((s32)pid, status, options, rusage);
}


long sys_waitid(u64 idtype, u64 id, u64 infop, u64 options, u64 rusage, u64 a5) {
    (void)a5;
    if (idtype > 2 || !(options & 4)) return -EINVAL; /* P_ALL, P_PID, P_PGID; WEXITED is required */
    s32 pid = idtype == 0 ? -1 : idtype == 1 ? (s32)id : -(s32)id;
    if (idtype == 2 && id == 0) pid = 0;
    long r = proc_wait(pid, 0, options & 1, rusage);
    if (r < 0) return r;
    if (infop) {
        s32 info[32];
        memset(info, 0, sizeof info);
        if (r > 0) {
            int st = last_wait_status;
            info[0] = SIGCHLD;
            info[2] = (st & 0x7f) ? 2 : 1; /* CLD_KILLED, CLD_EXITED */
            info[4] = (s32)r;
            info[6] = (st & 0x7f) ? (st & 0x7f) : (st >> 8) & 0xff;
        }
        if (copy_to_user(cur->mm, infop, info, sizeof info) < 0) return -EFAULT;
    }
    return 0;
}

long sys_kill(u64 pid, u64 sig, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (sig > NSIG) return -EINVAL;
    s32 p = (s32)pid;
    struct proc *t = p > 0 ? proc_by_pid(p) : p == 0 ? cur : (struct proc *)0;
    if (p < -1) {
        for (u32 i = 0; i < MAX_PROCS; i++)
            if (procs[i] && procs[i]->pgid == -p) t = procs[i];
    }
    if (!t || t->state == P_ZOMBIE) return -ESRCH;
    if (sig == 0) return 0;
    /* No handler is ever run: a caught or ignored signal is dropped; the default action
     * of the rest ends the process (SIGCHLD, SIGWINCH, SIGURG, SIGCONT: ignored). */
    if (t->sig[sig].handler != 0 && sig != 9) return 0;
    if (t->pid == 1) return 0; /* as Linux: init gets only the signals it handles */
    if (sig == SIGCHLD || sig == 28 || sig == 23 || sig == 18) return 0;
    proc_kill(t, (int)sig);
    return 0;
}

long sys_tgkill(u64 tgid, u64 tid, u64 sig, u64 a3, u64 a4, u64 a5) {
    (void)tgid, (void)a3, (void)a4, (void)a5;
    return sys_kill(tid, sig, 0, 0, 0, 0);
}

long sys_tkill(u64 tid, u64 sig, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return sys_kill(tid, sig, 0, 0, 0, 0);
}

long sys_set_tid_address(u64 tidptr, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    cur->clear_tid = tidptr;
    return cur->pid;
}

long sys_set_robust_list(u64 head, u64 len, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (len != 24) return -EINVAL;
    cur->robust_list = head;
    return 0;
}

long sys_rseq(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return -ENOSYS; /* as a kernel built without CONFIG_RSEQ: glibc then does without */
}

long sys_arch_prctl(u64 code, u64 addr, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    switch (code) {
    case 0x1002: /* ARCH_SET_FS */
        if (addr >= SPK_USER_END) return -EPERM;
        cur->fsbase = addr;
        wrfsbase(addr);
        return 0;
    case 0x1003: /* ARCH_GET_FS */
        return copy_to_user(cur->mm, addr, &cur->fsbase, 8);
    default: return -EINVAL;
    }
}

long sys_prctl(u64 op, u64 arg, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    char name[COMM_LEN];
    switch (op) {
    case 15: { /* PR_SET_NAME */
        long n = strncpy_from_user(cur->mm, name, arg, COMM_LEN);
        if (n == -ENAMETOOLONG) {
            if (copy_from_user(cur->mm, name, arg, COMM_LEN - 1) < 0) return -EFAULT;
            name[COMM_LEN - 1] = 0;
        } else if (n < 0) {
            return n;
        }
        memcpy(cur->comm, name, COMM_LEN);
        return 0;
    }
    case 16: return copy_to_user(cur->mm, arg, cur->comm, COMM_LEN); /* PR_GET_NAME */
    default: return -EINVAL;
    }
}

long sys_gettid(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return cur->pid;
}

long sys_sched_yield(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    cur->frame.rax = 0;
    schedule();
}

/* ---- signals (recorded; none is ever delivered) ---- */
long sys_rt_sigaction(u64 sig, u64 act, u64 oact, u64 size, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    if (size != 8 || sig == 0 || sig > NSIG || ((sig == 9 || sig == 19) && act)) return -EINVAL;
    struct sigaction_rec n;
    if (act && copy_from_user(cur->mm, &n, act, sizeof n) < 0) return -EFAULT;
    if (oact && copy_to_user(cur->mm, oact, &cur->sig[sig], sizeof n) < 0) return -EFAULT;
    if (act) cur->sig[sig] = n;
    return 0;
}

long sys_rt_sigprocmask(u64 how, u64 set, u64 oset, u64 size, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    if (size != 8) return -EINVAL;
    u64 n = 0, old = cur->sigmask;
    if (set) {
        if (how > 2) return -EINVAL;
        if (copy_from_user(cur->mm, &n, set, 8) < 0) return -EFAULT;
    }
    if (oset && copy_to_user(cur->mm, oset, &old, 8) < 0) return -EFAULT;
    if (set) {
        if (how == 0) cur->sigmask |= n;
        else if (how == 1) cur->sigmask &= ~n;
        else cur->sigmask = n;
        cur->sigmask &= ~((1ULL << 8) | (1ULL << 18)); /* SIGKILL, SIGSTOP */
    }
    return 0;
}

long sys_sigaltstack(u64 ss, u64 oss, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)ss, (void)a2, (void)a3, (void)a4, (void)a5;
    if (oss) {
        u64 none[3] = {0, 2 /* SS_DISABLE */, 0};
        if (copy_to_user(cur->mm, oss, none, sizeof none) < 0) return -EFAULT;
    }
    return 0;
}

/* ---- time and system ---- */
static u64 now_ns(void) { return spk_time_now(); } /* one instruction = one nanosecond */

long sys_clock_gettime(u64 clk, u64 ts, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (clk > 11) return -EINVAL;
    u64 ns = now_ns();
    u64 out[2] = {ns / 1000000000ULL, ns % 1000000000ULL};
    if (clk == 0 || clk == 5 || clk == 8 || clk == 11) out[0] += EPOCH; /* REALTIME, _COARSE, TAI, ... */
    return copy_to_user(cur->mm, ts, out, sizeof out);
}

long sys_clock_getres(u64 clk, u64 ts, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (clk > 11) return -EINVAL;
    u64 out[2] = {0, 1};
    return ts ? copy_to_user(cur->mm, ts, out, sizeof out) : 0;
}

long sys_gettimeofday(u64 tv, u64 tz, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    u64 ns = now_ns();
    u64 out[2] = {EPOCH + ns / 1000000000ULL, (ns % 1000000000ULL) / 1000};
    if (tv && copy_to_user(cur->mm, tv, out, sizeof out) < 0) return -EFAULT;
    if (tz && clear_user(cur->mm, tz, 8) < 0) return -EFAULT;
    return 0;
}

long sys_time(u64 t, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    u64 s = EPOCH + now_ns() / 1000000000ULL;
    if (t && copy_to_user(cur->mm, t, &s, 8) < 0) return -EFAULT;
    return (long)s;
}

static long sleep_until(u64 ureq, u64 absolute_realtime, int absolute) {
    if (cur->wake_at) { /* a retry */
        if (spk_time_now() >= cur->wake_at) {
            cur->wake_at = 0;
            return 0;
        }
        return -EWOULDBLOCK_RETRY;
    }
    u64 req[2];
    if (copy_from_user(cur->mm, req, ureq, sizeof req) < 0) return -EFAULT;
    if ((s64)req[0] < 0 || req[1] >= 1000000000ULL) return -EINVAL;
    u64 ns = req[0] > 1000000000ULL ? 1000000000ULL * 1000000000ULL : req[0] * 1000000000ULL + req[1];
    u64 now = spk_time_now(), wake;
    if (absolute) {
        u64 base = absolute_realtime ? EPOCH * 1000000000ULL : 0;
        wake = ns > base ? ns - base : 0;
    } else {
        wake = now + ns;
    }
    if (wake <= now) return 0;
    cur->wake_at = wake;
    return -EWOULDBLOCK_RETRY;
}

long sys_nanosleep(u64 req, u64 rem, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)rem, (void)a2, (void)a3, (void)a4, (void)a5;
    return sleep_until(req, 0, 0);
}

long sys_clock_nanosleep(u64 clk, u64 flags, u64 req, u64 rem, u64 a4, u64 a5) {
    (void)rem, (void)a4, (void)a5;
    if (clk > 11) return -EINVAL;
    return sleep_until(req, clk == 0, (flags & 1) != 0);
}

long sys_uname(u64 buf, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    static const char *const fields[6] = {"Linux", "spk", "6.1.0-spk", "#1 SMP SPK", "x86_64", "(none)"};
    char u[6 * 65];
    memset(u, 0, sizeof u);
    for (int i = 0; i < 6; i++) memcpy(u + 65 * i, fields[i], strlen(fields[i]));
    return copy_to_user(cur->mm, buf, u, sizeof u);
}

long sys_sysinfo(u64 buf, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    u64 info[14];
    memset(info, 0, sizeof info);
    info[0] = now_ns() / 1000000000ULL;          /* uptime */
    info[4] = 64ULL << 20;                        /* totalram */
    info[5] = 32ULL << 20;                        /* freeram */
    info[10] = 1;                                 /* procs (u16 in the first half of the word) */
    ((u32 *)info)[26] = 1;                        /* mem_unit */
    return copy_to_user(cur->mm, buf, info, 112);
}

long sys_prlimit64(u64 pid, u64 res, u64 newp, u64 oldp, u64 a4, u64 a5) {
    (void)newp, (void)a4, (void)a5;
    if (pid && (s32)pid != cur->pid) return -ESRCH;
    if (res > 15) return -EINVAL;
    u64 inf = ~0ULL, lim[2] = {inf, inf};
    if (res == 3) lim[0] = STACK_SIZE;           /* RLIMIT_STACK */
    if (res == 7) lim[0] = lim[1] = NFD;         /* RLIMIT_NOFILE */
    if (oldp && copy_to_user(cur->mm, oldp, lim, sizeof lim) < 0) return -EFAULT;
    return 0;
}

long sys_getrlimit(u64 res, u64 oldp, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return sys_prlimit64(0, res, 0, oldp, 0, 0);
}

long sys_getrandom(u64 buf, u64 len, u64 flags, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    if (flags & ~7ULL) return -EINVAL;
    if (len > 256) len = 256;
    u8 bytes[256];
    fill_random(bytes, len);
    return copy_to_user(cur->mm, buf, bytes, len) < 0 ? -EFAULT : (long)len;
}

long sys_ok(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { /* accepted, nothing to do */
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return 0;
}

long sys_sendfile(u64 out, u64 in, u64 off, u64 count, u64 a4, u64 a5) {
    (void)off, (void)count, (void)a4, (void)a5;
    if (!fd_get(cur, out) || !fd_get(cur, in)) return -EBADF;
    return -EINVAL; /* as Linux for descriptors it cannot splice: callers fall back to read and write */
}

long sys_fsync(u64 fd, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return fd_get(cur, fd) ? 0 : -EBADF;
}

long sys_exit_group(u64 code, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    return sys_exit(code, a1, a2, a3, a4, a5);
}

long sys_times(u64 buf, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    if (buf && clear_user(cur->mm, buf, 32) < 0) return -EFAULT;
    return (long)(spk_time_now() / 10000000ULL); /* clock ticks of 10 ms */
}

long sys_getrusage(u64 who, u64 buf, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if ((s64)who < -1 || (s64)who > 1) return -EINVAL;
    return clear_user(cur->mm, buf, 144);
}

long sys_sched_getaffinity(u64 pid, u64 size, u64 mask, u64 a3, u64 a4, u64 a5) {
    (void)pid, (void)a3, (void)a4, (void)a5;
    if (size < 8 || (size & 7)) return -EINVAL;
    u64 one = 1;
    return copy_to_user(cur->mm, mask, &one, 8) < 0 ? -EFAULT : 8;
}

long sys_itimer(u64 which, u64 a1, u64 old, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a3, (void)a4, (void)a5;
    if (which > 2) return -EINVAL;
    return old ? clear_user(cur->mm, old, 32) : 0; /* accepted, never fires */
}

long sys_getitimer(u64 which, u64 cur_v, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (which > 2) return -EINVAL;
    return clear_user(cur->mm, cur_v, 32);
}
