/* sender: a paravirtual kernel (CPL 2, the SPK's ABI) that sends lines on
 * its port "out", one per window, "\n" included: the other end of the
 * channel is the COM2 cable of examples/mixed.toml's full partition
 * "fvecho", an unmodified PC kernel that reads lines. The last line is
 * "quit", which ends fvecho. A full queue (E_BUSY) gives the window up and
 * the same line is sent again in the next one. */
#include "spk/kernel.h"
#include "spk/libc.h"

static const char *const lines[] = {
    "hello from a paravirtual kernel\n",
    "channels cross to a full partition\n",
    "through a serial cable\n",
    "quit\n",
};

long kmain(const struct spk_start_info *si) {
    (void)si;
    long port = spk_port_open("out", 3);
    if (port < 0) {
        kprintf("sender: no port out (%ld)\n", port);
        return 1;
    }
    for (size_t i = 0; i < sizeof lines / sizeof lines[0];) {
        size_t len = strlen(lines[i]);
        long status = spk_port_send(port, lines[i], len);
        if (status == SPK_E_BUSY) {
            spk_yield();
            continue;
        }
        if (status < 0) {
            kprintf("sender: send failed %ld\n", status);
            return 2;
        }
        char shown[64];
        memcpy(shown, lines[i], len - 1); /* the line without its "\n" (kprintf has no %.*s) */
        shown[len - 1] = 0;
        kprintf("sender: sent %s\n", shown);
        i++;
        spk_yield();
    }
    kprintf("sender: done\n");
    return 0;
}
