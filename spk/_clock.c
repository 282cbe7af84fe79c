/* Ring 0's native clock: virtual time counted at translated-block granularity.
 *
 * Built by spk/_native.py with the system's gcc and loaded with ctypes; the
 * engine calls these functions directly as hook callbacks (no Python on the
 * per-block path). Why native: the engine's own instruction budget
 * (emu_start(count=N)) calls a hook before every instruction, which costs
 * ~11x on compute-bound guests; a block hook runs once per translated block.
 *
 * Virtual time (one tick) is one byte of guest instruction retired. A block
 * hook adds the block's size in bytes when the block is entered; a trap that
 * ends a block early (a fault, a debugger's stop before an instruction)
 * "settles" the count back to the bytes before the faulting instruction.
 * Bytes, not instructions, because the engine tells a block hook its size in
 * bytes but not its instruction count, and because the sum of the lengths of
 * the instructions retired does not depend on how the engine happens to cut
 * code into blocks (cache state, debugger hooks): it is architectural.
 *
 * The run's end: a block that would cross the limit is refused before it
 * executes (need_tail); ring 0 then runs that block alone up to the first
 * instruction boundary at or after the limit (the engine's "until" address),
 * so windows end at exact, architectural points too.
 *
 * Fast mode ("time = fast"): no block hook at all; a watchdog thread stops
 * the engine when a host-clock deadline passes (non-deterministic).
 *
 * The trap hooks live here too, since they settle the clock first: the app
 * system call bounce (int 0x80 and syscall at CPL 3 into the guest kernel)
 * is done in C when ring 0 armed it, with no Python at all, and so are a
 * guest kernel's YIELD and its MAP and UNMAP on their success path
 * (pv_map, pv_unmap); everything else goes to ring 0 through one ctypes
 * callback. The page walk the bounce uses is exported for ring 0's copies
 * (spk_walk).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*emu_stop_fn)(void *uc);
typedef void (*raise_fn)(void *env, int intno, int error_code, uintptr_t retaddr);
typedef int (*port_fn)(uint32_t port, uint32_t is_write, uint64_t rip);
typedef void (*intr_fn)(uint32_t intno);
typedef void (*syscall_fn)(uint64_t rip, uint32_t plain);
typedef int (*reg_fn)(void *uc, int regid, void *value);
typedef int (*ctl_fn)(void *uc, int control, ...);
typedef int (*ctx_fn)(void *uc, void *context);
typedef int32_t (*scan_fn)(uint64_t address, uint32_t size);
typedef uint64_t (*fv_port_fn)(uint32_t port, uint32_t size, uint32_t value, uint32_t is_write);
typedef void (*invlpg_fn)(void *env, uint64_t va);

/* The sensitive-instruction cache of a full partition's engine: for each
 * translated block (address, size), the offset of the first instruction in
 * it ring 0 must emulate although it does not trap (pushf, which would show
 * the real IOPL), or -1. Direct-mapped; filled by ring 0's decoder on a miss. */
#define SPK_SCAN_SLOTS 8192
#define SPK_RFLAGS_IOPL 0x3000ull
struct spk_scan_entry {
    uint64_t address;
    uint32_t size;
    int32_t offset;
};

#define SPK_MAX_PRIVILEGE_WORDS 16

