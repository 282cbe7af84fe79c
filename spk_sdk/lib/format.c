/* vsnprintf for guests: the conversions kernels and apps print with. */
#include <stdint.h>
#include "spk/libc.h"

struct out {
    char *buf;
    size_t size;
    size_t len; /* what the whole output would take */
};

static void put(struct out *o, char c) {
    if (o->len + 1 < o->size) o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, int left, char pad) {
    size_t fill = width > 0 && (size_t)width > n ? (size_t)width - n : 0;
    if (!left)
        while (fill--) put(o, pad);
    for (size_t i = 0; i < n; i++) put(o, s[i]);
    if (left)
        while (fill--) put(o, ' ');
}

static void put_number(struct out *o, uint64_t v, int negative, unsigned base, int upper, int width, int left,
                       char pad) {
    char digits[24];
    const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n++] = set[v % base];
        v /= base;
    } while (v);
    if (negative) {
        if (pad == '0') {
            put(o, '-');
            width = width > 0 ? width - 1 : 0;
        } else {
            digits[sizeof digits - 1 - n++] = '-';
        }
    }
    put_padded(o, digits + sizeof digits - n, n, width, left, pad);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        int left = 0, width = 0, longs = 0, alternate = 0;
        char pad = ' ';
        for (fmt++; *fmt == '-' || *fmt == '0' || *fmt == '#'; fmt++) {
            if (*fmt == '-') left = 1;
            else if (*fmt == '#') alternate = 1;
            else pad = '0';
        }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        int precision = -1; /* only strings honour it: at most that many bytes */
        if (*fmt == '.')
            for (precision = 0, fmt++; *fmt >= '0' && *fmt <= '9'; fmt++) precision = precision * 10 + (*fmt - '0');
        for (; *fmt == 'l' || *fmt == 'z' || *fmt == 'h'; fmt++)
            if (*fmt != 'h') longs = 2; /* hh and h promote to int: read as int */
        if (left) pad = ' ';
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
            uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;
            put_number(&o, mag, v < 0, 10, 0, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            uint64_t v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            unsigned base = *fmt == 'u' ? 10 : *fmt == 'o' ? 8 : 16;
            if (alternate && base == 16) { /* "0x" as glibc prints it, but for 0 too: addresses read alike */
                put(&o, '0');
                put(&o, *fmt == 'X' ? 'X' : 'x');
                width = width > 2 ? width - 2 : 0;
            } else if (alternate && base == 8 && v) {
                put(&o, '0');
            }
            put_number(&o, v, 0, base, *fmt == 'X', width, left, pad);
            break;
        }
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_number(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), 0, 16, 0, width > 2 ? width - 2 : 0, left, pad);
            break;
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_padded(&o, &c, 1, width, left, ' ');
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            put_padded(&o, s, precision < 0 ? strlen(s) : strnlen(s, (size_t)precision), width, left, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        case '\0':
            fmt--; /* a lone '%' at the end: print nothing more */
            break;
        default: /* unknown conversion: print it as written */
            put(&o, '%');
            put(&o, *fmt);
        }
    }
    if (size) buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
