/* Kernel side of the SDK: the console and entry registration. */
#include "spk/kernel.h"
#include "spk/libc.h"

#define KPRINTF_MAX 256

int kprintf(const char *fmt, ...) {
    char line[KPRINTF_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t len = n < (int)sizeof line ? (size_t)n : sizeof line - 1;
    return (int)spk_console_write(line, len);
}

long spk_install_entries(const char **step) {
    long status;
    if ((status = spk_set_entry(SPK_ENTRY_SYSCALL, spk_syscall_entry)) < 0) {
        *step = "set_entry syscall";
        return status;
    }
    if ((status = spk_set_entry(SPK_ENTRY_TRAP, spk_trap_entry)) < 0) {
        *step = "set_entry trap";
        return status;
    }
    if ((status = spk_set_entry(SPK_ENTRY_TIMER, spk_timer_entry)) < 0) {
        *step = "set_entry timer";
        return status;
    }
    if ((status = spk_set_kernel_stack(SPK_KERNEL_STACK_TOP)) < 0) {
        *step = "set_kernel_stack";
        return status;
    }
    return 0;
}

/* Defaults for a kernel that runs no apps: each entry is weak, so a kernel
 * that does run apps defines its own. An app system call gets -1; a trap or
 * a timer upcall with no handler ends the partition, loudly. */
__attribute__((weak)) void spk_on_syscall(struct spk_app_frame *frame) { frame->rax = (uint64_t)-1; }

__attribute__((weak)) void spk_on_trap(struct spk_app_frame *frame, const struct spk_trap_info *trap) {
    kprintf("kernel: unhandled trap: vector %lu at rip %#lx\n", trap->vector, frame->rip);
    spk_exit(3);
}

__attribute__((weak)) void spk_on_timer(struct spk_app_frame *frame) { (void)frame; }
