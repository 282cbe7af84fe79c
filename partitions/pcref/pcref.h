/* pcref: what the kernel and its two ring-3 apps share (addresses of the
 * app region, system call numbers, the per-app info page). Plain PC kernel:
 * nothing here knows of SPK or hypercalls. */
#ifndef PCREF_H
#define PCREF_H

#include <stdint.h>

/* Each app's own address space maps, besides the kernel's identity map
 * (supervisor only, but for the shared user code pages):
 *   APP_INFO       one page, user read-only: struct app_info, written by the kernel
 *   APP_STACK_TOP  one stack page below it, user read-write
 *   APP_HEAP       one page mapped on the first touch (a demand page fault)  */
#define APP_BASE 0x40000000UL
#define APP_INFO APP_BASE
#define APP_STACK_TOP (APP_BASE + 0x2000UL)
#define APP_HEAP (APP_BASE + 0x10000UL)
#define APP_END (APP_BASE + 0x200000UL)

#define APP_SLICES 4 /* lines each app prints, one per time slice */

#define SYS_WRITE 0 /* rdi = buffer, rsi = length; rax = length or -1 */
#define SYS_EXIT 1  /* rdi = status; does not return */

struct app_info {
    uint64_t slice; /* the number of the time slice the app is in (1, 2, ...) */
    uint64_t name;  /* 'A' or 'B' */
};

void app_main(void); /* user_app.c: each app's code, shared by both */

#endif /* PCREF_H */
