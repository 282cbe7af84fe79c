/* Linker script of a C app of the reference kernel: linked at SPK_APP_IMAGE_VADDR,
 * below the stack page the kernel maps at 0x7FF000; code read-only
 * and executable, constants read-only, data and bss writable. Each segment
 * starts on its own page: a page has one set of permissions. Run through the
 * C preprocessor (spk/abi.h) by the image builder. */
#include "spk/abi.h"
ENTRY(_start)
PHDRS
{
    text PT_LOAD FLAGS(5);
    rodata PT_LOAD FLAGS(4);
    data PT_LOAD FLAGS(6);
}
SECTIONS
{
    . = SPK_APP_IMAGE_VADDR;
    .text : { *(.text.start) *(.text .text.*) } :text
    . = ALIGN(SPK_PAGE_SIZE);
    .rodata : { *(.rodata .rodata.*) } :rodata
    . = ALIGN(SPK_PAGE_SIZE);
    .data : { *(.data .data.*) } :data
    .bss : { *(.bss .bss.*) *(COMMON) } :data
    __image_end = .;
    /DISCARD/ : { *(.note.GNU-stack) *(.note.gnu.*) *(.comment) *(.eh_frame) *(.eh_frame_hdr) }
}
ASSERT(__image_end <= 0x7FF000, "app image reaches its stack page")
