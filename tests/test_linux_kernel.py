"""The Linux personality kernel (partitions/linux/), booted straight on ring 0's API.

Each test packs its own root file system (a ustar archive made with
tarfile, deterministic), a ``cmdline`` and maybe a ``stdin`` module, boots
the kernel in a partition and checks what the programs printed and how the
partition ended. Programs: Debian's static busybox, and RAW below, a tiny
static program built here with ``gcc -static -nostdlib`` that makes raw
system calls, for the edge cases libc would hide (hostile pointers, the FS
base across switches, signals on faults, unknown calls).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from spgs.cbuild import build_c, gcc, program_sources
from spk import Machine, MachineEvent
from spk.abi import KERNEL_BASE
from tests.guests import kernel as asm_kernel
from tests.guests import machine, results, run_until_done

ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = Path("/bin/busybox")
needs_busybox = pytest.mark.skipif(not BUSYBOX.is_file(), reason="Debian's busybox-static is not installed")

RAW = r"""
typedef unsigned long u64;
static long sc(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
#define S0(n) sc(n, 0, 0, 0, 0, 0, 0)
#define S1(n, a) sc(n, (long)(a), 0, 0, 0, 0, 0)
#define S2(n, a, b) sc(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define S3(n, a, b, c) sc(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define S4(n, a, b, c, d) sc(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define S6(n, a, b, c, d, e, f) sc(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
static u64 len(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
static void out(const char *s) { S3(1, 1, s, len(s)); }
static void num(long v) {
    char b[24]; int i = 23; int neg = v < 0; u64 u = neg ? -(u64)v : (u64)v;
    b[i] = 0;
    do { b[--i] = '0' + u % 10; u /= 10; } while (u);
    if (neg) b[--i] = '-';
    out(b + i);
}
static void kv(const char *k, long v) { out(k); out("="); num(v); out("\n"); }
static int eq(const char *a, const char *b) { while (*a && *a == *b) a++, b++; return *a == *b; }
static __attribute__((noreturn)) void quit(int code) { S1(231, code); for (;;) {} }
static long fs0(void) { long v; __asm__ volatile("mov %%fs:0, %0" : "=r"(v)); return v; }

static long tls_a[4] = {0x1111}, tls_b[4] = {0x2222};
#define KADDR 0xffff800000000000UL

static void set_xmm1(long v) { __asm__ volatile("movq %0, %%xmm1" : : "r"(v) : "xmm1"); }
static long xmm1(void) { long v; __asm__ volatile("movq %%xmm1, %0" : "=r"(v)); return v; }

/* FS base and an SSE register must stay the process's own across every switch. */
static int fs_spin(long want, long rounds) {
    set_xmm1(want * 3);
    for (long i = 0; i < rounds; i++) if (fs0() != want || xmm1() != want * 3) return 0;
    return 1;
}

static int run(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (eq(mode, "hello")) { out("hello from raw\n"); return 0; }
    if (eq(mode, "fs")) {
        S2(158, 0x1002, tls_a);
        long pid = S0(57);
        if (pid == 0) { S2(158, 0x1002, tls_b); quit(fs_spin(0x2222, 3000000) ? 0 : 1); }
        int ok = fs_spin(0x1111, 3000000);
        int status = -1;
        S4(61, pid, &status, 0, 0);
        long got = 0;
        S2(158, 0x1003, &got);
        kv("parent_fs_ok", ok); kv("child_status", status); kv("get_fs_is_a", got == (long)tls_a);
        return 0;
    }
    if (eq(mode, "badptr")) {
        char buf[64];
        long iov[2] = {(long)KADDR, 8};
        kv("write_kernel", S3(1, 1, KADDR, 16));
        kv("write_unmapped", S3(1, 1, 0x1000, 1));
        kv("write_wrap", S3(1, 1, -16L, 32));
        kv("read_kernel", S3(0, 0, KADDR, 10));
        kv("open_kernel", S2(2, KADDR + 0x1000, 0));
        kv("open_null", S2(2, 0, 0));
        kv("stat_kernel_buf", S2(4, "/", KADDR));
        kv("uname_kernel", S1(63, KADDR));
        kv("clock_kernel", S2(228, 0, KADDR));
        kv("sigaction_kernel", S4(13, 2, KADDR, 0, 8));
        kv("pipe_kernel", S1(22, KADDR));
        kv("writev_kernel_iov", S3(20, 1, KADDR, 1));
        kv("writev_kernel_base", S3(20, 1, iov, 1));
        kv("execve_kernel_argv", S3(59, "/raw", KADDR, 0));
        kv("mmap_fixed_kernel", S6(9, KADDR, 4096, 3, 0x32, -1, 0));
        kv("munmap_kernel", S2(11, KADDR, 4096));
        kv("mprotect_kernel", S3(10, KADDR, 4096, 7));
        kv("arch_prctl_kernel", S2(158, 0x1002, KADDR));
        kv("getdents_kernel", S3(217, 0, KADDR, 4096));
        kv("read_text_into_code", S3(0, 0, (long)&run, 1));
        kv("getcwd_short", S2(79, buf, 1));
        kv("bad_fd", S3(1, 99, "x", 1));
        kv("huge_fd", S3(1, -1L, "x", 1));
        out("still alive\n");
        return 0;
    }
    if (eq(mode, "segv")) {
        long pid = S0(57);
        if (pid == 0) { *(volatile long *)KADDR = 1; quit(0); }
        int status = -1;
        kv("waited", S4(61, pid, &status, 0, 0) == pid);
        kv("status", status);
        pid = S0(57);
        if (pid == 0) { *(volatile long *)0 = 1; quit(0); }
        S4(61, pid, &status, 0, 0);
        kv("null_status", status);
        return 0;
    }
    if (eq(mode, "enosys")) {
        kv("r335", S0(335));
        kv("r400", S0(400));
        kv("r9999", S0(9999));
        kv("reboot", S4(169, 0, 0, 0, 0));
        kv("reboot", S4(169, 0, 0, 0, 0));
        return 5;
    }
    if (eq(mode, "pipe")) {
        int fds[2];
        kv("pipe", S1(22, fds));
        S1(3, fds[0]);
        long act[4] = {1, 0, 0, 0}; /* SIG_IGN */
        S4(13, 13, act, 0, 8);
        kv("write_no_reader_ignored", S3(1, fds[1], "x", 1));
        S1(22, fds);
        long pid = S0(57);
        if (pid == 0) {
            long dfl[4] = {0, 0, 0, 0};
            S4(13, 13, dfl, 0, 8);
            S1(3, fds[0]);
            for (int i = 0; i < 4000; i++) S3(1, fds[1], "0123456789abcdef0123456789abcdef", 32);
            quit(0);
        }
        S1(3, fds[1]);
        char buf[16];
        long n = S3(0, fds[0], buf, 16);
        kv("read_first", n);
        S1(3, fds[0]);
        int status = -1;
        S4(61, pid, &status, 0, 0);
        kv("writer_status", status);
        return 0;
    }
    if (eq(mode, "bigpipe")) {
        static unsigned char big[200000];
        for (long i = 0; i < (long)sizeof big; i++) big[i] = (unsigned char)(i * 7 + i / 251);
        int fds[2];
        S1(22, fds);
        long pid = S0(57);
        if (pid == 0) {
            S1(3, fds[0]);
            long w = S3(1, fds[1], big, sizeof big); /* one call, three times the pipe */
            long iov[4] = {(long)big, 70000, (long)big + 70000, 70000};
            long v = S3(20, fds[1], iov, 2);
            quit(w == (long)sizeof big && v == 140000 ? 0 : 1);
        }
        S1(3, fds[1]);
        unsigned long total = 0, sum = 0, n;
        unsigned char buf[777];
        while ((n = (unsigned long)S3(0, fds[0], buf, sizeof buf)) > 0 && n <= sizeof buf) {
            for (unsigned long i = 0; i < n; i++) {
                unsigned long at = total + i;
                unsigned long k = at < sizeof big ? at : (at - sizeof big) % 140000;
                sum += buf[i] == big[k];
            }
            total += n;
        }
        int status = -1;
        S4(61, pid, &status, 0, 0);
        kv("total", (long)total); kv("matching", (long)sum); kv("writer_status", status);
        return 0;
    }
    if (eq(mode, "oom")) {
        long pid = S0(57);
        if (pid == 0) {
            char *p = (char *)S6(9, 0, 64L << 20, 3, 0x22, -1, 0);
            for (long i = 0; i < (64L << 20); i += 4096) p[i] = 1;
            quit(0);
        }
        int status = -1;
        S4(61, pid, &status, 0, 0);
        kv("hog_status", status);
        char *q = (char *)S6(9, 0, 1L << 20, 3, 0x22, -1, 0);
        for (long i = 0; i < (1L << 20); i += 4096) q[i] = 2;
        kv("after", q[4096]);
        return 0;
    }
    if (eq(mode, "writers")) { /* many writers blocked on one pipe; its reader goes away */
        static char chunk[8192];
        int fds[2];
        S1(22, fds);
        int forked = 0;
        for (int i = 0; i < 62; i++) {
            long pid = S0(57);
            forked += pid > 0;
            if (pid == 0) {
                S1(3, fds[0]);
                for (;;) S3(1, fds[1], chunk, sizeof chunk);
            }
        }
        S1(3, fds[1]);
        for (int i = 0; i < 200; i++) S0(24);
        S1(3, fds[0]);
        int piped = 0, status;
        while (S4(61, -1, &status, 0, 0) > 0) piped += status == 13;
        kv("forked", forked);
        kv("killed_by_sigpipe", piped);
        return 0;
    }
    if (eq(mode, "mm")) {
        char *p = (char *)S6(9, 0, 3 * 4096, 3, 0x22, -1, 0);
        p[0] = 'a'; p[8192] = 'b';
        kv("mmap_ok", p[0] == 'a' && p[8192] == 'b' && p[4096] == 0);
        kv("munmap", S2(11, p + 4096, 4096));
        kv("mprotect", S3(10, p, 4096, 1));
        long b0 = S1(12, 0), b1 = S1(12, b0 + 100000);
        ((char *)b0)[99999] = 1;
        kv("brk_grew", b1 == b0 + 100000);
        long pid = S0(57);
        if (pid == 0) { p[4096] = 1; quit(0); }
        int status = -1;
        S4(61, pid, &status, 0, 0);
        kv("hole_status", status);
        pid = S0(57);
        if (pid == 0) { p[0] = 1; quit(0); }
        S4(61, pid, &status, 0, 0);
        kv("readonly_status", status);
        kv("still_b", p[8192] == 'b');
        char *r = (char *)S6(9, 0, 2 * 4096, 3, 0x22, -1, 0);
        r[0] = 'x'; r[4097] = 'y';
        char *g = (char *)S4(25, r, 2 * 4096, 6 * 4096, 1); /* MREMAP_MAYMOVE */
        kv("mremap_kept", g[0] == 'x' && g[4097] == 'y' && g[6 * 4096 - 1] == 0);
        kv("mremap_shrink", S4(25, g, 6 * 4096, 4096, 0) == (long)g);
        kv("mremap_fixed", S6(25, g, 4096, 8192, 3, 0x10000000, 0));
        return 0;
    }
    if (eq(mode, "getpid")) {
        long n = 0;
        for (char *c = argv[2]; *c; c++) n = n * 10 + (*c - '0');
        long sum = 0;
        if (argc > 3) { /* the int 0x80 gate instead of the syscall instruction */
            for (long i = 0; i < n; i++) {
                long r;
                __asm__ volatile("int $0x80" : "=a"(r) : "a"(39L) : "memory");
                sum += r;
            }
        } else {
            for (long i = 0; i < n; i++) sum += S0(39);
        }
        kv("sum", sum);
        return 0;
    }
    if (eq(mode, "exit")) return 42;
    out("unknown mode\n");
    return 1;
}

__attribute__((used)) static void cstart(long *sp) {
    int argc = (int)sp[0];
    quit(run(argc, (char **)(sp + 1)));
}
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call cstart\n");
"""


@dataclass
class Run:
    state: str
    exit_code: int | None
    lines: list[str]
    instructions: int


@pytest.fixture(scope="module")
def kernel() -> bytes:
    return build_c("kernel", "linux", program_sources(ROOT / "partitions" / "linux"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("raw")
    (folder / "raw.c").write_text(RAW)
    cc = gcc()[0]
    subprocess.run([cc, "-O1", "-static", "-nostdlib", "-no-pie", "-fno-pie", "-fno-stack-protector",
                    "-Wl,--build-id=none", "-o", "raw", "raw.c"], cwd=folder, check=True)  # fmt: skip
    return (folder / "raw").read_bytes()


def ustar(files: dict[str, bytes | str | None]) -> bytes:
    """A deterministic ustar archive: bytes = a file (0755), str = a symlink, None = a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def cmdline(argv: list[str], env: tuple[str, ...] = ("PATH=/bin",)) -> bytes:
    """PATH, the argv strings, an empty string, the env strings, an empty string (docs/linux.md)."""

    def strings(items: list[str] | tuple[str, ...]) -> bytes:
        return b"".join(item.encode() + b"\0" for item in items)

    return strings([argv[0], *argv]) + b"\0" + strings(env) + b"\0"


Files = dict[str, bytes | str | None]
Modules = list[tuple[str, bytes]]


def modules(files: Files, argv: list[str], stdin: bytes | None = None) -> Modules:
    mods = [("rootfs", ustar(files)), ("cmdline", cmdline(argv))]
    if stdin is not None:
        mods.append(("stdin", stdin))
    return mods


def boot(
    kernel: bytes, parts: list[Modules], window: int = 50_000, limit: int = 400_000_000, quota: int = 4096
) -> list[Run]:
    """Run one Linux partition per module list side by side in alternating windows until all end."""
    events: list[MachineEvent] = []
    m = Machine(96 << 20, on_event=events.append)
    pids = [m.create_partition(f"lx{i}", kernel, mods, quota) for i, mods in enumerate(parts)]
    while m.now < limit and any(m.info(p).state in ("ready", "blocked") for p in pids):
        for pid in pids:
            end = m.now + window
            m.run(pid, end)
            m.advance(end)
    runs = []
    for i, pid in enumerate(pids):
        info = m.info(pid)
        lines = [e.args["text"] for e in events if e.partition == f"lx{i}" and e.event == "console"]
        runs.append(Run(info.state, info.exit_code, [str(x) for x in lines], info.counters.instructions))
    return runs


def one(kernel: bytes, mods: Modules, **kw: int) -> Run:
    return boot(kernel, [mods], **kw)[0]


def kv(run: Run) -> dict[str, int]:
    return {k: int(v) for k, _, v in (line.partition("=") for line in run.lines) if v.lstrip("-").isdigit()}


def test_raw_program_starts_and_exits_with_its_status(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "hello"]))
    assert (run.state, run.exit_code, run.lines) == ("exited", 0, ["hello from raw"])
    assert one(kernel, modules({"raw": raw}, ["/raw", "exit"])).exit_code == 42


