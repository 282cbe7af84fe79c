/* App loader shared by C guest kernels (spk/loader.h). Every field of an
 * ELF file is checked before it is used: the module is the app's, and a
 * kernel must not trust it. */
#include "spk/loader.h"
#include "spk/libc.h"

#define PAGE SPK_PAGE_SIZE
#define PAGE_MASK (SPK_PAGE_SIZE - 1)

#define PT_LOAD 1
#define PF_X 1
#define PF_W 2
#define EM_X86_64 62
#define ET_EXEC 2

struct elf64_header {
    uint8_t ident[16];
    uint16_t type, machine;
    uint32_t version;
    uint64_t entry, phoff, shoff;
    uint32_t flags;
    uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

struct elf64_phdr {
    uint32_t type, flags;
    uint64_t offset, vaddr, paddr, filesz, memsz, align;
};

static int is_elf(const struct spk_module_view *m) {
    return m->size >= 4 && memcmp(m->bytes, "\177ELF", 4) == 0;
}

static long fail(const char **why, const char *rule, long status) {
    *why = rule;
    return status;
}

/* A fresh zeroed frame, mapped at va with flags, holding `len` bytes of
 * `src` at `offset` in the page. */
static long fresh_page(long aspace, uint64_t va, uint64_t flags, const uint8_t *src, uint64_t offset, uint64_t len,
                       uint64_t scratch_va, struct spk_loaded_app *out, const char **why) {
    if (out->frame_count >= SPK_APP_MAX_FRAMES) return fail(why, "more private pages than the loader keeps", SPK_E_NO_MEMORY);
    long mfn = spk_frame_alloc();
    if (mfn < 0) return fail(why, "frame_alloc", mfn);
    out->frames[out->frame_count++] = (uint64_t)mfn;
    if (len) {
        long status = spk_map(0, scratch_va, (uint64_t)mfn, SPK_MAP_WRITE | SPK_MAP_NO_EXEC);
        if (status < 0) return fail(why, "map of the scratch page", status);
        memcpy((uint8_t *)(uintptr_t)scratch_va + offset, src, len);
        status = spk_unmap(0, scratch_va);
        if (status < 0) return fail(why, "unmap of the scratch page", status);
    }
    long status = spk_map(aspace, va, (uint64_t)mfn, flags);
    return status < 0 ? fail(why, "map of a private page", status) : 0;
}

static long load_flat(long aspace, const struct spk_module_view *m, uint64_t lo, uint64_t hi,
                      struct spk_loaded_app *out, const char **why) {
    if (m->pages == 0 || SPK_APP_IMAGE_VADDR < lo || SPK_APP_IMAGE_VADDR + m->pages * PAGE > hi)
        return fail(why, "module page count", SPK_E_INVALID_ARGUMENT);
    for (uint64_t k = 0; k < m->pages; k++) {
        long status = spk_map(aspace, SPK_APP_IMAGE_VADDR + k * PAGE, m->first_mfn + k, SPK_MAP_USER);
        if (status < 0) return fail(why, "map of an image page", status);
    }
    out->entry = SPK_APP_IMAGE_VADDR;
    return 0;
}

static long check_segment(const struct spk_module_view *m, const struct elf64_phdr *ph, uint64_t lo, uint64_t hi,
                          const char **why) {
    if (ph->filesz > ph->memsz) return fail(why, "elf segment larger in the file than in memory", SPK_E_INVALID_ARGUMENT);
    if (ph->offset > m->size || ph->filesz > m->size - ph->offset)
        return fail(why, "elf segment beyond the end of the file", SPK_E_INVALID_ARGUMENT);
    if (ph->vaddr < lo || ph->vaddr > hi || ph->memsz > hi - ph->vaddr)
        return fail(why, "elf segment outside the app region", SPK_E_INVALID_ARGUMENT);
    if ((ph->vaddr & PAGE_MASK) != (ph->offset & PAGE_MASK))
        return fail(why, "elf segment not page-congruent with its file offset", SPK_E_INVALID_ARGUMENT);
    if ((ph->flags & PF_W) && (ph->flags & PF_X)) return fail(why, "elf segment writable and executable", SPK_E_DENIED);
    return 0;
}

static long map_segment(long aspace, const struct spk_module_view *m, const struct elf64_phdr *ph,
                        uint64_t scratch_va, struct spk_loaded_app *out, const char **why) {
    int writable = (ph->flags & PF_W) != 0;
    /* W^X from the ELF flags: data is never executable (and its stores run at engine speed). */
    uint64_t flags = SPK_MAP_USER | (writable ? SPK_MAP_WRITE : 0) | ((ph->flags & PF_X) ? 0 : SPK_MAP_NO_EXEC);
    uint64_t file_end = ph->vaddr + ph->filesz, mem_end = ph->vaddr + ph->memsz;
    for (uint64_t va = ph->vaddr & ~PAGE_MASK; va < mem_end; va += PAGE) {
        uint64_t page_file = ph->offset - (ph->vaddr - va); /* file offset of the page's first byte */
        /* A read-only page whose bytes are all the file's maps the module's frame. */
        int whole = va + PAGE <= file_end || (file_end == mem_end && va < file_end);
        if (!writable && whole && page_file / PAGE < m->pages) {
            long status = spk_map(aspace, va, m->first_mfn + page_file / PAGE, flags);
            if (status < 0) return fail(why, "map of an image page", status);
            continue;
        }
        uint64_t from = va < ph->vaddr ? ph->vaddr : va;
        uint64_t to = file_end < va + PAGE ? file_end : va + PAGE;
        uint64_t len = to > from ? to - from : 0;
        const uint8_t *src = m->bytes + ph->offset + (from - ph->vaddr);
        long status = fresh_page(aspace, va, flags, src, from - va, len, scratch_va, out, why);
        if (status < 0) return status;
    }
    return 0;
}

long spk_app_load(long aspace, const struct spk_module_view *m, uint64_t lo, uint64_t hi, uint64_t scratch_va,
                  struct spk_loaded_app *out, const char **why) {
    out->entry = 0;
    out->frame_count = 0;
    if (!is_elf(m)) return load_flat(aspace, m, lo, hi, out, why);
    const struct elf64_header *eh = (const void *)m->bytes;
    if (m->size < sizeof *eh) return fail(why, "elf header truncated", SPK_E_INVALID_ARGUMENT);
    if (eh->ident[4] != 2 || eh->ident[5] != 1 || eh->machine != EM_X86_64 || eh->type != ET_EXEC)
        return fail(why, "not an x86-64 ELF64 executable", SPK_E_INVALID_ARGUMENT);
    if (eh->phentsize != sizeof(struct elf64_phdr) || eh->phnum == 0 || eh->phnum > 64 || eh->phoff > m->size ||
        (uint64_t)eh->phnum * sizeof(struct elf64_phdr) > m->size - eh->phoff || (eh->phoff & 7))
        return fail(why, "elf program headers out of the file", SPK_E_INVALID_ARGUMENT);
    const struct elf64_phdr *ph = (const void *)(m->bytes + eh->phoff);
    int loads = 0, entry_ok = 0;
    for (int i = 0; i < eh->phnum; i++) {
        if (ph[i].type != PT_LOAD || ph[i].memsz == 0) continue; /* an empty segment loads nothing */
        long status = check_segment(m, &ph[i], lo, hi, why);
        if (status < 0) return status;
        if ((ph[i].flags & PF_X) && eh->entry >= ph[i].vaddr && eh->entry - ph[i].vaddr < ph[i].memsz) entry_ok = 1;
        loads++;
    }
    if (loads == 0 || loads > SPK_APP_MAX_SEGMENTS) return fail(why, "elf loadable segment count", SPK_E_INVALID_ARGUMENT);
    if (!entry_ok) return fail(why, "elf entry point outside its code", SPK_E_INVALID_ARGUMENT);
    for (int i = 0; i < eh->phnum; i++) {
        if (ph[i].type != PT_LOAD || ph[i].memsz == 0) continue;
        long status = map_segment(aspace, m, &ph[i], scratch_va, out, why);
        if (status < 0) return status;
    }
    out->entry = eh->entry;
    return 0;
}

long spk_app_release(struct spk_loaded_app *app) {
    long first = 0;
    for (uint32_t i = 0; i < app->frame_count; i++) {
        long status = spk_frame_free(app->frames[i]);
        if (status < 0 && first == 0) first = status;
    }
    app->frame_count = 0;
    return first;
}
