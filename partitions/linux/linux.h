/* linux.h -- the Linux x86-64 personality: shared types and interfaces.
 *
 * The kernel runs unmodified static Linux ELF executables at CPL 3. Its
 * parts, one file each:
 *   main.c     boot, modules, the exit report
 *   mm.c       frames, the kernel heap, radix tables, process address
 *              spaces (soft page tables, VMAs, demand paging, user access)
 *   vfs.c      the ustar root, the writable /tmp, path lookup, open files
 *   pipe.c     pipes
 *   proc.c     processes, the scheduler, fork, exit, wait
 *   elf.c      execve: the ELF loader and the SysV start-up stack
 *   syscall.c  the syscall entry, the dispatch table, the ENOSYS report
 *   sys_fs.c   file, directory, descriptor, pipe, poll and select calls
 *   sys_mm.c   brk, mmap, munmap, mprotect
 *   sys_proc.c process, signal, time and system-information calls
 *   sysnames.c the names of Linux's system calls, for the ENOSYS report
 *
 * Memory of the kernel half (shared by every address space):
 *   KERNEL_IMAGE_VADDR  this ELF (code, data, bss)
 *   MODULE_WINDOW       the boot modules, read-only, one after the other
 *   PHYSMAP             every frame the kernel owns, at PHYSMAP + mfn * 4096:
 *                       the kernel reads and writes any process's pages
 *                       through it, never through user addresses, so a
 *                       hostile pointer cannot fault the kernel.
 */
#ifndef LINUX_H
#define LINUX_H

#include "spk/kernel.h"
#include "spk/libc.h"

typedef uint64_t u64;
typedef int64_t s64;
typedef uint32_t u32;
typedef int32_t s32;
typedef uint16_t u16;
typedef uint8_t u8;

#define PAGE SPK_PAGE_SIZE
#define PAGE_MASK (PAGE - 1)
#define PAGE_DOWN(x) ((x) & ~PAGE_MASK)
#define PAGE_UP(x) (((x) + PAGE_MASK) & ~PAGE_MASK)

#define MODULE_WINDOW (SPK_KERNEL_BASE + 0x1000000ULL)
#define MODULE_WINDOW_END (SPK_KERNEL_BASE + 0x40000000ULL)
#define PHYSMAP (SPK_KERNEL_BASE + 0x4000000000ULL)

/* Linux errno values (asm-generic/errno-base.h, errno.h). */
enum {
    EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, ENOEXEC = 8, EBADF = 9,
    ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, EXDEV = 18,
    ENODEV = 19, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOTTY = 25, EFBIG = 27,
    ENOSPC = 28, ESPIPE = 29, EROFS = 30, EMLINK = 31, EPIPE = 32, ERANGE = 34, ENAMETOOLONG = 36,
    ENOSYS = 38, ENOTEMPTY = 39, ELOOP = 40,
};
/* Internal: the call must wait; the scheduler runs it again later. */
#define EWOULDBLOCK_RETRY 512

/* ---- frames and the kernel heap (mm.c) ---- */
static inline void *phys(u64 mfn) { return (void *)(uintptr_t)(PHYSMAP + (mfn << 12)); }
static inline u64 virt_to_mfn(const void *p) { return ((u64)(uintptr_t)p - PHYSMAP) >> 12; }
long frame_get(void);           /* a zeroed frame, mapped in PHYSMAP; mfn or -ENOMEM */
void frame_put(u64 mfn);        /* back to the kernel's free list (must be unmapped from user spaces) */
void *kpage(void);              /* a zeroed page of kernel memory, or 0 */
void kpage_free(void *p);
void *kmalloc(u64 size);        /* zeroed, size <= 2048; or 0 */
void kfree(void *p);
char *kstrdup(const char *s);
void copy_page(void *dst, const void *src);
u64 frames_in_use(void);

/* A 4-level table of u64 values indexed by a 36-bit number (page numbers):
 * the soft page tables, the page cache of a file, the pages of a tmpfs file. */
struct radix {
    u64 *root;
};
u64 *radix_slot(struct radix *r, u64 index, int create);
/* Calls fn for every non-zero leaf, in index order, then frees the table if `drop`. */
void radix_walk_range(struct radix *r, u64 lo, u64 hi, void (*fn)(u64, u64 *, void *), void *ctx, int drop);
void radix_walk(struct radix *r, void (*fn)(u64 index, u64 *slot, void *ctx), void *ctx, int drop);

/* ---- address spaces (mm.c) ---- */
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4

/* Soft page-table entry: mfn << 12 | flags. */
#define PTE_PRESENT 1ULL /* a frame backs the page */
#define PTE_HW 2ULL      /* mapped in the SPK address space */
#define PTE_SHARED 4ULL  /* a page-cache frame: never freed or written through this entry */
#define PTE_HWW 8ULL     /* mapped writable */

