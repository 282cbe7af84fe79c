/* vfs.c -- the file system: the read-only ustar root, the writable /tmp,
 * path lookup and open files.
 *
 * The `rootfs` module (a POSIX ustar archive) becomes a tree of inodes at
 * boot; a file's bytes stay where they are, in the module window. Files of
 * the archive are never written: opening one for writing is EROFS. /tmp
 * (the archive's, or a new one) is a tmpfs: files created there keep their
 * bytes in frames of the partition (a radix of frames per file), limited by
 * the partition's quota (ENOSPC). /dev/null and /dev/zero exist too, and
 * /proc/self/exe names the caller's executable.
 */
#include "linux.h"

struct inode *vfs_root;
static u64 next_ino = 1;
/* Frames /tmp files may hold: half of what was free at boot, so that a full
 * /tmp gives ENOSPC while processes can still page in their code and stack. */
static u64 tmpfs_pages, tmpfs_max;

void vfs_set_tmpfs_limit(u64 frames) { tmpfs_max = frames; }
static const u8 *stdin_bytes;
static u64 stdin_len;

static struct inode *inode_new(u32 kind, u32 mode) {
    struct inode *ino = kmalloc(sizeof *ino);
    if (!ino) return 0;
    ino->kind = kind;
    ino->mode = mode;
    ino->ino = next_ino++;
    return ino;
}

struct inode *vfs_child(struct inode *dir, const char *name, u64 len) {
    for (struct inode *c = dir->child; c; c = c->sibling)
        if (strncmp(c->name, name, len) == 0 && c->name[len] == 0) return c;
    return 0;
}

static void add_child(struct inode *dir, struct inode *c) {
    struct inode **pp = &dir->child;
    while (*pp) pp = &(*pp)->sibling;
    *pp = c;
    c->sibling = 0;
    c->parent = dir;
    dir->nchildren++;
}