/* Mirrored field by field by spk/_engine.py (_ClockStruct). */
struct spk_clock {
    uint64_t counter;     /* ticks: instruction bytes retired since the engine's creation */
    uint64_t limit;       /* the current run ends at the first instruction boundary >= limit */
    uint64_t block_start; /* the block being executed: [block_start, block_end) */
    uint64_t block_end;
    uint64_t tail_pc;     /* a block let past the limit once (the tail run), when tail_armed */
    uint64_t tail_armed;
    uint64_t need_tail;   /* set when a block crossing the limit was refused */
    uint64_t need_pc;
    uint64_t need_size;
    uint64_t stopping;    /* a stop was requested: the next block is neither counted nor run */
    uint64_t at_limit;    /* the run stopped because the limit was reached */
    uint64_t env;         /* address of the live CPU state (QEMU's env, rax first) */
    uint64_t rip_offset;  /* byte offset of rip in it */
    void *uc;
    emu_stop_fn emu_stop;
    raise_fn raise_exception;
    port_fn on_port;
    intr_fn on_interrupt;
    uint64_t want_user;   /* stop before the first block entered at CPL 3 (a pending upcall) */
    uint64_t user_stop;   /* the run stopped there */
    uint64_t cs_offset;   /* byte offset of the word holding the CS selector in env */
    uint64_t cs_shift;    /* its bit position in that word */
    syscall_fn on_syscall; /* ring 0's syscall-instruction handler */
    uint64_t cr3_offset;  /* byte offset of cr3 in env */
    uint64_t ram;         /* host address of guest-physical RAM (guest-physical 0) */
    uint64_t ram_size;    /* its size in bytes */
    /* The app system call bounce (int n at CPL 3 into the guest kernel), done
     * here when ring 0 armed it for the running partition (see bounce()). */
    uint64_t bounce_vector;   /* the system call gate's vector */
    uint64_t bounce_entry;    /* the kernel's syscall entry; 0: not armed (ring 0 decides) */
    uint64_t bounce_stack;    /* the kernel stack's top */
    uint64_t bounce_count;    /* bounces done here since ring 0 last took the count */
    uint64_t template_words;  /* address of the CPL 2 template's live-state words */
    uint64_t privilege_count; /* how many words the world switch copies from it */
    uint64_t privilege[SPK_MAX_PRIVILEGE_WORDS];
    uint64_t exc_word;        /* live word of the exception "in flight", and its mask */
    uint64_t exc_mask;
    uint64_t user_cs;         /* selectors the iret frame names */
    uint64_t user_ss;
    reg_fn reg_read;          /* uc_reg_read / uc_reg_write, for RFLAGS (kept lazily) */
    reg_fn reg_write;
    uint64_t rflags_id;
    uint64_t kernel_rflags;   /* RFLAGS on every entry into a guest kernel */
    /* Full virtualization (a full partition's own engine; all 0 elsewhere). */
    uint64_t fv;              /* every block takes the checks of fv_block() */
    uint64_t hflags_offset;   /* byte offset of QEMU's hflags in env: CPL in bits 0-1, IRQ shadow bit 3 */
    uint64_t eflags_offset;   /* byte offset of eflags in env (IF is bit 9) */
    uint64_t irq_wait;        /* an interrupt is pending: stop before the first block with IF set */
    uint64_t irq_stop;        /* the run stopped there */
    uint64_t tripwire;        /* the run stopped: the vCPU reached real CPL 0 */
    uint64_t need_sensitive;  /* stopped before a block [need_pc, +need_size) with a sensitive instruction */
    uint64_t sens_offset;     /* at this offset in it */
    struct spk_scan_entry *scan;
    scan_fn on_scan;
    uint64_t scan_misses;     /* blocks decoded by ring 0 */
    fv_port_fn on_fv_port;    /* port I/O of a full partition: the device models' answer, or 1<<32: #GP */
    /* uc_ctl: the TLB flush of a window entry (spk_window_enter). */
    ctl_fn ctl;
    /* The YIELD hypercall answered here when ring 0 armed it (no hypercall
     * trace): rax = 0 and the run stops, with no ctypes callback. */
    uint64_t yield_vector;     /* the hypercall vector */
    uint64_t yield_number;     /* YIELD's number (in rax) */
    uint64_t yield_armed;
    uint64_t yield_stop;       /* the run stopped at a native yield */
    /* A window's entry and exit (spk_window_enter/leave): one call each. */
    ctx_fn context_save;
    ctx_fn context_restore;
    uint64_t ctl_tlb_flush;    /* uc_ctl's UC_CTL_TLB_FLUSH control word (write, no argument) */
    uint64_t run_start;        /* the counter when the current run began */
    /* A guest kernel's MAP and UNMAP done here on their success path
     * (pv_map, pv_unmap), when ring 0 armed them for the running partition
     * (spk_window_enter; never with a hypercall trace). Anything else (an
     * error of any kind, an intermediate table to allocate, a kernel-half
     * unmap, a handle from `space_slots` on) goes to ring 0's handler, the
     * one place that decides and names errors: here only the case where
     * every rule holds is done, with the very steps ring 0 takes then. */
    uint64_t map_number;       /* MAP's and UNMAP's numbers (in rax) */
    uint64_t unmap_number;
    const uint64_t *spaces;    /* the running partition's CR3 by space handle (0: none); NULL: not armed */
    uint64_t space_slots;      /* how many handles `spaces` holds */
    int64_t owner;             /* the running partition's pid: the owner of the frames it may map */
    const int32_t *frame_owner; /* the frame table (spk/_frames.py), one element a frame */
    const uint8_t *frame_type;
    int32_t *map_count;
    int32_t *writable_count;
    const int32_t *no_exec;    /* not zero: the frame has no-execute mappings or may be stale (spk/_coherence.py) */
    uint64_t frame_count;
    uint64_t data_type;        /* the type code of a mappable frame (DATA) */
    uint64_t user_base;        /* the halves a mapping may name: [user_base, user_end), [kernel_base, kernel_end) */
    uint64_t user_end;
    uint64_t kernel_base;
    uint64_t kernel_end;
    invlpg_fn invlpg;          /* QEMU's helper_invlpg: one page out of the engine's TLB */
    uint64_t mm_done;          /* MAPs and UNMAPs done here since ring 0 last took the count */
    /* QEMU's tb_invalidate_phys_range(uc, start, end): drops the code translated
     * from a physical range, whatever address it ran at. */
    void (*tb_invalidate)(void *uc, uint64_t start, uint64_t end);
};

static inline uint64_t live_rip(struct spk_clock *c)
{
    return *(uint64_t *)(uintptr_t)(c->env + c->rip_offset);
}

static inline void stop(struct spk_clock *c)
{
    c->stopping = 1;
    c->emu_stop(c->uc);
}

/* A trap at `rip` inside the current block: the bytes from rip on did not retire. */
void spk_settle_at(struct spk_clock *c, uint64_t rip)
{
    if (rip >= c->block_start && rip < c->block_end) {
        c->counter -= c->block_end - rip;
    }
    c->block_start = c->block_end = 0;
}

/* The scan cache's slot for a block at `address` (13 bits of a multiplicative hash: SPK_SCAN_SLOTS). */
static inline struct spk_scan_entry *scan_entry(const struct spk_clock *c, uint64_t address)
{
    return &c->scan[((address * 0x9E3779B97F4A7C15ull) >> 51) & (SPK_SCAN_SLOTS - 1)];
}

