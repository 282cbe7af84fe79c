"""``spk bench``: what isolation costs, measured against the bare engine.

Every number is wall time on this host, measured in the same run as its
baseline, so ratios hold across machines better than absolute values. The
noisy ones are the best of three runs (the trap and switch latencies, the
channel round trip, both sides of the scheduling ratio, the compute
ratios' interleaved measurements). The
guests are real: the trap costs are whole round trips through the engine,
the SPK and back, with the counters of the SPK telling how many happened.

* ``hypercall_roundtrip_us``: a CPL 2 loop of null hypercalls (VERSION).
* ``app_syscall_roundtrip_us``: a CPL 3 loop of getpid through the
  reference kernel (SPK bounce into the kernel, native iretq back).
* ``partition_switch_us``: two partitions that yield at once; each window
  is a switch (save, restore, TLB flush, one hypercall, engine stop/start).
* ``compute_ratio_vs_raw``: the same compute loop (3 instructions, one
  translated block) under SPK windows of about a million instructions, in
  exact time, over the bare engine running free.
  ``compute_ratio_vs_counted_raw`` divides by the bare engine under its own
  per-instruction budget (how the SPK counted time before its native
  clock). ``compute_ratio_vs_raw_fast``: the same loop in fast time
  (host-clock preemption, not deterministic).
* ``compute_ratio_vs_raw_typical``: a C kernel's compute (``bench_sort.c``:
  fill, shell sort, hash), rounds per second under the SPK over the same
  function's bytes on the bare engine. Above 1 since ring 0 maps the
  kernel's data no-execute: its stores take the engine's fast path, which
  the bare engine (memory executable) never does (docs/performance.md,
  "Round 6").
* ``raw_mips``, ``raw_counted_mips``, ``spk_mips``, ``spk_fast_mips``: the
  throughputs (instructions counted from the loop's own counter, rax).
* ``rss_64_partitions_mib``: resident memory 64 booted partitions add to a
  fresh process (with ``rss_machine_mib`` for the machine alone and
  ``rss_per_partition_mib``).
* ``boot_64_signed_s``: secure and measured boot of 64 signed partitions
  (signature, size and digest checks, load, measurement), end to end.
* ``channel_roundtrip_us``: a queuing-port ping-pong between two partitions
  (two windows, two switches, and both sides' port hypercalls per trip).
* ``sched_cost_ratio_64_vs_1``: the cost of one window with 64 partitions
  over the cost with one (target <= 1.10: scheduling does not grow with
  the number of partitions).
* ``bare_window_us``, ``bare_switch_us``, ``bare_sched_ratio_64_vs_1``:
  the baseline of the three above, the bare engine's own window
  (:func:`spk.bare_windows`: restore a context, run to the guest's ``int``,
  save; no SPK, no block hook) with one partition, two and 64 partitions
  of their own address spaces on one engine (a TLB flush whenever the
  address space changes, as the SPK's). ``bare_own_engine_window_us``,
  ``bare_own_engine_switch_us``, ``bare_own_engine_sched_ratio_64_vs_1`` and
  ``bare_own_engine_mib``: the same with one engine per partition (no flush, no context copy), and the
  resident memory each such engine costs. What these bound is in
  docs/performance.md, "The frontier of the switch and scheduling goals".
* ``fuzz_execs_per_s``: isolation-checked executions per second of the
  hypercall campaign on one core, as ``spk fuzz --seconds`` runs it
  (hypothesis batches, each followed by a mutation round): each is one
  action of the CPL 2 agent (a real hypercall through the engine) followed
  by every invariant check, with a snapshot reset per program.
  ``fuzz_hypothesis_execs_per_s``: hypothesis alone (``--examples``);
  ``fuzz_world_execs_per_s``: hypothesis's programs performed again without
  generation (the world's own cost); ``fuzz_reset_us``: one snapshot restore.
* ``linux_syscall_us``, ``linux_pipeline_ms``: an unmodified static Linux
  program's getpid loop and a busybox pipeline in a Linux partition;
  ``qiling_syscall_us`` and ``linux_syscall_speedup_vs_qiling`` beside them
  when the ``qiling`` extra is installed (else ``qiling_note`` says why):
  :mod:`spk_tools.bench_linux`, docs/linux.md.
* ``migration_downtime_ticks``, ``migration_bytes``, ``migration_rounds``,
  ``migration_downtime_ratio``: live migration of a 1 MiB partition under
  write load, in virtual time (:func:`spgs.migration.measure`,
  docs/migration.md).
* ``pv_<op>_us``, ``full_nested_<op>_us``, ``full_shadow_<op>_us``,
  ``full_shadow_vs_pv_<op>``, ``full_nested_vs_pv_<op>``: the same guest
  work paravirtualized and fully virtualized (shadow and nested paging),
  operation by operation: :mod:`spk_tools.bench_fullvirt`, docs/fullvirt.md.
"""