static char *dup_n(const char *s, u64 n) {
    char *d = kmalloc(n + 1);
    if (!d) panic("out of memory building the root file system", -ENOMEM);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* The directory for path[0..len) (made on the way when missing). */
static struct inode *mkdirs(const char *path, u64 len) {
    struct inode *dir = vfs_root;
    u64 i = 0;
    while (i < len) {
        u64 j = i;
        while (j < len && path[j] != '/') j++;
        if (j > i && !(j - i == 1 && path[i] == '.')) {
            struct inode *c = vfs_child(dir, path + i, j - i);
            if (!c) {
                c = inode_new(I_DIR, S_IFDIR | 0755);
                if (!c) panic("out of memory building the root file system", -ENOMEM);
                c->name = dup_n(path + i, j - i);
                add_child(dir, c);
            }
            if (c->kind != I_DIR) return 0;
            dir = c;
        }
        i = j + 1;
    }
    return dir;
}

static u64 octal(const u8 *s, u64 n) {
    u64 v = 0;
    for (u64 i = 0; i < n && s[i] >= '0' && s[i] <= '7'; i++) v = v * 8 + (u64)(s[i] - '0');
    return v;
}

/* One archive member; bad members are skipped (the archive is data, not trusted). */
static void add_member(const u8 *h, const u8 *data, u64 size) {
    char path[256 + 2];
    u64 plen = strnlen((const char *)h + 345, 155), nlen = strnlen((const char *)h, 100), len = 0;
    if (memcmp(h + 257, "ustar", 5) == 0 && plen) {
        memcpy(path, h + 345, plen);
        path[plen] = '/';
        len = plen + 1;
    }
    memcpy(path + len, h, nlen);
    len += nlen;
    path[len] = 0;
    char *p = path;
    while (*p == '/' || (p[0] == '.' && p[1] == '/')) p += (*p == '/') ? 1 : 2;
    len = strlen(p);
    while (len && p[len - 1] == '/') p[--len] = 0;
    if (!len || (len == 1 && p[0] == '.')) return;
    u64 slash = len;
    while (slash && p[slash - 1] != '/') slash--;
    struct inode *dir = mkdirs(p, slash ? slash - 1 : 0);
    if (!dir) return;
    const char *name = p + slash;
    u64 mode = octal(h + 100, 8) & 07777, mtime = octal(h + 136, 12);
    u8 type = h[156];
    struct inode *old = vfs_child(dir, name, len - slash);
    if (type == '5') {
        if (old) {
            if (old->kind == I_DIR) {
                old->mode = S_IFDIR | (u32)mode;
                old->mtime = mtime;
            }
            return;
        }
        struct inode *d = inode_new(I_DIR, S_IFDIR | (u32)mode);
        if (!d) panic("out of memory building the root file system", -ENOMEM);
        d->name = dup_n(name, len - slash);
        d->mtime = mtime;
        add_child(dir, d);
        return;
    }
    if (old) return; /* first member wins */
    struct inode *f;
    if (type == '0' || type == 0) {
        f = inode_new(I_USTAR, S_IFREG | (u32)mode);
        if (!f) panic("out of memory building the root file system", -ENOMEM);
        f->data = data;
        f->size = size;
    } else if (type == '2') {
        f = inode_new(I_SYMLINK, S_IFLNK | 0777);
        if (!f) panic("out of memory building the root file system", -ENOMEM);
        f->target = dup_n((const char *)h + 157, strnlen((const char *)h + 157, 100));
        f->size = strlen(f->target);
    } else {
        return; /* hard links, devices, fifos: not supported */
    }
    f->name = dup_n(name, len - slash);
    f->mtime = mtime;
    add_child(dir, f);
}

static void add_dev(struct inode *dev, const char *name, u32 which) {
    if (vfs_child(dev, name, strlen(name))) return;
    struct inode *n = inode_new(I_CHAR, S_IFCHR | 0666);
    if (!n) panic("out of memory building the root file system", -ENOMEM);
    n->dev = which;
    n->name = name;
    add_child(dev, n);
}

void vfs_init(const u8 *tar, u64 size, const u8 *in, u64 in_size) {
    stdin_bytes = in;
    stdin_len = in_size;
    vfs_root = inode_new(I_DIR, S_IFDIR | 0755);
    if (!vfs_root) panic("out of memory building the root file system", -ENOMEM);
    vfs_root->name = "";
    for (u64 off = 0; tar && off + 512 <= size;) {
        const u8 *h = tar + off;
        if (h[0] == 0) break; /* end of archive */
        u64 fsize = octal(h + 124, 12);
        u64 data = off + 512;
        if (fsize > size - data) break; /* truncated member: stop */
        add_member(h, tar + data, fsize);
        off = data + ((fsize + 511) & ~511ULL);
    }
    struct inode *tmp = mkdirs("tmp", 3);
    if (tmp) {
        tmp->writable = 1;
        tmp->mode = S_IFDIR | 01777;
    }
    struct inode *dev = mkdirs("dev", 3);
    if (dev) {
        add_dev(dev, "null", DEV_NULL);
        add_dev(dev, "zero", DEV_ZERO);
    }
}

/* ---- lookup ---- */
static long walk(struct inode *dir, const char *path, u64 len, int follow, int depth, struct inode **out) {
    if (depth > 8) return -ELOOP;
    if (len == 0) return -ENOENT;
    struct inode *ino = path[0] == '/' ? vfs_root : dir;
    u64 i = 0;
    while (i < len) {
        while (i < len && path[i] == '/') i++;
        if (i >= len) break;
        u64 j = i;
        while (j < len && path[j] != '/') j++;
        u64 k = j;
        while (k < len && path[k] == '/') k++;
        int last = k >= len;
        if (ino->kind != I_DIR) return -ENOTDIR;
        u64 n = j - i;
        if (n > 255) return -ENAMETOOLONG;
        if (n == 1 && path[i] == '.') {
            i = j;
            continue;
        }
        if (n == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (ino->parent) ino = ino->parent;
            i = j;
            continue;
        }
        struct inode *c = vfs_child(ino, path + i, n);
        if (!c) return -ENOENT;
        if (c->kind == I_SYMLINK && (!last || follow || j < len)) {
            struct inode *t;
            long r = walk(ino, c->target, strlen(c->target), 1, depth + 1, &t);
            if (r < 0) return r;
            c = t;
        }
        ino = c;
        i = j;
    }
    if (path[len - 1] == '/' && ino->kind != I_DIR) return -ENOTDIR;
    *out = ino;
    return 0;
}

long vfs_lookup(struct inode *dir, const char *path, int follow, struct inode **out) {
    if (strcmp(path, "/proc/self/exe") == 0 && cur && cur->exe) {
        *out = cur->exe;
        return 0;
    }
    return walk(dir ? dir : cur->cwd, path, strlen(path), follow, 0, out);
}

long vfs_parent(struct inode *dir, const char *path, struct inode **parent, const char **last) {
    u64 len = strlen(path);
    if (len == 0) return -ENOENT;
    while (len > 1 && path[len - 1] == '/') len--;
    u64 s = len;
    while (s && path[s - 1] != '/') s--;
    *last = path + s;
    if (s == 0) {
        *parent = dir ? dir : cur->cwd;
        return 0;
    }
    return walk(dir ? dir : cur->cwd, path, s, 1, 0, parent) < 0 ? -ENOENT : 0;
}

long vfs_path_of(struct inode *ino, char *buf, u64 size) {
    /* Build from the leaf up at the end of buf, then move it to the front. */
    if (size < 2) return -ERANGE;
    u64 pos = size - 1;
    buf[pos] = 0;
    if (ino == vfs_root) {
        buf[0] = '/';
        buf[1] = 0;
        return 2;
    }
    for (struct inode *i = ino; i && i != vfs_root; i = i->parent) {
        u64 n = strlen(i->name);
        if (pos < n + 1) return -ERANGE;
        pos -= n;
        memcpy(buf + pos, i->name, n);
        buf[--pos] = '/';
    }
    u64 len = size - 1 - pos;
    memmove(buf, buf + pos, len + 1);
    return (long)len + 1;
}

/* ---- tmpfs ---- */
long vfs_create(struct inode *dir, const char *name, u32 mode, struct inode **out) {
    u64 n = strlen(name);
    if (dir->kind != I_DIR) return -ENOTDIR;
    if (n == 0 || (n == 1 && name[0] == '.') || (n == 2 && name[0] == '.' && name[1] == '.')) return -EEXIST;
    if (n > 255) return -ENAMETOOLONG;
    if (vfs_child(dir, name, n)) return -EEXIST;
    if (!dir->writable) return -EROFS;
    int is_dir = (mode & S_IFMT) == S_IFDIR;
    struct inode *ino = inode_new(is_dir ? I_DIR : I_TMPFS, mode);
    if (!ino) return -ENOSPC;
    ino->name = kstrdup(name);
    if (!ino->name) {
        kfree(ino);
        return -ENOSPC;
    }
    ino->writable = 1;
    add_child(dir, ino);
    *out = ino;
    return 0;
}

static void free_data_page(u64 index, u64 *slot, void *ctx) {
    (void)index;
    (void)ctx;
    frame_put(*slot >> 12);
    tmpfs_pages--;
    *slot = 0;
}

static void inode_release(struct inode *ino) {
    if (ino->kind == I_TMPFS) radix_walk(&ino->pages, free_data_page, 0, 1);
    if (ino->kind == I_SYMLINK && ino->target) kfree((void *)ino->target);
    if (ino->name) kfree((void *)ino->name);
    kfree(ino);
}

long vfs_unlink(struct inode *dir, const char *name, int rmdir) {
    u64 n = strlen(name);
    if (dir->kind != I_DIR) return -ENOTDIR;
    if (n == 1 && name[0] == '.') return -EINVAL;
    if (n == 2 && name[0] == '.' && name[1] == '.') return -ENOTEMPTY;
    struct inode *c = vfs_child(dir, name, n);
    if (!c) return -ENOENT;
    if (rmdir && c->kind != I_DIR) return -ENOTDIR;
    if (!rmdir && c->kind == I_DIR) return -EISDIR;
    if (!dir->writable || !c->writable) return -EROFS;
    if (rmdir && c->child) return -ENOTEMPTY;
    if (rmdir)
        for (u32 i = 0; i < MAX_PROCS; i++)
            if (procs[i] && procs[i]->cwd == c) return -EBUSY; /* some process's cwd: kept */
    struct inode **pp = &dir->child;
    while (*pp != c) pp = &(*pp)->sibling;
    *pp = c->sibling;
    dir->nchildren--;
    c->unlinked = 1;
    c->parent = 0;
    if (c->opens == 0) inode_release(c);
    return 0;
}

long vfs_truncate(struct inode *ino, u64 size) {
    if (ino->kind == I_DIR) return -EISDIR;
    if (ino->kind != I_TMPFS) return ino->kind == I_USTAR ? -EROFS : -EINVAL;
    if (size > (1ULL << 32)) return -EFBIG;
    if (size < ino->size) { /* drop the pages past the end, zero the tail of the last one */
        radix_walk_range(&ino->pages, PAGE_UP(size) >> 12, 1ULL << 36, free_data_page, 0, 0);
        u64 *slot = radix_slot(&ino->pages, size >> 12, 0);
        if ((size & PAGE_MASK) && slot && *slot)
            memset((u8 *)phys(*slot >> 12) + (size & PAGE_MASK), 0, PAGE - (size & PAGE_MASK));
    }
    ino->size = size;
    return 0;
}

long inode_read(struct inode *ino, u64 off, void *buf, u64 len) {
    if (off >= ino->size) return 0;
    if (len > ino->size - off) len = ino->size - off;
    if (ino->kind == I_USTAR) {
        if (len == PAGE) copy_page(buf, ino->data + off); /* the common case, a whole page: fast */
        else memcpy(buf, ino->data + off, len);
        return (long)len;
    }
    if (ino->kind != I_TMPFS) return 0;
    u8 *out = buf;
    for (u64 done = 0; done < len;) {
        u64 o = off + done, n = PAGE - (o & PAGE_MASK);
        if (n > len - done) n = len - done;
        u64 *slot = radix_slot(&ino->pages, o >> 12, 0);
        if (slot && *slot) memcpy(out + done, (u8 *)phys(*slot >> 12) + (o & PAGE_MASK), n);
        else memset(out + done, 0, n);
        done += n;
    }
    return (long)len;
}

long inode_shared_page(struct inode *ino, u64 index) {
    if (ino->kind != I_USTAR || index * PAGE >= ino->size) return -1;
    u64 *slot = radix_slot(&ino->pages, index, 1);
    if (!slot) return -1;
    if (!*slot) {
        long mfn = frame_get();
        if (mfn < 0) return -1;
        u64 n = ino->size - index * PAGE < PAGE ? ino->size - index * PAGE : PAGE;
        if (n == PAGE) copy_page(phys((u64)mfn), ino->data + index * PAGE);
        else memcpy(phys((u64)mfn), ino->data + index * PAGE, n);
        *slot = ((u64)mfn << 12) | 1;
    }
    return (long)(*slot >> 12);
}

/* ---- open files ---- */
struct file *file_new(u32 kind, u32 flags) {
    struct file *f = kmalloc(sizeof *f);
    if (!f) return 0;
    f->refs = 1;
    f->kind = kind;
    f->flags = flags;
    return f;
}

void file_get(struct file *f) { f->refs++; }

void inode_get(struct inode *ino) { ino->opens++; }

void inode_put(struct inode *ino) {
    if (--ino->opens == 0 && ino->unlinked) inode_release(ino);
}

void file_put(struct file *f) {
    if (--f->refs) return;
    if (f->kind == F_PIPE_R || f->kind == F_PIPE_W) pipe_close(f);
    if (f->ino) inode_put(f->ino);
    kfree(f);
}

struct io_ctx {
    struct inode *ino;
    u64 pos;
};

static long chunk_read_inode(void *k, u64 n, void *ctx) {
    struct io_ctx *c = ctx;
    long r = inode_read(c->ino, c->pos, k, n);
    c->pos += (u64)r;
    return r;
}

static long chunk_console(void *k, u64 n, void *ctx) {
    (void)ctx;
    long r = spk_console_write(k, n);
    return r < 0 ? -EIO : r;
}

static long chunk_write_inode(void *k, u64 n, void *ctx) {
    struct io_ctx *c = ctx;
    for (u64 done = 0; done < n;) {
        u64 o = c->pos, m = PAGE - (o & PAGE_MASK);
        if (m > n - done) m = n - done;
        u64 *slot = radix_slot(&c->ino->pages, o >> 12, 1);
        if (!slot) return done ? (long)done : -ENOSPC;
        if (!*slot) {
            long mfn = tmpfs_pages < tmpfs_max ? frame_get() : -ENOSPC;
            if (mfn < 0) return done ? (long)done : -ENOSPC;
            *slot = ((u64)mfn << 12) | 1;
            tmpfs_pages++;
        }
        memcpy((u8 *)phys(*slot >> 12) + (o & PAGE_MASK), (u8 *)k + done, m);
        done += m;
        c->pos += m;
        if (c->pos > c->ino->size) c->ino->size = c->pos;
    }
    return (long)n;
}

long file_read(struct file *f, u64 ubuf, u64 len) {
    if ((f->flags & O_ACCMODE) == O_WRONLY) return -EBADF;
    switch (f->kind) {
    case F_PIPE_R: return pipe_read(f, ubuf, len);
    case F_PIPE_W: return -EBADF;
    case F_CONSOLE: return 0;
    case F_STDIN: {
        u64 n = f->pos < stdin_len ? stdin_len - f->pos : 0;
        if (n > len) n = len;
        if (n && copy_to_user(cur->mm, ubuf, stdin_bytes + f->pos, n) < 0) return -EFAULT;
        f->pos += n;
        return (long)n;
    }
    default: break;
    }
    struct inode *ino = f->ino;
    if (ino->kind == I_DIR) return -EISDIR;
    if (ino->kind == I_CHAR) {
        if (ino->dev != DEV_ZERO) return 0;
        return clear_user(cur->mm, ubuf, len) < 0 ? -EFAULT : (long)len;
    }
    if (f->pos >= ino->size) return 0;
    if (len > ino->size - f->pos) len = ino->size - f->pos;
    struct io_ctx c = {ino, f->pos};
    long r = user_chunks(cur->mm, ubuf, len, 1, chunk_read_inode, &c);
    if (r > 0) f->pos += (u64)r;
    return r;
}

long file_write(struct file *f, u64 ubuf, u64 len) {
    if (f->kind == F_PIPE_W) return pipe_write(f, ubuf, len);
    if (f->kind == F_PIPE_R || f->kind == F_STDIN || (f->flags & O_ACCMODE) == O_RDONLY) return -EBADF;
    if (len == 0) return 0;
    if (f->kind == F_CONSOLE) return user_chunks(cur->mm, ubuf, len, 0, chunk_console, 0);
    struct inode *ino = f->ino;
    if (ino->kind == I_CHAR) return (long)len;
    if (ino->kind != I_TMPFS) return -EBADF;
    if (f->flags & O_APPEND) f->pos = ino->size;
    if (f->pos + len < f->pos || f->pos + len > (1ULL << 32)) return -EFBIG;
    struct io_ctx c = {ino, f->pos};
    long r = user_chunks(cur->mm, ubuf, len, 0, chunk_write_inode, &c);
    if (r > 0) f->pos += (u64)r;
    return r;
}

static u8 dtype(const struct inode *i) {
    switch (i->mode & S_IFMT) {
    case S_IFDIR: return 4;
    case S_IFREG: return 8;
    case S_IFLNK: return 10;
    case S_IFCHR: return 2;
    default: return 0;
    }
}

long file_getdents(struct file *f, u64 ubuf, u64 len) {
    if (f->kind != F_INODE || f->ino->kind != I_DIR) return -ENOTDIR;
    struct inode *dir = f->ino;
    u64 done = 0;
    u8 rec[8 + 8 + 2 + 1 + 256 + 8];
    for (;;) {
        const char *name;
        const struct inode *ino;
        if (f->pos == 0) {
            name = ".";
            ino = dir;
        } else if (f->pos == 1) {
            name = "..";
            ino = dir->parent ? dir->parent : dir;
        } else {
            const struct inode *c = dir->child;
            for (u64 k = 2; c && k < f->pos; k++) c = c->sibling;
            if (!c) break;
            name = c->name;
            ino = c;
        }
        u64 n = strlen(name);
        u64 reclen = (8 + 8 + 2 + 1 + n + 1 + 7) & ~7ULL;
        if (done + reclen > len) {
            if (done == 0) return -EINVAL;
            break;
        }
        memset(rec, 0, reclen);
        u64 ino_nr = ino->ino, off = f->pos + 1;
        u16 rl = (u16)reclen;
        memcpy(rec, &ino_nr, 8);
        memcpy(rec + 8, &off, 8);
        memcpy(rec + 16, &rl, 2);
        rec[18] = dtype(ino);
        memcpy(rec + 19, name, n);
        if (copy_to_user(cur->mm, ubuf + done, rec, reclen) < 0) return done ? (long)done : -EFAULT;
        done += reclen;
        f->pos++;
    }
    return (long)done;
}

struct kstat {
    u64 dev, ino, nlink;
    u32 mode, uid, gid, pad0;
    u64 rdev;
    s64 size, blksize, blocks;
    u64 atime, atime_ns, mtime, mtime_ns, ctime, ctime_ns;
    s64 unused[3];
};
_Static_assert(sizeof(struct kstat) == 144, "struct stat is 144 bytes on x86-64");

static void stat_kernel(struct inode *ino, u32 kind, struct kstat *out);

long stat_fill(struct inode *ino, u32 kind, u64 ubuf) {
    struct kstat st;
    stat_kernel(ino, kind, &st);
    return copy_to_user(cur->mm, ubuf, &st, sizeof st);
}

/* statx(2)'s record, from the same facts. */
long statx_fill(struct inode *ino, u32 kind, u64 ubuf) {
    struct kstat st;
    stat_kernel(ino, kind, &st);
    u8 x[256];
    memset(x, 0, sizeof x);
    u32 mask = 0x7ff, blksize = (u32)st.blksize, nlink = (u32)st.nlink;
    u16 mode = (u16)st.mode;
    memcpy(x + 0, &mask, 4);
    memcpy(x + 4, &blksize, 4);
    memcpy(x + 16, &nlink, 4);
    memcpy(x + 28, &mode, 2);
    memcpy(x + 32, &st.ino, 8);
    memcpy(x + 40, &st.size, 8);
    memcpy(x + 48, &st.blocks, 8);
    for (int i = 0; i < 4; i++) memcpy(x + 64 + 16 * i, &st.mtime, 8); /* atime, btime, ctime, mtime */
    u32 rmaj = (u32)(st.rdev >> 8), rmin = (u32)(st.rdev & 0xff), dmaj = 0, dmin = (u32)st.dev;
    memcpy(x + 128, &rmaj, 4);
    memcpy(x + 132, &rmin, 4);
    memcpy(x + 136, &dmaj, 4);
    memcpy(x + 140, &dmin, 4);
    return copy_to_user(cur->mm, ubuf, x, sizeof x);
}

static void stat_kernel(struct inode *ino, u32 kind, struct kstat *out) {
    struct kstat st;
    memset(&st, 0, sizeof st);
    st.blksize = PAGE;
    st.nlink = 1;
    if (ino) {
        st.dev = 1;
        st.ino = ino->ino;
        st.mode = ino->mode;
        st.size = (s64)ino->size;
        st.nlink = ino->kind == I_DIR ? 2 : 1;
        st.mtime = st.atime = st.ctime = ino->mtime;
        st.blocks = (s64)((ino->size + 511) / 512);
        if (ino->kind == I_CHAR) st.rdev = ino->dev == DEV_NULL ? 0x103 : 0x105;
    } else if (kind == F_CONSOLE) {
        st.dev = 5;
        st.ino = 1;
        st.mode = S_IFCHR | 0620;
        st.rdev = 0x8800; /* 136:0, a pseudo terminal's numbers */
    } else {
        st.dev = 9;
        st.ino = kind == F_STDIN ? 2 : 3;
        st.mode = S_IFIFO | 0600;
    }
    *out = st;
}

long file_stat(struct file *f, u64 ubuf) { return stat_fill(f->kind == F_INODE ? f->ino : 0, f->kind, ubuf); }

/* rename(2) inside the writable part of the tree. */
long vfs_rename(struct inode *odir, const char *oname, struct inode *ndir, const char *nname) {
    struct inode *src = vfs_child(odir, oname, strlen(oname));
    if (!src) return -ENOENT;
    if (!odir->writable || !ndir->writable || !src->writable) return -EROFS;
    if (ndir->kind != I_DIR) return -ENOTDIR;
    u64 n = strlen(nname);
    if (n == 0 || n > 255) return n ? -ENAMETOOLONG : -ENOENT;
    if ((n == 1 && nname[0] == '.') || (n == 2 && nname[0] == '.' && nname[1] == '.')) return -EBUSY;
    for (struct inode *d = ndir; d; d = d->parent)
        if (d == src) return -EINVAL; /* a directory into itself */
    struct inode *dst = vfs_child(ndir, nname, n);
    if (dst == src) return 0;
    if (dst) {
        if (dst->kind == I_DIR && src->kind != I_DIR) return -EISDIR;
        if (dst->kind != I_DIR && src->kind == I_DIR) return -ENOTDIR;
        long r = vfs_unlink(ndir, nname, dst->kind == I_DIR);
        if (r < 0) return r;
    }
    char *name = kstrdup(nname);
    if (!name) return -ENOSPC;
    struct inode **pp = &odir->child;
    while (*pp != src) pp = &(*pp)->sibling;
    *pp = src->sibling;
    odir->nchildren--;
    kfree((void *)src->name);
    src->name = name;
    add_child(ndir, src);
    return 0;
}

long vfs_symlink(struct inode *dir, const char *name, const char *target) {
    u64 t = strlen(target);
    if (t == 0) return -ENOENT;
    if (t > 2000) return -ENAMETOOLONG;
    struct inode *ino;
    long r = vfs_create(dir, name, S_IFLNK | 0777, &ino);
    if (r < 0) return r;
    ino->kind = I_SYMLINK;
    ino->target = kstrdup(target);
    if (!ino->target) {
        vfs_unlink(dir, name, 0);
        return -ENOSPC;
    }
    ino->size = t;
    return 0;
}
