/* sys_fs.c -- the file system calls: files, directories, descriptors, pipes, poll and select.
 *
 * Paths are copied in once (get_path) into one of two kernel buffers: the
 * kernel runs one call at a time. Every pointer goes through mm.c.
 */
#include "sys.h"

char path_a[PATH_MAX], path_b[PATH_MAX];

int user_range(u64 p, u64 len) { return p + len >= p && p + len <= SPK_USER_END; }

long get_path(char *dst, u64 upath) {
    long r = strncpy_from_user(cur->mm, dst, upath, PATH_MAX);
    if (r < 0) return r;
    return r == 0 ? -ENOENT : 0;
}

/* The directory a *at call starts from. */
long at_dir(s64 dirfd, const char *path, struct inode **dir) {
    if (path[0] == '/' || (s32)dirfd == AT_FDCWD) {
        *dir = cur->cwd;
        return 0;
    }
    struct file *f = fd_get(cur, (u64)(s32)dirfd);
    if (!f) return -EBADF;
    if (f->kind != F_INODE || f->ino->kind != I_DIR) return -ENOTDIR;
    *dir = f->ino;
    return 0;
}

/* ---- files ---- */
long sys_read(u64 fd, u64 buf, u64 len, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if ((s64)len < 0) return -EINVAL;
    if (!user_range(buf, len)) return -EFAULT;
    return file_read(f, buf, len);
}

/* A write that may wait: cur->partial counts what earlier rounds moved. */
static long write_some(struct file *f, u64 buf, u64 len) {
    long r = file_write(f, buf + cur->partial, len - cur->partial);
    if (r == -EWOULDBLOCK_RETRY) return r;
    if (r == -EPIPE) {
        cur->partial = 0;
        if (cur->sig[SIGPIPE].handler == 0) proc_kill(cur, SIGPIPE);
        return -EPIPE;
    }
    if (r < 0) {
        u64 done = cur->partial;
        cur->partial = 0;
        return done ? (long)done : r;
    }
    cur->partial += (u64)r;
    if (f->kind == F_PIPE_W && cur->partial < len && !(f->flags & O_NONBLOCK)) return -EWOULDBLOCK_RETRY;
    u64 done = cur->partial;
    cur->partial = 0;
    return (long)done;
}

long sys_write(u64 fd, u64 buf, u64 len, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if ((s64)len < 0) return -EINVAL;
    if (!user_range(buf, len)) return -EFAULT;
    return write_some(f, buf, len);
}

struct iovec {
    u64 base, len;
};

long sys_readv(u64 fd, u64 uiov, u64 cnt, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if (cnt > 1024) return -EINVAL;
    long total = 0;
    for (u64 i = 0; i < cnt; i++) {
        struct iovec v;
        if (copy_from_user(cur->mm, &v, uiov + i * 16, 16) < 0) return total ? total : -EFAULT;
        if ((s64)v.len < 0) return -EINVAL;
        if (!v.len) continue;
        long r = file_read(f, v.base, v.len);
        if (r < 0) return total ? total : r;
        total += r;
        if ((u64)r < v.len) break;
    }
    return total;
}

long sys_writev(u64 fd, u64 uiov, u64 cnt, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if (cnt > 1024) return -EINVAL;
    /* Gather into one kernel pass over the vector; cur->partial is the total done so far. */
    u64 skip = cur->partial, total = 0;
    for (u64 i = 0; i < cnt; i++) {
        struct iovec v;
        if (copy_from_user(cur->mm, &v, uiov + i * 16, 16) < 0) {
            cur->partial = 0;
            return total ? (long)total : -EFAULT;
        }
        if ((s64)v.len < 0) return -EINVAL;
        if (skip >= v.len) {
            skip -= v.len;
            total += v.len;
            continue;
        }
        total += skip; /* the part an earlier round wrote */
        long r = file_write(f, v.base + skip, v.len - skip);
        if (r == -EWOULDBLOCK_RETRY) {
            cur->partial = total;
            return r;
        }
        if (r == -EPIPE) {
            cur->partial = 0;
            if (cur->sig[SIGPIPE].handler == 0) proc_kill(cur, SIGPIPE);
            return total ? (long)total : -EPIPE;
        }
        if (r < 0) {
            cur->partial = 0;
            return total ? (long)total : r;
        }
        total += (u64)r;
        if ((u64)r < v.len - skip) {
            if (f->kind == F_PIPE_W && !(f->flags & O_NONBLOCK)) {
                cur->partial = total;
                return -EWOULDBLOCK_RETRY;
            }
            break;
        }
        skip = 0;
    }
    cur->partial = 0;
    return (long)total;
}

