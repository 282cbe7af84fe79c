/* Included before every C guest source by the image builder (-include).
 * A guest is one statically linked executable at a fixed address far from
 * address 0 (the kernel half), compiled position-independent: hidden
 * visibility makes gcc reach every symbol rip-relative instead of through a
 * GOT the static link cannot resolve. */
#ifndef __ASSEMBLER__
#pragma GCC visibility push(hidden)
#endif
