/* The 16550 UARTs of a bare PC kernel (pc.h): programmed I/O, polled
 * transmit, polled or interrupt-driven receive; the console on COM1 and
 * the exit through QEMU's isa-debug-exit port. */
#include "pc.h"

#define LSR_DR 0x01
#define LSR_THRE 0x20
#define IER_RDI 0x01
#define MCR_DTR_RTS 0x03
#define MCR_OUT2 0x08

int pc_uart_init(uint16_t port) { return pc_uart_open(port, 1); }

int pc_uart_open(uint16_t port, int fifo) {
    outb(port + 1, 0x00); /* IER: no UART interrupts */
    outb(port + 3, 0x80); /* LCR: DLAB, to reach the divisor */
    outb(port + 0, 0x01); /* DLL: 115200 baud */
    outb(port + 1, 0x00); /* DLM */
    outb(port + 3, 0x03); /* LCR: 8 bits, no parity, one stop bit */
    if (fifo) outb(port + 2, 0xC7); /* FCR: FIFOs on and cleared, trigger at 14 bytes */
    outb(port + 4, MCR_DTR_RTS);
    outb(port + 7, 0x5A); /* the scratch register reads back on a 16450/16550 */
    return inb(port + 7) == 0x5A;
}

void pc_uart_write(uint16_t port, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        while (!(inb(port + 5) & LSR_THRE)) {
        }
        outb(port, (uint8_t)s[i]);
    }
}

int pc_uart_rx_ready(uint16_t port) { return inb(port + 5) & LSR_DR; }

int pc_uart_getc(uint16_t port) { return pc_uart_rx_ready(port) ? inb(port) : -1; }

void pc_uart_rx_irq(uint16_t port, int on) {
    outb(port + 4, MCR_DTR_RTS | (on ? MCR_OUT2 : 0));
    outb(port + 1, on ? IER_RDI : 0);
}

size_t pc_uart_read_line(uint16_t port, char *buf, size_t n) {
    size_t len = 0;
    while (len + 1 < n) {
        int c;
        while ((c = pc_uart_getc(port)) < 0) {
        }
        buf[len++] = (char)c;
        if (c == '\n') break;
    }
    if (n) buf[len] = 0;
    return len;
}

static void uart_vprintf(uint16_t port, const char *fmt, va_list ap) {
    char line[256];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    uint64_t flags = read_flags();
    __asm__ volatile("cli");
    pc_uart_write(port, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    write_flags(flags);
}

void pc_uart_printf(uint16_t port, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    uart_vprintf(port, fmt, ap);
    va_end(ap);
}

void pc_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    uart_vprintf(PC_COM1, fmt, ap);
    va_end(ap);
}

void pc_exit(uint8_t status) {
    outb(PC_DEBUG_EXIT_PORT, status); /* QEMU: exits with (status << 1) | 1 */
    for (;;) __asm__ volatile("cli; hlt");
}
