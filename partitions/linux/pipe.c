/* pipe.c -- pipes: a 64 KiB ring of kernel pages between a read end and a
 * write end. A reader of an empty pipe waits while a writer exists (EOF
 * after); a writer waits for room while a reader exists (EPIPE after, and
 * SIGPIPE, see syscall.c). Writes of up to PIPE_BUF bytes are atomic. Every
 * change wakes the waiting processes, which try their call again.
 */
#include "linux.h"

#define PIPE_PAGES 16
#define PIPE_CAP (PIPE_PAGES * PAGE)
#define PIPE_BUF 4096

struct pipe {
    u8 *page[PIPE_PAGES];
    u64 head, count;
    u32 readers, writers;
};

long pipe_create(struct file **rd, struct file **wr) {
    struct pipe *p = kmalloc(sizeof *p);
    if (!p) return -ENFILE;
    for (int i = 0; i < PIPE_PAGES; i++) {
        if (!(p->page[i] = kpage())) {
            for (int k = 0; k < i; k++) kpage_free(p->page[k]);
            kfree(p);
            return -ENFILE;
        }
    }
    struct file *r = file_new(F_PIPE_R, O_RDONLY), *w = file_new(F_PIPE_W, O_WRONLY);
    if (!r || !w) {
        for (int k = 0; k < PIPE_PAGES; k++) kpage_free(p->page[k]);
        kfree(p);
        kfree(r);
        kfree(w);
        return -ENFILE;
    }
    r->pipe = w->pipe = p;
    p->readers = p->writers = 1;
    *rd = r;
    *wr = w;
    return 0;
}

long pipe_read(struct file *f, u64 ubuf, u64 len) {
    struct pipe *p = f->pipe;
    if (len == 0) return 0;
    if (p->count == 0) {
        if (p->writers == 0) return 0;
        return (f->flags & O_NONBLOCK) ? -EAGAIN : -EWOULDBLOCK_RETRY;
    }
    u64 n = len < p->count ? len : p->count, done = 0;
    while (done < n) {
        u64 at = (p->head + done) % PIPE_CAP, m = PAGE - (at & PAGE_MASK);
        if (m > n - done) m = n - done;
        if (copy_to_user(cur->mm, ubuf + done, p->page[at >> 12] + (at & PAGE_MASK), m) < 0)
            return done ? (long)done : -EFAULT;
        done += m;
    }
    p->head = (p->head + done) % PIPE_CAP;
    p->count -= done;
    wake_all();
    return (long)done;
}

long pipe_write(struct file *f, u64 ubuf, u64 len) {
    struct pipe *p = f->pipe;
    if (p->readers == 0) return -EPIPE;
    if (len == 0) return 0;
    u64 room = PIPE_CAP - p->count;
    if (room == 0 || (len <= PIPE_BUF && room < len))
        return (f->flags & O_NONBLOCK) ? -EAGAIN : -EWOULDBLOCK_RETRY;
    u64 n = len < room ? len : room, done = 0;
    while (done < n) {
        u64 at = (p->head + p->count + done) % PIPE_CAP, m = PAGE - (at & PAGE_MASK);
        if (m > n - done) m = n - done;
        if (copy_from_user(cur->mm, p->page[at >> 12] + (at & PAGE_MASK), ubuf + done, m) < 0) break;
        done += m;
    }
    if (done == 0) return -EFAULT;
    p->count += done;
    wake_all();
    return (long)done;
}

void pipe_close(struct file *f) {
    struct pipe *p = f->pipe;
    if (f->kind == F_PIPE_R) p->readers--;
    else p->writers--;
    wake_all();
    if (p->readers == 0 && p->writers == 0) {
        for (int k = 0; k < PIPE_PAGES; k++) kpage_free(p->page[k]);
        kfree(p);
    }
}

/* poll(2) readiness of a pipe end: POLLIN 1, POLLOUT 4, POLLERR 8, POLLHUP 16. */
u32 pipe_poll(struct file *f) {
    struct pipe *p = f->pipe;
    if (f->kind == F_PIPE_R) return (p->count ? 1u : 0u) | (p->writers ? 0u : 16u);
    return p->readers ? (PIPE_CAP - p->count >= PIPE_BUF ? 4u : 0u) : 8u;
}