long sys_pread64(u64 fd, u64 buf, u64 len, u64 off, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if (f->kind != F_INODE) return -ESPIPE;
    if ((s64)off < 0 || (s64)len < 0) return -EINVAL;
    u64 saved = f->pos;
    f->pos = off;
    long r = file_read(f, buf, len);
    f->pos = saved;
    return r;
}

static long do_open(s64 dirfd, u64 upath, u64 flags, u64 mode) {
    long r = get_path(path_a, upath);
    if (r < 0) return r;
    struct inode *dir, *ino;
    if ((r = at_dir(dirfd, path_a, &dir)) < 0) return r;
    r = vfs_lookup(dir, path_a, !(flags & O_NOFOLLOW), &ino);
    if (r == -ENOENT && (flags & O_CREAT)) {
        struct inode *parent;
        const char *last;
        if ((r = vfs_parent(dir, path_a, &parent, &last)) < 0) return r;
        if (parent->kind != I_DIR) return -ENOTDIR;
        r = vfs_create(parent, last, S_IFREG | ((u32)mode & 07777 & ~cur->umask), &ino);
        if (r < 0) return r;
    } else if (r < 0) {
        return r;
    } else if ((flags & O_CREAT) && (flags & O_EXCL)) {
        return -EEXIST;
    }
    if (ino->kind == I_SYMLINK) return -ELOOP;
    u32 acc = (u32)flags & O_ACCMODE;
    if ((flags & O_DIRECTORY) && ino->kind != I_DIR) return -ENOTDIR;
    if (ino->kind == I_DIR && acc != O_RDONLY) return -EISDIR;
    if (acc != O_RDONLY && ino->kind == I_USTAR) return -EROFS;
    if ((flags & O_TRUNC) && acc != O_RDONLY && ino->kind == I_TMPFS) vfs_truncate(ino, 0);
    struct file *f = file_new(F_INODE, (u32)flags & (O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECTORY));
    if (!f) return -ENFILE;
    f->ino = ino;
    inode_get(ino);
    long fd = fd_alloc(cur, f, 0, (flags & O_CLOEXEC) != 0);
    if (fd < 0) file_put(f);
    return fd;
}

long sys_open(u64 p, u64 flags, u64 mode, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    return do_open(AT_FDCWD, p, flags, mode);
}

long sys_openat(u64 dirfd, u64 p, u64 flags, u64 mode, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    return do_open((s64)dirfd, p, flags, mode);
}

long sys_close(u64 fd, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return fd_close(cur, fd);
}

long sys_lseek(u64 fd, u64 off, u64 whence, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if (f->kind != F_INODE) return -ESPIPE;
    s64 base;
    switch (whence) {
    case 0: base = 0; break;
    case 1: base = (s64)f->pos; break;
    case 2: base = (s64)f->ino->size; break;
    default: return -EINVAL;
    }
    s64 pos = base + (s64)off;
    if (pos < 0) return -EINVAL;
    f->pos = (u64)pos;
    return pos;
}

