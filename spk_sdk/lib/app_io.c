/* App side of the SDK: formatted output through the write system call. */
#include "spk/app.h"
#include "spk/libc.h"

#define PRINTF_MAX 512

int printf(const char *fmt, ...) {
    char text[PRINTF_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len = n < (int)sizeof text ? (size_t)n : sizeof text - 1;
    return (int)sys_write(text, len);
}

int puts(const char *s) {
    size_t len = strlen(s);
    if (sys_write(s, len) < 0) return -1;
    return (int)sys_write("\n", 1);
}
