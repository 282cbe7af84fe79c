#include "facts.h"

/* FNV-1a: a small loop for the kernel to spend its time on. */
uint64_t checksum(const uint8_t *bytes, size_t len) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
    return hash;
}