/* A full partition's checks before a block runs: 1 when the block must not run.
 *
 * The tripwire: nothing a full guest does may reach real CPL 0 (a call gate
 * planted in its own GDT would); CPL changes only at a block's end, so the
 * first block at CPL 0 is refused before it executes. A pending interrupt
 * waits for IF (set natively by sti/popf at CPL 1, IOPL 1) outside an
 * interrupt shadow. A block holding a sensitive instruction is refused
 * and ring 0 runs the part before it, then emulates it.
 *
 * At CPL 3 the real IOPL is made 0 (the guest's kernel runs with IOPL 1 so
 * that its cli/sti/popf act natively; a native iretq to ring 3 keeps it).
 * At CPL 3 the two differ in nothing but what pushf shows: cli, sti, popf's
 * IF, iretq's IF and port I/O all see CPL > IOPL either way. So a ring-3
 * block needs no scan: its pushf shows IOPL 0 natively. CPL 3 cannot raise
 * IOPL, and every way back to the guest's ring 0 goes through ring 0 (which
 * loads IOPL 1): a call gate to the guest's own ring-0 code would reach real
 * CPL 0 (the tripwire), and one to a ring 1 or 2 segment runs at the IOPL 0 a
 * PC gives that ring (its cli faults), its blocks scanned as any other. */
static int fv_block(struct spk_clock *c, uint64_t address, uint32_t size)
{
    uint32_t hflags = *(const uint32_t *)(uintptr_t)(c->env + c->hflags_offset);
    uint64_t *eflags = (uint64_t *)(uintptr_t)(c->env + c->eflags_offset);
    if ((hflags & 3) == 0) {
        c->tripwire = 1;
        return 1;
    }
    if (c->irq_wait && (*eflags & 0x200) && !(hflags & 8)) {
        c->irq_stop = 1;
        return 1;
    }
    if ((hflags & 3) == 3) {
        *eflags &= ~(uint64_t)SPK_RFLAGS_IOPL;
        return 0;
    }
    struct spk_scan_entry *e = scan_entry(c, address);
    if (e->address != address || e->size != size) {
        e->address = address;
        e->size = size;
        e->offset = c->on_scan(address, size);
        c->scan_misses++;
    }
    if (e->offset >= 0) {
        c->need_sensitive = 1;
        c->need_pc = address;
        c->need_size = size;
        c->sens_offset = (uint64_t)e->offset;
        return 1;
    }
    return 0;
}

/* UC_HOOK_BLOCK: (uc, address, size, user_data). */
void spk_on_block(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct spk_clock *c = user_data;
    (void)uc;
    uint64_t counter = c->counter;
    /* The fast path: one test for every flag and the limit. */
    if (__builtin_expect(!(c->stopping | c->want_user | c->tail_armed | c->fv) && counter + size <= c->limit, 1)) {
        c->block_start = address;
        c->block_end = address + size;
        c->counter = counter + size;
        return;
    }
    if (c->stopping) {
        return; /* the engine exits before this block runs */
    }
    if (c->fv && fv_block(c, address, size)) {
        c->block_start = c->block_end = 0;
        stop(c);
        return;
    }
    if (c->want_user &&
        ((*(uint64_t *)(uintptr_t)(c->env + c->cs_offset) >> c->cs_shift) & 3) == 3) {
        /* CPL changes only at a block's end (iretq, sysret): this block's
         * first instruction is the first one at CPL 3, an exact point. */
        c->user_stop = 1;
        c->block_start = c->block_end = 0;
        stop(c);
        return;
    }
    if (c->tail_armed && address == c->tail_pc) {
        c->tail_armed = 0; /* the tail block ends at its "until" address */
    } else if (c->counter >= c->limit) {
        c->at_limit = 1;
        c->block_start = c->block_end = 0;
        stop(c);
        return;
    } else if (c->counter + size > c->limit) {
        c->need_tail = 1;
        c->need_pc = address;
        c->need_size = size;
        c->block_start = c->block_end = 0;
        stop(c);
        return;
    }
    c->block_start = address;
    c->block_end = address + size;
    c->counter += size;
}

/* UC_HOOK_BLOCK of a full partition's engine: the common case in one test.
 *
 * A block with no interrupt waiting for IF, no stop or tail under way and
 * within the budget, that runs at CPL 3 with IOPL 0 (nothing to scan) or at
 * CPL 1 and was already scanned clean, is only counted: the same outcome spk_on_block's fv_block path gives it, without
 * its chain of branches (the compute cost of full virtualization is this
 * hook; docs/fullvirt.md). Everything else goes the general way. */
void spk_on_block_fv(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct spk_clock *c = user_data;
    uint64_t counter = c->counter;
    uint32_t hflags = *(const uint32_t *)(uintptr_t)(c->env + c->hflags_offset);
    if (__builtin_expect(!(c->stopping | c->want_user | c->tail_armed | c->irq_wait) && c->fv &&
                         counter + size <= c->limit, 1)) {
        int clean;
        if ((hflags & 3) == 3) { /* ring 3 at IOPL 0: nothing to scan (fv_block) */
            clean = !(*(const uint64_t *)(uintptr_t)(c->env + c->eflags_offset) & SPK_RFLAGS_IOPL);
        } else {
            const struct spk_scan_entry *e = scan_entry(c, address);
            clean = (hflags & 3) && e->address == address && e->size == size && e->offset < 0;
        }
        if (__builtin_expect(clean, 1)) {
            c->block_start = address;
            c->block_end = address + size;
            c->counter = counter + size;
            return;
        }
    }
    spk_on_block(uc, address, size, user_data);
}

static int64_t walk(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t need);

