"""Benchmarks of the Linux personality, side by side with Qiling in the same run.

The same static binary runs under both: ``linux_probe getpid N``
(fuzz/campaigns/linux_probe.c, glibc ``-static``), a loop of N getpid
system calls, and a busybox pipeline (Debian's busybox-static).

* ``linux_syscall_us``: wall time per getpid under SPK, whole: the loop's
  instructions, the trap into the Linux kernel at CPL 2 through ring 0, the
  kernel's dispatch and the return. Once the loop runs, a window of a fixed
  number of instructions is timed and divided by the system calls ring 0
  counted in it; nothing is subtracted.
* ``qiling_syscall_us``: the same program under Qiling 1.4.6 (the optional
  extra ``qiling``: ``pip install -e '.[qiling]'``), in a child process
  of its own: the slope between runs of N1 and N2 calls (the faster of two
  runs each), so Qiling's set-up and the program's start-up cancel out.
  Absent when Qiling cannot be imported; ``qiling_note`` says why.
* ``linux_syscall_speedup_vs_qiling``: ``qiling_syscall_us / linux_syscall_us``.
* ``linux_pipeline_ms`` and ``qiling_pipeline_ms``: one busybox pipeline,
  ``seq 1 2000 | sha256sum``, boot to exit; absent when its program cannot
  run there (``qiling_pipeline_note``).

Wall time on this host, so only the ratio carries across machines.
Errors: BuildError (gcc or the static libc missing), as the other benchmarks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fuzz.campaigns.linux_probe import probe
from spgs.linux_run import linux_kernel, linux_modules, run_linux
from spk import Machine
from spk.abi import PAGE_SIZE

#: The pipeline both sides run (busybox sh -c).
PIPELINE = "seq 1 2000 | sha256sum"
BUSYBOX = Path("/bin/busybox")
#: Marks the child's result line (the emulated program prints to the same stdout).
_MARK = "spk-bench-qiling: "
#: Quota of the benchmark's Linux partition, and the calls its probe makes before the timed window.
_QUOTA = 16 << 20
_WARM_CALLS = 1_000
#: Longest a Qiling child may take (seconds): a hung emulation is reported, never waited for.
_QILING_TIMEOUT = 600


def _spk_seconds(argv: list[str], files: dict[str, Path]) -> tuple[float, str]:
    """Wall time of one SPK run of ``argv`` (boot to exit), and how the partition ended."""
    modules = linux_modules(None, files, argv, [], None)
    linux_kernel()  # built (or read from the cache) before the clock starts
    start = time.perf_counter()
    run = run_linux(modules)
    elapsed = time.perf_counter() - start
    return elapsed, f"{run.state} {run.exit_code}"


def _spk_syscall_us(files: dict[str, Path], instructions: int) -> float:
    """Wall time per getpid of the probe's loop under SPK, counted by ring 0's own syscall counter.

    The probe loops on getpid (far more calls than the run needs); once its
    loop runs (start-up done), one window of ``instructions`` is timed and
    divided by the system calls ring 0 counted in it: the whole time per call.
    """
    modules = linux_modules(None, files, ["/bin/probe", "getpid", str(10**12)], [], None)
    machine = Machine(_QUOTA + (1 << 20), on_event=None)
    pid = machine.create_partition("bench", linux_kernel(), modules, _QUOTA // PAGE_SIZE, frame_hint=256)
    while machine.info(pid).counters.syscalls < _WARM_CALLS:  # boot, glibc's start-up, the loop's first calls
        machine.run(pid, machine.now + 1_000_000)
        if machine.state(pid) not in ("ready", "blocked"):
            raise RuntimeError(f"the probe ended {machine.state(pid)} before its loop ran")
    before = machine.info(pid).counters.syscalls
    start = time.perf_counter()
    machine.run(pid, machine.now + instructions)
    elapsed = time.perf_counter() - start
    return elapsed / (machine.info(pid).counters.syscalls - before) * 1e6


def _qiling_child() -> None:
    """In a child process: run each ``argv`` of the JSON request under Qiling; print the wall times."""
    request = json.loads(sys.argv[1])
    from qiling import Qiling
    from qiling.const import QL_VERBOSE

    times = []
    for argv in request["runs"]:
        start = time.perf_counter()
        # Qiling forks only in its multithread mode (a fork in its default mode raises).
        ql = Qiling(argv, request["rootfs"], verbose=QL_VERBOSE.DISABLED, multithread=request["multithread"])
        ql.run()
        times.append(time.perf_counter() - start)
    sys.stdout.flush()
    print(f"\n{_MARK}{json.dumps(times)}")


def _qiling_seconds(
    rootfs: Path, runs: list[list[str]], *, expect: str | None = None, multithread: bool = False
) -> tuple[list[float] | None, str]:
    """Wall times of ``runs`` under Qiling in a child process, or None and why not.

    With ``expect``, the programs' output must be exactly that (the same
    program's native output): a wrong answer is not a time.
    """
    try:
        import qiling  # noqa: F401  (only to know whether it is there: it runs in the child)
    except ImportError as exc:
        return None, f"Qiling not importable ({exc}): install the extra with pip install -e '.[qiling]'"
    request = json.dumps({"rootfs": str(rootfs), "runs": runs, "multithread": multithread})
    code = "from spk_tools.bench_linux import _qiling_child; _qiling_child()"
    try:
        proc = subprocess.run([sys.executable, "-c", code, request], capture_output=True, text=True,
                              timeout=_QILING_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"Qiling did not finish in {_QILING_TIMEOUT} s"
    output, _mark, result = proc.stdout.rpartition(f"\n{_MARK}")
    try:
        times = [float(t) for t in json.loads(result)]
    except (ValueError, TypeError):
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"Qiling failed (exit {proc.returncode}): {why}"
    if expect is not None and output != expect:
        return None, f"Qiling ran it but printed {output[:60]!r}..., not the native {expect[:60]!r}"
    return times, "ok"


def linux_benchmarks(*, quick: bool) -> dict[str, Any]:
    """The Linux personality's numbers (see the module's docstring), Qiling's beside them when installed."""
    small, large = (2_000, 12_000) if quick else (5_000, 100_000)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spk-bench-linux-") as scratch:
        root = Path(scratch)
        (root / "bin").mkdir()
        program = root / "bin" / "probe"
        program.write_bytes(probe())
        program.chmod(0o755)
        files = {"/bin/probe": program}
        out["linux_syscall_us"] = round(_spk_syscall_us(files, 2_000_000 if quick else 10_000_000), 3)
        qiling_runs = [[str(program), "getpid", str(small)], [str(program), "getpid", str(large)]]
        pipeline = [str(BUSYBOX), "sh", "-c", PIPELINE]
        if BUSYBOX.is_file():
            (root / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
            (root / "bin" / "busybox").chmod(0o755)
            seconds, ended = _spk_seconds(["/bin/busybox", *pipeline[1:]], {"/bin/busybox": BUSYBOX})
            if ended == "exited 0":
                out["linux_pipeline_ms"] = round(seconds * 1e3, 2)
            else:
                out["linux_pipeline_note"] = f"the pipeline ended {ended} under SPK"
        times, why = _qiling_seconds(root, qiling_runs + qiling_runs)  # twice: the faster of each (less noise)
        if times is None:
            out["qiling_note"] = why
        else:
            fast_small, fast_large = min(times[0], times[2]), min(times[1], times[3])
            out["qiling_syscall_us"] = round((fast_large - fast_small) / (large - small) * 1e6, 3)
            out["linux_syscall_speedup_vs_qiling"] = round(out["qiling_syscall_us"] / out["linux_syscall_us"], 2)
            if BUSYBOX.is_file():
                native = subprocess.run(pipeline, capture_output=True, text=True, check=False).stdout
                piped, why = _qiling_seconds(root, [[str(root / "bin" / "busybox"), *pipeline[1:]]], expect=native,
                                             multithread=True)
                if piped is None:
                    out["qiling_pipeline_note"] = why
                else:
                    out["qiling_pipeline_ms"] = round(piped[0] * 1e3, 2)
    return out


if __name__ == "__main__":  # a quick look: python -m spk_tools.bench_linux
    print(json.dumps(linux_benchmarks(quick="--full" not in sys.argv), indent=2))
