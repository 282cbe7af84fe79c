/* proc.c -- processes: the table, the scheduler, fork, exit and wait.
 *
 * One kernel stack serves every entry (the SPK never nests them). A system
 * call that must wait (an empty pipe, a child still running, a sleep)
 * leaves its number and arguments in the process and the process blocked;
 * any change that could let it go on wakes every blocked process, and the
 * scheduler runs each woken call again before entering the process, so a
 * call either completes or blocks again. Processes run round-robin, with a
 * quantum on the SPK's virtual timer. When nothing can run but a sleeper,
 * the kernel arms the timer and blocks the partition (HC_BLOCK).
 */
#include "linux.h"

#define QUANTUM 200000

struct proc *cur;
struct proc *procs[MAX_PROCS];
static s32 next_pid = 1;

_Static_assert(sizeof(struct proc) <= PAGE, "a process record fits one page");

/* The x87/SSE registers are one set for every process: the process whose
 * state they hold is fpu_owner; entering another saves them in the owner's
 * area and loads the newcomer's (fxsave64/fxrstor64, areas 16-byte aligned). */
static struct proc *fpu_owner;

void fpu_reset(struct proc *p) {
    memset(p->fpu, 0, 512);
    p->fpu[0] = 0x7f; /* FCW 0x037f, as after FNINIT */
    p->fpu[1] = 0x03;
    u32 mxcsr = 0x1f80; /* every SSE exception masked */
    memcpy(p->fpu + 24, &mxcsr, 4);
    if (fpu_owner == p) fpu_owner = 0; /* the registers no longer hold its state */
}

static void fpu_switch(struct proc *p) {
    if (fpu_owner == p) return;
    if (fpu_owner) __asm__ volatile("fxsave64 %0" : "=m"(*(u8(*)[512])fpu_owner->fpu));
    __asm__ volatile("fxrstor64 %0" : : "m"(*(const u8(*)[512])p->fpu));
    fpu_owner = p;
}

struct proc *proc_new(void) {
    for (u32 i = 0; i < MAX_PROCS; i++) {
        if (procs[i]) continue;
        struct proc *p = kpage();
        if (!p) return 0;
        if (!(p->fpu = kmalloc(512))) {
            kpage_free(p);
            return 0;
        }
        fpu_reset(p);
        p->slot = i;
        p->pid = next_pid++;
        p->state = P_RUNNABLE;
        p->umask = 022;
        procs[i] = p;
        return p;
    }
    return 0;
}

static void proc_free(struct proc *p) {
    if (fpu_owner == p) fpu_owner = 0;
    kfree(p->fpu);
    procs[p->slot] = 0;
    kpage_free(p);
}

struct proc *proc_by_pid(s32 pid) {
    for (u32 i = 0; i < MAX_PROCS; i++)
        if (procs[i] && procs[i]->pid == pid && procs[i]->state != P_FREE) return procs[i];
    return 0;
}

static u64 wakes; /* counts wake_all calls: a pass of schedule that saw one must look again */

void wake_all(void) {
    wakes++;
    for (u32 i = 0; i < MAX_PROCS; i++)
        if (procs[i] && procs[i]->state == P_BLOCKED) procs[i]->state = P_RUNNABLE; /* each one retries */
}

long fd_alloc(struct proc *p, struct file *f, int from, int cloexec) {
    for (int fd = from < 0 ? 0 : from; fd < NFD; fd++) {
        if (!p->fds[fd]) {
            p->fds[fd] = f;
            p->cloexec[fd] = (u8)(cloexec != 0);
            return fd;
        }
    }
    return -EMFILE;
}

struct file *fd_get(struct proc *p, u64 fd) { return fd < NFD ? p->fds[fd] : 0; }

long fd_close(struct proc *p, u64 fd) {
    struct file *f = fd_get(p, fd);
    if (!f) return -EBADF;
    p->fds[fd] = 0;
    p->cloexec[fd] = 0;
    file_put(f);
    return 0;
}