/* The app system call bounce, natively: 1 when done, 0 when ring 0 must decide.
 *
 * The same steps as ring 0's Machine._enter_kernel for an app's `int n` at
 * the system call gate (docs/performance.md): the 5-word iret frame (rip,
 * cs, rflags, rsp, ss) written on the kernel stack, found by walking the live
 * page tables (present and writable at every level: nothing cached, so
 * nothing goes stale); the CPL 2 template's privilege words loaded; the
 * exception state cleared; RFLAGS set to the kernel's entry value; rsp, cr3
 * and rip set. Anything unusual (CPL not 3, the frame not in one writable
 * page) is left to ring 0, which faults the kernel as the ABI says. */
static int bounce(struct spk_clock *c, int from_syscall_insn)
{
    uint64_t *env = (uint64_t *)(uintptr_t)c->env;
    const uint64_t rsp_word = 4, frame_bytes = 40;
    if (((env[c->cs_offset / 8] >> c->cs_shift) & 3) != 3) {
        return 0;
    }
    uint64_t top = c->bounce_stack, sp = top - frame_bytes;
    if (((top - 1) >> 12) != (sp >> 12)) {
        return 0;
    }
    uint64_t cr3 = env[c->cr3_offset / 8];
    int64_t pa = walk(c, cr3, sp, 3); /* present and writable */
    if (pa < 0 || (uint64_t)pa > c->ram_size - frame_bytes) {
        return 0;
    }
    uint64_t rflags = 0;
    if (c->reg_read(c->uc, (int)c->rflags_id, &rflags) != 0) {
        return 0;
    }
    uint64_t rip_word = c->rip_offset / 8;
    /* int n: rip is already past the instruction; syscall: at it, and checked plain (2 bytes) */
    uint64_t app_rip = env[rip_word] + (from_syscall_insn ? 2 : 0);
    uint64_t *frame = (uint64_t *)(uintptr_t)(c->ram + (uint64_t)pa);
    frame[0] = app_rip;
    frame[1] = c->user_cs;
    frame[2] = rflags;
    frame[3] = env[rsp_word];
    frame[4] = c->user_ss;
    const uint64_t *template = (const uint64_t *)(uintptr_t)c->template_words;
    for (uint64_t i = 0; i < c->privilege_count; i++) {
        env[c->privilege[i]] = template[c->privilege[i]];
    }
    env[c->exc_word] |= c->exc_mask;
    uint64_t kernel_rflags = c->kernel_rflags;
    c->reg_write(c->uc, (int)c->rflags_id, &kernel_rflags);
    env[rsp_word] = sp;
    env[c->cr3_offset / 8] = cr3;
    if (from_syscall_insn) {
        /* the engine adds the instruction's length (2) after its hook */
        env[rip_word] = c->bounce_entry - 2;
        env[1] = app_rip; /* rcx and r11, as the instruction itself sets them */
        env[11] = rflags;
    } else {
        env[rip_word] = c->bounce_entry;
    }
    c->bounce_count++;
    return 1;
}

#define PTE_P 0x1ull
#define PTE_W 0x2ull
#define PTE_U 0x4ull
#define PTE_A 0x20ull
#define PTE_D 0x40ull
#define PTE_ADDR 0x000ffffffffff000ull
#define MAP_WRITE 0x1ull
#define MAP_USER 0x2ull

/* The slot of `va`'s leaf entry under `cr3` (ring 0's own four-level tables),
 * or NULL when a level above it is not present or a table lies outside RAM. */
static uint64_t *pte_slot(const struct spk_clock *c, uint64_t cr3, uint64_t va)
{
    uint64_t table = cr3 & PTE_ADDR;
    for (int shift = 39; shift > 12; shift -= 9) {
        if (table > c->ram_size - 4096) {
            return NULL;
        }
        uint64_t entry = ((const uint64_t *)(uintptr_t)(c->ram + table))[(va >> shift) & 511];
        if (!(entry & PTE_P)) {
            return NULL;
        }
        table = entry & PTE_ADDR;
    }
    if (table > c->ram_size - 4096) {
        return NULL;
    }
    return &((uint64_t *)(uintptr_t)(c->ram + table))[(va >> 12) & 511];
}

/* The CR3 of space `handle` of the running partition, or 0 (none, or ring 0 decides). */
static inline uint64_t space_cr3(const struct spk_clock *c, uint64_t handle)
{
    return handle < c->space_slots ? c->spaces[handle] : 0;
}

/* MAP (handle rdi, va rsi, mfn rdx, flags r10) when it succeeds: 1 when done.
 *
 * Ring 0's hc_map and AddressSpace.map on their success path: no reserved
 * flag; va page aligned, in the user half for a user mapping and in the
 * kernel slot otherwise; the frame exists, the caller owns it and it is a
 * DATA frame; every table above the slot exists (no allocation here) and
 * the slot is free. The leaf then is the frame with present, accessed,
 * writable and dirty when written, user when user; its counts go up. A
 * mapping adds no translation the engine may hold, so nothing is flushed. */
static int pv_map(struct spk_clock *c, uint64_t *env)
{
    uint64_t handle = env[7], va = env[6], mfn = env[2], flags = env[10];
    uint64_t cr3 = space_cr3(c, handle);
    if (!cr3 || (flags & ~(MAP_WRITE | MAP_USER)) || (va & 4095)) {
        return 0;
    }
    int user = (flags & MAP_USER) != 0, write = (flags & MAP_WRITE) != 0;
    if (user ? !(va >= c->user_base && va < c->user_end) : !(va >= c->kernel_base && va < c->kernel_end)) {
        return 0;
    }
    if (mfn >= c->frame_count || c->frame_owner[mfn] != c->owner || c->frame_type[mfn] != c->data_type ||
        c->no_exec[mfn]) {
        return 0; /* (a frame with no-execute marks: ring 0 keeps translated code coherent) */
    }
    uint64_t *slot = pte_slot(c, cr3, va);
    if (!slot || (*slot & PTE_P)) {
        return 0;
    }
    *slot = (mfn << 12) | PTE_P | PTE_A | (write ? PTE_W | PTE_D : 0) | (user ? PTE_U : 0);
    c->map_count[mfn]++;
    if (write) {
        c->writable_count[mfn]++;
    }
    env[0] = 0;
    c->mm_done++;
    return 1;
}