static long do_stat(s64 dirfd, u64 upath, u64 ubuf, u64 flags) {
    if (flags & ~(u64)(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800)) return -EINVAL;
    long r = strncpy_from_user(cur->mm, path_a, upath, PATH_MAX);
    if (r < 0) return r;
    if (r == 0) {
        if (!(flags & AT_EMPTY_PATH)) return -ENOENT;
        if ((s32)dirfd == AT_FDCWD) return stat_fill(cur->cwd, F_INODE, ubuf);
        struct file *f = fd_get(cur, (u64)(s32)dirfd);
        return f ? file_stat(f, ubuf) : -EBADF;
    }
    struct inode *dir, *ino;
    if ((r = at_dir(dirfd, path_a, &dir)) < 0) return r;
    if ((r = vfs_lookup(dir, path_a, !(flags & AT_SYMLINK_NOFOLLOW), &ino)) < 0) return r;
    return stat_fill(ino, F_INODE, ubuf);
}

long sys_stat(u64 p, u64 buf, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_stat(AT_FDCWD, p, buf, 0);
}

long sys_lstat(u64 p, u64 buf, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_stat(AT_FDCWD, p, buf, AT_SYMLINK_NOFOLLOW);
}

long sys_fstat(u64 fd, u64 buf, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    return f ? file_stat(f, buf) : -EBADF;
}

long sys_newfstatat(u64 dirfd, u64 p, u64 buf, u64 flags, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    return do_stat((s64)dirfd, p, buf, flags);
}

long sys_getdents64(u64 fd, u64 buf, u64 len, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!user_range(buf, len)) return -EFAULT;
    return f ? file_getdents(f, buf, len) : -EBADF;
}

static long do_readlink(s64 dirfd, u64 upath, u64 buf, u64 size) {
    long r = get_path(path_a, upath);
    if (r < 0) return r;
    if ((s64)size <= 0) return -EINVAL;
    const char *target;
    if (strcmp(path_a, "/proc/self/exe") == 0) {
        if (!cur->exe || vfs_path_of(cur->exe, path_b, PATH_MAX) < 0) return -ENOENT;
        target = path_b;
    } else {
        struct inode *dir, *ino;
        if ((r = at_dir(dirfd, path_a, &dir)) < 0) return r;
        if ((r = vfs_lookup(dir, path_a, 0, &ino)) < 0) return r;
        if (ino->kind != I_SYMLINK) return -EINVAL;
        target = ino->target;
    }
    u64 n = strlen(target);
    if (n > size) n = size;
    return copy_to_user(cur->mm, buf, target, n) < 0 ? -EFAULT : (long)n;
}

long sys_readlink(u64 p, u64 buf, u64 size, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    return do_readlink(AT_FDCWD, p, buf, size);
}

long sys_readlinkat(u64 dirfd, u64 p, u64 buf, u64 size, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    return do_readlink((s64)dirfd, p, buf, size);
}

static long do_access(s64 dirfd, u64 upath, u64 mode, u64 flags) {
    if (mode & ~7ULL) return -EINVAL;
    long r = get_path(path_a, upath);
    if (r < 0) return r;
    struct inode *dir, *ino;
    if ((r = at_dir(dirfd, path_a, &dir)) < 0) return r;
    if ((r = vfs_lookup(dir, path_a, !(flags & AT_SYMLINK_NOFOLLOW), &ino)) < 0) return r;
    if ((mode & 2) && !ino->writable && ino->kind != I_CHAR) return -EROFS;
    if ((mode & 1) && ino->kind != I_DIR && !(ino->mode & 0111)) return -EACCES;
    return 0;
}

long sys_access(u64 p, u64 mode, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_access(AT_FDCWD, p, mode, 0);
}

long sys_faccessat(u64 dirfd, u64 p, u64 mode, u64 flags, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    return do_access((s64)dirfd, p, mode, flags);
}

static long do_dup(u64 oldfd, int from, int cloexec) {
    struct file *f = fd_get(cur, oldfd);
    if (!f) return -EBADF;
    if (from < 0 || from >= NFD) return -EINVAL;
    long fd = fd_alloc(cur, f, from, cloexec);
    if (fd >= 0) file_get(f);
    return fd;
}

long sys_dup(u64 fd, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return do_dup(fd, 0, 0);
}

