/* fvfuzz's page tables and the page-table operations.
 *
 * The kernel's own map: the first 4 MiB identity-mapped with 4 KiB pages
 * (page 0 absent, the user pages and the user stack user-accessible), no NX
 * bit anywhere, so its own code survives any EFER or CR0/CR4 change the
 * fuzzer makes and undoes. PML4 entries 1-8 (and any entry a self-reference
 * takes) are the fuzzer's: tables from a pool, leaves naming random
 * guest-physical addresses: its scratch pages, its own image and live page
 * tables, memory just beyond and far beyond its 4 MiB, addresses past the
 * physical-address width; 4 KiB, 2 MiB and 1 GiB leaves, aligned or not;
 * random permission and reserved bits; self-referencing entries and writes
 * through them; writes to live tables with or without invlpg; other roots.
 * Every mapping is then touched: read always, written only where a real PC
 * would not lose the kernel (scratch pages, memory beyond 4 MiB and out of
 * the MMIO hole), executed only on a page of `ret`. */
#include "fvfuzz.h"

#define POOL 40

extern char __user_start[], __user_end[];

static uint64_t kpml4[512] __attribute__((aligned(4096)));
static uint64_t kpdpt[512] __attribute__((aligned(4096)));
static uint64_t kpd[512] __attribute__((aligned(4096)));
static uint64_t kpt[2][512] __attribute__((aligned(4096)));
static uint64_t pool[POOL][512] __attribute__((aligned(4096)));
static uint64_t alt_root[512] __attribute__((aligned(4096)));
static unsigned pool_used;
uint64_t kernel_pml4_phys;
static char text[96];

uint64_t fuzz_root(void) { return (uint64_t)kpml4; }

static inline void reload_cr3(void) { write_cr3(kernel_pml4_phys); }

void paging_init(void) {
    kpml4[0] = (uint64_t)kpdpt | PC_PTE_P | PC_PTE_W | PC_PTE_U;
    kpdpt[0] = (uint64_t)kpd | PC_PTE_P | PC_PTE_W | PC_PTE_U;
    for (uint64_t a = 0; a < MAP_END; a += PC_PAGE) {
        uint64_t *pt = kpt[a >> 21];
        kpd[a >> 21] = (uint64_t)pt | PC_PTE_P | PC_PTE_W | PC_PTE_U;
        int user_code = a >= (uint64_t)__user_start && a < (uint64_t)__user_end;
        int user_data = a == (uint64_t)user_stack;
        pt[(a >> 12) & 511] = a == 0 ? 0 : a | PC_PTE_P | (user_code ? PC_PTE_U : PC_PTE_W) | (user_data ? PC_PTE_U : 0);
    }
    kernel_pml4_phys = (uint64_t)kpml4;
    reload_cr3();
}

/* ---- the pool of fuzz tables ---- */

static int in_pool(uint64_t entry) {
    uint64_t a = entry & PC_PTE_ADDR;
    return (entry & PC_PTE_P) && !(entry & PC_PTE_PS) && a >= (uint64_t)pool && a < (uint64_t)pool + sizeof pool;
}

static const char *pool_reset_note = "";

static void pool_reset(void) {
    for (int i = 1; i < 512; i++) kpml4[i] = 0;
    memset(alt_root, 0, sizeof alt_root);
    memset(pool, 0, sizeof pool);
    pool_used = 0;
    reload_cr3();
    pool_reset_note = " (pool reset)";
}

static uint64_t *pool_page(void) {
    if (pool_used >= POOL) pool_reset();
    return pool[pool_used++];
}

/* The table an entry of `table` leads to, made a fresh pool table when it holds anything else. */
static uint64_t *child(uint64_t *table, unsigned index) {
    if (!in_pool(table[index])) table[index] = (uint64_t)pool_page() | PC_PTE_P | PC_PTE_W | PC_PTE_U;
    return (uint64_t *)(table[index] & PC_PTE_ADDR);
}

static unsigned pick_index(void) {
    static const unsigned common[] = {0, 1, 2, 511, 256};
    return chance(60) ? common[below(5)] : (unsigned)below(512);
}

static uint64_t make_va(unsigned i4, unsigned i3, unsigned i2, unsigned i1) {
    uint64_t va = (uint64_t)i4 << 39 | (uint64_t)i3 << 30 | (uint64_t)i2 << 21 | (uint64_t)i1 << 12;
    return va & (1ULL << 47) ? va | 0xFFFF000000000000ULL : va;
}