/* UNMAP (handle rdi, va rsi) of a user-half page when it succeeds: 1 when done.
 *
 * Ring 0's hc_unmap and AddressSpace.unmap on their success path: va page
 * aligned in the user half (a kernel-half unmap also drops ring 0's caches
 * of the kernel half: ring 0 does it), a present leaf whose frame's counts
 * can go down. The leaf is cleared, the counts go down and the engine
 * forgets the page (its own invlpg), as ring 0's page_unmapped does. */
static int pv_unmap(struct spk_clock *c, uint64_t *env)
{
    uint64_t handle = env[7], va = env[6];
    uint64_t cr3 = space_cr3(c, handle);
    if (!cr3 || (va & 4095) || !(va >= c->user_base && va < c->user_end)) {
        return 0;
    }
    uint64_t *slot = pte_slot(c, cr3, va);
    if (!slot || !(*slot & PTE_P)) {
        return 0;
    }
    uint64_t leaf = *slot, mfn = (leaf & PTE_ADDR) >> 12;
    if (mfn >= c->frame_count || c->map_count[mfn] <= 0 || ((leaf & PTE_W) && c->writable_count[mfn] <= 0)) {
        return 0; /* counts out of step: ring 0 reports its internal error */
    }
    if (c->no_exec[mfn]) {
        return 0; /* no-execute marks: ring 0's spk/_coherence.py counts it */
    }
    *slot = 0;
    c->map_count[mfn]--;
    if (leaf & PTE_W) {
        c->writable_count[mfn]--;
    }
    c->invlpg(env, va);
    env[0] = 0;
    c->mm_done++;
    return 1;
}

/* UC_HOOK_INTR: settle the count at the trapping rip, then the native bounce
 * or ring 0's handler. */
void spk_on_interrupt(void *uc, uint32_t intno, void *user_data)
{
    struct spk_clock *c = user_data;
    (void)uc;
    spk_settle_at(c, live_rip(c));
    if (intno == c->bounce_vector && c->bounce_entry && bounce(c, 0)) {
        return;
    }
    if (intno == c->yield_vector && (c->yield_armed || c->spaces)) {
        uint64_t *env = (uint64_t *)(uintptr_t)c->env;
        if (((env[c->cs_offset / 8] >> c->cs_shift) & 3) == 2) { /* a guest kernel's call only */
            /* ring 0's hc_yield: rax = 0, the run ends here */
            if (env[0] == c->yield_number && c->yield_armed) {
                env[0] = 0;
                c->yield_stop = 1;
                stop(c);
                return;
            }
            if (c->spaces && ((env[0] == c->map_number && pv_map(c, env)) ||
                              (env[0] == c->unmap_number && pv_unmap(c, env)))) {
                return;
            }
        }
    }
    c->on_interrupt(intno);
}

/* UC_HOOK_INSN (in/out). The engine restored rip to the instruction before
 * calling; when ring 0 refuses the access, #GP is raised right here, so the
 * instruction does not complete and nothing after it runs (a stop would only
 * take effect at the end of the block). */
uint32_t spk_on_in(void *uc, uint32_t port, int size, void *user_data)
{
    struct spk_clock *c = user_data;
    (void)uc;
    if (c->fv) {
        uint64_t answer = c->on_fv_port(port, (uint32_t)size, 0, 0);
        if (answer >> 32) {
            c->raise_exception((void *)(uintptr_t)c->env, 13, 0, 0);
        }
        return (uint32_t)answer;
    }
    if (c->on_port(port, 0, live_rip(c))) {
        c->raise_exception((void *)(uintptr_t)c->env, 13, 0, 0);
    }
    uint64_t rax = *(uint64_t *)(uintptr_t)c->env; /* let through: the destination keeps its value */
    return (uint32_t)(size == 1 ? (rax & 0xff) : size == 2 ? (rax & 0xffff) : (rax & 0xffffffffu));
}

void spk_on_out(void *uc, uint32_t port, int size, uint32_t value, void *user_data)
{
    struct spk_clock *c = user_data;
    (void)uc;
    if (c->fv) {
        if (c->on_fv_port(port, (uint32_t)size, value, 1) >> 32) {
            c->raise_exception((void *)(uintptr_t)c->env, 13, 0, 0);
        }
        return;
    }
    if (c->on_port(port, 1, live_rip(c))) {
        c->raise_exception((void *)(uintptr_t)c->env, 13, 0, 0);
    }
}

/* Guest-physical address of `va` under `cr3`, or -1 unless every level has
 * all the bits of `need` (1 present, 2 writable, 4 user).
 *
 * The same walk as spk/_paging.py's Walker (4-level tables, 4 KiB pages only:
 * ring 0 writes every table and never sets PS), canonical addresses only. A
 * table entry outside RAM counts as not present. */
