/* refkernel.c -- the SPK reference guest kernel (ring 2), in C.
 *
 * A small round-robin kernel for up to MAX_APPS ring-3 apps, written against
 * the SDK (spk_sdk: spk/abi.h is generated from spk/abi.py). It starts each
 * boot module as an app in its own address space, schedules the apps with
 * preemption on the virtual timer, serves five system calls, kills an app
 * that faults or that runs too long without a system call (the watchdog), and
 * keeps the others running. docs/guest.md describes the design and the app
 * system-call ABI.
 *
 * Memory (kernel half, shared by every address space of the partition):
 *   image       KERNEL_IMAGE_VADDR    this ELF's code, constants, data, bss
 *   data area   KERNEL_DATA_VADDR     struct kdata below (zeroed by the SPK);
 *                                     its layout is documented in docs/guest.md
 *   stack       KERNEL_STACK_TOP      boot stack, then the stack of every entry
 *   scratch     SCRATCH_VA            one page the app loader fills frames through
 *   modules     MODULE_WINDOW         every boot module, mapped read-only
 */
#include "spk/app.h"
#include "spk/kernel.h"
#include "spk/libc.h"
#include "spk/loader.h"

#define MAX_APPS 8
#define QUANTUM 20000 /* virtual-time slice of an app */
#define WATCHDOG_TICKS 200000 /* CPU time an app may run without a system call */
#define REFK_ABI_MAJOR 1
#define APP_STACK_PAGE 0x7FF000ULL
#define APP_STACK_TOP 0x800000ULL
#define SIM_NAME_MAX 31
#define SCRATCH_VA (SPK_KERNEL_BASE + 0x1000000ULL)
#define MODULE_WINDOW (SCRATCH_VA + SPK_PAGE_SIZE)

enum { EXIT_BAD_START_INFO = 1, EXIT_BOOT_FAILED = 2, EXIT_FATAL = 3 };
enum app_state { ST_FREE = 0, ST_RUNNABLE = 1, ST_SLEEPING = 2 };

/* One app: 256 bytes, slot i holds pid i+1. */
struct app {
    struct spk_app_frame frame; /* +0: what HC_IRET enters it with */
    uint64_t state;             /* +144 */
    uint64_t pid;               /* +152 */
    uint64_t aspace;            /* +160 */
    uint64_t stack_mfn;         /* +168 */
    uint64_t wake;              /* +176: when a sleeper becomes runnable */
    uint64_t pages;             /* +184: pages of its module */
    uint64_t entered_at;        /* +192: when schedule last entered it */
    uint64_t quiet;             /* +200: CPU time since its last system call, as far as known */
    uint64_t syscalled;         /* +208: it made a system call since schedule entered it */
    uint8_t reserved[40];
};
_Static_assert(sizeof(struct app) == 256, "app record is 256 bytes");

/* The data area at KERNEL_DATA_VADDR. */
struct kdata {
    uint64_t cur;        /* +0x000: slot of the current (last entered) app */
    uint64_t napps;      /* +0x008: slots in use */
    uint64_t live;       /* +0x010: apps not yet exited or killed */
    struct app *currec;  /* +0x018: the current app's record */
    uint8_t reserved[0x400 - 0x20];
    struct app apps[MAX_APPS]; /* +0x400 */
};
_Static_assert(sizeof(struct kdata) <= SPK_KERNEL_DATA_SIZE, "data area overflow");

#define KD ((struct kdata *)(uintptr_t)SPK_KERNEL_DATA_VADDR)

/* Per-app loading results (frames to give back at reap). */
static struct spk_loaded_app loaded[MAX_APPS];

__attribute__((noreturn)) static void die(const char *prefix, const char *what, long status, int code) {
    kprintf("refkernel: %s%s (error %ld)\n", prefix, what, status);
    spk_exit(code);
}

__attribute__((noreturn)) static void boot_fail(const char *what, long status) {
    die("boot failed: ", what, status, EXIT_BOOT_FAILED);
}

__attribute__((noreturn)) static void fatal(const char *what, long status) { die("fatal: ", what, status, EXIT_FATAL); }

static void warn_if_failed(long status, const char *what) {
    if (status < 0) kprintf("refkernel: warning: %s failed (error %ld)\n", what, status);
}

/* Free an app: its space (never the loaded one), its stack, its private pages. */
static void reap(struct app *a) {
    warn_if_failed(spk_aspace_switch(0), "aspace_switch to the boot space");
    warn_if_failed(spk_aspace_destroy((long)a->aspace), "aspace_destroy");
    warn_if_failed(spk_frame_free(a->stack_mfn), "frame_free of a stack");
    warn_if_failed(spk_app_release(&loaded[a - KD->apps]), "frame_free of an app page");
    a->state = ST_FREE;
    KD->live--;
}

