/* Hypercalls from a guest kernel at CPL 2: `int 0x82`, number in rax,
 * arguments in rdi, rsi, rdx, r10, r8 (docs/abi.md). A hypercall changes only
 * rax; the result is >= 0, or a negative SPK_E_* status. */
#ifndef SPK_HYPERCALL_H
#define SPK_HYPERCALL_H

#include <stdint.h>
#include <stddef.h>
#include "spk/abi.h"

#define SPK_HC_ASM "int %[vector]"
#define SPK_HC_VECTOR [vector] "i"(SPK_HYPERCALL_VECTOR)

static inline long spk_hc0(long nr) {
    long r;
    __asm__ volatile(SPK_HC_ASM : "=a"(r) : "a"(nr), SPK_HC_VECTOR : "memory");
    return r;
}

static inline long spk_hc1(long nr, uint64_t a) {
    long r;
    __asm__ volatile(SPK_HC_ASM : "=a"(r) : "a"(nr), "D"(a), SPK_HC_VECTOR : "memory");
    return r;
}

static inline long spk_hc2(long nr, uint64_t a, uint64_t b) {
    long r;
    __asm__ volatile(SPK_HC_ASM : "=a"(r) : "a"(nr), "D"(a), "S"(b), SPK_HC_VECTOR : "memory");
    return r;
}

static inline long spk_hc3(long nr, uint64_t a, uint64_t b, uint64_t c) {
    long r;
    __asm__ volatile(SPK_HC_ASM : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c), SPK_HC_VECTOR : "memory");
    return r;
}

static inline long spk_hc4(long nr, uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    long r;
    register uint64_t r10 __asm__("r10") = d;
    __asm__ volatile(SPK_HC_ASM : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), SPK_HC_VECTOR : "memory");
    return r;
}

static inline long spk_hc5(long nr, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e) {
    long r;
    register uint64_t r10 __asm__("r10") = d;
    register uint64_t r8 __asm__("r8") = e;
    __asm__ volatile(SPK_HC_ASM : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), SPK_HC_VECTOR
                     : "memory");
    return r;
}

#define SPK_PTR(p) ((uint64_t)(uintptr_t)(p))

/* One typed wrapper per hypercall, in the order of docs/abi.md. */
static inline long spk_version(void) { return spk_hc0(SPK_HC_VERSION); }
static inline long spk_console_write(const void *buf, size_t len) {
    return spk_hc2(SPK_HC_CONSOLE_WRITE, SPK_PTR(buf), len);
}
static inline long spk_set_entry(long kind, void (*entry)(void)) {
    return spk_hc2(SPK_HC_SET_ENTRY, (uint64_t)kind, SPK_PTR(entry));
}
static inline long spk_set_kernel_stack(uint64_t top) { return spk_hc1(SPK_HC_SET_KERNEL_STACK, top); }
static inline long spk_aspace_create(void) { return spk_hc0(SPK_HC_ASPACE_CREATE); }
static inline long spk_aspace_destroy(long handle) { return spk_hc1(SPK_HC_ASPACE_DESTROY, (uint64_t)handle); }
static inline long spk_map(long handle, uint64_t va, uint64_t mfn, uint64_t flags) {
    return spk_hc4(SPK_HC_MAP, (uint64_t)handle, va, mfn, flags);
}
static inline long spk_unmap(long handle, uint64_t va) { return spk_hc2(SPK_HC_UNMAP, (uint64_t)handle, va); }
static inline long spk_aspace_switch(long handle) { return spk_hc1(SPK_HC_ASPACE_SWITCH, (uint64_t)handle); }
/* Enters an app; returns only on failure (a negative status). */
static inline long spk_iret(long handle, const void *frame) {
    return spk_hc2(SPK_HC_IRET, (uint64_t)handle, SPK_PTR(frame));
}
static inline long spk_yield(void) { return spk_hc0(SPK_HC_YIELD); }
static inline long spk_block(void) { return spk_hc0(SPK_HC_BLOCK); }
__attribute__((noreturn)) static inline void spk_exit(long code) {
    spk_hc1(SPK_HC_EXIT, (uint64_t)code);
    __builtin_unreachable();
}
static inline long spk_timer_set(uint64_t deadline) { return spk_hc1(SPK_HC_TIMER_SET, deadline); }
static inline uint64_t spk_time_now(void) { return (uint64_t)spk_hc0(SPK_HC_TIME_NOW); }
static inline long spk_frame_alloc(void) { return spk_hc0(SPK_HC_FRAME_ALLOC); }
static inline long spk_frame_free(uint64_t mfn) { return spk_hc1(SPK_HC_FRAME_FREE, mfn); }
static inline long spk_measure(const void *ptr, size_t len, const char *name, size_t name_len) {
    return spk_hc4(SPK_HC_MEASURE, SPK_PTR(ptr), len, SPK_PTR(name), name_len);
}
static inline long spk_attest(const void *nonce, size_t nonce_len, void *out, size_t out_len) {
    return spk_hc4(SPK_HC_ATTEST, SPK_PTR(nonce), nonce_len, SPK_PTR(out), out_len);
}
static inline long spk_port_open(const char *name, size_t name_len) {
    return spk_hc2(SPK_HC_PORT_OPEN, SPK_PTR(name), name_len);
}
static inline long spk_port_send(long port, const void *msg, size_t len) {
    return spk_hc3(SPK_HC_PORT_SEND, (uint64_t)port, SPK_PTR(msg), len);
}
static inline long spk_port_receive(long port, void *buf, size_t len) {
    return spk_hc3(SPK_HC_PORT_RECEIVE, (uint64_t)port, SPK_PTR(buf), len);
}
static inline long spk_port_status(long port) { return spk_hc1(SPK_HC_PORT_STATUS, (uint64_t)port); }
static inline long spk_raise_error(long code) { return spk_hc1(SPK_HC_RAISE_ERROR, (uint64_t)code); }
static inline long spk_part_list(void *out, size_t max_entries) {
    return spk_hc2(SPK_HC_PART_LIST, SPK_PTR(out), max_entries);
}
static inline long spk_part_query(long id, uint64_t out[SPK_PART_QUERY_WORDS]) {
    return spk_hc2(SPK_HC_PART_QUERY, (uint64_t)id, SPK_PTR(out));
}
static inline long spk_part_control(long id, long op) {
    return spk_hc2(SPK_HC_PART_CONTROL, (uint64_t)id, (uint64_t)op);
}

#endif /* SPK_HYPERCALL_H */
