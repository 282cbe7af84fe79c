/* counter.c -- ring-3 app: prints "counter: 1" .. "counter: 5", yielding
 * between lines, then exits 0. Uses the `syscall` instruction (not int 0x80),
 * so rcx and r11 are clobbered by each call, as on hardware. */
#include "spk/app.h"
#include "spk/libc.h"

#define COUNT_TO 5

int main(void) {
    char line[32];
    for (int n = 1; n <= COUNT_TO; n++) {
        int len = snprintf(line, sizeof line, "counter: %d\n", n);
        spk_fast(SYS_WRITE, (uint64_t)(uintptr_t)line, (uint64_t)len, 0);
        spk_fast(SYS_YIELD, 0, 0, 0);
    }
    spk_fast(SYS_EXIT, 0, 0, 0);
    return 0;
}
