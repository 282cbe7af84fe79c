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