/* ---- touching a mapping ---- */

enum { TOUCH_NONE, TOUCH_READ, TOUCH_WRITE, TOUCH_EXEC };
struct touch {
    uint64_t va, value;
    int kind;
};

static void do_touch(void *arg) {
    struct touch *t = arg;
    volatile uint64_t *p = (volatile uint64_t *)t->va;
    if (t->kind == TOUCH_READ) t->value = *p;
    if (t->kind == TOUCH_WRITE) *p = t->value;
    if (t->kind == TOUCH_EXEC) ((void (*)(void))t->va)();
}

static const char *touch(uint64_t va, int kind, uint64_t value) {
    static const char kinds[] = "-rwx";
    struct touch t = {va, value, kind};
    if (kind == TOUCH_NONE) return "-";
    int trapped = fz_try(do_touch, &t);
    const char *r = trap_result(trapped);
    snprintf(text, sizeof text, "%c:%s%s", kinds[kind], r, kind == TOUCH_READ && !trapped ? "" : "");
    if (kind == TOUCH_READ && !trapped) snprintf(text, sizeof text, "r:v=%lx", t.value);
    return text;
}

/* ---- guest-physical targets ---- */

struct target {
    uint64_t gpa;
    int writable, exec; /* may a real PC's kernel write or run it and go on */
    int beyond;         /* past the 4 MiB the kernel assumes it has */
};

static struct target pick_target(unsigned level) {
    uint64_t align = level == 1 ? PC_PAGE : level == 2 ? 1UL << 21 : 1UL << 30;
    struct target t = {0, 0, 0, 1};
    switch (below(9)) {
    case 0: case 1: /* a scratch page */
        t.gpa = SCRATCH + below(SCRATCH_PAGES) * PC_PAGE, t.writable = level == 1, t.beyond = level == 3;
        break;
    case 2: /* the kernel's own image, a live table, page 0 */
        t.gpa = chance(50) ? (uint64_t)kpml4 : 0x100000 + below(0x80) * PC_PAGE, t.beyond = level == 3;
        break;
    case 3: /* just beyond the 4 MiB the kernel assumes it has */
        t.gpa = MAP_END + below(60UL << 20), t.writable = 1;
        break;
    case 4: /* far beyond: past 4 GiB, within 40 physical-address bits */
        t.gpa = (1UL << 32) + below((1UL << 40) - (1UL << 32)), t.writable = 1;
        break;
    case 5: /* past the physical-address width: reserved bits */
        t.gpa = (1UL << (40 + below(12))) | below(1UL << 32);
        break;
    case 6: /* the page of ret */
        t.gpa = (uint64_t)ret_page, t.exec = level == 1, t.beyond = level == 3;
        break;
    case 7: /* the local APIC and I/O APIC (a PC's MMIO; beyond any small quota) */
        t.gpa = chance(50) ? 0xFEE00000UL : 0xFEC00000UL;
        break;
    default: /* anything */
        t.gpa = rnd() & PC_PTE_ADDR;
        break;
    }
    if (chance(85)) t.gpa &= ~(align - 1); /* else a huge leaf with low address bits set: reserved */
    t.gpa &= PC_PTE_ADDR;
    return t;
}

static uint64_t pick_flags(void) {
    uint64_t f = 0;
    if (chance(92)) f |= PC_PTE_P;
    if (chance(60)) f |= PC_PTE_W;
    if (chance(25)) f |= PC_PTE_U;
    if (chance(10)) f |= PTE_PWT;
    if (chance(10)) f |= PTE_PCD;
    if (chance(30)) f |= PTE_A;
    if (chance(30)) f |= PTE_D;
    if (chance(10)) f |= PTE_G;
    if (chance(15)) f |= PC_PTE_NX;
    if (chance(10)) f |= rnd() & 0x7FF0000000000E00UL; /* available and protection-key bits */
    return f;
}

static int touch_kind(struct target t, uint64_t flags) {
    unsigned r = (unsigned)below(10);
    if (r < 2 || (!reach_beyond && t.beyond)) return TOUCH_NONE;
    if (t.exec && !(flags & PC_PTE_NX) && r < 5) return TOUCH_EXEC;
    if (t.writable && r < 7) return TOUCH_WRITE;
    return TOUCH_READ;
}

