/* Linker script of a bare PC kernel (spgs/cbuild.py kind "pc"): an
 * unmodified x86-64 kernel for plain PC hardware, loaded at physical
 * SPK_LINK_BASE (1 MiB) by a multiboot loader or by the SPK. It brings its
 * own start-up code (a .multiboot header section, .text.boot first).
 *
 * The file's bytes from __image_start to __load_end are laid out exactly as
 * in memory (each segment at the same distance from the first in the file
 * and in memory), which is what the multiboot a.out-kludge fields
 * (load_addr, load_end_addr, bss_end_addr) describe.
 *
 * The user pages: the code and constants of the kernel's ring-3 programs
 * (objects named user*.o) and of the shared libc subset, page-aligned
 * between __user_start and __user_end, so the kernel can map them
 * user-accessible and keep everything else supervisor-only. */
ENTRY(_start64)
PHDRS
{
    text PT_LOAD FLAGS(5);
    user PT_LOAD FLAGS(5);
    rodata PT_LOAD FLAGS(4);
    data PT_LOAD FLAGS(6);
}
SECTIONS
{
    . = SPK_LINK_BASE;
    __image_start = .;
    .text : {
        KEEP(*(.multiboot))
        *(.text.boot)
        *(EXCLUDE_FILE(*/user*.o spk_sdk/lib/[a-z]*.o) .text EXCLUDE_FILE(*/user*.o spk_sdk/lib/[a-z]*.o) .text.*)
    } :text
    . = ALIGN(4096);
    __user_start = .;
    .user : {
        */user*.o(.text .text.* .rodata .rodata.*)
        spk_sdk/lib/[a-z]*.o(.text .text.* .rodata .rodata.*)
    } :user
    . = ALIGN(4096);
    __user_end = .;
    .rodata : { *(.rodata .rodata.*) } :rodata
    . = ALIGN(4096);
    .data : { *(.data .data.*) } :data
    __load_end = .;
    .bss : { *(.bss .bss.*) *(COMMON) } :data
    . = ALIGN(4096);
    __bss_end = .;
    /DISCARD/ : { *(.note.GNU-stack) *(.note.gnu.*) *(.comment) *(.eh_frame) *(.eh_frame_hdr) }
}
ASSERT(__bss_end <= SPK_LINK_END, "the image does not fit its region")
ASSERT(__user_end > __user_start, "no user pages")