/* Pick the next runnable app after the current one (round-robin, the
 * current one last), arm its quantum and enter it. Wakes due sleepers; blocks
 * while every remaining app sleeps; exits when none is left. */
__attribute__((noreturn)) static void schedule(void) {
    for (;;) {
        if (KD->live == 0) {
            kprintf("refkernel: all apps done\n");
            spk_exit(0);
        }
        uint64_t now = spk_time_now(), earliest = UINT64_MAX;
        for (uint64_t i = 0; i < KD->napps; i++) {
            struct app *a = &KD->apps[i];
            if (a->state != ST_SLEEPING) continue;
            if (a->wake <= now) a->state = ST_RUNNABLE;
            else if (a->wake < earliest) earliest = a->wake;
        }
        struct app *next = 0;
        uint64_t slot = KD->cur;
        for (uint64_t k = 0; k < KD->napps && !next; k++) {
            slot = slot + 1 < KD->napps ? slot + 1 : 0;
            if (KD->apps[slot].state == ST_RUNNABLE) next = &KD->apps[slot];
        }
        if (!next) { /* every remaining app sleeps */
            long status = spk_timer_set(earliest);
            if (status < 0) fatal("timer_set", status);
            if ((status = spk_block()) < 0) fatal("block", status);
            continue;
        }
        KD->cur = slot;
        KD->currec = next;
        spk_current_frame = &next->frame;
        uint64_t deadline = now + QUANTUM < earliest ? now + QUANTUM : earliest;
        long status = spk_timer_set(deadline);
        if (status < 0) fatal("timer_set", status);
        next->entered_at = now;
        next->syscalled = 0;
        status = spk_iret((long)next->aspace, &next->frame);
        fatal("iret into an app", status);
    }
}

/* write(buf, len): the range must lie in the user half: the SPK would accept
 * a kernel-half pointer from this kernel, so the kernel refuses it for the app. */
static long sys_write_for(struct spk_app_frame *f) {
    uint64_t buf = f->rdi, len = f->rsi;
    if (len > SYS_WRITE_MAX || buf + len < buf || buf + len > SPK_USER_END) return -1;
    if (len == 0) return 0;
    long written = spk_console_write((const void *)(uintptr_t)buf, len);
    return written < 0 ? -1 : written;
}

void spk_on_syscall(struct spk_app_frame *f) {
    struct app *a = KD->currec;
    a->syscalled = 1;
    a->quiet = 0;
    switch (f->rax) {
    case SYS_WRITE:
        f->rax = (uint64_t)sys_write_for(f);
        return; /* resume natively */
    case SYS_GETPID:
        f->rax = a->pid;
        return;
    case SYS_EXIT:
        kprintf("refkernel: app %lu exited (%ld)\n", a->pid, (long)f->rdi);
        reap(a);
        schedule();
    case SYS_YIELD:
        f->rax = 0;
        schedule();
    case SYS_SLEEP: {
        uint64_t now = spk_time_now(), wake = now + f->rdi;
        a->wake = wake < now ? UINT64_MAX : wake; /* saturate: sleep "forever" */
        a->state = ST_SLEEPING;
        f->rax = 0;
        schedule();
    }
    default:
        f->rax = (uint64_t)-1;
        return;
    }
}

static const char *vector_name(uint64_t vector) {
    switch (vector) {
    case SPK_VEC_DE: return " (#DE)";
    case SPK_VEC_UD: return " (#UD)";
    case SPK_VEC_GP: return " (#GP)";
    case SPK_VEC_PF: return " (#PF)";
    default: return "";
    }
}

void spk_on_trap(struct spk_app_frame *f, const struct spk_trap_info *trap) {
    struct app *a = KD->currec;
    if (trap->vector == SPK_VEC_PF)
        kprintf("refkernel: app %lu killed: vector %lu%s at rip %#lx addr %#lx err %#lx\n", a->pid, trap->vector,
                vector_name(trap->vector), f->rip, trap->address, trap->error);
    else
        kprintf("refkernel: app %lu killed: vector %lu%s at rip %#lx\n", a->pid, trap->vector,
                vector_name(trap->vector), f->rip);
    reap(a);
    schedule();
}

