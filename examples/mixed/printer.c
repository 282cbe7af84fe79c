/* printer: a paravirtual kernel (CPL 2, the SPK's ABI) that receives the
 * lines examples/mixed.toml's full partition "fvecho" writes on its COM3
 * cable (one message per line, "\n" included) on its port "in", and prints
 * each. An empty queue gives the rest of the window up. It exits after
 * EXPECTED lines: what fvecho serves of sender's lines ("quit" is not served). */
#include "spk/kernel.h"
#include "spk/libc.h"

#define EXPECTED 3

long kmain(const struct spk_start_info *si) {
    (void)si;
    long port = spk_port_open("in", 2);
    if (port < 0) {
        kprintf("printer: no port in (%ld)\n", port);
        return 1;
    }
    char buf[129];
    for (int got = 0; got < EXPECTED;) {
        long n = spk_port_receive(port, buf, sizeof buf - 1);
        if (n == SPK_E_NOT_FOUND) {
            spk_yield();
            continue;
        }
        if (n < 0) {
            kprintf("printer: receive failed %ld\n", n);
            return 2;
        }
        if (n > 0 && buf[n - 1] == '\n') n--;
        buf[n] = 0;
        kprintf("printer: got %s\n", buf);
        got++;
    }
    kprintf("printer: done\n");
    return 0;
}