long sys_dup3(u64 oldfd, u64 newfd, u64 flags, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    if (flags & ~(u64)O_CLOEXEC) return -EINVAL;
    struct file *f = fd_get(cur, oldfd);
    if (!f) return -EBADF;
    if (newfd >= NFD) return -EBADF;
    if (oldfd == newfd) return -EINVAL;
    file_get(f);
    if (cur->fds[newfd]) fd_close(cur, newfd);
    cur->fds[newfd] = f;
    cur->cloexec[newfd] = (flags & O_CLOEXEC) != 0;
    return (long)newfd;
}

long sys_dup2(u64 oldfd, u64 newfd, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (oldfd == newfd) return fd_get(cur, oldfd) ? (long)newfd : -EBADF;
    return sys_dup3(oldfd, newfd, 0, 0, 0, 0);
}

long sys_fcntl(u64 fd, u64 cmd, u64 arg, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    switch (cmd) {
    case 0: return do_dup(fd, (int)(s32)arg, 0);       /* F_DUPFD */
    case 1030: return do_dup(fd, (int)(s32)arg, 1);    /* F_DUPFD_CLOEXEC */
    case 1: return cur->cloexec[fd];                    /* F_GETFD */
    case 2: cur->cloexec[fd] = (arg & 1) != 0; return 0; /* F_SETFD */
    case 3: return f->flags;                            /* F_GETFL */
    case 4:                                             /* F_SETFL */
        f->flags = (f->flags & ~(u32)(O_APPEND | O_NONBLOCK)) | ((u32)arg & (O_APPEND | O_NONBLOCK));
        return 0;
    default: return -EINVAL;
    }
}

long sys_ioctl(u64 fd, u64 req, u64 arg, u64 a3, u64 a4, u64 a5) {
    (void)req, (void)arg, (void)a3, (void)a4, (void)a5;
    return fd_get(cur, fd) ? -ENOTTY : -EBADF; /* no terminal here */
}

static long do_pipe(u64 ufds, u64 flags) {
    if (flags & ~(u64)(O_CLOEXEC | O_NONBLOCK)) return -EINVAL;
    struct file *r, *w;
    long st = pipe_create(&r, &w);
    if (st < 0) return st;
    r->flags |= (u32)flags & O_NONBLOCK;
    w->flags |= (u32)flags & O_NONBLOCK;
    long fr = fd_alloc(cur, r, 0, (flags & O_CLOEXEC) != 0);
    long fw = fr < 0 ? fr : fd_alloc(cur, w, 0, (flags & O_CLOEXEC) != 0);
    if (fr < 0 || fw < 0) {
        if (fr >= 0) cur->fds[fr] = 0;
        file_put(r);
        file_put(w);
        return -EMFILE;
    }
    s32 out[2] = {(s32)fr, (s32)fw};
    if (copy_to_user(cur->mm, ufds, out, sizeof out) < 0) {
        fd_close(cur, (u64)fr);
        fd_close(cur, (u64)fw);
        return -EFAULT;
    }
    return 0;
}

long sys_pipe(u64 fds, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return do_pipe(fds, 0);
}

long sys_pipe2(u64 fds, u64 flags, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_pipe(fds, flags);
}

long sys_ftruncate(u64 fd, u64 len, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if (f->kind != F_INODE || (f->flags & O_ACCMODE) == O_RDONLY) return -EINVAL;
    if ((s64)len < 0) return -EINVAL;
    return vfs_truncate(f->ino, len);
}

long sys_getcwd(u64 buf, u64 size, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    long n = vfs_path_of(cur->cwd, path_b, PATH_MAX);
    if (n < 0) return n;
    if ((u64)n > size) return -ERANGE;
    return copy_to_user(cur->mm, buf, path_b, (u64)n) < 0 ? -EFAULT : n;
}

long sys_chdir(u64 p, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    long r = get_path(path_a, p);
    if (r < 0) return r;
    struct inode *ino;
    if ((r = vfs_lookup(0, path_a, 1, &ino)) < 0) return r;
    if (ino->kind != I_DIR) return -ENOTDIR;
    cur->cwd = ino;
    return 0;
}

