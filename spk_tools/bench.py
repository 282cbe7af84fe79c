"""``spk bench``: what isolation costs, measured against the bare engine.

Every number is wall time on this host, measured in the same run as its
baseline, so ratios hold across machines better than absolute values. The
guests are real: the trap costs are whole round trips through the engine,
the SPK and back, with the counters of the SPK telling how many happened.

* ``hypercall_roundtrip_us``: a CPL 2 loop of null hypercalls (VERSION).
* ``app_syscall_roundtrip_us``: a CPL 3 loop of getpid through the
  reference kernel (SPK bounce into the kernel, native iretq back).
* ``partition_switch_us``: two partitions that yield at once; each window
  is a switch (save, restore, TLB flush, one hypercall, engine stop/start).
* ``compute_ratio_vs_raw``: the same compute loop under SPK windows over
  the bare engine running free. ``compute_ratio_vs_counted_raw`` divides by
  the bare engine under the exact instruction budget deterministic
  preemption needs: the SPK's own share of the cost.
* ``raw_mips``, ``raw_counted_mips``, ``spk_mips``: the three throughputs.
* ``boot_64_signed_s``: secure and measured boot of 64 signed partitions
  (signature, size and digest checks, load, measurement), end to end.
* ``channel_roundtrip_us``: a queuing-port ping-pong between two partitions
  (two windows, two switches, and both sides' port hypercalls per trip).
* ``sched_cost_ratio_64_vs_1``: the cost of one window with 64 partitions
  over the cost with one (target <= 1.10: scheduling does not grow with
  the number of partitions).
* ``fuzz_execs_per_s``: isolation-checked executions per second of the
  hypercall campaign on one core, as ``spk fuzz --seconds`` runs it
  (hypothesis batches, each followed by a mutation round): each is one
  action of the CPL 2 agent (a real hypercall through the engine) followed
  by every invariant check, with a snapshot reset per program.
  ``fuzz_hypothesis_execs_per_s``: hypothesis alone (``--examples``);
  ``fuzz_world_execs_per_s``: hypothesis's programs performed again without
  generation (the world's own cost); ``fuzz_reset_us``: one snapshot restore.
"""

from __future__ import annotations

import time
from typing import Any

from spgs.images import build
from spk import Machine, bare_run
from spk.abi import APP_IMAGE_VADDR


def _images() -> dict[tuple[str, str], bytes]:
    from pathlib import Path

    kernels = ("bench_hypercall", "bench_yield", "bench_compute", "refkernel", "bench_ping", "bench_pong")
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
    return _per_trap_us(machine, pid, 3_000, instructions, "hypercalls")


def _syscall_us(images: dict[tuple[str, str], bytes], instructions: int) -> float:
    machine = Machine(8 << 20)
    app = [("bench_getpid", images[("app", "bench_getpid")])]
    pid = machine.create_partition("sys", images[("kernel", "refkernel")], app, 256)
    return _per_trap_us(machine, pid, 20_000, instructions, "syscalls")


def _window(machine: Machine, pid: int, length: int) -> None:
    """One window: run the partition, then let the time it left pass idle."""
    end = machine.now + length
    machine.run(pid, end)
    machine.advance(end)


def _switch_us(images: dict[tuple[str, str], bytes], switches: int) -> float:
    """Two partitions that yield at once: every window is one partition switch."""
    return _sched_cost_us(images, 2, switches)


def _compute(images: dict[tuple[str, str], bytes], instructions: int) -> dict[str, float]:
    code = images[("kernel", "bench_compute")]
    # The loop body is 3 instructions (add, dec, jnz); it falls through to the
    # final 2-byte jmp when rcx reaches 0, which is where the bare runs stop.
    until = APP_IMAGE_VADDR + len(code) - 2
    loops = instructions // 3

    def bare(counted: bool, count: int = loops) -> float:
        return bare_run(code, APP_IMAGE_VADDR, until=until, registers={"rcx": count}, counted=counted)

    bare(True, 100_000)  # warm the engine library
    raw = bare(False)
    counted = bare(True)
    machine = Machine(8 << 20)
    pid = machine.create_partition("cpu", code, [], 64)
    start = time.perf_counter()
    while machine.now < 3 * loops:
        _window(machine, pid, min(1_000_000, 3 * loops - machine.now))
    spk = time.perf_counter() - start
    return {
        "raw_mips": 3 * loops / raw / 1e6,
        "raw_counted_mips": 3 * loops / counted / 1e6,
        "spk_mips": machine.info(pid).counters.instructions / spk / 1e6,
    }


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
    results: dict[str, Any] = {
        "hypercall_roundtrip_us": _hypercall_us(images, 400_000 // scale),
        "app_syscall_roundtrip_us": _syscall_us(images, 1_000_000 // scale),
        "partition_switch_us": _switch_us(images, 20_000 // scale),
    }
    compute = _compute(images, 60_000_000 // scale)
    results.update(compute)
    results["compute_ratio_vs_raw"] = compute["spk_mips"] / compute["raw_mips"]
    results["compute_ratio_vs_counted_raw"] = compute["spk_mips"] / compute["raw_counted_mips"]
    results["boot_64_signed_s"] = _boot_signed_s(images, 64 if not quick else 8)
    results["channel_roundtrip_us"] = _channel_roundtrip_us(images, 2_000 // scale)
    # The noisiest number here: each side is the best of three runs.
    one = min(_sched_cost_us(images, 1, 6_400 // scale) for _ in range(3))
    many = min(_sched_cost_us(images, 64, 6_400 // scale) for _ in range(3))
    results["sched_cost_ratio_64_vs_1"] = many / one
    results.update(_fuzz(300 // scale if not quick else 10, 10.0 if not quick else 1.0))
    results["quick"] = quick
    return results
