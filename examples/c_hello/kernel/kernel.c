/* A first C guest kernel: it runs at CPL 2 in its own partition, prints what
 * the SPK told it at boot, asks for the time, measures something into its
 * APPS register, and exits with a code ring 1 reports. Build and run it with
 * `spk launch examples/c_hello/c_hello.toml` (docs/guest.md). */
#include "spk/kernel.h"
#include "spk/libc.h"
#include "facts.h"

long kmain(const struct spk_start_info *si) {
    kprintf("kernel: hello from %s, partition %lu, ABI %#lx\n", si->name, si->partition_id, spk_version());
    kprintf("kernel: %lu of %lu frames free\n", si->free_frames, si->quota_frames);
    uint64_t start = spk_time_now();
    uint64_t sum = checksum((const uint8_t *)si, sizeof *si);
    kprintf("kernel: start-info checksum %#lx in %lu ticks\n", sum, spk_time_now() - start);
    static const char motd[] = "measured by the c_hello kernel";
    long status = spk_measure(motd, sizeof motd - 1, "motd", 4);
    kprintf("kernel: measure -> %ld, bye\n", status);
    return 7;
}
