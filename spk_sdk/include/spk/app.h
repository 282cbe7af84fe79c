/* Apps of the reference kernel: its system calls (docs/guest.md), through
 * `int 0x80` (spk_sys*) or the `syscall` instruction (spk_fast*: rcx and r11
 * are clobbered, as on hardware). Number in rax, arguments in rdi, rsi, rdx,
 * result in rax, -1 on error. */
#ifndef SPK_APP_H
#define SPK_APP_H

#include <stddef.h>
#include <stdint.h>

#define SYS_WRITE 0
#define SYS_EXIT 1
#define SYS_YIELD 2
#define SYS_GETPID 3
#define SYS_SLEEP 4
#define SYS_WRITE_MAX 4096

static inline long spk_sys(long nr, uint64_t a, uint64_t b, uint64_t c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "memory");
    return r;
}

static inline long spk_fast(long nr, uint64_t a, uint64_t b, uint64_t c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

static inline long sys_write(const void *buf, size_t len) {
    return spk_sys(SYS_WRITE, (uint64_t)(uintptr_t)buf, len, 0);
}
__attribute__((noreturn)) static inline void sys_exit(long code) {
    spk_sys(SYS_EXIT, (uint64_t)code, 0, 0);
    __builtin_unreachable();
}
static inline long sys_yield(void) { return spk_sys(SYS_YIELD, 0, 0, 0); }
static inline long sys_getpid(void) { return spk_sys(SYS_GETPID, 0, 0, 0); }
static inline long sys_sleep(uint64_t ticks) { return spk_sys(SYS_SLEEP, ticks, 0, 0); }

/* Formatted output through write(): one write per call. */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int puts(const char *s);

/* The app's entry point, called by spk_sdk/crt/app_start.S; its return
 * value is the exit code. */
int main(void);

#endif /* SPK_APP_H */
