/* SPDX-License-Identifier: Apache-2.0
 * linux_probe: a static Linux x86-64 program (glibc, gcc -static) the Linux
 * personality runs unchanged, built by fuzz/campaigns/linux_probe.py.
 *
 *   linux_probe selftest DIR   libc start-up, stdio, malloc, files in DIR,
 *                              pipe + fork + wait4, execve of itself; prints
 *                              the same bytes natively and under SPK
 *                              (tests/test_linux_diff.py), exits 3
 *   linux_probe child WORD     what selftest's execve runs: prints WORD
 *   linux_probe getpid N       N getpid system calls, nothing else (spk bench)
 *   linux_probe script         system calls read from stdin, then exit
 *   linux_probe serve          system calls from a mailbox the host writes
 *                              (fuzz/campaigns/linux.py), batch after batch
 *
 * A script record is 56 bytes, little-endian: u32 number, u32 flags, six u64
 * arguments. Flag bit i (0-5) makes argument i a pointer into a scratch
 * buffer of this process (scratch + argument % SCRATCH), so calls mix valid
 * buffers with the hostile words the campaign draws. A fork in a script
 * forks for real: parent and child both go on with the rest of it. A result
 * below -4095 is no Linux answer: the probe prints "probe: bad return" and
 * the campaign reports it (linux_errno_range).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SCRATCH 8192
#define MAX_SCRIPT (64 * 1024)

struct record {
    uint32_t number;
    uint32_t flags;
    uint64_t args[6];
};

static long raw_syscall(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* The mailbox of serve mode: one page of .bss (a static binary is not
 * position independent: the host finds it by its symbol). The host writes
 * records and count, then bumps seq (the probe looks every 100 us of virtual
 * time, asleep in between); the probe runs them, stores each
 * result and sets ack = seq. A child forked by a batch clears magic in its
 * copy and exits at the end of the batch, so one mailbox stays live. */