__attribute__((noreturn)) void enter(struct proc *p) {
    cur = p;
    spk_current_frame = &p->frame;
    wrfsbase(p->fsbase);
    fpu_switch(p);
    long status = spk_timer_set(spk_time_now() + QUANTUM);
    if (status < 0) panic("timer_set", status);
    status = spk_iret(p->mm->aspace, &p->frame);
    /* The SPK refused the frame (a stack pointer outside the user half, say):
     * the process cannot run on; it dies as if it had faulted. */
    kprintf("linux: pid %d (%s) killed by SIGSEGV: cannot enter it at rip %#lx rsp %#lx (%ld)\n", p->pid, p->comm,
            p->frame.rip, p->frame.rsp, status);
    proc_kill(p, 11);
    schedule();
}

/* The scheduler proper. It never returns, and what it needs lives in the
 * process table, so schedule() first drops the whole kernel stack: a call
 * retried here may end its process, whose exit schedules again, and so on
 * for every process; without the reset that chain would nest. */
__attribute__((noreturn, used, noinline)) void schedule_loop(void) {
    for (;;) {
        u32 start = cur ? cur->slot : MAX_PROCS - 1;
        u64 now = spk_time_now(), earliest = 0, seen = wakes;
        for (u32 k = 1; k <= MAX_PROCS; k++) {
            struct proc *p = procs[(start + k) % MAX_PROCS];
            if (!p) continue;
            if (p->state == P_BLOCKED && p->wake_at) {
                if (p->wake_at <= now) p->state = P_RUNNABLE;
                else if (!earliest || p->wake_at < earliest) earliest = p->wake_at;
            }
            if (p->state != P_RUNNABLE) continue;
            if (p->restart) { /* run its waiting call again */
                cur = p;
                spk_current_frame = &p->frame;
                long r = dispatch(p->rnr, p->rargs[0], p->rargs[1], p->rargs[2], p->rargs[3], p->rargs[4],
                                  p->rargs[5]);
                if (r == -EWOULDBLOCK_RETRY) {
                    p->state = P_BLOCKED;
                    continue;
                }
                p->restart = 0;
                p->wake_at = 0;
                p->frame.rax = (u64)r;
            }
            enter(p);
        }
        if (wakes != seen) continue; /* a retried call woke a process this pass had passed over */
        if (!earliest) panic("deadlock: every process waits for another", 0);
        long status = spk_timer_set(earliest);
        if (status >= 0) status = spk_block();
        if (status < 0) panic("block", status);
    }
}

__attribute__((noreturn)) void schedule(void) {
    __asm__ volatile("mov %0, %%rsp\n\tcall schedule_loop" : : "r"(SPK_KERNEL_STACK_TOP - 256) : "memory");
    __builtin_unreachable();
}

long proc_fork(u64 flags, u64 child_tid) {
    struct proc *c = proc_new();
    if (!c) return -EAGAIN;
    c->mm = mm_fork(cur->mm);
    if (!c->mm) {
        proc_free(c);
        return -ENOMEM;
    }
    c->frame = cur->frame;
    c->frame.rax = 0;
    if (fpu_owner == cur) __asm__ volatile("fxsave64 %0" : "=m"(*(u8(*)[512])c->fpu)); /* the live registers */
    else memcpy(c->fpu, cur->fpu, 512);
    c->fsbase = cur->fsbase;
    for (int fd = 0; fd < NFD; fd++) {
        if ((c->fds[fd] = cur->fds[fd])) file_get(c->fds[fd]);
        c->cloexec[fd] = cur->cloexec[fd];
    }
    c->cwd = cur->cwd;
    c->exe = cur->exe;
    if (c->exe) inode_get(c->exe);
    memcpy(c->comm, cur->comm, COMM_LEN);
    c->sigmask = cur->sigmask;
    memcpy(c->sig, cur->sig, sizeof c->sig);
    c->umask = cur->umask;
    c->ppid = cur->pid;
    c->pgid = cur->pgid;
    c->sid = cur->sid;
    if (flags & 0x01000000ULL) { /* CLONE_CHILD_SETTID */
        u32 tid = (u32)c->pid;
        copy_to_user(c->mm, child_tid, &tid, 4);
    }
    if (flags & 0x00200000ULL) c->clear_tid = child_tid; /* CLONE_CHILD_CLEARTID */
    return c->pid;
}