static int64_t walk(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t need)
{
    const uint64_t addr_mask = 0x000FFFFFFFFFF000ull;
    uint64_t top = va >> 47;
    if (top != 0 && top != 0x1FFFF) {
        return -1;
    }
    uint64_t table = cr3 & addr_mask;
    for (int shift = 39; shift >= 12; shift -= 9) {
        uint64_t at = table + ((va >> shift) & 511) * 8;
        if (at > c->ram_size - 8) {
            return -1;
        }
        uint64_t entry = *(const uint64_t *)(uintptr_t)(c->ram + at);
        if ((entry & need) != need) {
            return -1;
        }
        table = entry & addr_mask;
    }
    uint64_t pa = table | (va & 0xFFF);
    return pa < c->ram_size ? (int64_t)pa : -1;
}

/* The same walk for ring 0's copies (spk/_paging.py Walker.spans): one C call
 * per page instead of four RAM reads in Python. */
int64_t spk_walk(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t need)
{
    return walk(c, cr3, va, need | 1);
}

/* Ring 0's copies (spk/_guestmem.py), one C call per copy instead of a page
 * walk per page and a slice per piece in Python. `need` as for walk (2
 * writable, 4 user; present always). Both check every page before touching
 * anything: -1 when a byte is not reachable with those rights (nothing
 * copied), and the same rules as Walker.spans (no wrap past 2^64, canonical
 * addresses only, which keeps a range from crossing between the halves). */
static int64_t check_range(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t len, uint64_t need)
{
    uint64_t last = va + len - 1;
    if (len == 0) {
        return 0;
    }
    if (last < va) {
        return -1;
    }
    for (uint64_t page = va & ~0xFFFull;; page += 0x1000) {
        int64_t pa = walk(c, cr3, page, need | 1);
        if (pa < 0 || (uint64_t)pa > c->ram_size - 0x1000) {
            return -1;
        }
        if (page == (last & ~0xFFFull)) {
            return 0;
        }
    }
}

static void copy_pages(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t len, uint8_t *host, int out)
{
    uint8_t *ram = (uint8_t *)(uintptr_t)c->ram;
    while (len) {
        uint64_t chunk = 0x1000 - (va & 0xFFF);
        if (chunk > len) {
            chunk = len;
        }
        uint64_t pa = (uint64_t)walk(c, cr3, va, 1); /* checked reachable */
        if (out) {
            memcpy(ram + pa, host, chunk);
        } else {
            memcpy(host, ram + pa, chunk);
        }
        host += chunk;
        va += chunk;
        len -= chunk;
    }
}

int64_t spk_copy_in(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t len, uint64_t need, uint8_t *dst)
{
    if (check_range(c, cr3, va, len, need) < 0) {
        return -1;
    }
    copy_pages(c, cr3, va, len, dst, 0);
    return 0;
}

/* Writable pages only (need has 2). With `drop` (a hypercall inside a run),
 * the code translated from every frame written goes at once, by physical
 * page: whatever address it was translated at, and without the engine's
 * own fetch walk (which on a no-execute page would leave a page fault in
 * flight for the guest). 0 when done. */
int64_t spk_copy_out(const struct spk_clock *c, uint64_t cr3, uint64_t va, uint64_t len, uint64_t need,
                     const uint8_t *src, uint64_t drop)
{
    if (check_range(c, cr3, va, len, need | 2) < 0) {
        return -1;
    }
    copy_pages(c, cr3, va, len, (uint8_t *)src, 1);
    if (drop && len) {
        uint64_t last = va + len - 1;
        for (uint64_t page = va & ~0xFFFull;; page += 0x1000) {
            uint64_t frame = (uint64_t)walk(c, cr3, page, 1) & ~0xFFFull; /* checked reachable */
            c->tb_invalidate((void *)(uintptr_t)c->uc, frame, frame + 0x1000);
            if (page == (last & ~0xFFFull)) {
                break;
            }
        }
    }
    return 0;
}

/* UC_HOOK_INSN (syscall): (uc, user_data), rip at the instruction.
 *
 * After the hook the engine adds the instruction's *decoded* length to rip,
 * and ring 0's bounce is exact only for the plain 2-byte form (0F 05): a
 * prefixed syscall would let an app choose where its kernel starts. The two
 * bytes at rip are checked here, through the live page tables as the app sees
 * them (no cache: nothing can go stale), and ring 0 is told the answer. The
 * instruction ends its block, which the block hook already counted whole. */
void spk_on_syscall(void *uc, void *user_data)
{
    struct spk_clock *c = user_data;
    (void)uc;
    uint64_t rip = live_rip(c);
    uint64_t cr3 = *(uint64_t *)(uintptr_t)(c->env + c->cr3_offset);
    int64_t first = walk(c, cr3, rip, 5); /* present and user */
    int64_t second = walk(c, cr3, rip + 1, 5);
    const uint8_t *ram = (const uint8_t *)(uintptr_t)c->ram;
    uint32_t plain = first >= 0 && second >= 0 && ram[first] == 0x0F && ram[second] == 0x05;
    if (plain && c->bounce_entry && bounce(c, 1)) {
        return;
    }
    c->on_syscall(rip, plain);
}

/* ---- fast mode: a host-clock watchdog ------------------------------------ */
struct spk_watchdog {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    pthread_t thread;
    struct timespec deadline;
    int armed;
    int quit;
    int fired;
    void *uc;
    emu_stop_fn emu_stop;
};

