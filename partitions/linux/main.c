/* main.c -- the Linux personality's boot, traps, timer and exit report.
 *
 * Boot modules (docs/linux.md): `rootfs` a ustar archive (the read-only
 * root), `cmdline` the program to run (PATH\0ARGV...\0\0ENV...\0\0) and
 * optionally `stdin`, the bytes fd 0 of the first process reads. The first
 * process is pid 1; when it ends the kernel prints the unsupported-call
 * report (if any call returned ENOSYS) and exits the partition with its
 * status (the low 8 bits of its exit code, or 128 + the signal).
 */
#include "linux.h"

const char *signal_name(int sig);

__attribute__((noreturn)) void panic(const char *what, long status) {
    kprintf("linux: fatal: %s (%ld)\n", what, status);
    spk_exit(3);
}

int exit_report_and_code(int status) {
    print_enosys_report();
    if (status & 0x7f) return 128 + (status & 0x7f);
    return (status >> 8) & 0xff;
}

static int signal_of_vector(u64 vector) {
    switch (vector) {
    case SPK_VEC_DE: case SPK_VEC_MF: case SPK_VEC_XM: return 8; /* SIGFPE */
    case SPK_VEC_UD: return 4;                                     /* SIGILL */
    case SPK_VEC_BP: case SPK_VEC_DB: return 5;                    /* SIGTRAP */
    case SPK_VEC_AC: return 7;                                     /* SIGBUS */
    default: return 11;                                            /* SIGSEGV */
    }
}

void spk_on_trap(struct spk_app_frame *f, const struct spk_trap_info *trap) {
    if (trap->vector == SPK_HEALTH_VECTOR) return; /* a health event propagated to us: nothing to do */
    long paged = trap->vector == SPK_VEC_PF ? mm_fault(cur->mm, trap->address, (trap->error & SPK_PF_WRITE) != 0) : 0;
    if (trap->vector == SPK_VEC_PF && paged == 0) return; /* demand paging: resume the instruction */
    if (paged == -ENOMEM) { /* the quota is used up: what Linux's OOM killer would do */
        kprintf("linux: pid %d (%s) killed by SIGKILL: out of memory at addr %#lx\n", cur->pid, cur->comm,
                trap->address);
        proc_kill(cur, 9);
    }
    int sig = signal_of_vector(trap->vector);
    kprintf("linux: pid %d (%s) killed by %s at rip %#lx (vector %lu, addr %#lx, err %#lx)\n", cur->pid, cur->comm,
            signal_name(sig), f->rip, trap->vector, trap->address, trap->error);
    proc_kill(cur, sig);
}

void spk_on_timer(struct spk_app_frame *f) {
    (void)f;
    schedule(); /* round-robin: the next runnable process, this one last */
}

struct module {
    const u8 *bytes;
    u64 size;
};

static struct module find_module(const struct spk_start_info *si, const struct module *views, const char *name) {
    for (u64 i = 0; i < si->module_count && i < SPK_SI_MAX_MODULES; i++)
        if (strncmp(si->modules[i].name, name, 32) == 0) return views[i];
    return (struct module){0, 0};
}

static char cmdline_copy[64 * 1024];

/* Starts pid 1 from the cmdline module; returns only on failure. */
static void boot_first_process(struct module cmd) {
    if (!cmd.bytes || cmd.size == 0 || cmd.size > sizeof cmdline_copy - 2) panic("no cmdline module", 0);
    memcpy(cmdline_copy, cmd.bytes, cmd.size);
    cmdline_copy[cmd.size] = cmdline_copy[cmd.size + 1] = 0;
    /* PATH\0 ARGV...\0 \0 ENV...\0 \0 */
    const char *path = cmdline_copy;
    u64 at = strlen(path) + 1, argc = 0, envc = 0;
    char *strings = cmdline_copy + at;
    u64 start = at;
    while (at < cmd.size && cmdline_copy[at]) {
        at += strlen(cmdline_copy + at) + 1;
        argc++;
    }
    u64 argv_end = at;
    at++; /* the empty string */
    while (at < cmd.size && cmdline_copy[at]) {
        at += strlen(cmdline_copy + at) + 1;
        envc++;
    }
    /* Pack argv and envp strings contiguously (drop the separating empty string). */
    memmove(cmdline_copy + argv_end, cmdline_copy + argv_end + 1, at > argv_end + 1 ? at - argv_end - 1 : 0);
    u64 bytes = at > argv_end + 1 ? at - start - 1 : argv_end - start;

    struct proc *p = proc_new();
    if (!p) panic("no memory for the first process", -ENOMEM);
    p->pgid = p->sid = p->pid;
    p->cwd = vfs_root;
    struct file *in = file_new(F_STDIN, O_RDONLY), *out = file_new(F_CONSOLE, O_WRONLY);
    if (!in || !out) panic("no memory for the first process", -ENOMEM);
    p->fds[0] = in;
    p->fds[1] = out;
    p->fds[2] = out;
    out->refs = 2;
    memcpy(p->comm, "init", 5);
    cur = p;
    struct inode *ino;
    long r = vfs_lookup(vfs_root, path, 1, &ino);
    if (r == 0) r = do_execve(p, ino, path, strings, argc, envc, bytes);
    kprintf("linux: cannot run %s (error %ld)\n", path, -r);
    print_enosys_report();
    spk_exit(127);
}

long kmain(const struct spk_start_info *si) {
    if (si->magic != SPK_START_INFO_MAGIC) {
        kprintf("linux: bad start-info magic, giving up\n");
        return 1;
    }
    if ((spk_version() >> 16) != 1) panic("unsupported SPK ABI", spk_version());
    const char *step = "";
    long status = spk_install_entries(&step);
    if (status < 0) panic(step, status);
    struct module views[SPK_SI_MAX_MODULES];
    u64 va = MODULE_WINDOW;
    for (u64 i = 0; i < si->module_count && i < SPK_SI_MAX_MODULES; i++) {
        const struct spk_module *m = &si->modules[i];
        if (m->bytes > m->pages * PAGE || m->pages > (MODULE_WINDOW_END - va) / PAGE) panic("module too large", 0);
        views[i] = (struct module){(const u8 *)(uintptr_t)va, m->bytes};
        for (u64 k = 0; k < m->pages; k++, va += PAGE)
            if ((status = spk_map(0, va, m->first_mfn + k, 0)) < 0) panic("map of a module page", status);
    }
    /* Measure every module (the APPS register, in module order): the chain of
     * trust reaches the file system and the command the partition runs. */
    for (u64 i = 0; i < si->module_count && i < SPK_SI_MAX_MODULES; i++) {
        const char *name = si->modules[i].name;
        u64 done = 0;
        do {
            u64 n = views[i].size - done < SPK_MEASURE_MAX ? views[i].size - done : SPK_MEASURE_MAX;
            if ((status = spk_measure(views[i].bytes + done, n, name, strnlen(name, 31))) < 0)
                panic("measuring a module", status);
            done += n;
        } while (done < views[i].size);
    }
    struct module root = find_module(si, views, "rootfs"), in = find_module(si, views, "stdin");
    vfs_init(root.bytes, root.size, in.bytes, in.size);
    vfs_set_tmpfs_limit(si->free_frames / 2);
    boot_first_process(find_module(si, views, "cmdline"));
    return 127;
}