struct inode;

struct vma {
    u64 start, end;       /* page aligned */
    u32 prot;
    u32 is_file;
    struct inode *file;   /* file-backed: bytes [start, fend) come from the file at foff + (va - start) */
    u64 foff, fend;
    struct vma *next;     /* sorted by start */
};

struct mm {
    long aspace;
    struct radix pt;
    struct vma *vmas;
    u64 brk_start, brk;
    u64 pages;            /* private frames */
};

#define USER_TOP 0x7ffffffff000ULL
#define STACK_SIZE (8ULL << 20)
#define MMAP_TOP (USER_TOP - STACK_SIZE - (1ULL << 30))

struct mm *mm_new(void);
void mm_destroy(struct mm *mm);
struct mm *mm_fork(struct mm *parent);
struct vma *vma_find(struct mm *mm, u64 va);
long vma_add(struct mm *mm, u64 start, u64 end, u32 prot, struct inode *file, u64 foff, u64 fend);
long mm_unmap(struct mm *mm, u64 start, u64 end);
long mm_protect(struct mm *mm, u64 start, u64 end, u32 prot);
u64 mm_find_gap(struct mm *mm, u64 len);
/* mremap of one whole mapping: shrink, grow in place, or move (MREMAP_MAYMOVE). */
long mm_remap(struct mm *mm, u64 old, u64 old_len, u64 new_len, int may_move);
/* A user fault at va: 0 when the page is now mapped, else -EFAULT (SIGSEGV). */
long mm_fault(struct mm *mm, u64 va, int write);
/* User access through the soft page tables and PHYSMAP. Each returns 0 or
 * -EFAULT; nothing faults the kernel. */
long copy_from_user(struct mm *mm, void *dst, u64 uva, u64 len);
long copy_to_user(struct mm *mm, u64 uva, const void *src, u64 len);
long clear_user(struct mm *mm, u64 uva, u64 len);
/* Copies a NUL-terminated string of at most max-1 bytes; its length, or
 * -EFAULT, or -ENAMETOOLONG. */
long strncpy_from_user(struct mm *mm, char *dst, u64 uva, u64 max);
/* Calls fn on each kernel-visible chunk of [uva, uva+len); stops at the first
 * negative result. Returns the bytes done or the error when none. */
long user_chunks(struct mm *mm, u64 uva, u64 len, int write, long (*fn)(void *k, u64 n, void *ctx), void *ctx);

/* ---- files (vfs.c, pipe.c) ---- */
#define S_IFMT 0170000
#define S_IFDIR 0040000
#define S_IFREG 0100000
#define S_IFLNK 0120000
#define S_IFCHR 0020000
#define S_IFIFO 0010000

enum inode_kind { I_DIR, I_USTAR, I_TMPFS, I_SYMLINK, I_CHAR };
enum chardev { DEV_NULL = 1, DEV_ZERO = 2, DEV_CONSOLE = 3 };

struct inode {
    u32 mode;               /* S_IF* | permissions */
    u32 kind;
    u64 ino;
    u64 size;
    u64 mtime;
    u32 writable;           /* a /tmp directory or file */
    u32 dev;                /* I_CHAR: enum chardev */
    const u8 *data;         /* I_USTAR: the bytes, in the module window */
    const char *target;     /* I_SYMLINK */
    struct radix pages;     /* I_TMPFS: the file's frames; I_USTAR: its page cache */
    const char *name;
    struct inode *parent, *child, *sibling;
    u32 nchildren;
    u32 unlinked;
    u32 opens;              /* open files on it (a /tmp file's pages outlive its name until 0) */
};

enum file_kind { F_INODE, F_CONSOLE, F_STDIN, F_PIPE_R, F_PIPE_W };

struct pipe;
struct file {
    u32 refs;
    u32 kind;
    u32 flags;              /* O_ACCMODE | O_APPEND | O_NONBLOCK ... */
    u64 pos;
    struct inode *ino;
    struct pipe *pipe;
};

#define O_ACCMODE 3
#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define O_CREAT 0100
#define O_EXCL 0200
#define O_NOCTTY 0400
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_NONBLOCK 04000
#define O_DIRECTORY 0200000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000
#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_REMOVEDIR 0x200
#define AT_EMPTY_PATH 0x1000

extern struct inode *vfs_root;
void vfs_set_tmpfs_limit(u64 frames);
void vfs_init(const u8 *tar, u64 size, const u8 *stdin_data, u64 stdin_size);
/* Resolves path from dir (0 = the caller's cwd). follow: follow a final symlink. */
long vfs_lookup(struct inode *dir, const char *path, int follow, struct inode **out);
/* Resolves all but the last component: the parent directory and the last name. */
long vfs_parent(struct inode *dir, const char *path, struct inode **parent, const char **last);
struct inode *vfs_child(struct inode *dir, const char *name, u64 len);
long vfs_create(struct inode *dir, const char *name, u32 mode, struct inode **out);
long vfs_unlink(struct inode *dir, const char *name, int rmdir);
long vfs_truncate(struct inode *ino, u64 size);
long inode_read(struct inode *ino, u64 off, void *buf, u64 len);   /* kernel buffer */
/* The frame holding file page `index` for a read-only shared mapping (ustar
 * files only: their bytes never change); negative when it cannot be shared. */