#define MB_MAGIC 0x53504b2d4c4e5850ull /* "PXNL-KPS" */
#define MB_MAX 32
struct mailbox {
    volatile uint64_t magic, seq, ack, count;
    struct record records[MB_MAX];
    volatile int64_t results[MB_MAX];
};
struct mailbox probe_mailbox __attribute__((aligned(4096)));

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static int selftest(const char *dir, const char *self) {
    printf("probe: %s %d %x %5.2f|%-6s|\n", "start", 42, 0xbeef, 3.14159, "pad");
    /* malloc: small blocks (brk) and a large one (mmap) */
    int *numbers = malloc(1000 * sizeof(int));
    char *big = malloc(1 << 20);
    if (!numbers || !big) return 10;
    for (int i = 0; i < 1000; i++) numbers[i] = (i * 7919) % 1000;
    qsort(numbers, 1000, sizeof(int), cmp_int);
    memset(big, 'x', 1 << 20);
    unsigned sum = 0;
    for (int i = 0; i < 1 << 20; i += 4096) sum += (unsigned char)big[i];
    printf("sorted %d %d %d, big sum %u\n", numbers[0], numbers[500], numbers[999], sum);
    free(big);
    free(numbers);
    /* files: write, reopen, read, fstat, lseek */
    char path[256];
    snprintf(path, sizeof path, "%s/probe.txt", dir);
    FILE *out = fopen(path, "w");
    if (!out) return 11;
    for (int i = 0; i < 100; i++) fprintf(out, "line %d\n", i);
    fclose(out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 12;
    struct stat st;
    if (fstat(fd, &st) != 0) return 13;
    char buf[16] = {0};
    lseek(fd, 7 * 10, SEEK_SET);
    ssize_t got = read(fd, buf, 8);
    close(fd);
    printf("file size %ld, at 70: %.*s", (long)st.st_size, (int)got, buf);
    printf("missing: %s\n", open("/no/such/file", O_RDONLY) < 0 && errno == ENOENT ? "ENOENT" : "?");
    /* pipe + fork + wait4 */
    fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0) return 14;
    pid_t child = fork();
    if (child < 0) return 15;
    if (child == 0) {
        close(fds[0]);
        const char msg[] = "through the pipe";
        write(fds[1], msg, sizeof msg - 1);
        _exit(7);
    }
    close(fds[1]);
    char piped[64] = {0};
    ssize_t n = read(fds[0], piped, sizeof piped - 1);
    int status = 0;
    waitpid(child, &status, 0);
    printf("child said %.*s, exited %d\n", (int)n, piped, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    /* execve of itself in a child */
    fflush(stdout);
    child = fork();
    if (child == 0) {
        char *argv[] = {(char *)self, "child", "exec-ok", NULL};
        char *envp[] = {"PROBE=1", NULL};
        execve(self, argv, envp);
        _exit(99);
    }
    waitpid(child, &status, 0);
    printf("exec child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("probe: end\n");
    return 3;
}

static long run_record(const struct record *r, uint8_t *scratch);

static int script(void) {
    static uint8_t text[MAX_SCRIPT];
    static uint8_t scratch[SCRATCH];
    size_t size = 0;
    for (;;) {
        long got = raw_syscall(0, 0, (long)(text + size), (long)(sizeof text - size), 0, 0, 0);
        if (got <= 0) break;
        size += (size_t)got;
        if (size == sizeof text) break;
    }
    for (size_t at = 0; at + sizeof(struct record) <= size; at += sizeof(struct record)) {
        struct record r;
        memcpy(&r, text + at, sizeof r);
        run_record(&r, scratch);
    }
    raw_syscall(231, 0, 0, 0, 0, 0, 0);
    return 0;
}

static long run_record(const struct record *r, uint8_t *scratch) {
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = (r->flags >> i) & 1 ? (long)(scratch + r->args[i] % SCRATCH) : (long)r->args[i];
    long ret = raw_syscall(r->number, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (ret < -4095) {
        char line[96];
        int len = snprintf(line, sizeof line, "probe: bad return nr=%u ret=%ld\n", r->number, ret);
        raw_syscall(1, 2, (long)line, len, 0, 0, 0);
    }
    return ret;
}

static __attribute__((noreturn)) void serve(void) {
    static uint8_t scratch[SCRATCH];
    struct mailbox *mb = &probe_mailbox;
    long leader = raw_syscall(39, 0, 0, 0, 0, 0, 0);
    mb->seq = mb->ack = 0;
    mb->magic = MB_MAGIC;
    for (;;) {
        while (mb->seq == mb->ack) { /* poll every 100 us of virtual time, asleep in between */
            struct timespec nap = {0, 100000};
            raw_syscall(35, (long)&nap, 0, 0, 0, 0, 0);
        }
        uint64_t count = mb->count < MB_MAX ? mb->count : MB_MAX;
        for (uint64_t i = 0; i < count; i++) mb->results[i] = run_record(&mb->records[i], scratch);
        if (raw_syscall(39, 0, 0, 0, 0, 0, 0) != leader) { /* a child of this batch */
            mb->magic = 0;
            raw_syscall(231, 0, 0, 0, 0, 0, 0);
        }
        mb->ack = mb->seq;
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "selftest") == 0) return selftest(argv[2], argv[0]);
    if (argc >= 3 && strcmp(argv[1], "child") == 0) {
        printf("exec'd child: %s %s\n", argv[2], getenv("PROBE") ? getenv("PROBE") : "(no PROBE)");
        return 5;
    }
    if (argc >= 3 && strcmp(argv[1], "getpid") == 0) {
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++) raw_syscall(39, 0, 0, 0, 0, 0, 0);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "script") == 0) return script();
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) serve();
    fprintf(stderr, "usage: linux_probe selftest DIR | child WORD | getpid N | script | serve\n");
    return 2;
}