long sys_fchdir(u64 fd, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    if (f->kind != F_INODE || f->ino->kind != I_DIR) return -ENOTDIR;
    cur->cwd = f->ino;
    return 0;
}

/* The parent directory and the last name (copied into name[256]) of a path argument. */
static long parent_and_name(s64 dirfd, u64 upath, char *buf, struct inode **parent, char *name) {
    long r = get_path(buf, upath);
    if (r < 0) return r;
    struct inode *dir;
    const char *last;
    if ((r = at_dir(dirfd, buf, &dir)) < 0) return r;
    if ((r = vfs_parent(dir, buf, parent, &last)) < 0) return r;
    if ((*parent)->kind != I_DIR) return -ENOTDIR;
    u64 n = 0;
    while (last[n] && last[n] != '/') n++;
    if (n > 255) return -ENAMETOOLONG;
    memcpy(name, last, n);
    name[n] = 0;
    return 0;
}

static long do_mkdir(s64 dirfd, u64 upath, u64 mode) {
    struct inode *parent, *ino;
    char name[256];
    long r = parent_and_name(dirfd, upath, path_a, &parent, name);
    return r < 0 ? r : vfs_create(parent, name, S_IFDIR | ((u32)mode & 07777 & ~cur->umask), &ino);
}

long sys_mkdir(u64 p, u64 mode, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_mkdir(AT_FDCWD, p, mode);
}

long sys_mkdirat(u64 dirfd, u64 p, u64 mode, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    return do_mkdir((s64)dirfd, p, mode);
}

static long do_unlink(s64 dirfd, u64 upath, u64 flags) {
    if (flags & ~(u64)AT_REMOVEDIR) return -EINVAL;
    struct inode *parent;
    char name[256];
    long r = parent_and_name(dirfd, upath, path_a, &parent, name);
    return r < 0 ? r : vfs_unlink(parent, name, (flags & AT_REMOVEDIR) != 0);
}

long sys_unlink(u64 p, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return do_unlink(AT_FDCWD, p, 0);
}

long sys_rmdir(u64 p, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return do_unlink(AT_FDCWD, p, AT_REMOVEDIR);
}

long sys_unlinkat(u64 dirfd, u64 p, u64 flags, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    return do_unlink((s64)dirfd, p, flags);
}

long sys_umask(u64 mask, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    u32 old = cur->umask;
    cur->umask = (u32)mask & 0777;
    return old;
}

/* ---- poll ---- */
struct pollfd {
    s32 fd;
    s16 events, revents;
};

static long do_poll(u64 ufds, u64 nfds, s64 timeout_ns) {
    if (nfds > NFD) return -EINVAL;
    struct pollfd pf[NFD];
    if (nfds && copy_from_user(cur->mm, pf, ufds, nfds * sizeof pf[0]) < 0) return -EFAULT;
    long ready = 0;
    for (u64 i = 0; i < nfds; i++) {
        u32 mask;
        if (pf[i].fd < 0) {
            pf[i].revents = 0;
            continue;
        }
        struct file *f = fd_get(cur, (u64)pf[i].fd);
        if (!f) mask = 32; /* POLLNVAL */
        else if (f->kind == F_PIPE_R || f->kind == F_PIPE_W) mask = pipe_poll(f);
        else mask = 1 | 4;
        pf[i].revents = (s16)(mask & ((u32)(u16)pf[i].events | 8 | 16 | 32));
        if (pf[i].revents) ready++;
    }
    u64 now = spk_time_now();
    if (!ready && timeout_ns != 0) {
        if (timeout_ns > 0 && !cur->wake_at) cur->wake_at = now + (u64)timeout_ns;
        if (timeout_ns < 0 || now < cur->wake_at) return -EWOULDBLOCK_RETRY;
    }
    cur->wake_at = 0;
    if (nfds && copy_to_user(cur->mm, ufds, pf, nfds * sizeof pf[0]) < 0) return -EFAULT;
    return ready;
}

long sys_poll(u64 ufds, u64 nfds, u64 timeout_ms, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    s64 ms = (s32)timeout_ms;
    return do_poll(ufds, nfds, ms < 0 ? -1 : ms * 1000000);
}