def test_fs_base_and_sse_state_are_per_process_across_switches(kernel: bytes, raw: bytes) -> None:
    """Two partitions, each a parent and a child with their own FS base and xmm1, spinning over quanta and windows."""
    mods = modules({"raw": raw}, ["/raw", "fs"])
    runs = boot(kernel, [mods, mods], window=30_000, limit=1_600_000_000)  # ticks are instruction bytes
    for run in runs:
        assert run.state == "exited" and run.exit_code == 0, run
        assert kv(run) == {"parent_fs_ok": 1, "child_status": 0, "get_fs_is_a": 1}
        assert run.instructions > 10_000_000  # the spins outlived many quanta (200,000) and windows


def test_hostile_pointers_are_refused_with_efault_and_the_kernel_survives(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "badptr"]))
    assert run.state == "exited" and run.exit_code == 0, run
    got = kv(run)
    efault, einval, enomem, eperm, ebadf, erange = -14, -22, -12, -1, -9, -34
    assert got == {
        "write_kernel": efault, "write_unmapped": efault, "write_wrap": efault, "read_kernel": efault,
        "open_kernel": efault, "open_null": efault, "stat_kernel_buf": efault, "uname_kernel": efault,
        "clock_kernel": efault, "sigaction_kernel": efault, "pipe_kernel": efault, "writev_kernel_iov": efault,
        "writev_kernel_base": efault, "execve_kernel_argv": efault, "mmap_fixed_kernel": enomem,
        "munmap_kernel": einval, "mprotect_kernel": einval, "arch_prctl_kernel": eperm,
        "getdents_kernel": efault, "read_text_into_code": 0, "getcwd_short": erange, "bad_fd": ebadf,
        "huge_fd": ebadf,
    }  # fmt: skip
    assert run.lines[-1] == "still alive"