long inode_shared_page(struct inode *ino, u64 index);
long vfs_path_of(struct inode *ino, char *buf, u64 size);

struct file *file_new(u32 kind, u32 flags);
void file_get(struct file *f);
/* References that keep an unlinked /tmp file's bytes: open files and file-backed VMAs. */
void inode_get(struct inode *ino);
void inode_put(struct inode *ino);
void file_put(struct file *f);
long file_read(struct file *f, u64 ubuf, u64 len);
long file_write(struct file *f, u64 ubuf, u64 len);
long file_getdents(struct file *f, u64 ubuf, u64 len);
long stat_fill(struct inode *ino, u32 kind, u64 ubuf);
long file_stat(struct file *f, u64 ubuf);
long statx_fill(struct inode *ino, u32 kind, u64 ubuf);
long vfs_rename(struct inode *odir, const char *oname, struct inode *ndir, const char *nname);
long vfs_symlink(struct inode *dir, const char *name, const char *target);

long pipe_create(struct file **rd, struct file **wr);
long pipe_read(struct file *f, u64 ubuf, u64 len);
long pipe_write(struct file *f, u64 ubuf, u64 len);
void pipe_close(struct file *f);
u32 pipe_poll(struct file *f);

/* ---- processes (proc.c) ---- */
#define NFD 128
#define NSIG 64
#define MAX_PROCS 63 /* the SPK gives a partition 64 address spaces, the boot space included */
#define COMM_LEN 16

enum proc_state { P_FREE = 0, P_RUNNABLE, P_BLOCKED, P_ZOMBIE };

struct sigaction_rec {
    u64 handler, flags, restorer, mask;
};

struct proc {
    struct spk_app_frame frame;     /* the user registers (spk_current_frame points here) */
    u32 state;
    s32 pid, ppid, pgid, sid;
    u64 fsbase;
    struct mm *mm;
    struct file *fds[NFD];
    u8 cloexec[NFD];
    struct inode *cwd;
    struct inode *exe;
    char comm[COMM_LEN];
    u64 clear_tid;
    u64 sigmask;
    struct sigaction_rec sig[NSIG + 1];
    int exit_status;                /* wait status word once a zombie */
    /* A system call waiting to be run again (blocked): its number and arguments. */
    u32 restart;
    u64 rnr, rargs[6];
    u64 partial;                    /* bytes a blocked write already moved */
    u64 wake_at;                    /* a sleeper: virtual time to wake at (0 = none) */
    u32 umask;
    u32 slot;
    u64 robust_list;
    u8 *fpu;                        /* 512-byte fxsave area: x87/SSE state while another process runs */
};

extern struct proc *cur;
extern struct proc *procs[MAX_PROCS];
struct proc *proc_new(void);
struct proc *proc_by_pid(s32 pid);
long proc_fork(u64 flags, u64 child_tid);
__attribute__((noreturn)) void proc_exit(struct proc *p, int status);
void proc_kill(struct proc *p, int sig);
long proc_wait(s32 pid, u64 ustatus, u64 options, u64 rusage);
__attribute__((noreturn)) void schedule(void);
__attribute__((noreturn)) void enter(struct proc *p);
void wake_all(void);
void fpu_reset(struct proc *p);
long fd_alloc(struct proc *p, struct file *f, int from, int cloexec);
struct file *fd_get(struct proc *p, u64 fd);
long fd_close(struct proc *p, u64 fd);
int exit_report_and_code(int status);

/* ---- execve (elf.c) ---- */
long do_execve(struct proc *p, struct inode *ino, const char *path, char *strings, u64 argc, u64 envc, u64 bytes);

/* ---- system calls (syscall.c; the handlers in sys_*.c, declared in sys.h) ---- */
#define NR_SYSCALLS 451
extern const char *const syscall_names[NR_SYSCALLS];
extern u64 enosys_count[NR_SYSCALLS + 1];
long dispatch(u64 nr, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5);
void print_enosys_report(void);

/* ---- misc ---- */
static inline void wrfsbase(u64 v) { __asm__ volatile("wrfsbase %0" ::"r"(v) : "memory"); }
static inline u64 rdfsbase(void) {
    u64 v;
    __asm__ volatile("rdfsbase %0" : "=r"(v));
    return v;
}
__attribute__((noreturn)) void panic(const char *what, long status);

#endif /* LINUX_H */