/* ---- the operations ---- */

static char line[200];

const char *op_pt_map(void) {
    pool_reset_note = "";
    unsigned slot = 1 + (unsigned)below(FUZZ_SLOTS), i3 = pick_index(), i2 = pick_index(), i1 = pick_index();
    unsigned level = chance(60) ? 1 : chance(75) ? 2 : 3;
    struct target t = pick_target(level);
    uint64_t flags = pick_flags() | (level > 1 ? PC_PTE_PS : 0);
    uint64_t *pdpt = child(kpml4, slot), *table = pdpt;
    if (level <= 2) table = child(pdpt, i3);
    if (level == 1) table = child(table, i2);
    unsigned index = level == 3 ? i3 : level == 2 ? i2 : i1;
    uint64_t va = make_va(slot, i3, level <= 2 ? i2 : 0, level == 1 ? i1 : 0) + (below(512) << 3);
    table[index] = t.gpa | flags;
    int flush = chance(75);
    if (flush) invlpg(va);
    const char *r = touch(va, touch_kind(t, flags), rnd());
    snprintf(line, sizeof line, "va %lx L%u pte %lx%s: %s%s", va, level, t.gpa | flags, flush ? " invlpg" : "", r,
             pool_reset_note);
    return line;
}

const char *op_pt_unmap(void) {
    pool_reset_note = "";
    unsigned slot = 1 + (unsigned)below(FUZZ_SLOTS), i3 = pick_index(), i2 = pick_index(), i1 = pick_index();
    unsigned level = 4, want = 1 + (unsigned)below(4);
    uint64_t *table = kpml4;
    unsigned idx[4] = {slot, i3, i2, i1};
    for (; level > want && in_pool(table[idx[4 - level]]); level--) table = (uint64_t *)(table[idx[4 - level]] & PC_PTE_ADDR);
    uint64_t *entry = &table[idx[4 - level]]; /* at level 4: a fuzz slot, never the kernel's */
    uint64_t old = *entry;
    *entry = chance(70) ? 0 : old & ~PC_PTE_P;
    uint64_t va = make_va(slot, i3, i2, i1);
    int flush = chance(50);
    if (flush) invlpg(va);
    const char *r = touch(va, TOUCH_READ, 0);
    snprintf(line, sizeof line, "va %lx L%u was %lx%s: %s", va, level, old, flush ? " invlpg" : "", r);
    return line;
}

/* A PML4 entry naming the PML4 itself: the tables become readable (and
 * writable) pages; a fuzz slot's entry is then written through the alias
 * (a live table written through a second mapping) and that slot touched. */
const char *op_pt_selfref(void) {
    pool_reset_note = "";
    unsigned r = 1 + (unsigned)below(FUZZ_SLOTS + 8);
    uint64_t entry = kernel_pml4_phys | PC_PTE_P | (chance(80) ? PC_PTE_W : 0) | (chance(20) ? PC_PTE_U : 0);
    kpml4[r] = entry;
    unsigned depth = 2 + (unsigned)below(3); /* the recursion: 4 maps the PML4 page itself */
    unsigned i = (unsigned)below(FUZZ_SLOTS + 1);
    uint64_t va = depth == 4 ? make_va(r, r, r, r) : depth == 3 ? make_va(r, r, r, i) : make_va(r, r, i, pick_index());
    invlpg(va);
    const char *rd = touch(va + 8 * (depth == 4 ? 0 : below(512)), TOUCH_READ, 0);
    char first[64];
    snprintf(first, sizeof first, "%s", rd);
    const char *wr = "-";
    unsigned j = 1 + (unsigned)below(FUZZ_SLOTS);
    if (depth == 4 && j != r && chance(70)) { /* write PML4[j] through the alias, then use slot j */
        struct target t = pick_target(1);
        if (t.beyond && !reach_beyond) t.gpa = SCRATCH;
        uint64_t value = chance(60) ? (uint64_t)pool_page() | PC_PTE_P | PC_PTE_W : t.gpa | pick_flags();
        wr = touch(make_va(r, r, r, r) + 8 * j, TOUCH_WRITE, value);
        char second[64];
        snprintf(second, sizeof second, "%s", wr);
        const char *use = touch(make_va(j, pick_index(), pick_index(), pick_index()), TOUCH_READ, 0);
        snprintf(line, sizeof line, "pml4[%u]=self depth %u va %lx: %s; pml4[%u] via alias: %s; use: %s", r, depth,
                 va, first, j, second, use);
    } else {
        snprintf(line, sizeof line, "pml4[%u]=self depth %u va %lx: %s", r, depth, va, first);
    }
    kpml4[r] = 0;
    reload_cr3();
    return line;
}