def test_faults_kill_the_process_with_sigsegv_never_the_kernel(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "segv"]))
    assert run.state == "exited" and run.exit_code == 0, run
    assert kv(run) == {"waited": 1, "status": 11, "null_status": 11}
    killed = [line for line in run.lines if "killed by SIGSEGV" in line]
    assert len(killed) == 2 and killed[0].startswith("linux: pid 2 (raw) killed by SIGSEGV at rip 0x")
    assert f"addr {KERNEL_BASE:#x}" in killed[0]


def test_unknown_calls_return_enosys_and_are_reported_by_name(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "enosys"]))
    assert run.exit_code == 5
    assert kv(run) == {"r335": -38, "r400": -38, "r9999": -38, "reboot": -38}
    assert run.lines[-1] == "linux: unsupported syscalls: reboot=2, unknown=3"


def test_pipes_give_epipe_or_sigpipe_and_eof(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "pipe"]))
    assert run.exit_code == 0, run
    assert kv(run) == {"pipe": 0, "write_no_reader_ignored": -32, "read_first": 16, "writer_status": 13}


def test_a_write_larger_than_the_pipe_blocks_and_completes(kernel: bytes, raw: bytes) -> None:
    """write and writev of more than the pipe holds return only once all is written, in order."""
    run = one(kernel, modules({"raw": raw}, ["/raw", "bigpipe"]))
    assert run.exit_code == 0, run
    assert kv(run) == {"total": 340000, "matching": 340000, "writer_status": 0}


