"""The claim of full versus paravirtualization, measured: the same guest work as PV and as full (shadow, nested).

Two guests do the same work operation by operation (one source of it,
``partitions/fvbench/bench_ops.h``): ``partitions/pvbench/`` is a C
paravirtual kernel (CPL 2, the hypercall ABI) with one app, and
``partitions/fvbench/`` an unmodified PC kernel (ring 0 as it believes, the
PC's devices) with one ring-3 app, run as a full partition twice, with
``mmu = "nested"`` and with ``mmu = "shadow"``. The operations, each N times
between two console lines the kernel prints:

* ``syscall``: the app's null system call round trip (``syscall`` and back).
* ``port_io``: the cheapest device access: an ``in`` of the UART's scratch
  register on the PC; on the paravirtual kernel a ``TIME_NOW`` hypercall (a
  read of the virtual timer, the cheapest device operation it has).
* ``timer``: one timer interrupt delivered to the kernel, acknowledged and
  re-armed for at once, while the app spins (the PIT one-shot through the
  IDT, an EOI to the 8259, two ``out`` to the PIT; a timer upcall and one
  ``TIMER_SET``).
* ``page_fault``: the app's first touch of a fresh page, the kernel maps it.
* ``page_table``: one round of mapping then unmapping 1,000 pages (PTE
  stores, then PTE clears each with ``invlpg``; ``MAP`` and ``UNMAP``
  hypercalls): the ``_us`` is per round of 2,000 updates.
* ``aspace_switch``: one address-space switch (``mov cr3``; ``ASPACE_SWITCH``).
* ``compute``: one round of ``bench_work`` (``spk_sdk/include/spk/bench_work.h``,
  also ``partitions/bench_sort.c``'s work), native at CPL 3 in both.

Timing: the host timestamps each console line as it arrives, in the event
sink (the only use of the host's clocks, and only here), with two clocks:
the CPU time of the thread that runs the guest (``time.thread_time_ns``:
the engine runs in the caller's thread) and wall time
(``time.perf_counter_ns``). It takes the time between an operation's two
lines, subtracts the time of an empty operation's two lines (``marker``,
run last, when everything is warm: what the lines themselves cost) and
divides by N. The ``_us`` keys are CPU time: on a host shared with other
work, wall time counts the time slices other processes took (a 2-core
machine at load 15 stretched long spans five-fold and left short ones
alone), CPU time does not; the ``_wall_us`` keys are wall time, equal to it
on an idle host. The compute loop runs once before its first line
(translated, and scanned in a full partition, before the clock starts).
Virtual time and the guests' behaviour stay deterministic; only these
host-time figures vary.

Keys: ``pv_<op>_us``, ``full_nested_<op>_us``, ``full_shadow_<op>_us``
(and each as ``_wall_us``);
``full_shadow_vs_pv_<op>`` and ``full_nested_vs_pv_<op>`` (the full cost
over the paravirtual one: 5 means five times slower);
``full_<mmu>_compute_speed_vs_pv`` (paravirtual time over full time for
compute, the issue's "full/PV" goal of at least 0.95); ``pv_compute_hash``
and the full ones are the compute result, the same in every run.

Errors: BuildError (gcc missing), :class:`BenchGuestError` (a guest ended
other than by finishing its run, or printed something unexpected: in
:func:`measure`, a ``<prefix>_note`` instead of that mode's figures).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from spgs.cbuild import build_c, program_sources
from spk import Machine, MachineEvent
from spk.abi import PAGE_SIZE

#: The operations, in the order the guests run them (bench_ops.h's enum, "marker" after them).
OPS = ("syscall", "port_io", "timer", "page_fault", "page_table", "aspace_switch", "compute")
#: How many times each operation runs, per profile (bench_ops.h's BENCH_N_*). The page-table
#: operation counts rounds of 1,000 pages mapped and unmapped.
PROFILES: dict[str, dict[str, int]] = {
    "quick": {"syscall": 1000, "port_io": 1000, "timer": 200, "page_fault": 128, "page_table": 1,
              "aspace_switch": 500, "compute": 20},
    "full": {"syscall": 20000, "port_io": 20000, "timer": 5000, "page_fault": 1024, "page_table": 10,
             "aspace_switch": 20000, "compute": 200},
}  # fmt: skip
#: The modes measured, each with its key prefix.
MODES = (("pv", None), ("full_nested", "nested"), ("full_shadow", "shadow"))
PREFIXES = tuple(prefix for prefix, _mmu in MODES)
#: Quotas: the paravirtual kernel takes its page pool from its quota; the PC kernel needs 16 MiB.
PV_QUOTA_FRAMES = 2048
FULL_QUOTA_FRAMES = 4096
#: Virtual time a run may take before it counts as hung (ticks: far above the full profile's needs).
RUN_LIMIT = 10**12
_WINDOW = 10**10

_BEGIN = re.compile(r"bench (\w+) (\d+)")
_DONE = re.compile(r"bench (\w+) done")
_HASH = re.compile(r"bench hash (0x[0-9a-f]+)")


class BenchGuestError(RuntimeError):
    """A benchmark guest did not run to its end, or its transcript is not what the harness expects."""


def profile_header(counts: Mapping[str, int]) -> bytes:
    """``bench_profile.h`` for these counts (the guests' BENCH_N_* macros)."""
    lines = ["/* generated by spk_tools/bench_fullvirt.py */"]
    lines += [f"#define BENCH_N_{op.upper()} {counts[op]}" for op in OPS]
    return ("\n".join(lines) + "\n").encode()


def _sources(folder: str, counts: Mapping[str, int]) -> list[tuple[str, bytes]]:
    """A guest folder's sources under ``partitions/``, with the profile's header in place of the folder's."""
    path = Path(str(resources.files("partitions").joinpath(*folder.split("/"))))
    sources = [(name, data) for name, data in program_sources(path) if name != "bench_profile.h"]
    return [*sources, ("bench_profile.h", profile_header(counts))]


def pv_images(counts: Mapping[str, int]) -> tuple[bytes, bytes]:
    """The paravirtual kernel and its app for these counts (built, cached). Errors: BuildError."""
    kernel = build_c("kernel", "pvbench", _sources("pvbench", counts))
    app = build_c("app", "pvbench_app", _sources("pvbench/app", counts))
    return kernel, app


def fv_image(counts: Mapping[str, int]) -> bytes:
    """The unmodified PC kernel for these counts (built, cached). Errors: BuildError."""
    return build_c("pc", "fvbench", _sources("fvbench", counts))


@dataclass
class Transcript:
    """A run's console lines, each with the thread's CPU time (ns) it arrived at; ``wall``: their wall times."""

    lines: list[tuple[int, str]] = field(default_factory=list)
    wall: list[int] = field(default_factory=list)
    ended: str = ""

    def sink(self, event: MachineEvent) -> None:
        if event.event == "console":
            self.lines.append((time.thread_time_ns(), str(event.args.get("text", ""))))
            self.wall.append(time.perf_counter_ns())

    def wall_clock(self) -> Transcript:
        """The same lines stamped with their wall times."""
        return Transcript([(w, line) for w, (_cpu, line) in zip(self.wall, self.lines, strict=True)], ended=self.ended)

    def text(self) -> list[str]:
        return [line for _t, line in self.lines]


@dataclass(frozen=True)
class Span:
    """One operation as the guest printed it: its name, N, and the host times (ns) of its two lines."""

    op: str
    n: int
    begin_ns: int
    end_ns: int


def operations(lines: list[tuple[int, str]]) -> list[Span]:
    """The operations of a transcript, in the order they ended (a line without a timestamp: pass 0).

    Errors: BenchGuestError for a "done" line without its first line.
    """
    begun: dict[str, tuple[int, int]] = {}
    out: list[Span] = []
    for stamp, line in lines:
        if (m := _BEGIN.fullmatch(line)) is not None:
            begun[m.group(1)] = (stamp, int(m.group(2)))
        elif (m := _DONE.fullmatch(line)) is not None:
            if m.group(1) not in begun:
                raise BenchGuestError(f"{line!r} without its first line")
            start, n = begun.pop(m.group(1))
            out.append(Span(m.group(1), n, start, stamp))
    return out


def per_op_us(transcript: Transcript, counts: Mapping[str, int]) -> dict[str, float]:
    """Host microseconds per operation: (its span - the marker's span) / N.

    Errors: BenchGuestError when the operations are not the profile's: each
    of :data:`OPS` and then "marker" (N = 0) once, in that order, with the
    profile's N.
    """
    spans = operations(transcript.lines)
    wanted = [*((op, counts[op]) for op in OPS), ("marker", 0)]
    if [(s.op, s.n) for s in spans] != wanted:
        tail = "; ".join(transcript.text()[-4:])
        raise BenchGuestError(f"the guest's operations are {[(s.op, s.n) for s in spans]}, not {wanted} "
                              f"({transcript.ended}); last lines: {tail}")  # fmt: skip
    marker = spans[-1].end_ns - spans[-1].begin_ns
    return {s.op: (s.end_ns - s.begin_ns - marker) / s.n / 1e3 for s in spans[:-1]}


def compute_hash(transcript: Transcript) -> str:
    """The compute operation's result as the guest printed it. Errors: BenchGuestError."""
    for line in transcript.text():
        if (m := _HASH.fullmatch(line)) is not None:
            return m.group(1)
    raise BenchGuestError("the guest printed no compute hash")


def _run_to_end(machine: Machine, pid: int, transcript: Transcript) -> None:
    """Run one partition alone in long windows until it exits. Errors: BenchGuestError."""
    while machine.state(pid) in ("ready", "blocked"):
        if machine.now > RUN_LIMIT:
            raise BenchGuestError(f"the guest did not finish within {RUN_LIMIT} ticks")
        machine.run(pid, machine.now + _WINDOW)
    info = machine.info(pid)
    transcript.ended = f"{info.state}, exit code {info.exit_code}, fault {info.fault}"
    if info.state != "exited" or info.exit_code != 0:
        tail = "; ".join(transcript.text()[-4:])
        raise BenchGuestError(f"the guest ended {transcript.ended}; last lines: {tail}")


def run_pv(counts: Mapping[str, int]) -> Transcript:
    """One run of the paravirtual guest; its timestamped transcript. Errors: BuildError, BenchGuestError."""
    kernel, app = pv_images(counts)
    transcript = Transcript()
    machine = Machine((PV_QUOTA_FRAMES + 512) * PAGE_SIZE, on_event=transcript.sink)
    pid = machine.create_partition("pvbench", kernel, [("pvbench_app", app)], PV_QUOTA_FRAMES)
    _run_to_end(machine, pid, transcript)
    machine.engine.close()
    return transcript


def run_full(counts: Mapping[str, int], mmu: str) -> Transcript:
    """One run of the PC kernel in a full partition with ``mmu``. Errors: BuildError, BenchGuestError."""
    elf = fv_image(counts)
    transcript = Transcript()
    machine = Machine((FULL_QUOTA_FRAMES * 2 + 512) * PAGE_SIZE, on_event=transcript.sink)
    pid = machine.create_full_partition("fvbench", elf, FULL_QUOTA_FRAMES, mmu=mmu)
    _run_to_end(machine, pid, transcript)
    machine.engine.close()
    return transcript


def run_mode(prefix: str, counts: Mapping[str, int]) -> Transcript:
    """One run of the mode named by its key prefix ("pv", "full_nested", "full_shadow").

    Errors: BuildError, BenchGuestError, KeyError for another prefix.
    """
    mmu = dict(MODES)[prefix]
    return run_pv(counts) if mmu is None else run_full(counts, mmu)


def report(per_mode: Mapping[str, Mapping[str, float]], hashes: Mapping[str, str]) -> dict[str, Any]:
    """The keys of the module's docstring from each mode's microseconds per operation and compute hash.

    Errors: BenchGuestError when the modes computed different results.
    """
    if len(set(hashes.values())) > 1:
        raise BenchGuestError(f"the guests computed different results: {dict(hashes)}")
    out: dict[str, Any] = {}
    for prefix, per_op in per_mode.items():
        out.update({f"{prefix}_{op}_us": round(per_op[op], 3) for op in OPS})
    pv = per_mode.get("pv")
    for prefix in ("full_shadow", "full_nested"):
        full = per_mode.get(prefix)
        if pv is None or full is None:
            continue
        out.update({f"{prefix}_vs_pv_{op}": round(full[op] / pv[op], 3) for op in OPS})
        out[f"{prefix}_compute_speed_vs_pv"] = round(pv["compute"] / full["compute"], 3)
    out.update({f"{prefix}_compute_hash": value for prefix, value in hashes.items()})
    return out


def measure(
    counts: Mapping[str, int], *, repeats: int = 1, modes: tuple[str, ...] = PREFIXES
) -> tuple[dict[str, Any], dict[str, Transcript]]:
    """The keys of the module's docstring for ``counts``, and each mode's last transcript.

    Each figure is the best of ``repeats`` runs taken in turn: the runs
    alternate between the modes (pv, nested, shadow, pv, ...), so a burst of
    load on the host hits them alike. A mode whose guest does not run to its
    end has no figures but ``<prefix>_note`` saying why (the other modes are
    still measured: a broken mode must not cost the rest of ``spk bench``).
    Errors: BuildError, BenchGuestError when two modes computed different
    results.
    """
    best: dict[str, dict[str, float]] = {}
    hashes: dict[str, str] = {}
    notes: dict[str, str] = {}
    transcripts: dict[str, Transcript] = {}
    for _ in range(repeats):
        for prefix in modes:
            if prefix in notes:
                continue
            try:
                transcript = transcripts[prefix] = run_mode(prefix, counts)
                clocks = ((prefix, transcript), (f"{prefix}_wall", transcript.wall_clock()))
                per_clock = [(key, per_op_us(clocked, counts)) for key, clocked in clocks]
                hashes[prefix] = compute_hash(transcript)
            except BenchGuestError as exc:
                notes[prefix] = str(exc)
                continue
            for key, measured in per_clock:
                mine = best.setdefault(key, measured)
                for op, us in measured.items():
                    mine[op] = min(mine[op], us)
    ran = [prefix for prefix in modes if prefix not in notes]
    out = report({prefix: best[prefix] for prefix in ran}, hashes)
    for prefix in ran:
        out.update({f"{prefix}_{op}_wall_us": round(us, 3) for op, us in best[f"{prefix}_wall"].items()})
    out.update({f"{prefix}_note": note for prefix, note in notes.items()})
    return out, transcripts


def fullvirt_benchmarks(*, quick: bool, repeats: int = 1, modes: tuple[str, ...] = PREFIXES) -> dict[str, Any]:
    """:func:`measure` with the quick or the full profile (``spk bench``). Errors: as :func:`measure`."""
    out, _transcripts = measure(PROFILES["quick" if quick else "full"], repeats=repeats, modes=modes)
    out["fullvirt_profile"] = "quick" if quick else "full"
    out["fullvirt_repeats"] = repeats
    return out


if __name__ == "__main__":  # a look at one mode: python -m spk_tools.bench_fullvirt [pv|full_nested|full_shadow]
    import json
    import sys

    chosen = tuple(a for a in sys.argv[1:] if not a.startswith("--")) or PREFIXES
    print(json.dumps(fullvirt_benchmarks(quick="--full" not in sys.argv, modes=chosen), indent=2))