static void *watchdog_main(void *arg)
{
    struct spk_watchdog *w = arg;
    pthread_mutex_lock(&w->mutex);
    while (!w->quit) {
        if (!w->armed) {
            pthread_cond_wait(&w->cond, &w->mutex);
            continue;
        }
        if (pthread_cond_timedwait(&w->cond, &w->mutex, &w->deadline) != 0 && w->armed && !w->quit) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > w->deadline.tv_sec ||
                (now.tv_sec == w->deadline.tv_sec && now.tv_nsec >= w->deadline.tv_nsec)) {
                /* Stay armed and stop again every millisecond until disarmed: a
                 * stop that lands before emu_start begins is forgotten by it. */
                w->fired = 1;
                w->emu_stop(w->uc);
                w->deadline = now;
                w->deadline.tv_nsec += 1000000;
                if (w->deadline.tv_nsec >= 1000000000) {
                    w->deadline.tv_sec += 1;
                    w->deadline.tv_nsec -= 1000000000;
                }
            }
        }
    }
    pthread_mutex_unlock(&w->mutex);
    /* The thread owns the watchdog: nobody joins it, it frees itself. */
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mutex);
    free(w);
    return 0;
}

/* A detached watchdog thread for engine `uc`; NULL when it cannot start. */
struct spk_watchdog *spk_watchdog_new(void *uc, emu_stop_fn emu_stop)
{
    struct spk_watchdog *w = calloc(1, sizeof *w);
    pthread_condattr_t attr;
    pthread_attr_t thread_attr;
    if (!w) {
        return 0;
    }
    pthread_mutex_init(&w->mutex, 0);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    w->uc = uc;
    w->emu_stop = emu_stop;
    pthread_attr_init(&thread_attr);
    pthread_attr_setdetachstate(&thread_attr, PTHREAD_CREATE_DETACHED);
    int status = pthread_create(&w->thread, &thread_attr, watchdog_main, w);
    pthread_attr_destroy(&thread_attr);
    if (status != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mutex);
        free(w);
        return 0;
    }
    return w;
}

/* Stop the engine `ns` nanoseconds from now (re-arming moves the deadline). */
void spk_watchdog_arm(struct spk_watchdog *w, uint64_t ns)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&w->mutex);
    uint64_t total = (uint64_t)now.tv_nsec + ns % 1000000000u;
    w->deadline.tv_sec = now.tv_sec + (time_t)(ns / 1000000000u) + (time_t)(total / 1000000000u);
    w->deadline.tv_nsec = (long)(total % 1000000000u);
    w->armed = 1;
    w->fired = 0;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

/* Disarm; returns 1 when the deadline fired since the last arm. */
int spk_watchdog_disarm(struct spk_watchdog *w)
{
    pthread_mutex_lock(&w->mutex);
    int fired = w->fired;
    w->armed = 0;
    w->fired = 0;
    pthread_mutex_unlock(&w->mutex);
    return fired;
}

