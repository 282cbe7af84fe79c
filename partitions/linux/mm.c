/* mm.c -- memory: frames, the kernel heap, radix tables and process address spaces.
 *
 * Every frame the kernel takes from the SPK is mapped once, writable, at
 * PHYSMAP + mfn * 4096 (kernel half, so in every address space). Freed
 * frames stay on the kernel's own free list, still mapped, and are zeroed
 * when taken again: freeing and reusing costs no hypercall.
 *
 * A process's memory is described twice: VMAs (what may be there, with
 * what protection, backed by what) and a soft page table (a radix of
 * entries mfn << 12 | PTE_*: what is there). The SPK's page tables follow
 * lazily: a page is mapped on the app's first fault (demand paging), or at
 * fork for the pages the parent had mapped. The kernel itself never uses a
 * user address: copy_from_user and friends check the VMAs, fill the soft
 * page table and go through PHYSMAP, so no pointer an app passes can fault
 * the kernel.
 */
#include "linux.h"

static u64 free_list;       /* mfn + 1 of the first free frame, 0 = none */
static u64 in_use;

void copy_page(void *dst, const void *src) {
    u64 n = PAGE / 8;
    __asm__ volatile("rep movsq" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

static void zero_page(void *dst) {
    u64 n = PAGE / 8;
    __asm__ volatile("rep stosq" : "+D"(dst), "+c"(n) : "a"(0ULL) : "memory");
}

long frame_get(void) {
    if (free_list) {
        u64 mfn = free_list - 1;
        u64 *page = phys(mfn);
        free_list = page[0];
        zero_page(page);
        in_use++;
        return (long)mfn;
    }
    long mfn = spk_frame_alloc();
    if (mfn < 0) return -ENOMEM;
    if (spk_map(0, (u64)(uintptr_t)phys((u64)mfn), (u64)mfn, SPK_MAP_WRITE) < 0) {
        spk_frame_free((u64)mfn);
        return -ENOMEM;
    }
    in_use++;
    return mfn;
}

void frame_put(u64 mfn) {
    u64 *page = phys(mfn);
    page[0] = free_list;
    free_list = mfn + 1;
    in_use--;
}

u64 frames_in_use(void) { return in_use; }

void *kpage(void) {
    long mfn = frame_get();
    return mfn < 0 ? 0 : phys((u64)mfn);
}

void kpage_free(void *p) {
    if (p) frame_put(virt_to_mfn(p));
}

/* Small objects: power-of-two classes of 32..2048 bytes carved from pages,
 * each with a 16-byte header naming its class. */
#define NCLASSES 7
static void *class_free[NCLASSES];

void *kmalloc(u64 size) {
    int c = 0;
    while (c < NCLASSES && (32ULL << c) - 16 < size) c++;
    if (c == NCLASSES) return 0;
    if (!class_free[c]) {
        u8 *page = kpage();
        if (!page) return 0;
        u64 sz = 32ULL << c;
        for (u64 off = 0; off + sz <= PAGE; off += sz) {
            *(void **)(page + off + 16) = class_free[c];
            class_free[c] = page + off + 16;
        }
    }
    u8 *obj = class_free[c];
    class_free[c] = *(void **)obj;
    memset(obj - 16, 0, 32ULL << c);
    *(u64 *)(obj - 16) = (u64)c;
    return obj;
}

void kfree(void *p) {
    if (!p) return;
    u64 c = *(u64 *)((u8 *)p - 16);
    *(void **)p = class_free[c];
    class_free[c] = p;
}

char *kstrdup(const char *s) {
    u64 n = strlen(s) + 1;
    char *d = kmalloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- radix tables: 4 levels of 512 entries, interior entries are kernel pointers ---- */
u64 *radix_slot(struct radix *r, u64 index, int create) {
    if (index >> 36) return 0;
    if (!r->root) {
        if (!create || !(r->root = kpage())) return 0;
    }
    u64 *node = r->root;
    for (int level = 3; level > 0; level--) {
        u64 i = (index >> (9 * level)) & 511;
        if (!node[i]) {
            void *n;
            if (!create || !(n = kpage())) return 0;
            node[i] = (u64)(uintptr_t)n;
        }
        node = (u64 *)(uintptr_t)node[i];
    }
    return &node[index & 511];
}

struct walk {
    u64 lo, hi;
    void (*fn)(u64 index, u64 *slot, void *ctx);
    void *ctx;
    int drop;
};

static void walk_node(struct walk *w, u64 *node, int level, u64 base) {
    u64 span = 1ULL << (9 * level);
    for (u64 i = 0; i < 512; i++) {
        u64 first = base + i * span;
        if (!node[i] || first >= w->hi || first + span <= w->lo) continue;
        if (level == 0) {
            w->fn(first, &node[i], w->ctx);
        } else {
            walk_node(w, (u64 *)(uintptr_t)node[i], level - 1, first);
            if (w->drop) {
                kpage_free((void *)(uintptr_t)node[i]);
                node[i] = 0;
            }
        }
    }
}

void radix_walk_range(struct radix *r, u64 lo, u64 hi, void (*fn)(u64, u64 *, void *), void *ctx, int drop) {
    if (!r->root) return;
    struct walk w = {lo, hi, fn, ctx, drop};
    walk_node(&w, r->root, 3, 0);
    if (drop) {
        kpage_free(r->root);
        r->root = 0;
    }
}

void radix_walk(struct radix *r, void (*fn)(u64 index, u64 *slot, void *ctx), void *ctx, int drop) {
    radix_walk_range(r, 0, 1ULL << 36, fn, ctx, drop);
}

/* ---- VMAs ---- */
struct vma *vma_find(struct mm *mm, u64 va) {
    for (struct vma *v = mm->vmas; v && v->start <= va; v = v->next)
        if (va < v->end) return v;
    return 0;
}

long vma_add(struct mm *mm, u64 start, u64 end, u32 prot, struct inode *file, u64 foff, u64 fend) {
    if (start >= end || (start & PAGE_MASK) || (end & PAGE_MASK) || start < SPK_USER_BASE || end > USER_TOP)
        return -EINVAL;
    struct vma **pp = &mm->vmas;
    while (*pp && (*pp)->end <= start) pp = &(*pp)->next;
    if (*pp && (*pp)->start < end) return -EINVAL; /* overlap */
    struct vma *v = kmalloc(sizeof *v);
    if (!v) return -ENOMEM;
    *v = (struct vma){start, end, prot, file != 0, file, foff, fend, *pp};
    if (file) inode_get(file);
    *pp = v;
    return 0;
}

static void vma_free(struct vma *v) {
    if (v->is_file) inode_put(v->file);
    kfree(v);
}

/* Makes `at` a VMA boundary (splits the VMA that spans it). */
static long vma_split(struct mm *mm, u64 at) {
    struct vma *v = vma_find(mm, at);
    if (!v || v->start == at) return 0;
    struct vma *n = kmalloc(sizeof *n);
    if (!n) return -ENOMEM;
    *n = *v;
    n->start = at;
    if (v->is_file) {
        n->foff = v->foff + (at - v->start);
        inode_get(v->file);
    }
    v->end = at;
    v->next = n;
    return 0;
}

struct unmap_ctx {
    struct mm *mm;
};

static void drop_page(u64 index, u64 *slot, void *ctx) {
    struct mm *mm = ctx;
    u64 e = *slot;
    if (e & PTE_HW) spk_unmap(mm->aspace, index << 12);
    if (!(e & PTE_SHARED)) {
        frame_put(e >> 12);
        mm->pages--;
    }
    *slot = 0;
}

long mm_unmap(struct mm *mm, u64 start, u64 end) {
    if (vma_split(mm, start) < 0 || vma_split(mm, end) < 0) return -ENOMEM;
    radix_walk_range(&mm->pt, start >> 12, end >> 12, drop_page, mm, 0);
    struct vma **pp = &mm->vmas;
    while (*pp) {
        struct vma *v = *pp;
        if (v->start >= start && v->end <= end) {
            *pp = v->next;
            vma_free(v);
        } else {
            pp = &v->next;
        }
    }
    return 0;
}

struct protect_ctx {
    struct mm *mm;
    u32 prot;
    long status;
};

static void reprotect_page(u64 index, u64 *slot, void *ctx) {
    struct protect_ctx *c = ctx;
    u64 e = *slot;
    if (e & PTE_HW) {
        spk_unmap(c->mm->aspace, index << 12);
        e &= ~(PTE_HW | PTE_HWW);
    }
    if ((e & PTE_SHARED) && (c->prot & PROT_WRITE)) { /* becomes a private copy */
        long mfn = frame_get();
        if (mfn < 0) {
            c->status = -ENOMEM;
        } else {
            copy_page(phys((u64)mfn), phys(e >> 12));
            e = ((u64)mfn << 12) | PTE_PRESENT;
            c->mm->pages++;
        }
    }
    *slot = e;
}

long mm_protect(struct mm *mm, u64 start, u64 end, u32 prot) {
    for (u64 va = start; va < end;) { /* every page of the range must be mapped */
        struct vma *v = vma_find(mm, va);
        if (!v) return -ENOMEM;
        va = v->end;
    }
    if (vma_split(mm, start) < 0 || vma_split(mm, end) < 0) return -ENOMEM;
    for (struct vma *v = mm->vmas; v; v = v->next)
        if (v->start >= start && v->end <= end) v->prot = prot;
    struct protect_ctx c = {mm, prot, 0};
    radix_walk_range(&mm->pt, start >> 12, end >> 12, reprotect_page, &c, 0);
    return c.status;
}

struct move_ctx {
    struct mm *mm;
    u64 delta; /* new page index - old page index */
    long status;
};

static void move_page(u64 index, u64 *slot, void *ctx) {
    struct move_ctx *c = ctx;
    u64 e = *slot;
    u64 *to = radix_slot(&c->mm->pt, index + c->delta, 1);
    if (!to) {
        c->status = -ENOMEM;
        return;
    }
    if (e & PTE_HW) spk_unmap(c->mm->aspace, index << 12); /* mapped again at its new place on first touch */
    *to = e & ~(PTE_HW | PTE_HWW);
    *slot = 0;
}

long mm_remap(struct mm *mm, u64 old, u64 old_len, u64 new_len, int may_move) {
    if (new_len <= old_len) { /* shrink in place */
        if (new_len < old_len) mm_unmap(mm, old + new_len, old + old_len);
        return (long)old;
    }
    struct vma *v = vma_find(mm, old);
    if (!v || v->start != old || v->end != old + old_len) return -EFAULT; /* one whole mapping only */
    u64 end = old + new_len;
    int room = end <= USER_TOP && end > old;
    for (struct vma *w = mm->vmas; room && w; w = w->next)
        if (w != v && w->start < end && w->end > v->end) room = 0;
    if (room) { /* grow in place */
        if (v->is_file && v->fend >= v->end) v->fend = v->end; /* the new part reads as zeros */
        v->end = end;
        return (long)old;
    }
    if (!may_move) return -ENOMEM;
    u64 to = mm_find_gap(mm, new_len);
    if (!to) return -ENOMEM;
    struct vma *n = kmalloc(sizeof *n);
    if (!n) return -ENOMEM;
    struct move_ctx c = {mm, (to >> 12) - (old >> 12), 0};
    radix_walk_range(&mm->pt, old >> 12, (old + old_len) >> 12, move_page, &c, 0);
    if (c.status < 0) {
        kfree(n);
        return c.status;
    }
    /* Relink the same VMA record's contents at the new place. */
    *n = *v;
    n->start = to;
    n->end = to + new_len;
    if (n->is_file) n->fend = n->fend > v->start ? to + (n->fend - v->start) : to;
    struct vma **pp = &mm->vmas;
    while (*pp != v) pp = &(*pp)->next;
    *pp = v->next;
    kfree(v); /* its file reference goes to n */
    pp = &mm->vmas;
    while (*pp && (*pp)->start < to) pp = &(*pp)->next;
    n->next = *pp;
    *pp = n;
    return (long)to;
}

u64 mm_find_gap(struct mm *mm, u64 len) {
    u64 top = MMAP_TOP;
    for (;;) {
        if (len > top - 0x10000ULL) return 0;
        u64 lo = top - len;
        struct vma *hit = 0;
        for (struct vma *v = mm->vmas; v; v = v->next)
            if (v->start < top && v->end > lo && (!hit || v->start < hit->start)) hit = v;
        if (!hit) return lo;
        top = hit->start;
    }
}

/* ---- address spaces ---- */
struct mm *mm_new(void) {
    struct mm *mm = kmalloc(sizeof *mm);
    if (!mm) return 0;
    long h = spk_aspace_create();
    if (h < 0) {
        kfree(mm);
        return 0;
    }
    mm->aspace = h;
    return mm;
}

static void free_private(u64 index, u64 *slot, void *ctx) {
    (void)index;
    (void)ctx;
    if (!(*slot & PTE_SHARED)) frame_put(*slot >> 12);
    *slot = 0;
}

void mm_destroy(struct mm *mm) {
    if (!mm) return;
    spk_aspace_switch(0);
    spk_aspace_destroy(mm->aspace); /* removes every user mapping */
    radix_walk(&mm->pt, free_private, 0, 1);
    while (mm->vmas) {
        struct vma *v = mm->vmas;
        mm->vmas = v->next;
        vma_free(v);
    }
    kfree(mm);
}

struct fork_ctx {
    struct mm *child;
    long status;
};

static void fork_page(u64 index, u64 *slot, void *ctx) {
    struct fork_ctx *c = ctx;
    if (c->status < 0) return;
    u64 e = *slot, out;
    if (e & PTE_SHARED) {
        out = (e & ~(PTE_HW | PTE_HWW));
    } else {
        long mfn = frame_get();
        if (mfn < 0) {
            c->status = -ENOMEM;
            return;
        }
        copy_page(phys((u64)mfn), phys(e >> 12));
        out = ((u64)mfn << 12) | PTE_PRESENT;
        c->child->pages++;
    }
    u64 *cs = radix_slot(&c->child->pt, index, 1);
    if (!cs) {
        if (!(out & PTE_SHARED)) frame_put(out >> 12);
        c->status = -ENOMEM;
        return;
    }
    *cs = out;
    if (e & PTE_HW) { /* the parent touched it: map it in the child too */
        u64 flags = SPK_MAP_USER | ((e & PTE_HWW) ? SPK_MAP_WRITE : 0);
        if (spk_map(c->child->aspace, index << 12, out >> 12, flags) == 0) *cs |= PTE_HW | (e & PTE_HWW);
    }
}

struct mm *mm_fork(struct mm *parent) {
    struct mm *child = mm_new();
    if (!child) return 0;
    struct vma **tail = &child->vmas;
    for (struct vma *v = parent->vmas; v; v = v->next) {
        struct vma *n = kmalloc(sizeof *n);
        if (!n) {
            mm_destroy(child);
            return 0;
        }
        *n = *v;
        n->next = 0;
        if (n->is_file) inode_get(n->file);
        *tail = n;
        tail = &n->next;
    }
    child->brk_start = parent->brk_start;
    child->brk = parent->brk;
    struct fork_ctx c = {child, 0};
    radix_walk(&parent->pt, fork_page, &c, 0);
    if (c.status < 0) {
        mm_destroy(child);
        return 0;
    }
    return child;
}

/* The soft entry of page va, filled (a frame behind it) if empty. 0 = no memory. */
static u64 *materialize(struct mm *mm, struct vma *v, u64 va) {
    u64 page = PAGE_DOWN(va);
    u64 *slot = radix_slot(&mm->pt, page >> 12, 1);
    if (!slot) return 0;
    if (*slot & PTE_PRESENT) return slot;
    long mfn;
    if (v->is_file && page < v->fend) {
        u64 off = v->foff + (page - v->start);
        if (!(v->prot & PROT_WRITE) && page + PAGE <= v->fend) {
            mfn = inode_shared_page(v->file, off >> 12);
            if (mfn >= 0) {
                *slot = ((u64)mfn << 12) | PTE_PRESENT | PTE_SHARED;
                return slot;
            }
        }
        if ((mfn = frame_get()) < 0) return 0;
        u64 n = v->fend - page < PAGE ? v->fend - page : PAGE;
        inode_read(v->file, off, phys((u64)mfn), n);
    } else if ((mfn = frame_get()) < 0) {
        return 0;
    }
    *slot = ((u64)mfn << 12) | PTE_PRESENT;
    mm->pages++;
    return slot;
}

long mm_fault(struct mm *mm, u64 va, int write) {
    struct vma *v = vma_find(mm, va);
    if (!v || !(v->prot & (PROT_READ | PROT_WRITE | PROT_EXEC))) return -EFAULT;
    /* The write bit is not trusted while the page is not mapped (the SPK
     * derives it by decoding the instruction): the page is mapped with the
     * VMA's rights, and a real write to a read-only page faults again. */
    u64 *known = radix_slot(&mm->pt, va >> 12, 0);
    if (known && (*known & PTE_HW)) return -EFAULT; /* mapped already: a real protection fault */
    (void)write;
    u64 *slot = materialize(mm, v, va);
    if (!slot) return -ENOMEM;
    int w = (v->prot & PROT_WRITE) && !(*slot & PTE_SHARED);
    long status = spk_map(mm->aspace, PAGE_DOWN(va), *slot >> 12, SPK_MAP_USER | (w ? SPK_MAP_WRITE : 0));
    if (status < 0) return -EFAULT;
    *slot |= PTE_HW | (w ? PTE_HWW : 0);
    return 0;
}

/* ---- user access ---- */
static long range_ok(struct mm *mm, u64 uva, u64 len, int write) {
    if (uva + len < uva || uva + len > SPK_USER_END) return -EFAULT;
    u64 va = uva;
    while (va < uva + len) {
        struct vma *v = vma_find(mm, va);
        if (!v) return -EFAULT;
        if (write ? !(v->prot & PROT_WRITE) : !(v->prot & (PROT_READ | PROT_EXEC))) return -EFAULT;
        va = v->end;
    }
    return 0;
}

long user_chunks(struct mm *mm, u64 uva, u64 len, int write, long (*fn)(void *k, u64 n, void *ctx), void *ctx) {
    if (len == 0) return 0;
    if (range_ok(mm, uva, len, write) < 0) return -EFAULT;
    u64 done = 0;
    while (done < len) {
        u64 va = uva + done;
        u64 n = PAGE - (va & PAGE_MASK);
        if (n > len - done) n = len - done;
        u64 *slot = materialize(mm, vma_find(mm, va), va);
        if (!slot) return done ? (long)done : -ENOMEM;
        if (write && (*slot & PTE_SHARED)) return done ? (long)done : -EFAULT;
        long r = fn((u8 *)phys(*slot >> 12) + (va & PAGE_MASK), n, ctx);
        if (r < 0) return done ? (long)done : r;
        done += (u64)r;
        if ((u64)r < n) break;
    }
    return (long)done;
}

static long chunk_from(void *k, u64 n, void *ctx) {
    u8 **dst = ctx;
    memcpy(*dst, k, n);
    *dst += n;
    return (long)n;
}

static long chunk_to(void *k, u64 n, void *ctx) {
    const u8 **src = ctx;
    memcpy(k, *src, n);
    *src += n;
    return (long)n;
}

static long chunk_zero(void *k, u64 n, void *ctx) {
    (void)ctx;
    memset(k, 0, n);
    return (long)n;
}

long copy_from_user(struct mm *mm, void *dst, u64 uva, u64 len) {
    u8 *d = dst;
    long r = user_chunks(mm, uva, len, 0, chunk_from, &d);
    return r < 0 || (u64)r != len ? -EFAULT : 0;
}

long copy_to_user(struct mm *mm, u64 uva, const void *src, u64 len) {
    const u8 *s = src;
    long r = user_chunks(mm, uva, len, 1, chunk_to, &s);
    return r < 0 || (u64)r != len ? -EFAULT : 0;
}

long clear_user(struct mm *mm, u64 uva, u64 len) {
    long r = user_chunks(mm, uva, len, 1, chunk_zero, 0);
    return r < 0 || (u64)r != len ? -EFAULT : 0;
}

long strncpy_from_user(struct mm *mm, char *dst, u64 uva, u64 max) {
    u64 done = 0;
    while (done < max) {
        u64 va = uva + done;
        if (va < uva || va >= SPK_USER_END) return -EFAULT;
        struct vma *v = vma_find(mm, va);
        if (!v || !(v->prot & (PROT_READ | PROT_EXEC))) return -EFAULT;
        u64 *slot = materialize(mm, v, va);
        if (!slot) return -EFAULT;
        const char *k = (const char *)phys(*slot >> 12) + (va & PAGE_MASK);
        u64 n = PAGE - (va & PAGE_MASK);
        for (u64 i = 0; i < n && done < max; i++, done++) {
            dst[done] = k[i];
            if (!k[i]) return (long)done;
        }
    }
    return -ENAMETOOLONG;
}
