/* fvecho: an unmodified x86-64 PC kernel that serves a serial line.
 *
 * It boots like partitions/pcref (its own GDT, IDT and page tables, the
 * 8259 pair, the 8253 at 100 Hz), prints on COM1, reads lines from COM2
 * on receive interrupts (IRQ 3; COM2 as a 16450, FIFO off), writes each line upper-cased and numbered
 * ("1: HELLO\n") to COM3, and when it has served FVECHO_LINES lines or
 * read a line "quit" prints a summary on COM1 and ends through port 0xF4.
 * Everything hardware is the SDK's PC library (spk_sdk/pc/pc.h).
 *
 * Under QEMU the lines come from a file on the second -serial and the
 * third goes to a file (tests/test_fvecho_qemu.py); under the SPK, COM2
 * and COM3 are serial cables to channels (docs/fullvirt.md). Nothing it
 * prints depends on time or on how the bytes arrive (in one burst or one
 * by one, by trigger level or character timeout): the receive interrupt
 * count is not printed. See README.md. */
#include "pc.h"

#define FVECHO_LINES 10 /* lines served before it powers off by itself */
#define LINE_MAX 128    /* a longer line is served in pieces of LINE_MAX - 1 bytes */
#define RX_RING 4096
#define TICK_HZ 100
#define IN PC_COM2
#define OUT PC_COM3

static uint8_t page_pool[8][PC_PAGE] __attribute__((aligned(4096)));

/* What the receive interrupt (and the main loop) took from COM2, not yet served. */
static char ring[RX_RING];
static unsigned ring_head, ring_tail; /* free-running; ring_head - ring_tail bytes wait */
static unsigned long ticks, rx_interrupts; /* not printed: they depend on timing */

/* Move what COM2's receiver holds into the ring (interrupts off), as far
 * as the ring has room: what does not fit stays in the UART (the line is
 * flow-controlled, nothing is dropped) until the main loop makes room.
 * Reading until LSR.DR clears also lowers the UART's interrupt line, so
 * its edge-triggered IRQ can rise again for the next byte. */
static void pump(void) {
    while (ring_head - ring_tail < RX_RING && pc_uart_rx_ready(IN)) ring[ring_head++ % RX_RING] = (char)inb(IN);
}

/* One line from the ring into buf (NUL-ended, '\n' kept): its length, or
 * 0 when no whole line waits (interrupts off). */
static size_t take_line(char *buf) {
    size_t n = 0, waiting = ring_head - ring_tail;
    int whole = 0;
    while (!whole && n < waiting && n < LINE_MAX - 1) whole = ring[(ring_tail + n++) % RX_RING] == '\n';
    if (!whole && n < LINE_MAX - 1) return 0;
    for (size_t k = 0; k < n; k++) buf[k] = ring[ring_tail++ % RX_RING];
    buf[n] = 0;
    return n;
}

static struct pc_frame *trap(struct pc_frame *f) {
    switch (f->vector) {
    case PC_IRQ_BASE + 0:
        ticks++;
        pc_pic_eoi(0);
        return f;
    case PC_IRQ_BASE + 3: /* COM2 (and COM4) */
        rx_interrupts++;
        pump();
        pc_pic_eoi(3);
        return f;
    case PC_IRQ_BASE + 7: /* spurious: no EOI */
        return f;
    case PC_IRQ_BASE + 15:
        pc_pic_eoi(2);
        return f;
    }
    pc_printf("fvecho: exception %lu (error %#lx) at %#lx, cr2 %#lx: stopping\n", f->vector, f->error, f->rip,
              read_cr2());
    pc_exit(3);
}

static unsigned served, bytes_in, bytes_out;

/* Serve one line: upper-cased, numbered, on COM3 (a '\r' before the '\n' is dropped). */
static void serve(char *line, size_t n) {
    bytes_in += n;
    if (n >= 2 && line[n - 2] == '\r' && line[n - 1] == '\n') {
        line[n - 2] = '\n';
        line[--n] = 0;
    }
    for (size_t i = 0; i < n; i++)
        if (line[i] >= 'a' && line[i] <= 'z') line[i] = (char)(line[i] - 'a' + 'A');
    char out[LINE_MAX + 16];
    int len = snprintf(out, sizeof out, "%u: %s", ++served, line);
    pc_uart_write(OUT, out, (size_t)len);
    bytes_out += (unsigned)len;
    pc_printf("fvecho: line %u, %u byte%s%s\n", served, (unsigned)n, n == 1 ? "" : "s", line[n - 1] == '\n' ? "" : " (no newline yet)");
}

static int is_quit(const char *line) {
    return strcmp(line, "quit\n") == 0 || strcmp(line, "quit\r\n") == 0;
}

__attribute__((noreturn)) static void finish(const char *why) {
    pc_printf("fvecho: %s: %u lines served, %u bytes in, %u bytes out; powering off\n", why, served, bytes_in,
              bytes_out);
    pc_exit(0);
}

void kernel_main(void);
void kernel_main(void) {
    int com1 = pc_uart_init(PC_COM1);
    pc_printf("fvecho: an unmodified x86-64 PC kernel serving a serial line\n");
    /* COM2 without its FIFO: enabling it would drop a byte the line brought
     * before this point (under QEMU the input is there from the start). */
    int in = pc_uart_open(IN, 0), out = pc_uart_init(OUT);
    pc_printf("uart: com1 %s, com2 %s, com3 %s\n", com1 ? "ok" : "missing", in ? "ok" : "missing",
              out ? "ok" : "missing");
    if (!in || !out) {
        pc_printf("fvecho: no serial line to serve (COM2 in, COM3 out); stopping\n");
        pc_exit(1);
    }
    pc_gdt_init();
    pc_idt_init(trap);
    pc_pages_init(page_pool, sizeof page_pool / PC_PAGE);
    write_cr3((uint64_t)pc_kernel_map(0x400000));
    pc_pic_init();
    pc_pit_init(TICK_HZ);
    pc_uart_rx_irq(IN, 1);
    pc_pic_unmask(0);
    pc_pic_unmask(3);
    pc_printf("fvecho: reading lines on com2 (irq 3), answering on com3; %d lines or \"quit\"\n", FVECHO_LINES);
    char line[LINE_MAX];
    for (;;) {
        cli();
        pump(); /* bytes that came without a new edge (the line stayed high) */
        size_t n = take_line(line);
        if (n == 0) {
            __asm__ volatile("sti; hlt" : : : "memory"); /* no lost wake-up: sti's shadow covers hlt */
            continue;
        }
        sti();
        if (is_quit(line)) finish("quit");
        serve(line, n);
        if (served == FVECHO_LINES) finish("done");
    }
}
