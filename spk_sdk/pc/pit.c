/* The 8253/8254 timer of a bare PC kernel (pc.h): channel 0 on IRQ 0. */
#include "pc.h"

void pc_pit_init(unsigned hz) {
    uint16_t divisor = (uint16_t)((PC_PIT_HZ + hz / 2) / hz);
    outb(0x43, 0x34); /* channel 0, low then high byte, mode 2 (rate generator), binary */
    outb(0x40, (uint8_t)divisor);
    outb(0x40, (uint8_t)(divisor >> 8));
}