from __future__ import annotations

import time
from typing import Any

from spgs.images import build
from spgs.migration import measure as migration_measure
from spk import Machine, bare_run, bare_windows
from spk.abi import APP_IMAGE_VADDR
from spk_tools.bench_fullvirt import fullvirt_benchmarks
from spk_tools.bench_linux import linux_benchmarks


def _images() -> dict[tuple[str, str], bytes]:
    from pathlib import Path

    kernels = ("bench_hypercall", "bench_yield", "bench_compute", "bench_sort", "refkernel", "bench_ping", "bench_pong")
    wanted = [("kernel", n) for n in kernels]
    wanted += [("app", "bench_getpid"), ("app", "hello")]
    return build(wanted, Path.cwd())


def _timed_run(machine: Machine, pid: int, instructions: int) -> float:
    start = time.perf_counter()
    machine.run(pid, machine.now + instructions)
    return time.perf_counter() - start


def _per_trap_us(machine: Machine, pid: int, warm: int, instructions: int, counter: str) -> float:
    """Wall time per trap of one kind, counted by the SPK itself, after a warm-up."""
    _timed_run(machine, pid, warm)  # boot, and fill the translation cache
    before = int(getattr(machine.info(pid).counters, counter))
    seconds = _timed_run(machine, pid, instructions)
    return seconds / (int(getattr(machine.info(pid).counters, counter)) - before) * 1e6


def _hypercall_us(images: dict[tuple[str, str], bytes], instructions: int) -> float:
    machine = Machine(8 << 20)
    pid = machine.create_partition("hc", images[("kernel", "bench_hypercall")], [], 64)
    return _per_trap_us(machine, pid, 12_000, instructions, "hypercalls")


def _syscall_us(images: dict[tuple[str, str], bytes], instructions: int) -> float:
    machine = Machine(8 << 20)
    app = [("bench_getpid", images[("app", "bench_getpid")])]
    pid = machine.create_partition("sys", images[("kernel", "refkernel")], app, 256)
    return _per_trap_us(machine, pid, 100_000, instructions, "syscalls")  # boot and translate first


def _window(machine: Machine, pid: int, length: int) -> None:
    """One window: run the partition, then let the time it left pass idle."""
    end = machine.now + length
    machine.run(pid, end)
    machine.advance(end)


def _switch_us(images: dict[tuple[str, str], bytes], switches: int) -> float:
    """Two partitions that yield at once: every window is one partition switch."""
    return _sched_cost_us(images, 2, switches)


def _iterations(machine: Machine, pid: int) -> int:
    """The compute loop's iterations so far: its rax (add rax, 1 per iteration), read as a debugger would."""
    session = machine.debug_attach(pid)
    try:
        return session.registers()["rax"]
    finally:
        machine.debug_detach()


