/* sys_mm.c -- the memory calls: brk, mmap, munmap, mprotect, madvise (mm.c does the work). */
#include "sys.h"

/* ---- memory ---- */
long sys_brk(u64 addr, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    struct mm *mm = cur->mm;
    if (addr < mm->brk_start || addr > mm->brk_start + (1ULL << 32)) return (long)mm->brk;
    u64 old_end = PAGE_UP(mm->brk), new_end = PAGE_UP(addr);
    if (new_end > old_end) {
        for (struct vma *v = mm->vmas; v; v = v->next)
            if (v->start < new_end && v->end > old_end) return (long)mm->brk;
        struct vma *last = vma_find(mm, old_end - 1);
        if (old_end > mm->brk_start && last && last->end == old_end && !last->is_file &&
            last->prot == (PROT_READ | PROT_WRITE)) {
            last->end = new_end;
        } else if (vma_add(mm, old_end, new_end, PROT_READ | PROT_WRITE, 0, 0, 0) < 0) {
            return (long)mm->brk;
        }
    } else if (new_end < old_end) {
        mm_unmap(mm, new_end, old_end);
    }
    mm->brk = addr;
    return (long)addr;
}

#define MAP_SHARED 1
#define MAP_PRIVATE 2
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MAP_FIXED_NOREPLACE 0x100000

long sys_mmap(u64 addr, u64 len, u64 prot, u64 flags, u64 fd, u64 off) {
    if (len == 0 || len > (1ULL << 40) || (addr & PAGE_MASK) || (off & PAGE_MASK)) return -EINVAL;
    if (prot & ~7ULL) return -EINVAL;
    u64 type = flags & 3;
    if (type != MAP_SHARED && type != MAP_PRIVATE) return -EINVAL;
    struct inode *ino = 0;
    if (!(flags & MAP_ANONYMOUS)) {
        struct file *f = fd_get(cur, fd);
        if (!f) return -EBADF;
        if (f->kind != F_INODE || f->ino->kind != I_USTAR) return -ENODEV;
        if (type == MAP_SHARED && (prot & PROT_WRITE)) return -EACCES;
        ino = f->ino;
    }
    len = PAGE_UP(len);
    u64 start;
    if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
        if (addr < 0x10000 || addr + len > USER_TOP || addr + len < addr) return -ENOMEM;
        start = addr;
        if (flags & MAP_FIXED_NOREPLACE) {
            for (struct vma *v = cur->mm->vmas; v; v = v->next)
                if (v->start < start + len && v->end > start) return -EEXIST;
        } else if (mm_unmap(cur->mm, start, start + len) < 0) {
            return -ENOMEM;
        }
    } else {
        start = mm_find_gap(cur->mm, len);
        if (!start) return -ENOMEM;
    }
    u64 fend = ino ? start + (ino->size > off ? ino->size - off : 0) : 0;
    if (ino && fend > start + len) fend = start + len;
    long r = vma_add(cur->mm, start, start + len, (u32)prot, ino, off, fend);
    return r < 0 ? -ENOMEM : (long)start;
}

long sys_munmap(u64 addr, u64 len, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if ((addr & PAGE_MASK) || len == 0 || addr + len < addr || addr + len > SPK_USER_END) return -EINVAL;
    return mm_unmap(cur->mm, addr, PAGE_UP(addr + len) < addr ? addr : PAGE_UP(addr + len));
}

long sys_mprotect(u64 addr, u64 len, u64 prot, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    if ((addr & PAGE_MASK) || (prot & ~7ULL) || addr + len < addr || addr + len > SPK_USER_END) return -EINVAL;
    if (len == 0) return 0;
    return mm_protect(cur->mm, addr, PAGE_UP(addr + len), (u32)prot);
}

long sys_madvise(u64 addr, u64 len, u64 advice, u64 a3, u64 a4, u64 a5) {
    (void)addr, (void)len, (void)advice, (void)a3, (void)a4, (void)a5;
    return 0;
}

long sys_mremap(u64 old, u64 old_len, u64 new_len, u64 flags, u64 new_addr, u64 a5) {
    (void)new_addr, (void)a5;
    if ((old & PAGE_MASK) || (flags & ~1ULL) || new_len == 0 || new_len > (1ULL << 40) || old_len > (1ULL << 40))
        return -EINVAL; /* MREMAP_FIXED and MREMAP_DONTUNMAP: not supported */
    if (old_len == 0) return -EINVAL; /* duplicating a shared mapping: not supported */
    return mm_remap(cur->mm, old, PAGE_UP(old_len), PAGE_UP(new_len), (flags & 1) != 0);
}