def test_a_process_that_exhausts_the_quota_is_killed_and_its_memory_comes_back(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "oom"]), quota=1024)
    assert run.exit_code == 0, run
    assert kv(run) == {"hog_status": 9, "after": 2}
    assert any(line.startswith("linux: pid 2 (raw) killed by SIGKILL: out of memory") for line in run.lines)


@needs_busybox
def test_a_full_tmp_gives_enospc_and_the_shell_goes_on(kernel: bytes) -> None:
    files: Files = {"bin/busybox": BUSYBOX.read_bytes()}
    command = "dd if=/dev/zero of=/tmp/big bs=65536 count=1000 2>&1 | head -n 1; rm /tmp/big; echo x >/tmp/s"
    command += "; cat /tmp/s"
    run = one(kernel, modules(files, ["/bin/busybox", "sh", "-c", command]), limit=2_000_000_000, window=5_000_000,
              quota=1600)  # fmt: skip
    assert run.exit_code == 0, run
    assert run.lines == ["dd: error writing '/tmp/big': No space left on device", "x"]


def test_sixty_two_writers_killed_at_once_by_sigpipe(kernel: bytes, raw: bytes) -> None:
    """As many processes as the SPK gives address spaces for, blocked on one pipe, all killed when the reader goes."""
    run = one(kernel, modules({"raw": raw}, ["/raw", "writers"]))
    assert run.exit_code == 0, run
    assert kv(run) == {"forked": 62, "killed_by_sigpipe": 62}


