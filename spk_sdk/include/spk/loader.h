/* Loading an app image into an address space, for C guest kernels.
 * An app module is either an ELF64 x86-64 executable (mapped by its PT_LOAD
 * segments) or a flat binary (mapped read-only at SPK_APP_IMAGE_VADDR and
 * entered at its first byte, as assembly apps are built). */
#ifndef SPK_LOADER_H
#define SPK_LOADER_H

#include <stdint.h>
#include "spk/kernel.h"

#define SPK_APP_MAX_SEGMENTS 8
#define SPK_APP_MAX_FRAMES 128

/* A module as the kernel sees it: its bytes mapped read-only somewhere in
 * the kernel half, and the frames the SPK loaded it into. */
struct spk_module_view {
    const uint8_t *bytes;
    uint64_t size;
    uint64_t first_mfn;
    uint64_t pages;
};

/* What loading took: the entry point and the frames allocated for pages
 * that could not be shared with the module (writable data, bss). */
struct spk_loaded_app {
    uint64_t entry;
    uint32_t frame_count;
    uint64_t frames[SPK_APP_MAX_FRAMES];
};

/* Maps module `m` into address space `aspace` between user addresses lo and
 * hi. Read-only pages wholly backed by the file map the module's own frames
 * (shared by every app started from it); every other page gets a fresh
 * frame, filled through the kernel-half page at `scratch_va`. Returns 0 or
 * a negative SPK_E_* status, with *why naming the rule that failed. On
 * failure the frames already taken are in *out: release them after
 * destroying the space. */
long spk_app_load(long aspace, const struct spk_module_view *m, uint64_t lo, uint64_t hi, uint64_t scratch_va,
                  struct spk_loaded_app *out, const char **why);

/* Frees the frames an app's loading took (its space destroyed first).
 * Returns 0 or the first failing status. */
long spk_app_release(struct spk_loaded_app *app);

#endif /* SPK_LOADER_H */
