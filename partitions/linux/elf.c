/* elf.c -- execve: load a static ELF executable into a fresh address space
 * and build the SysV x86-64 start-up stack (argc, argv, envp, auxv).
 *
 * ET_EXEC is loaded at its addresses; ET_DYN without an interpreter (a
 * static PIE) at PIE_BASE. Each PT_LOAD becomes a file-backed VMA: pages are
 * filled on first touch, read-only ones shared through the file's page
 * cache, writable ones private copies, bss zero. Nothing is mapped in the
 * SPK's tables yet: the process faults its pages in (mm.c). Every field of
 * the file is checked: the file is the app's, not the kernel's.
 */
#include "linux.h"

#define PT_LOAD 1
#define PT_INTERP 3
#define PT_PHDR 6
#define PIE_BASE 0x555555554000ULL
#define MAX_PHDRS 32

struct elf64_ehdr {
    u8 ident[16];
    u16 type, machine;
    u32 version;
    u64 entry, phoff, shoff;
    u32 flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

struct elf64_phdr {
    u32 type, flags;
    u64 offset, vaddr, paddr, filesz, memsz, align;
};

enum {
    AT_NULL = 0, AT_PHDR = 3, AT_PHENT = 4, AT_PHNUM = 5, AT_PAGESZ = 6, AT_BASE = 7, AT_FLAGS = 8,
    AT_ENTRY = 9, AT_UID = 11, AT_EUID = 12, AT_GID = 13, AT_EGID = 14, AT_PLATFORM = 15, AT_HWCAP = 16,
    AT_CLKTCK = 17, AT_SECURE = 23, AT_RANDOM = 25, AT_HWCAP2 = 26, AT_EXECFN = 31,
};

static struct elf64_phdr phdrs[MAX_PHDRS];
static u64 random_counter;

/* Deterministic "random" bytes for AT_RANDOM and getrandom (splitmix64). */
void fill_random(u8 *out, u64 n) {
    for (u64 i = 0; i < n; i++) {
        if ((i & 7) == 0) random_counter += 0x9e3779b97f4a7c15ULL;
        u64 z = random_counter + (i & ~7ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        out[i] = (u8)(z >> (8 * (i & 7)));
    }
}

static long load_segments(struct mm *mm, struct inode *ino, const struct elf64_ehdr *eh, u64 bias, u64 *phdr_addr,
                          u64 *brk) {
    u64 top = 0;
    *phdr_addr = 0;
    for (int i = 0; i < eh->phnum; i++) {
        const struct elf64_phdr *ph = &phdrs[i];
        if (ph->type == PT_INTERP) return -ENOEXEC; /* dynamically linked: not supported */
        if (ph->type == PT_PHDR) *phdr_addr = bias + ph->vaddr;
        if (ph->type != PT_LOAD || ph->memsz == 0) continue;
        if (ph->filesz > ph->memsz || ph->offset > ino->size || ph->filesz > ino->size - ph->offset) return -ENOEXEC;
        if ((ph->vaddr & PAGE_MASK) != (ph->offset & PAGE_MASK)) return -ENOEXEC;
        u64 va = bias + ph->vaddr;
        if (va < bias || va < 0x10000 || va > MMAP_TOP || ph->memsz > MMAP_TOP - va) return -ENOEXEC;
        u64 start = PAGE_DOWN(va), end = PAGE_UP(va + ph->memsz);
        u32 prot = ((ph->flags & 4) ? PROT_READ : 0) | ((ph->flags & 2) ? PROT_WRITE : 0) |
                   ((ph->flags & 1) ? PROT_EXEC : 0);
        long r = vma_add(mm, start, end, prot, ino, PAGE_DOWN(ph->offset), va + ph->filesz);
        if (r < 0) return r == -ENOMEM ? r : -ENOEXEC;
        if (ph->offset == 0 && !*phdr_addr) *phdr_addr = va + eh->phoff;
        if (end > top) top = end;
    }
    if (!top) return -ENOEXEC;
    if (!*phdr_addr) *phdr_addr = bias + eh->phoff; /* best effort: not mapped, glibc copes */
    *brk = top;
    return 0;
}

/* Lays out strings and vectors at the top of the new stack. */
static long build_stack(struct mm *mm, const char *path, const char *strings, u64 argc, u64 envc, u64 bytes,
                        const struct elf64_ehdr *eh, u64 bias, u64 phdr_addr, u64 *sp_out) {
    u64 sp = USER_TOP - 16;
    u64 plen = strlen(path) + 1;
    sp -= plen;
    u64 execfn = sp;
    if (copy_to_user(mm, execfn, path, plen) < 0) return -EFAULT;
    sp -= bytes;
    u64 str_base = sp;
    if (copy_to_user(mm, str_base, strings, bytes) < 0) return -EFAULT;
    sp -= 7;
    u64 platform = sp;
    if (copy_to_user(mm, platform, "x86_64", 7) < 0) return -EFAULT;
    sp = (sp - 16) & ~15ULL;
    u64 rnd = sp;
    u8 random[16];
    fill_random(random, 16);
    if (copy_to_user(mm, rnd, random, 16) < 0) return -EFAULT;
    u64 auxv[][2] = {
        {AT_PHDR, phdr_addr}, {AT_PHENT, sizeof(struct elf64_phdr)}, {AT_PHNUM, eh->phnum},
        {AT_PAGESZ, PAGE}, {AT_BASE, 0}, {AT_FLAGS, 0}, {AT_ENTRY, bias + eh->entry}, {AT_UID, 0}, {AT_EUID, 0},
        {AT_GID, 0}, {AT_EGID, 0}, {AT_SECURE, 0}, {AT_HWCAP, 0}, {AT_HWCAP2, 0}, {AT_CLKTCK, 100},
        {AT_RANDOM, rnd}, {AT_PLATFORM, platform}, {AT_EXECFN, execfn}, {AT_NULL, 0},
    };
    u64 nauxv = sizeof auxv / sizeof auxv[0];
    u64 words = 1 + argc + 1 + envc + 1 + 2 * nauxv;
    sp = (sp - words * 8) & ~15ULL;
    u64 at = sp, s = str_base;
    const char *k = strings;
    if (copy_to_user(mm, at, &argc, 8) < 0) return -EFAULT;
    at += 8;
    for (u64 part = 0; part < 2; part++) {
        u64 n = part ? envc : argc;
        for (u64 i = 0; i < n; i++) {
            if (copy_to_user(mm, at, &s, 8) < 0) return -EFAULT;
            at += 8;
            u64 l = strlen(k) + 1;
            k += l;
            s += l;
        }
        u64 zero = 0;
        if (copy_to_user(mm, at, &zero, 8) < 0) return -EFAULT;
        at += 8;
    }
    if (copy_to_user(mm, at, auxv, sizeof auxv) < 0) return -EFAULT;
    *sp_out = sp;
    return 0;
}

long do_execve(struct proc *p, struct inode *ino, const char *path, char *strings, u64 argc, u64 envc, u64 bytes) {
    struct elf64_ehdr eh;
    if (ino->kind != I_USTAR && ino->kind != I_TMPFS) return -EACCES;
    if (!(ino->mode & 0111)) return -EACCES;
    if (inode_read(ino, 0, &eh, sizeof eh) != (long)sizeof eh) return -ENOEXEC;
    if (memcmp(eh.ident, "\177ELF", 4) != 0 || eh.ident[4] != 2 || eh.ident[5] != 1 || eh.machine != 62)
        return -ENOEXEC;
    if ((eh.type != 2 && eh.type != 3) || eh.phentsize != sizeof(struct elf64_phdr) || eh.phnum == 0 ||
        eh.phnum > MAX_PHDRS)
        return -ENOEXEC;
    u64 psize = (u64)eh.phnum * sizeof(struct elf64_phdr);
    if (inode_read(ino, eh.phoff, phdrs, psize) != (long)psize || eh.phoff + psize < eh.phoff) return -ENOEXEC;
    u64 bias = eh.type == 3 ? PIE_BASE : 0;
    struct mm *mm = mm_new();
    if (!mm) return -ENOMEM;
    u64 phdr_addr = 0, brk = 0, sp = 0;
    long r = load_segments(mm, ino, &eh, bias, &phdr_addr, &brk);
    if (r == 0) r = vma_add(mm, USER_TOP - STACK_SIZE, USER_TOP, PROT_READ | PROT_WRITE, 0, 0, 0);
    if (r == 0) r = build_stack(mm, path, strings, argc, envc, bytes, &eh, bias, phdr_addr, &sp);
    if (r < 0) {
        mm_destroy(mm);
        return r;
    }
    /* The point of no return: the old image goes. */
    mm->brk_start = mm->brk = brk;
    for (int fd = 0; fd < NFD; fd++)
        if (p->fds[fd] && p->cloexec[fd]) fd_close(p, (u64)fd);
    for (int s = 1; s <= NSIG; s++)
        if (p->sig[s].handler > 1) p->sig[s] = (struct sigaction_rec){0, 0, 0, 0}; /* caught -> default */
    mm_destroy(p->mm);
    p->mm = mm;
    inode_get(ino);
    if (p->exe) inode_put(p->exe);
    p->exe = ino;
    const char *base = path;
    for (const char *c = path; *c; c++)
        if (*c == '/') base = c + 1;
    memset(p->comm, 0, COMM_LEN);
    memcpy(p->comm, base, strnlen(base, COMM_LEN - 1));
    p->fsbase = 0;
    p->clear_tid = 0;
    fpu_reset(p); /* a new image starts with the x87/SSE state of a new process */
    p->frame = (struct spk_app_frame){.rip = bias + eh.entry, .rsp = sp, .rflags = SPK_RFLAGS_FIXED};
    enter(p);
}
