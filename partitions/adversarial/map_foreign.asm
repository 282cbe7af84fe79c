# map_foreign.asm -- attacker kernel: take frames it does not own (adversarial
# suite, classes map_foreign_frame and map_spk_frame).
#
# The host writes the targets into D_PARAMS: word 0 and 1 say what to write
# should a writable mapping be granted (offset, value: a marker), word 2 the
# number of frames, then the frame numbers: other partitions' data and
# page-table frames, free RAM and frames past the end of RAM (map_foreign_frame),
# or ring 0's own frames (map_spk_frame). A guest cannot learn them; the
# suite plays the worst case, an attacker that knows the physical layout.
#
# For each frame, try_frames (attack.inc) asks for a ring-3 writable mapping,
# a kernel-half writable one and a ring-3 read-only one, then frees the
# frame. Each must be refused (DENIED; INVALID_ARGUMENT past the end of RAM).
# Then it prints "map_foreign: done, N records" and exits with 0.
.include "attack"

main:
    mov rax, KERNEL_DATA_VADDR + D_PARAMS
    mov rcx, [rax + 16]
    lea rsi, [rax + 24]
    xor r14d, r14d                      # ring-3 tries in the boot space
    xor ebx, ebx
    call try_frames
    jmp finish

str_name:           .asciz "map_foreign"