/* The quantum (or a sleeper's wake time) is over. The watchdog: an app that
 * has run WATCHDOG_TICKS of CPU time without a system call is killed, as a
 * kernel's lockup detector would, so a spinning app cannot hold its slot
 * forever. Time before a system call inside a run is not counted. */
void spk_on_timer(struct spk_app_frame *f) {
    struct app *a = KD->currec;
    uint64_t now = spk_time_now();
    a->quiet = a->syscalled ? 0 : a->quiet + (now - a->entered_at);
    if (a->quiet >= WATCHDOG_TICKS) {
        kprintf("refkernel: app %lu killed: watchdog: no system call in %lu ticks at rip %#lx\n", a->pid, a->quiet,
                f->rip);
        reap(a);
    }
    schedule();
}

/* Map every module read-only into the module window; their views. */
static void map_modules(const struct spk_start_info *si, uint64_t n, struct spk_module_view *views) {
    uint64_t va = MODULE_WINDOW;
    for (uint64_t i = 0; i < n; i++) {
        const struct spk_module *m = &si->modules[i];
        views[i] = (struct spk_module_view){(const uint8_t *)(uintptr_t)va, m->bytes, m->first_mfn, m->pages};
        if (m->pages == 0 || m->bytes > m->pages * SPK_PAGE_SIZE) boot_fail("module page count", SPK_E_INVALID_ARGUMENT);
        for (uint64_t k = 0; k < m->pages; k++, va += SPK_PAGE_SIZE) {
            long status = spk_map(0, va, m->first_mfn + k, SPK_MAP_NO_EXEC);
            if (status < 0) boot_fail("map of a module page", status);
        }
    }
}

/* Start module i as the app in slot i; false when it is skipped (its
 * loading or measurement failed: the other apps still boot). */
static int start_app(const struct spk_start_info *si, uint64_t i, const struct spk_module_view *view) {
    struct app *a = &KD->apps[i];
    const char *name = si->modules[i].name;
    a->pages = view->pages;
    long aspace = spk_aspace_create();
    if (aspace < 0) boot_fail("aspace_create", aspace);
    a->aspace = (uint64_t)aspace;
    long mfn = spk_frame_alloc(); /* stack: one fresh frame, user RW, no-execute */
    if (mfn < 0) boot_fail("frame_alloc for a stack", mfn);
    a->stack_mfn = (uint64_t)mfn;
    long status = spk_map(aspace, APP_STACK_PAGE, a->stack_mfn, SPK_MAP_USER | SPK_MAP_WRITE | SPK_MAP_NO_EXEC);
    if (status < 0) boot_fail("map of a stack page", status);
    const char *why = "";
    status = spk_app_load(aspace, view, SPK_APP_IMAGE_VADDR, APP_STACK_PAGE, SCRATCH_VA, &loaded[i], &why);
    if (status < 0) {
        kprintf("refkernel: loading %.31s failed: %s (%ld)\n", name, why, status);
        reap(a);
        return 0;
    }
    /* Measure the module's bytes into the APPS register, in module order. */
    status = spk_measure(view->bytes, view->size, name, strnlen(name, SIM_NAME_MAX));
    if (status < 0) {
        kprintf("refkernel: measuring %.31s failed (%ld)\n", name, status);
        reap(a);
        return 0;
    }
    a->frame = (struct spk_app_frame){.rip = loaded[i].entry, .rsp = APP_STACK_TOP, .rflags = SPK_RFLAGS_FIXED};
    a->pid = i + 1;
    a->state = ST_RUNNABLE;
    return 1;
}

long kmain(const struct spk_start_info *si) {
    if (si->magic != SPK_START_INFO_MAGIC) {
        kprintf("refkernel: bad start-info magic, giving up\n");
        return EXIT_BAD_START_INFO;
    }
    long version = spk_version();
    if ((version >> 16) != REFK_ABI_MAJOR) boot_fail("unsupported ABI major version", version);
    uint64_t n = si->module_count;
    if (n > MAX_APPS) {
        kprintf("refkernel: more modules than slots, starting the first %d\n", MAX_APPS);
        n = MAX_APPS;
    }
    kprintf("refkernel: booting %lu apps\n", n);
    const char *step = "";
    long status = spk_install_entries(&step);
    if (status < 0) boot_fail(step, status);
    struct spk_module_view views[MAX_APPS];
    map_modules(si, n, views);
    /* Every slot counts as live up front; a skipped app is reaped at once. */
    KD->napps = n;
    KD->live = n;
    for (uint64_t i = 0; i < n; i++) start_app(si, i, &views[i]);
    KD->cur = n - 1; /* so that the first pick is slot 0 */
    schedule();
}