/* End the thread (it frees the watchdog); the engine must not run afterwards. */
void spk_watchdog_quit(struct spk_watchdog *w)
{
    pthread_mutex_lock(&w->mutex);
    w->quit = 1;
    w->armed = 0;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

/* ---- one engine run, entered and left with one call each ------------------- */
typedef int (*emu_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count);

#define SPK_RUN_AT_LIMIT (1u << 16)
#define SPK_RUN_NEED_TAIL (1u << 17)
#define SPK_RUN_USER_STOP (1u << 18)
#define SPK_RUN_SENSITIVE (1u << 19)
#define SPK_RUN_IRQ (1u << 20)
#define SPK_RUN_TRIPWIRE (1u << 21)
#define SPK_RUN_YIELD (1u << 22)

/* Why these three: ring 0's run loop used to reset and read the clock's
 * fields from Python, a dozen ctypes field accesses (about 0.1 us each) on
 * every partition switch. */

/* A run of `budget` ticks begins: returns the counter at its start. */
uint64_t spk_run_begin(struct spk_clock *c, uint64_t budget, uint64_t want_user)
{
    uint64_t start = c->counter;
    c->run_start = start;
    c->limit = start + budget;
    c->user_stop = 0;
    c->want_user = want_user;
    return start;
}

/* One engine start from `rip` (the run's per-start flags reset first): the
 * engine's status in the low 16 bits, and how the clock ended it above. */
uint32_t spk_run_step(struct spk_clock *c, emu_start_fn start, uint64_t rip, uint64_t until)
{
    c->stopping = c->need_tail = c->at_limit = c->yield_stop = 0;
    c->need_sensitive = c->irq_stop = c->tripwire = 0;
    c->block_start = c->block_end = 0;
    uint32_t status = (uint32_t)start(c->uc, rip, until, 0, 0) & 0xffffu;
    return status | (c->at_limit ? SPK_RUN_AT_LIMIT : 0) | (c->need_tail ? SPK_RUN_NEED_TAIL : 0) |
           (c->user_stop ? SPK_RUN_USER_STOP : 0) | (c->need_sensitive ? SPK_RUN_SENSITIVE : 0) |
           (c->irq_stop ? SPK_RUN_IRQ : 0) | (c->tripwire ? SPK_RUN_TRIPWIRE : 0) |
           (c->yield_stop ? SPK_RUN_YIELD : 0);
}

/* The run ends: disarm its one-shot flags; returns the counter. */
uint64_t spk_run_end(struct spk_clock *c)
{
    c->tail_armed = c->want_user = 0;
    return c->counter;
}

#define SPK_RUN_ENDED (1ull << 23)
#define SPK_RUN_EXECUTED_SHIFT 24

/* A whole run in one call, for the common case (a yield, a trap that stops
 * it, the budget reached at a block boundary): begin, one engine start from
 * `rip`, and the end unless ring 0's loop must go on (a tail run: ring 0
 * decodes the block, runs it with spk_run_step and ends with spk_run_end; a
 * full partition's sensitive block, interrupt window or tripwire).
 * Returns spk_run_step's bits, SPK_RUN_ENDED when the run ended here, and
 * the ticks executed above SPK_RUN_EXECUTED_SHIFT (the caller keeps budgets
 * below 2^39, so they fit). */
uint64_t spk_run(struct spk_clock *c, emu_start_fn start, uint64_t rip, uint64_t until, uint64_t budget,
                 uint64_t want_user)
{
    uint64_t begin = spk_run_begin(c, budget, want_user);
    uint64_t bits = spk_run_step(c, start, rip, until);
    if (bits & (SPK_RUN_NEED_TAIL | SPK_RUN_SENSITIVE | SPK_RUN_IRQ | SPK_RUN_TRIPWIRE)) {
        return bits; /* ring 0's loop goes on (a tail, a full partition's stops) */
    }
    uint64_t executed = spk_run_end(c) - begin;
    return bits | SPK_RUN_ENDED | (executed << SPK_RUN_EXECUTED_SHIFT);
}

/* ---- a paravirtualized partition's window, entered and left with one call each -- */

/* The window begins: the partition's saved context loaded (a restore also
 * forgets fault escalation), the exception "in flight" cleared, the TLB
 * flushed when `flush` (its CR3 differs from the translations the engine
 * holds: a restore copies CR3 without flushing), the native bounce armed
 * with the kernel's entry and stack (0: ring 0 decides), the native yield
 * armed when `yield_on`, the native MAP and UNMAP armed for partition
 * `owner` with its CR3s by handle at `spaces` (NULL: not armed). 0, or the
 * engine's status when the restore fails (nothing armed then). The same
 * steps ring 0's run loop did with five ctypes calls. */
uint32_t spk_window_enter(struct spk_clock *c, void *context, uint64_t flush, uint64_t entry, uint64_t stack,
                          uint64_t yield_on, const uint64_t *spaces, int64_t owner)
{
    int status = c->context_restore(c->uc, context);
    if (status != 0) {
        return (uint32_t)status;
    }
    uint64_t *env = (uint64_t *)(uintptr_t)c->env;
    env[c->exc_word] |= c->exc_mask;
    if (flush) {
        c->ctl(c->uc, (int)c->ctl_tlb_flush);
    }
    c->bounce_entry = stack ? entry : 0;
    c->bounce_stack = stack;
    c->yield_armed = yield_on;
    c->spaces = spaces;
    c->owner = owner;
    return 0;
}

/* The window ends: the vCPU saved into `context` when `save` (not after a
 * fault: the partition's last good state stays), the bounce, the yield and
 * the native MAP and UNMAP disarmed. Returns the bounces done natively since
 * the last count (and zeroes it), for the partition's syscall counter (the
 * native MAPs and UNMAPs are taken apart: Engine.take_page_table_calls). */
uint64_t spk_window_leave(struct spk_clock *c, void *context, uint64_t save)
{
    if (save) {
        c->context_save(c->uc, context);
    }
    c->bounce_entry = c->bounce_stack = 0;
    c->yield_armed = 0;
    c->spaces = NULL;
    uint64_t bounces = c->bounce_count;
    c->bounce_count = 0;
    return bounces;
}

/* ---- the bare engine's window, the baseline of the switch figures ------------ */

/* The benchmark's baseline for partition windows (spk bench, keys bare_*):
 * the same engine with no SPK, only the stop below. `engines` holds one
 * engine per partition (own_engines) or one engine whose `contexts` are the
 * partitions. Partition i's windows are windows i, i+n, i+2n, ...: each
 * restores its context (one engine), flushes the TLB when the address
 * space differs from the last window's (one engine: each partition has its
 * own CR3), starts the engine at `rip`, which stops at the guest's `int`
 * (spk_bare_stop), and saves the context. Timed here, with the host's
 * monotonic clock, so no ctypes call is inside the measure. Returns
 * nanoseconds per window, or -1 when the engine refused a call (or n or
 * windows is not positive). */
struct spk_bare_windows {
    emu_start_fn start;
    ctx_fn context_save;
    ctx_fn context_restore;
    ctl_fn ctl;
    uint64_t ctl_tlb_flush;
    uint64_t rip;
    uint64_t until;
};

/* The bare engine's interrupt hook: the guest's `int` ends the window (user data: uc_emu_stop). */
void spk_bare_stop(void *uc, uint32_t intno, void *user_data)
{
    (void)intno;
    ((emu_stop_fn)user_data)(uc);
}

double spk_bare_windows(const struct spk_bare_windows *b, void *const *engines, void *const *contexts, int64_t n,
                        int64_t own_engines, int64_t windows)
{
    struct timespec t0, t1;
    int64_t last = -1;
    if (n <= 0 || windows <= 0) {
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int64_t w = 0; w < windows; w++) {
        int64_t i = w % n;
        void *uc = own_engines ? engines[i] : engines[0];
        if (!own_engines) {
            if (b->context_restore(uc, contexts[i]) != 0) {
                return -1;
            }
            if (i != last && b->ctl(uc, (int)b->ctl_tlb_flush) != 0) {
                return -1;
            }
        }
        if (b->start(uc, b->rip, b->until, 0, 0) != 0) {
            return -1;
        }
        if (!own_engines && b->context_save(uc, contexts[i]) != 0) {
            return -1;
        }
        last = i;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (double)windows;
}