long sys_ppoll(u64 ufds, u64 nfds, u64 uts, u64 sigmask, u64 a4, u64 a5) {
    (void)sigmask, (void)a4, (void)a5;
    s64 ns = -1;
    if (uts) {
        u64 ts[2];
        if (copy_from_user(cur->mm, ts, uts, sizeof ts) < 0) return -EFAULT;
        if ((s64)ts[0] < 0 || ts[1] >= 1000000000ULL) return -EINVAL;
        ns = ts[0] > 1000000000ULL ? (s64)(1000000000ULL * 1000000000ULL) : (s64)(ts[0] * 1000000000ULL + ts[1]);
    }
    return do_poll(ufds, nfds, ns);
}

static long do_rename(s64 odfd, u64 opath, s64 ndfd, u64 npath, u64 flags) {
    if (flags) return -EINVAL; /* RENAME_NOREPLACE and friends: not supported */
    struct inode *op, *np;
    char oname[256], nname[256];
    long r = parent_and_name(odfd, opath, path_a, &op, oname);
    if (r == 0) r = parent_and_name(ndfd, npath, path_b, &np, nname);
    return r < 0 ? r : vfs_rename(op, oname, np, nname);
}

long sys_rename(u64 o, u64 n, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_rename(AT_FDCWD, o, AT_FDCWD, n, 0);
}

long sys_renameat2(u64 od, u64 o, u64 nd, u64 n, u64 flags, u64 a5) {
    (void)a5;
    return do_rename((s64)od, o, (s64)nd, n, flags);
}

long sys_renameat(u64 od, u64 o, u64 nd, u64 n, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    return do_rename((s64)od, o, (s64)nd, n, 0);
}

static long do_symlink(u64 utarget, s64 dirfd, u64 upath) {
    static char target[PATH_MAX];
    long r = get_path(target, utarget);
    if (r < 0) return r;
    struct inode *parent;
    char name[256];
    if ((r = parent_and_name(dirfd, upath, path_a, &parent, name)) < 0) return r;
    return vfs_symlink(parent, name, target);
}

long sys_symlink(u64 t, u64 p, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    return do_symlink(t, AT_FDCWD, p);
}

long sys_symlinkat(u64 t, u64 dirfd, u64 p, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    return do_symlink(t, (s64)dirfd, p);
}

long sys_link(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return -EPERM; /* no hard links: the file systems here do not support them */
}

/* The inode a (dirfd, path, flags) argument names; AT_EMPTY_PATH names dirfd itself. */
static long inode_at(s64 dirfd, u64 upath, u64 flags, struct inode **out) {
    long r = upath ? strncpy_from_user(cur->mm, path_a, upath, PATH_MAX) : 0;
    if (r < 0) return r;
    if (r == 0) {
        if (upath && !(flags & AT_EMPTY_PATH)) return -ENOENT;
        if ((s32)dirfd == AT_FDCWD) {
            *out = cur->cwd;
            return 0;
        }
        struct file *f = fd_get(cur, (u64)(s32)dirfd);
        if (!f) return -EBADF;
        if (f->kind != F_INODE) return -EINVAL;
        *out = f->ino;
        return 0;
    }
    struct inode *dir;
    if ((r = at_dir(dirfd, path_a, &dir)) < 0) return r;
    return vfs_lookup(dir, path_a, !(flags & AT_SYMLINK_NOFOLLOW), out);
}

static long set_mode(struct inode *ino, u64 mode) {
    if (!ino->writable) return -EROFS;
    ino->mode = (ino->mode & S_IFMT) | ((u32)mode & 07777);
    return 0;
}

long sys_chmod(u64 p, u64 mode, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct inode *ino;
    long r = p ? inode_at(AT_FDCWD, p, 0, &ino) : -EFAULT;
    return r < 0 ? r : set_mode(ino, mode);
}