def _compute(images: dict[tuple[str, str], bytes], instructions: int, repeats: int = 3) -> dict[str, float]:
    """The tight loop's throughput: bare engine (free, counted), SPK exact and fast.

    Each is the best of ``repeats`` measurements taken in turn (bare, exact,
    fast, bare, ...), so a burst of load on the host hits all of them alike.
    """
    code = images[("kernel", "bench_compute")]
    # The loop body is 3 instructions (add, dec, jnz); it falls through to the
    # final 2-byte jmp when rcx reaches 0, which is where the bare runs stop.
    until = APP_IMAGE_VADDR + len(code) - 2
    loops = instructions // 3

    def bare(counted: bool, count: int = loops) -> float:
        return bare_run(code, APP_IMAGE_VADDR, until=until, registers={"rcx": count}, counted=counted)

    bare(True, 100_000)  # warm the engine library
    machines = {}
    for mode in ("exact", "fast"):
        machine = Machine(8 << 20, time_mode=mode)
        pid = machine.create_partition("cpu", code, [], 64)
        _window(machine, pid, 100_000)  # translate the loop
        machines[mode] = (machine, pid)
    best = {"raw_mips": 0.0, "raw_counted_mips": 0.0, "spk_mips": 0.0, "spk_fast_mips": 0.0}
    for _ in range(repeats):
        raw = bare(False)
        best["raw_mips"] = max(best["raw_mips"], 3 * loops / raw / 1e6)
        for mode, key in (("exact", "spk_mips"), ("fast", "spk_fast_mips")):
            machine, pid = machines[mode]
            before = _iterations(machine, pid)
            start = time.perf_counter()
            # Exact mode: a tick is an instruction byte (9 per 3-instruction
            # iteration), windows of 3 million ticks (a million instructions, as
            # the windows were when a tick was an instruction); fast mode: a
            # host nanosecond, for as long as the bare run took, windows of 3 ms.
            target = machine.now + (3 * 3 * loops if mode == "exact" else int(raw * 1e9))
            window = 3_000_000
            while machine.now < target:
                _window(machine, pid, min(window, target - machine.now))
            seconds = time.perf_counter() - start
            best[key] = max(best[key], 3 * (_iterations(machine, pid) - before) / seconds / 1e6)
    best["raw_counted_mips"] = 3 * loops / bare(True) / 1e6
    machines["fast"][0].engine.close()
    return best


def _typical(images: dict[tuple[str, str], bytes], rounds: int) -> dict[str, float]:
    """A C kernel's compute (bench_sort.c: fill, shell sort, hash): rounds per second, SPK and bare.

    The bare engine runs the very bytes of ``bench_work`` (self-contained,
    position independent) from a stack with a return address; under the SPK
    the kernel calls it in a loop with one TIME_NOW hypercall per round.
    """
    import io

    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(images[("kernel", "bench_sort")]))
    symbols = elf.get_section_by_name(".symtab")
    symbol = symbols.get_symbol_by_name("bench_work")[0]  # type: ignore[union-attr]
    address, size = symbol["st_value"], symbol["st_size"]
    text = elf.get_section_by_name(".text")
    if text is None:
        raise RuntimeError("bench_sort has no .text section")
    offset = address - text["sh_addr"]
    code = text.data()[offset : offset + size]
    base, stack = APP_IMAGE_VADDR, APP_IMAGE_VADDR + 0x10_0000
    until = base + 0x8_0000  # nothing there: the function's ret lands here

    def bare(count: int) -> float:
        memory = {stack: until.to_bytes(8, "little")}
        return bare_run(code, base, until=until, registers={"rdi": count, "rsp": stack}, counted=False, memory=memory)

    bare(2)  # warm
    machine = Machine(8 << 20)
    pid = machine.create_partition("sort", images[("kernel", "bench_sort")], [], 64)
    _window(machine, pid, 200_000)  # boot, translate
    raw_rate = spk_rate = 0.0
    for _ in range(3):  # best of three, taken in turn (see _compute)
        raw_rate = max(raw_rate, rounds / bare(rounds))
        before = machine.info(pid).counters.hypercalls
        start = time.perf_counter()
        while machine.info(pid).counters.hypercalls - before < rounds:
            _window(machine, pid, 3_000_000)  # about a million instructions
        seconds = time.perf_counter() - start
        spk_rate = max(spk_rate, (machine.info(pid).counters.hypercalls - before) / seconds)
    return {"raw_typical_rounds_per_s": raw_rate, "spk_typical_rounds_per_s": spk_rate}


def _boot_signed_s(images: dict[tuple[str, str], bytes], partitions: int) -> float:
    """Seconds to verify, load and measure ``partitions`` signed partitions.

    Each partition's kernel and app images are checked by secure boot (the
    signature of the manifest, then size and SHA-256 of the image) and
    created by ring 0, which measures the description and the kernel.
    """
    import hashlib
    import tempfile
    from datetime import date
    from pathlib import Path

    from spgs.trust import keygen, load_signing_key, sign_image, trusted_keys, verify_image

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        private, public = keygen(directory, "bench")
        key = load_signing_key(private)
        files = {}
        for kind, name in (("kernel", "refkernel"), ("app", "hello")):
            path = directory / f"{name}.bin"
            path.write_bytes(images[(kind, name)])
            sign_image(path, key, name=name, kind=kind)
            files[kind] = path
        trusted = trusted_keys([public])
        today = date.today()
        config_digest = hashlib.sha256(b"bench system").digest()
        start = time.perf_counter()
        machine = Machine((partitions * 64 + 256) * 4096)
        for i in range(partitions):
            verdicts = [verify_image(files[kind], trusted, today) for kind in ("kernel", "app")]
            if not all(v.ok for v in verdicts):
                raise RuntimeError(f"bench image refused: {verdicts}")
            kernel, app = files["kernel"].read_bytes(), files["app"].read_bytes()
            machine.create_partition(f"p{i}", kernel, [("hello", app)], 64, config_digest=config_digest)
        return time.perf_counter() - start


