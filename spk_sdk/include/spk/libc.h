/* The freestanding libc subset every C guest shares (spk_sdk/lib). */
#ifndef SPK_LIBC_H
#define SPK_LIBC_H

#include <stdarg.h>
#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* printf-style formatting: %d %i %u %x %X %o %c %s %p %%, flags '-' '0' '#',
 * a width, a precision for %s, and the length modifiers hh h l ll z. Returns the length the
 * whole output would have (as C99 does), writes at most size-1 bytes plus
 * a NUL. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif /* SPK_LIBC_H */
