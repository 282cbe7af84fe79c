/* The two ring-3 apps of pcref (one program, two address spaces). Linked
 * into the user pages of the kernel image (the bare PC linker script puts
 * files named user*.c there): no globals, only the stack, the info page
 * the kernel writes and a heap page the kernel maps on the first touch.
 *
 * Each slice: do the slice's work, print one line as its last visible act,
 * then spin at ring 3 until the timer takes the CPU away and later hands it
 * back with the next slice number. The output does not depend on how fast
 * the host is: the kernel switches only after the running app has printed
 * its line for the slice, and nothing visible follows the line in a slice.
 * Each line shows CS, SS and what pushf shows at ring 3 (IOPL, IF).
 * App A executes `cli` in its second slice (a #GP the kernel skips); app B
 * reads kernel memory in its third (a #PF the kernel answers by ending B,
 * before B prints that slice's line). */
#include "pcref.h"
#include "spk/libc.h"

static long sys_write(const char *buf, uint64_t len) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(SYS_WRITE), "D"(buf), "S"(len) : "rcx", "r11", "memory");
    return ret;
}

__attribute__((noreturn)) static void sys_exit(long status) {
    __asm__ volatile("syscall" : : "a"(SYS_EXIT), "D"(status) : "rcx", "r11", "memory");
    __builtin_unreachable();
}

void app_main(void) {
    volatile const struct app_info *info = (volatile const struct app_info *)APP_INFO;
    char *buf = (char *)APP_HEAP; /* not mapped yet: the first store is a page fault */
    char name = (char)info->name;
    for (uint64_t k = 1; k <= APP_SLICES; k++) {
        /* first what the slice does, then its line: the kernel switches only
         * after the line, so nothing visible may follow it in the slice */
        if (name == 'A' && k == 2) __asm__ volatile("cli"); /* privileged at ring 3: #GP */
        if (name == 'B' && k == 3) (void)*(volatile uint8_t *)0x100000; /* kernel page: #PF */
        uint16_t cs, ss;
        uint64_t flags;
        __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
        __asm__ volatile("pushfq; pop %0" : "=r"(flags)); /* at ring 3: IOPL 0 and IF 1, as a PC shows them */
        int n = snprintf(buf, 128, "app %c: slice %lu of %d (cs %#x ss %#x iopl %lu if %lu)\n", name, k, APP_SLICES,
                         cs, ss, (flags >> 12) & 3, (flags >> 9) & 1);
        if (sys_write(buf, (uint64_t)n) != n) sys_exit(2);
        while (info->slice == k) { /* the timer ends the slice */
        }
    }
    sys_exit(0);
}
