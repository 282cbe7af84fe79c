/* How many times each operation of the benchmark runs (bench_ops.h): the
 * quick profile. spk_tools/bench_fullvirt.py builds the guests with its own
 * rendering of this file for each profile (quick, full; a test checks that
 * this copy is its quick one); this copy lets the folders build as they are. */
#define BENCH_N_SYSCALL 1000
#define BENCH_N_PORT_IO 1000
#define BENCH_N_TIMER 200
#define BENCH_N_PAGE_FAULT 128
#define BENCH_N_PAGE_TABLE 1
#define BENCH_N_ASPACE_SWITCH 500
#define BENCH_N_COMPUTE 20