static void close_all(struct proc *p) {
    for (int fd = 0; fd < NFD; fd++)
        if (p->fds[fd]) fd_close(p, (u64)fd);
}

/* What every end of a process does (exit or kill; cur must be p, whose mm
 * the tid clear writes): clear_child_tid, its descriptors, its memory and
 * executable, its FPU ownership; its children go to pid 1. pid 1 ending ends
 * the partition; anyone else becomes a zombie for its parent's wait. */
static void release(struct proc *p, int status) {
    if (p->clear_tid) {
        u32 zero = 0;
        copy_to_user(p->mm, p->clear_tid, &zero, 4);
    }
    close_all(p);
    mm_destroy(p->mm);
    p->mm = 0;
    if (p->exe) inode_put(p->exe);
    p->exe = 0;
    if (fpu_owner == p) fpu_owner = 0;
    for (u32 i = 0; i < MAX_PROCS; i++)
        if (procs[i] && procs[i]->ppid == p->pid) procs[i]->ppid = 1;
    if (p->pid == 1) spk_exit(exit_report_and_code(status));
    p->state = P_ZOMBIE;
    p->restart = 0;
    p->exit_status = status;
    wake_all();
}

__attribute__((noreturn)) void proc_exit(struct proc *p, int status) {
    release(p, status);
    if (cur == p) cur = 0;
    schedule();
}

static const char *const signames[] = {
    [1] = "SIGHUP",  [2] = "SIGINT",   [3] = "SIGQUIT", [4] = "SIGILL",   [5] = "SIGTRAP", [6] = "SIGABRT",
    [7] = "SIGBUS",  [8] = "SIGFPE",   [9] = "SIGKILL", [10] = "SIGUSR1", [11] = "SIGSEGV", [12] = "SIGUSR2",
    [13] = "SIGPIPE", [14] = "SIGALRM", [15] = "SIGTERM",
};

/* Ends p as if killed by signal sig (its parent sees WIFSIGNALED). */
void proc_kill(struct proc *p, int sig) {
    if (p->state == P_ZOMBIE || p->state == P_FREE) return;
    if (p == cur) proc_exit(p, sig & 0x7f);
    /* Another process: it dies now; it was blocked or runnable, never running. */
    struct proc *me = cur;
    cur = p;
    release(p, sig & 0x7f);
    cur = me;
}

const char *signal_name(int sig) {
    return sig > 0 && sig < (int)(sizeof signames / sizeof signames[0]) && signames[sig] ? signames[sig] : "signal";
}

int last_wait_status;

long proc_wait(s32 pid, u64 ustatus, u64 options, u64 rusage) {
    int children = 0;
    for (u32 i = 0; i < MAX_PROCS; i++) {
        struct proc *q = procs[i];
        if (!q || q->ppid != cur->pid || q == cur) continue;
        if (pid > 0 && q->pid != pid) continue;
        if (pid == 0 && q->pgid != cur->pgid) continue;
        if (pid < -1 && q->pgid != -pid) continue;
        children = 1;
        if (q->state != P_ZOMBIE) continue;
        if (ustatus && copy_to_user(cur->mm, ustatus, &q->exit_status, 4) < 0) return -EFAULT;
        if (rusage && clear_user(cur->mm, rusage, 144) < 0) return -EFAULT;
        s32 found = q->pid;
        last_wait_status = q->exit_status;
        proc_free(q);
        return found;
    }
    if (!children) return -ECHILD;
    if (options & 1) return 0; /* WNOHANG */
    return -EWOULDBLOCK_RETRY;
}