long sys_fchmodat(u64 dirfd, u64 p, u64 mode, u64 a3, u64 a4, u64 a5) {
    (void)a3, (void)a4, (void)a5;
    struct inode *ino;
    long r = p ? inode_at((s64)dirfd, p, 0, &ino) : -EFAULT;
    return r < 0 ? r : set_mode(ino, mode);
}

long sys_fchmod(u64 fd, u64 mode, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    return f->kind == F_INODE ? set_mode(f->ino, mode) : 0;
}

long sys_chown(u64 p, u64 uid, u64 gid, u64 a3, u64 a4, u64 a5) { /* every file is root's */
    (void)uid, (void)gid, (void)a3, (void)a4, (void)a5;
    struct inode *ino;
    long r = p ? inode_at(AT_FDCWD, p, 0, &ino) : -EFAULT;
    return r < 0 ? r : ino->writable ? 0 : -EROFS;
}

long sys_fchownat(u64 dirfd, u64 p, u64 uid, u64 gid, u64 flags, u64 a5) {
    (void)uid, (void)gid, (void)a5;
    struct inode *ino;
    long r = inode_at((s64)dirfd, p, flags, &ino);
    return r < 0 ? r : ino->writable ? 0 : -EROFS;
}

long sys_fchown(u64 fd, u64 uid, u64 gid, u64 a3, u64 a4, u64 a5) {
    (void)uid, (void)gid, (void)a3, (void)a4, (void)a5;
    return fd_get(cur, fd) ? 0 : -EBADF;
}

long sys_utimensat(u64 dirfd, u64 p, u64 times, u64 flags, u64 a4, u64 a5) {
    (void)a4, (void)a5;
    struct inode *ino;
    long r = inode_at((s64)dirfd, p, flags | (p ? 0 : AT_EMPTY_PATH), &ino);
    if (r < 0) return r;
    u64 ts[4] = {0, 0, 0, 0};
    if (times && copy_from_user(cur->mm, ts, times, sizeof ts) < 0) return -EFAULT;
    if (!ino->writable) return -EROFS;
    u64 now = EPOCH + spk_time_now() / 1000000000ULL;
    if (!times || ts[3] == ((1ULL << 30) - 1)) ino->mtime = now; /* UTIME_NOW */
    else if (ts[3] != ((1ULL << 30) - 2)) ino->mtime = ts[2];  /* not UTIME_OMIT */
    return 0;
}

static long statfs_of(struct inode *ino, u64 ubuf) {
    u64 st[15];
    memset(st, 0, sizeof st);
    st[0] = ino->writable ? 0x01021994 : 0x858458f6; /* TMPFS_MAGIC, RAMFS_MAGIC */
    st[1] = PAGE;                                    /* f_bsize */
    st[2] = 1024;                                    /* f_blocks */
    st[3] = st[4] = ino->writable ? 512 : 0;         /* f_bfree, f_bavail */
    st[5] = 4096;                                    /* f_files */
    st[6] = ino->writable ? 2048 : 0;                /* f_ffree */
    st[8] = 255;                                     /* f_namelen */
    st[9] = PAGE;                                    /* f_frsize */
    st[10] = ino->writable ? 0 : 1;                  /* f_flags: ST_RDONLY */
    return copy_to_user(cur->mm, ubuf, st, 120);
}

long sys_statfs(u64 p, u64 buf, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct inode *ino;
    long r = p ? inode_at(AT_FDCWD, p, 0, &ino) : -EFAULT;
    return r < 0 ? r : statfs_of(ino, buf);
}

long sys_fstatfs(u64 fd, u64 buf, u64 a2, u64 a3, u64 a4, u64 a5) {
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(cur, fd);
    if (!f) return -EBADF;
    return statfs_of(f->kind == F_INODE ? f->ino : vfs_root, buf);
}