def _channel_roundtrip_us(images: dict[tuple[str, str], bytes], rounds: int) -> float:
    """Queuing-port ping-pong between two partitions: one round trip per major frame.

    A round trip is two windows (two partition switches) and the sends,
    receives and yields of both sides.
    """
    machine = Machine(8 << 20)
    ping = machine.create_partition("ping", images[("kernel", "bench_ping")], [], 64)
    pong = machine.create_partition("pong", images[("kernel", "bench_pong")], [], 64)
    there = machine.create_channel("queuing", 8, depth=1)
    back = machine.create_channel("queuing", 8, depth=1)
    machine.attach_port(ping, "out", there, "source")
    machine.attach_port(pong, "in", there, "destination")
    machine.attach_port(pong, "out", back, "source")
    machine.attach_port(ping, "in", back, "destination")

    def frame() -> None:
        for pid in (ping, pong):
            _window(machine, pid, 2_000)

    for _ in range(3):  # open the ports, warm the caches
        frame()
    before = machine.channels[back].received
    start = time.perf_counter()
    for _ in range(rounds):
        frame()
    trips = machine.channels[back].received - before
    return (time.perf_counter() - start) / trips * 1e6


def _sched_cost_us(images: dict[tuple[str, str], bytes], partitions: int, windows: int) -> float:
    """Wall time ring 1 and ring 0 spend per window, with ``partitions`` yielding partitions."""
    machine = Machine((partitions * 64 + 512) * 4096)
    image = images[("kernel", "bench_yield")]
    pids = [machine.create_partition(f"p{i}", image, [], 64) for i in range(partitions)]
    frames = max(1, windows // partitions)
    for pid in pids:  # warm
        _window(machine, pid, 1_000)
    start = time.perf_counter()
    for _ in range(frames):
        for pid in pids:
            _window(machine, pid, 1_000)
    return (time.perf_counter() - start) / (frames * partitions) * 1e6


def _bare_windows(windows: int, repeats: int) -> dict[str, float]:
    """The bare engine's window, one engine and one engine per partition (best of ``repeats`` each)."""

    def us(partitions: int, own_engines: bool) -> float:
        return min(bare_windows(partitions, windows, own_engines=own_engines)[0] for _ in range(repeats)) * 1e6

    one, two, many = us(1, False), us(2, False), us(64, False)
    own_one, own_two, own_many = us(1, True), us(2, True), us(64, True)
    return {
        "bare_window_us": one,
        "bare_switch_us": two,
        "bare_sched_ratio_64_vs_1": many / one,
        "bare_own_engine_window_us": own_one,
        "bare_own_engine_switch_us": own_two,
        "bare_own_engine_sched_ratio_64_vs_1": own_many / own_one,
        "bare_own_engine_mib": _own_engine_mib(8),
    }


def _own_engine_mib(engines: int) -> float:
    """Resident memory per bare engine of its own (in a fresh interpreter: this one's heap has room to reuse)."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom spk import bare_windows\nprint(bare_windows(int(sys.argv[1]), 16, own_engines=True)[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(engines)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]) / engines


def _rss_mib() -> float:
    """This process's resident memory, MiB (Linux: /proc/self/statm)."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _memory(images: dict[tuple[str, str], bytes], partitions: int) -> dict[str, float]:
    """Resident memory of a machine with ``partitions`` yielding partitions, each run once.

    Measured in a child process (a fresh interpreter, nothing else resident):
    the difference between the machine with its partitions and the same
    process before the machine, and per partition (the machine's own RAM
    buffer is touched only where guests write, as on a host).
    """
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from spk_tools.bench import _images, _rss_mib, _window\n"
        "from spk import Machine\n"
        "n = int(sys.argv[1]); images = _images(); base = _rss_mib()\n"
        "m = Machine((n * 64 + 512) * 4096)\n"
        "empty = _rss_mib()\n"
        "pids = [m.create_partition(f'p{i}', images[('kernel', 'bench_yield')], [], 64) for i in range(n)]\n"
        "[_window(m, p, 1000) for p in pids]\n"
        "print(json.dumps([base, empty, _rss_mib()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(partitions)], capture_output=True, text=True, check=True)
    base, empty, full = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        f"rss_{partitions}_partitions_mib": full - base,
        "rss_machine_mib": empty - base,
        "rss_per_partition_mib": (full - empty) / partitions,
    }