def test_runs_are_deterministic(kernel: bytes, raw: bytes) -> None:
    """Same modules, same run: output and virtual time to the instruction (blocking, scheduling, paging included)."""
    mods = modules({"raw": raw}, ["/raw", "bigpipe"])
    first, second = one(kernel, mods), one(kernel, mods)
    assert first.exit_code == 0 and first == second


def test_memory_calls_and_demand_paging(kernel: bytes, raw: bytes) -> None:
    run = one(kernel, modules({"raw": raw}, ["/raw", "mm"]))
    assert run.exit_code == 0, run
    assert kv(run) == {"mmap_ok": 1, "munmap": 0, "mprotect": 0, "brk_grew": 1, "hole_status": 11,
                       "readonly_status": 11, "still_b": 1, "mremap_kept": 1, "mremap_shrink": 1,
                       "mremap_fixed": -22}  # fmt: skip


def _native(command: str, cwd: Path, stdin: bytes = b"") -> bytes:
    proc = subprocess.run([str(BUSYBOX), "sh", "-c", command], cwd=cwd, input=stdin, capture_output=True,
                          env={"PATH": "/nonexistent"}, check=True, timeout=60)  # fmt: skip
    return proc.stdout


@needs_busybox
def test_busybox_pipelines_match_native(kernel: bytes, tmp_path: Path) -> None:
    """The issue's pipeline and a few more, byte for byte against the same busybox on the host."""
    etc = {"etc/hostname": b"spk\n", "etc/motd": b"welcome\nto spk\n", "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}
    files: Files = {"bin": None, "etc": None, "bin/busybox": BUSYBOX.read_bytes(),
                                            "bin/sh": "busybox", **etc}  # fmt: skip
    template = (
        "echo hi | wc -c; seq 1 1000 | sha256sum; ls {R}/etc; cd {R}/etc && cat motd hostname | sort | uniq -c;"
        " echo x > {R}/tmp/f; echo y >> {R}/tmp/f; cat {R}/tmp/f; rm {R}/tmp/f; ls {R}/tmp; pwd;"
        " sh -c 'exit 3'; echo $?"
    )
    run = one(kernel, modules(files, ["/bin/busybox", "sh", "-c", template.format(R="")]), limit=2_000_000_000,
              window=5_000_000)  # fmt: skip
    host = tmp_path / "root"
    (host / "etc").mkdir(parents=True)
    (host / "tmp").mkdir()
    for name, content in etc.items():
        (host / name).write_bytes(content)
    native = _native(template.format(R=host), host).replace(str(host).encode(), b"")
    assert run.state == "exited" and run.exit_code == 0, run
    assert "".join(line + "\n" for line in run.lines) == native.decode()


@needs_busybox
def test_busybox_reads_the_stdin_module(kernel: bytes) -> None:
    files: Files = {"bin/busybox": BUSYBOX.read_bytes()}
    run = one(kernel, modules(files, ["/bin/busybox", "sh", "-c", "read a; echo \"<$a>\"; tr a-z A-Z; exit 9"],
                              stdin=b"first\nsecond\nthird\n"), limit=2_000_000_000, window=5_000_000)  # fmt: skip
    assert (run.exit_code, run.lines) == (9, ["<first>", "SECOND", "THIRD"])


def test_ring0_emulates_fs_base_instructions_for_the_guest_kernel() -> None:
    """QEMU64 has no FSGSBASE: ring 0 emulates rdfsbase/wrfsbase at CPL 2 (64- and 32-bit forms, REX.B)."""
    source = """
    mov rbx, KERNEL_DATA_VADDR
    mov rax, 0x123456789a
    wrfsbase rax
    rdfsbase rcx
    mov [rbx], rcx
    mov eax, 0x55
    wrfsbase eax
    rdfsbase rdx
    mov [rbx + 8], rdx
    mov r9, 0x7000
    wrfsbase r9
    rdfsbase r10
    mov [rbx + 16], r10
    mov rdi, 0
    mov rax, HC_EXIT
    int 0x82
    hang: jmp hang
    """
    m = machine()
    pid = m.create_partition("k", asm_kernel(source), [], 64)
    run_until_done(m, [pid])
    assert m.info(pid).state == "exited"
    assert results(m, pid, 3) == [0x123456789A, 0x55, 0x7000]
    bad = m.create_partition("bad", asm_kernel("mov rax, 0x800000000000\nwrfsbase rax\nhang: jmp hang\n"), [], 64)
    run_until_done(m, [bad])
    fault = m.fault_of(bad)
    assert fault is not None and fault.kind == "illegal_instruction"  # a non-canonical base is refused


def test_a_static_pie_glibc_program_runs(kernel: bytes, tmp_path: Path) -> None:
    """ET_DYN without an interpreter: loaded at 0x555555554000; glibc relocates itself; TLS and malloc work."""
    source = tmp_path / "pie.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n"
        "__thread int tv = 5;\n"
        "int main(int argc, char **argv) { char *p = malloc(300000); memset(p, 1, 300000);\n"
        '  printf("pie argc=%d tv=%d pid=%d main=%p %s\\n", argc, tv, getpid(), (void *)main, argv[1]);'
        " return p[299999] + 6; }\n"
    )
    built = subprocess.run([gcc()[0], "-static-pie", "-O2", "-o", "pie", "pie.c"], cwd=tmp_path, capture_output=True)
    if built.returncode != 0:
        pytest.skip(f"no static glibc to build with: {built.stderr.decode()[-200:]}")
    run = one(kernel, modules({"bin/pie": (tmp_path / "pie").read_bytes()}, ["/bin/pie", "arg"]))
    assert run.exit_code == 7, run
    assert len(run.lines) == 1 and run.lines[0].startswith("pie argc=2 tv=5 pid=1 main=0x5555555")
    assert run.lines[0].endswith(" arg")