/* Writes to live tables: the kernel's own PTE of a scratch page remapped
 * (with or without invlpg) and touched, then put back; or a fuzz table
 * page mapped writable at a fuzz address and an entry written through it. */
const char *op_pt_live(void) {
    pool_reset_note = "";
    if (chance(50)) {
        unsigned page = (unsigned)below(SCRATCH_PAGES);
        uint64_t va = SCRATCH + page * PC_PAGE, *pte = &kpt[va >> 21][(va >> 12) & 511], old = *pte;
        struct target t = pick_target(1);
        uint64_t flags = pick_flags() & ~PTE_G;
        *pte = t.gpa | flags;
        int flush = chance(70);
        if (flush) invlpg(va);
        const char *r = touch(va, touch_kind(t, flags), rnd());
        snprintf(line, sizeof line, "kernel pte of %lx = %lx%s: %s", va, t.gpa | flags, flush ? " invlpg" : "", r);
        *pte = old;
        invlpg(va);
        return line;
    }
    unsigned slot = 1 + (unsigned)below(FUZZ_SLOTS);
    uint64_t *pdpt = child(kpml4, slot), *pd = child(pdpt, 0), *pt = child(pd, 0);
    pt[0] = (uint64_t)pt | PC_PTE_P | PC_PTE_W; /* the table maps itself at the slot's first page */
    uint64_t alias = make_va(slot, 0, 0, 0);
    invlpg(alias);
    unsigned index = 1 + (unsigned)below(511);
    struct target t = pick_target(1);
    uint64_t value = t.gpa | pick_flags();
    const char *w = touch(alias + 8 * index, TOUCH_WRITE, value);
    char first[64];
    snprintf(first, sizeof first, "%s", w);
    if (chance(60)) invlpg(alias + index * PC_PAGE);
    const char *r = touch(alias + index * PC_PAGE, t.beyond && !reach_beyond ? TOUCH_NONE : TOUCH_READ, 0);
    snprintf(line, sizeof line, "pt of slot %u self-mapped, pte[%u]=%lx via it: %s; use: %s%s", slot, index, value,
             first, r, pool_reset_note);
    return line;
}

/* Another root: the kernel's slot 0 and random fuzz slots; touched, then back. */
static void switch_root(void *arg) {
    uint64_t *p = arg;
    write_cr3(p[0]);
    volatile uint64_t *va = (volatile uint64_t *)p[1];
    p[2] = *va;
    write_cr3(kernel_pml4_phys);
}

const char *op_pt_altroot(void) {
    pool_reset_note = "";
    memset(alt_root, 0, sizeof alt_root);
    alt_root[0] = kpml4[0];
    for (unsigned s = 1; s <= FUZZ_SLOTS; s++) {
        unsigned k = (unsigned)below(4);
        struct target t = pick_target(1);
        if (k == 2 && t.beyond && !reach_beyond) k = 3;
        alt_root[s] = k == 0 ? kpml4[s] : k == 1 ? (uint64_t)alt_root | PC_PTE_P | PC_PTE_W : k == 2 ? t.gpa | pick_flags() : 0;
    }
    uint64_t low = chance(30) ? rnd() & 0xFFF : 0;
    uint64_t args[3] = {(uint64_t)alt_root | low, make_va(1 + (unsigned)below(FUZZ_SLOTS), pick_index(), pick_index(),
                                                           pick_index()), 0};
    int trapped = fz_try(switch_root, args);
    if (trapped) reload_cr3();
    snprintf(line, sizeof line, "cr3 %lx, read %lx: %s%s", args[0], args[1], trap_result(trapped),
             trapped ? "" : "");
    if (!trapped) snprintf(line + strlen(line), sizeof line - strlen(line), " v=%lx", args[2]);
    return line;
}
