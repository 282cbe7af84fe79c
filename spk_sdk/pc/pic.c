/* The 8259 pair of a bare PC kernel (pc.h). */
#include "pc.h"

void pc_pic_init(void) {
    outb(PC_PIC1 + 1, 0xFF); /* mask everything while reprogramming */
    outb(PC_PIC2 + 1, 0xFF);
    outb(PC_PIC1, 0x11); /* ICW1: edge, cascade, ICW4 follows */
    outb(PC_PIC2, 0x11);
    outb(PC_PIC1 + 1, PC_IRQ_BASE); /* ICW2: vectors 32..39 */
    outb(PC_PIC2 + 1, PC_IRQ_BASE + 8);
    outb(PC_PIC1 + 1, 0x04); /* ICW3: slave on IRQ 2 */
    outb(PC_PIC2 + 1, 0x02);
    outb(PC_PIC1 + 1, 0x01); /* ICW4: 8086 mode */
    outb(PC_PIC2 + 1, 0x01);
    outb(PC_PIC1 + 1, 0xFF); /* OCW1: all masked */
    outb(PC_PIC2 + 1, 0xFF);
}

void pc_pic_unmask(int irq) {
    if (irq >= 8) {
        outb(PC_PIC2 + 1, inb(PC_PIC2 + 1) & ~(1 << (irq - 8)));
        irq = 2;
    }
    outb(PC_PIC1 + 1, inb(PC_PIC1 + 1) & ~(1 << irq));
}

void pc_pic_mask(int irq) {
    if (irq >= 8) outb(PC_PIC2 + 1, inb(PC_PIC2 + 1) | 1 << (irq - 8));
    else outb(PC_PIC1 + 1, inb(PC_PIC1 + 1) | 1 << irq);
}

void pc_pic_eoi(int irq) {
    if (irq >= 8) outb(PC_PIC2, 0x20);
    outb(PC_PIC1, 0x20);
}
