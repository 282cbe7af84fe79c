/* Page tables of a bare PC kernel (pc.h): a frame pool the kernel gives,
 * 4-level tables built in it, 4 KiB leaves. Frames are identity-mapped
 * (a pointer to a table is its physical address). */
#include "pc.h"

static uint8_t *pool;
static size_t pool_pages, used;

void pc_pages_init(void *p, size_t pages) {
    pool = p;
    pool_pages = pages;
    used = 0;
}

uint64_t *pc_page_try_alloc(void) {
    if (used == pool_pages) return NULL;
    uint8_t *p = pool + used++ * PC_PAGE;
    memset(p, 0, PC_PAGE);
    return (uint64_t *)p;
}

uint64_t *pc_page_alloc(void) {
    uint64_t *p = pc_page_try_alloc();
    if (!p) {
        pc_printf("kernel: out of pages\n");
        pc_exit(3);
    }
    return p;
}

size_t pc_pages_used(void) { return used; }

uint64_t *pc_pte(uint64_t *pml4, uint64_t va, int create) {
    uint64_t *table = pml4;
    for (int shift = 39; shift > 12; shift -= 9) {
        uint64_t *entry = &table[(va >> shift) & 511];
        if (!(*entry & PC_PTE_P)) {
            if (!create) return NULL;
            *entry = (uint64_t)pc_page_alloc() | PC_PTE_P | PC_PTE_W | PC_PTE_U;
        } else if (*entry & PC_PTE_PS) {
            return NULL; /* a large leaf: no level-1 entry */
        }
        table = (uint64_t *)(*entry & PC_PTE_ADDR);
    }
    return &table[(va >> 12) & 511];
}

void pc_map(uint64_t *pml4, uint64_t va, uint64_t pa, uint64_t flags) {
    *pc_pte(pml4, va, 1) = (pa & PC_PTE_ADDR) | flags | PC_PTE_P;
}

void pc_map_range(uint64_t *pml4, uint64_t va, uint64_t pa, uint64_t size, uint64_t flags) {
    for (uint64_t off = 0; off < size; off += PC_PAGE) pc_map(pml4, va + off, pa + off, flags);
}

uint64_t *pc_kernel_map(uint64_t end) {
    uint64_t *pml4 = pc_page_alloc();
    uint64_t user_start = (uint64_t)__user_start, user_end = (uint64_t)__user_end;
    pc_map_range(pml4, PC_PAGE, PC_PAGE, user_start - PC_PAGE, PC_PTE_W);
    pc_map_range(pml4, user_start, user_start, user_end - user_start, PC_PTE_U);
    pc_map_range(pml4, user_end, user_end, end - user_end, PC_PTE_W);
    return pml4;
}

void pc_unmap(uint64_t *pml4, uint64_t va) {
    uint64_t *pte = pc_pte(pml4, va, 0);
    if (pte && *pte) {
        *pte = 0;
        invlpg(va);
    }
}
