/* fvfuzz: what the kernel's files share (machine layout, hardware access,
 * the recovery harness in boot.S, the log). Plain PC kernel: nothing here
 * knows of SPK or hypercalls. */
#ifndef FVFUZZ_H
#define FVFUZZ_H

#include <stdint.h>

#include "pc.h"

/* ---- the machine as the fuzzer lays it out ---- */
#define TSS2_SEL 0x40 /* a second, available TSS: a random ltr may load it */
#define GATE_SEL 0x50 /* a 64-bit call gate, DPL 3, to gate_target in the kernel's CS (DPL 0) */
#define LDT_SEL 0x60
#define JUNK_SEL 0x70 /* 0x70-0xF8: descriptors the fuzzer rewrites with random bits */
#define GDT_ENTRIES 32

#define PIT_CH0 0x40
#define PIT_CMD 0x43

#define MAP_END 0x400000UL       /* the kernel identity-maps its first 4 MiB: all it assumes it has */
#define SCRATCH 0x300000UL       /* 3 MiB - 4 MiB: pages random mappings may write */
#define SCRATCH_PAGES 192        /* stays clear of the top pages (where a loader may keep its tables) */
#define FUZZ_SLOTS 8             /* PML4 entries 1-8: the fuzzer's own address space */


#define PTE_PWT 0x8UL
#define PTE_PCD 0x10UL
#define PTE_A 0x20UL
#define PTE_D 0x40UL
#define PTE_G 0x100UL

/* ---- hardware access: pc.h's helpers, and CR8 ---- */
#define READ_CR8()                                                                                                     \
    ({                                                                                                                 \
        uint64_t v_;                                                                                                   \
        __asm__ volatile("mov %%cr8, %0" : "=r"(v_));                                                                   \
        v_;                                                                                                            \
    })
#define WRITE_CR8(v) __asm__ volatile("mov %0, %%cr8" : : "r"((uint64_t)(v)) : "memory")

/* ---- boot.S ---- */
int fz_try(void (*fn)(void *), void *arg);
void fz_iretq(const uint64_t frame[5]);
void fz_lretq(const uint64_t frame[4]);
void fz_sysretq(uint64_t rip, uint64_t rflags, uint64_t rsp);
void fz_callgate(void);
void fz_int(unsigned n);
extern char isr_base[], syscall_entry[], gate_target[], fz_back[];
extern char user_stubs[], user_int_table[];
extern uint64_t fz_landed, fz_syscall_seen;
#define USER_STUBS 12

/* ---- kernel.c ---- */
struct trap_record {
    uint64_t count, vector, error, cr2, cs, irqs;
};
extern struct trap_record last_trap;
extern uint64_t kernel_pml4_phys;
extern uint64_t gdt[GDT_ENTRIES];
extern struct pc_table_reg good_gdtr, good_idtr;
extern uint8_t user_stack[PC_PAGE];
extern uint8_t alt_stack[2 * PC_PAGE];
extern uint8_t ret_page[PC_PAGE];
extern uint8_t io_buffer[PC_PAGE];

void pic_setup(uint8_t master_base, uint8_t slave_base, uint8_t master_mask, uint8_t slave_mask);
void pit_setup(uint8_t command, uint16_t divisor);
void tss_restore(void);

/* ---- the PRNG (xorshift64*), seeded from PC_COM1 ---- */
uint64_t rnd(void);
static inline uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }
static inline int chance(unsigned percent) { return below(100) < percent; }

/* ---- paging.c ---- */
void paging_init(void);
const char *op_pt_map(void);
const char *op_pt_unmap(void);
const char *op_pt_selfref(void);
const char *op_pt_live(void);
const char *op_pt_altroot(void);
uint64_t fuzz_root(void);

/* ---- ops.c ---- */
void run_ops(unsigned count, int fatal_end);
extern char result[160];
extern int unsafe, reach_beyond, gate;
const char *trap_result(int trapped);

#endif /* FVFUZZ_H */