def _fuzz(examples: int, seconds: float) -> dict[str, float]:
    """The hypercall campaign's rates (as ``spk fuzz --seconds`` runs it, hypothesis alone, the
    world alone) and the reset cost."""
    from fuzz.replay import run_program, world_of
    from fuzz.runner import run

    world = world_of("agent")
    run(["hypercalls"], seed=0, examples=2)  # boot the world and warm the engine first
    mixed = run(["hypercalls"], seed=1, seconds=seconds).campaigns["hypercalls"]
    world.history = []
    pure = run(["hypercalls"], seed=1, examples=examples).campaigns["hypercalls"]
    programs, world.history = world.history, None
    start = time.perf_counter()
    performed = 0
    for program in programs:  # a finding is the campaign run's to report; here only its steps count
        result = run_program(world, program)
        performed += len(result.steps) - (result.violation is not None)
    replayed = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        world.reset()
    return {
        "fuzz_execs_per_s": mixed.execs_per_s,
        "fuzz_hypothesis_execs_per_s": pure.execs_per_s,
        "fuzz_world_execs_per_s": performed / replayed if replayed else 0.0,
        "fuzz_reset_us": (time.perf_counter() - start) / 100 * 1e6,
    }


def run_benchmarks(*, quick: bool = False) -> dict[str, Any]:
    """Run every benchmark; ``quick`` uses small counts (for the test suite)."""
    images = _images()
    scale = 1 if not quick else 20
    # Each trap figure is the best of three runs (one in the quick profile), as
    # the compute ratios and the scheduling ratio are: a slow spell of this
    # host lifts every figure by a third or more for seconds at a time.
    best = 3 if not quick else 1
    results: dict[str, Any] = {
        "hypercall_roundtrip_us": min(_hypercall_us(images, 400_000 // scale) for _ in range(best)),
        "app_syscall_roundtrip_us": min(_syscall_us(images, 1_000_000 // scale) for _ in range(best)),
        "partition_switch_us": min(_switch_us(images, 20_000 // scale) for _ in range(best)),
    }
    compute = _compute(images, 200_000_000 // scale)
    results.update(compute)
    results["compute_ratio_vs_raw"] = compute["spk_mips"] / compute["raw_mips"]
    results["compute_ratio_vs_counted_raw"] = compute["spk_mips"] / compute["raw_counted_mips"]
    results["compute_ratio_vs_raw_fast"] = compute["spk_fast_mips"] / compute["raw_mips"]
    typical = _typical(images, 4_000 // scale)
    results.update(typical)
    results["compute_ratio_vs_raw_typical"] = typical["spk_typical_rounds_per_s"] / typical["raw_typical_rounds_per_s"]
    results["boot_64_signed_s"] = _boot_signed_s(images, 64 if not quick else 8)
    results["channel_roundtrip_us"] = min(_channel_roundtrip_us(images, 2_000 // scale) for _ in range(best))
    # The noisiest number here: each side is the best of three runs.
    one = min(_sched_cost_us(images, 1, 6_400 // scale) for _ in range(3))
    many = min(_sched_cost_us(images, 64, 6_400 // scale) for _ in range(3))
    results["sched_cost_ratio_64_vs_1"] = many / one
    results.update(_bare_windows(200_000 // scale, best))
    results.update(_memory(images, 64))
    results.update(_fuzz(300 // scale if not quick else 10, 10.0 if not quick else 1.0))
    # Unmodified Linux programs beside Qiling (docs/linux.md), and live migration (docs/migration.md).
    results.update(linux_benchmarks(quick=quick))
    results.update(migration_measure(quick=quick))
    # Paravirtualization against full virtualization, shadow and nested (docs/fullvirt.md).
    results.update(fullvirt_benchmarks(quick=quick, repeats=1 if quick else 3))
    results["quick"] = quick
    return results
