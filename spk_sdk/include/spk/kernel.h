/* What a C guest kernel sees of the SPK: the start-info page, the frames the
 * SPK pushes on entry, the generic entry stubs and the kernel console.
 * Layouts are checked against spk/abi.py's numbers at compile time. */
#ifndef SPK_KERNEL_H
#define SPK_KERNEL_H

#include <stddef.h>
#include <stdint.h>
#include "spk/abi.h"
#include "spk/hypercall.h"

/* One boot module (an app image, loaded by the SPK into contiguous frames). */
struct spk_module {
    uint64_t first_mfn;
    uint64_t pages;
    uint64_t bytes;
    uint64_t reserved;
    char name[32]; /* NUL padded */
};

struct spk_start_info {
    uint64_t magic;
    uint64_t abi_version;
    uint64_t partition_id;
    uint64_t module_count;
    uint64_t quota_frames;
    uint64_t free_frames;
    char name[32];
    uint8_t reserved[SPK_SI_MODULES - SPK_SI_NAME - 32];
    struct spk_module modules[SPK_SI_MAX_MODULES];
};

_Static_assert(offsetof(struct spk_start_info, module_count) == SPK_SI_MODULE_COUNT, "start info drifted");
_Static_assert(offsetof(struct spk_start_info, name) == SPK_SI_NAME, "start info drifted");
_Static_assert(offsetof(struct spk_start_info, modules) == SPK_SI_MODULES, "start info drifted");
_Static_assert(sizeof(struct spk_module) == SPK_SI_MODULE_SIZE, "module entry drifted");
_Static_assert(offsetof(struct spk_module, name) == SPK_SIM_NAME, "module entry drifted");
_Static_assert(offsetof(struct spk_module, bytes) == SPK_SIM_BYTES, "module entry drifted");

/* An app's registers in the order HC_IRET takes them (docs/abi.md). */
struct spk_app_frame {
    uint64_t rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};
_Static_assert(sizeof(struct spk_app_frame) == SPK_APP_FRAME_SIZE, "app frame drifted");

/* What the trap entry adds before the iret frame. */
struct spk_trap_info {
    uint64_t vector;
    uint64_t error;
    uint64_t address; /* CR2 for #PF, else 0 */
};
_Static_assert(sizeof(struct spk_trap_info) + SPK_IRET_FRAME_SIZE == SPK_TRAP_FRAME_SIZE, "trap frame drifted");

/* Entry stubs (spk_sdk/crt/kernel_entries.S). Each saves the interrupted
 * app's registers into *spk_current_frame, then calls the kernel's handler
 * on an aligned stack. A handler that returns resumes that app natively
 * (iretq) with the frame's registers, rip, rflags and rsp; one that does not
 * return must enter an app with spk_iret. */
extern struct spk_app_frame *spk_current_frame;
void spk_syscall_entry(void);
void spk_trap_entry(void);
void spk_timer_entry(void);

/* The kernel defines these three. */
void spk_on_syscall(struct spk_app_frame *frame);
void spk_on_trap(struct spk_app_frame *frame, const struct spk_trap_info *trap);
void spk_on_timer(struct spk_app_frame *frame);

/* Registers the three entries and the kernel stack (the boot stack, reused:
 * the SPK never nests entries). Returns 0 or the first failing status, and
 * names the failing step in *step. */
long spk_install_entries(const char **step);

/* Kernel console: one line per call is the convention (the SPK prefixes
 * each line with the partition's name). */
int kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The kernel's entry point, called by spk_sdk/crt/kernel_start.S with the
 * start-info page; returning from it exits the partition with that code. */
long kmain(const struct spk_start_info *si);

#endif /* SPK_KERNEL_H */