long sys_statx(u64 dirfd, u64 p, u64 flags, u64 mask, u64 buf, u64 a5) {
    (void)mask, (void)a5;
    long r = strncpy_from_user(cur->mm, path_a, p, PATH_MAX);
    if (r < 0) return r;
    if (r == 0) {
        if (!(flags & AT_EMPTY_PATH)) return -ENOENT;
        if ((s32)dirfd == AT_FDCWD) return statx_fill(cur->cwd, F_INODE, buf);
        struct file *f = fd_get(cur, (u64)(s32)dirfd);
        return f ? statx_fill(f->kind == F_INODE ? f->ino : 0, f->kind, buf) : -EBADF;
    }
    struct inode *dir, *ino;
    if ((r = at_dir((s64)dirfd, path_a, &dir)) < 0) return r;
    if ((r = vfs_lookup(dir, path_a, !(flags & AT_SYMLINK_NOFOLLOW), &ino)) < 0) return r;
    return statx_fill(ino, F_INODE, buf);
}


/* select(2) and pselect6(2) on top of poll: fd sets of up to NFD descriptors. */
static long do_select(u64 nfds, u64 rd, u64 wr, u64 ex, s64 timeout_ns) {
    if ((s64)nfds < 0 || nfds > NFD) return -EINVAL;
    u64 sets[3][NFD / 64], outs[3][NFD / 64];
    u64 ptrs[3] = {rd, wr, ex}, words = (nfds + 63) / 64;
    memset(sets, 0, sizeof sets);
    memset(outs, 0, sizeof outs);
    for (int k = 0; k < 3; k++)
        if (ptrs[k] && words && copy_from_user(cur->mm, sets[k], ptrs[k], words * 8) < 0) return -EFAULT;
    long ready = 0;
    for (u64 fd = 0; fd < nfds; fd++) {
        u64 bit = 1ULL << (fd & 63), w = fd / 64;
        if (!((sets[0][w] | sets[1][w] | sets[2][w]) & bit)) continue;
        struct file *f = fd_get(cur, fd);
        if (!f) return -EBADF;
        u32 mask = (f->kind == F_PIPE_R || f->kind == F_PIPE_W) ? pipe_poll(f) : 1 | 4;
        if ((sets[0][w] & bit) && (mask & (1 | 16))) outs[0][w] |= bit, ready++;
        if ((sets[1][w] & bit) && (mask & (4 | 8))) outs[1][w] |= bit, ready++;
    }
    u64 now = spk_time_now();
    if (!ready && timeout_ns != 0) {
        if (timeout_ns > 0 && !cur->wake_at) cur->wake_at = now + (u64)timeout_ns;
        if (timeout_ns < 0 || now < cur->wake_at) return -EWOULDBLOCK_RETRY;
    }
    cur->wake_at = 0;
    for (int k = 0; k < 3; k++)
        if (ptrs[k] && words && copy_to_user(cur->mm, ptrs[k], outs[k], words * 8) < 0) return -EFAULT;
    return ready;
}

long sys_select(u64 n, u64 rd, u64 wr, u64 ex, u64 utv, u64 a5) {
    (void)a5;
    s64 ns = -1;
    if (utv) {
        u64 tv[2];
        if (copy_from_user(cur->mm, tv, utv, sizeof tv) < 0) return -EFAULT;
        if ((s64)tv[0] < 0 || tv[1] >= 1000000ULL) return -EINVAL;
        ns = tv[0] > 1000000000ULL ? (s64)(1000000000ULL * 1000000000ULL) : (s64)(tv[0] * 1000000000ULL + tv[1] * 1000);
    }
    return do_select(n, rd, wr, ex, ns);
}

long sys_pselect6(u64 n, u64 rd, u64 wr, u64 ex, u64 uts, u64 sig) {
    (void)sig;
    s64 ns = -1;
    if (uts) {
        u64 ts[2];
        if (copy_from_user(cur->mm, ts, uts, sizeof ts) < 0) return -EFAULT;
        if ((s64)ts[0] < 0 || ts[1] >= 1000000000ULL) return -EINVAL;
        ns = ts[0] > 1000000000ULL ? (s64)(1000000000ULL * 1000000000ULL) : (s64)(ts[0] * 1000000000ULL + ts[1]);
    }
    return do_select(n, rd, wr, ex, ns);
}
