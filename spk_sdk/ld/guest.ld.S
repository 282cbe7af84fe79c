/* Linker script of every C guest, run through the C preprocessor by the
 * image builder with SPK_LINK_BASE and SPK_LINK_END for the guest's kind:
 * a kernel in the kernel image region [SPK_KERNEL_IMAGE_VADDR,
 * + SPK_KERNEL_IMAGE_MAX), an app of the reference kernel from
 * SPK_APP_IMAGE_VADDR up to the stack page its kernel maps at 0x7FF000.
 * Code read-only and executable, constants read-only, data and bss
 * writable; each segment starts on its own page: a page has one set of
 * permissions. */
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
    . = SPK_LINK_BASE;
    .text : { *(.text.start) *(.text .text.*) } :text
    . = ALIGN(SPK_PAGE_SIZE);
    .rodata : { *(.rodata .rodata.*) } :rodata
    . = ALIGN(SPK_PAGE_SIZE);
    .data : { *(.data .data.*) } :data
    .bss : { *(.bss .bss.*) *(COMMON) } :data
    __image_end = .;
    /DISCARD/ : { *(.note.GNU-stack) *(.note.gnu.*) *(.comment) *(.eh_frame) *(.eh_frame_hdr) }
}
ASSERT(__image_end <= SPK_LINK_END, "the image does not fit its region")
