"""Full virtualization under fire: an unmodified PC kernel that fuzzes its own machine, beside PV partitions.

The guest is ``partitions/fvfuzz`` (a bare PC kernel, docs/fuzzing.md): it
reads an 8-byte seed from COM1's receive buffer and performs random
privileged instructions, page-table writes, port I/O and interrupt storms,
logging one line per operation ("NNN name" before it, " args -> result"
after it). The world runs it as a full partition (``mmu`` nested or shadow)
beside two idle paravirtual victims; an action boots it with a seed, runs it
for some windows, or runs the victims. After every window:

* ``frame_accounting``: ``Machine.check_invariants`` (a full recount) and
  every partition holding exactly its quota;
* ``pv_memory``: the victims' frames hash as they did when the world was
  built, and free RAM is all zeros (nothing a full partition does lands
  outside its quota);
* ``fv_confinement``: the full partition's memory map
  (``Machine.full_state(pid).memory``) covers its quota and nothing else:
  its guest-physical memory is exactly its own frames, anything else the
  engine maps (the shadow pool) is ring 0's, never a frame of another
  partition or free RAM;
* ``fv_no_cpl0``: the guest's log never says its call gate's DPL 0 target
  ran ("target reached": it does on a PC; the SPK's tripwire must stop it);
* ``victims_running``, ``budget``, ``no_host_exception`` (an exception out
  of ring 0, or an ``internal_error`` fault);
* ``fv_explained_end``: the guest ends at its end marker, or by a fault its
  last operation explains: ``cpl0_tripwire`` after a far call through its
  call gate (seed bit 60), ``machine_check`` after a mapping beyond its
  quota was touched (bit 61), anything after an operation a real PC may not
  survive ("!", bit 62) or the fatal ending (bit 63). Any other end is a
  finding: a PC survives that operation (QEMU does, tests/test_fvfuzz_qemu.py);
* ``fv_progress``: a running guest writes at least one byte of log every
  :data:`STALL_WINDOWS` windows (ring 0 neither livelocks nor loses it).
  Explained: a storm whose PIT interrupts faster than a handler's exits
  cost (:func:`storm_outruns_its_handler`; docs/fullvirt.md, the limit it is).

And ``("determinism",)`` performs the example's actions so far again on a
second world built from scratch and compares the traces: every full
partition's console bytes, how it ended, virtual time, the trapped-operation
counters.

Full partitions have no snapshots (``Machine.snapshot`` refuses them), so
this world's reset builds a fresh machine (a few milliseconds).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.campaigns.base import CampaignMachine, register
from fuzz.world import Violation, World
from spgs.cbuild import build_c, program_sources
from spk import Machine, MachineEvent
from spk.abi import PAGE_SIZE

COM1 = 0x3F8
#: The guest's quota: the 4 MiB it identity-maps (partitions/fvfuzz/fvfuzz.h MAP_END).
QUOTA_FRAMES = 1024
#: Virtual time of one window of the full partition, and windows one ``run`` action takes at most.
WINDOW = 1_000_000
MAX_RUN = 40
#: Windows without a byte of log after which a running guest is stalled.
STALL_WINDOWS = 60
#: Exits to ring 0 fvfuzz's interrupt handler takes at most (EOI to the master and the slave 8259,
#: the UART's IIR and LSR when its interrupt is on): a PIT period shorter than these cost leaves
#: the storm's loop no time at all, as ISA port I/O (about a microsecond each) would on a PC.
STORM_HANDLER_EXITS = 4
MODES = ("nested", "shadow")
#: Seed bits the guest reads (partitions/fvfuzz/kernel.c).
GATE, BEYOND, UNSAFE, FATAL = 1 << 60, 1 << 61, 1 << 62, 1 << 63
#: Operations after which a fault is explained, by seed bit.
_GATE_OPS = frozenset({"callgate", "iretq", "lretq", "sysretq"})
_PT_OPS = frozenset({"ptmap", "ptunmap", "ptself", "ptlive", "ptroot"})
END_MARKER = b"fvfuzz: end,"
#: What the guest's log says when its call gate's target (DPL 0 code) ran.
CPL0_REACHED = b"target reached"


@functools.cache
def fvfuzz_elf() -> bytes:
    """The fuzzing PC kernel (partitions/fvfuzz), built by the C guest toolchain (cached). Errors: BuildError."""
    folder = Path(str(resources.files("partitions") / "fvfuzz"))
    return build_c("pc", "fvfuzz", program_sources(folder))


def seed_bytes(seed: int) -> bytes:
    """What the guest reads from COM1: the seed, 8 bytes little-endian."""
    return struct.pack("<Q", seed & (2**64 - 1))


@dataclass
class GuestRun:
    """One boot of the guest in this example: its seed, MMU, console, and how it ended."""

    pid: int
    seed: int
    mode: str
    console: bytearray = field(default_factory=bytearray)
    #: The line being written (console events carry whole lines; ring 0 keeps the rest).
    partial: bytes = b""
    windows: int = 0
    quiet_windows: int = 0
    end: str = ""

    def last_line(self) -> str:
        """The last line of the log: the unterminated one when the guest stopped inside an operation."""
        if self.partial:
            return self.partial.decode(errors="replace")
        return self.console.decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]

    def trace(self) -> tuple[Any, ...]:
        return (self.seed, self.mode, bytes(self.console), bytes(self.partial), self.windows, self.end)


def explained(run: GuestRun, kind: str) -> bool:
    """Does the guest's last operation explain a fault of ``kind`` (see the module's docstring)?"""
    line = run.last_line()
    words = line.split()
    op = words[1] if len(words) > 1 and words[0].isdigit() else ""
    tail = (run.console + run.partial).decode(errors="replace").rstrip("\n").rsplit("\n", 2)[-2:]
    if run.seed & FATAL and any(text.startswith("end fatal-") for text in tail):
        return True  # the fatal ending, or the kernel's report of the exception it ended in
    if run.seed & UNSAFE and len(words) > 2 and words[2] == "!":
        return True
    if kind == "cpl0_tripwire":
        return bool(run.seed & GATE) and op in _GATE_OPS
    if kind == "machine_check":
        return bool(run.seed & BEYOND) and op in _PT_OPS
    return False


def storm_outruns_its_handler(run: GuestRun, state: dict[str, Any]) -> bool:
    """The guest is inside its storm operation, and IRQ 0 comes faster than the handler's exits cost.

    The documented limit (docs/fullvirt.md, "How it is tested"): every exit
    to ring 0 costs ``exit_ticks`` of virtual time, so a periodic PIT whose
    period is below :data:`STORM_HANDLER_EXITS` exits leaves the loop between
    interrupts nothing, and the log stays where the storm began ("NNN storm ").
    Only that state is explained: the storm unfinished, the counter periodic
    and that fast.
    """
    if not run.last_line().endswith(" storm "):
        return False
    pit = next((d for d in state.get("devices", []) if d.get("device") == "pit8253"), None)
    period = pit.get("period_ticks") if pit is not None else None
    return isinstance(period, int) and period < STORM_HANDLER_EXITS * int(state.get("exit_ticks", 0))


class FullVirtWorld(World):
    """fvfuzz as a full partition beside two idle paravirtual victims; a fresh machine per example."""

    kind = "fullvirt"
    ram_bytes = (1 << 20) + (QUOTA_FRAMES + 2 * 64 + 512) * PAGE_SIZE
    #: The MMUs the rules draw from (a test may narrow them; a replay names its mode itself).
    modes: tuple[str, ...] = MODES

    def __init__(self) -> None:
        self.runs: list[GuestRun] = []
        self._by_name: dict[str, GuestRun] = {}
        super().__init__(on_event=self._on_event)
        self._build()

    # -- the machine --------------------------------------------------------------------
    def _build(self) -> None:
        """A fresh machine with its victims; their frames' hashes are what ``pv_memory`` keeps."""
        self.machine = Machine(self.ram_bytes, on_event=self._on_event)
        self.victims = []
        self.add_victims(2)
        self._victim_hashes = {pid: self._hash_frames(pid) for pid in self.victims}
        self._expected_state = {pid: "ready" for pid in self.victims}

    def _hash_frames(self, pid: int) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        view = self.machine.ram.view
        for mfn in self.machine.frames.owned(pid):
            digest.update(view[mfn * PAGE_SIZE : (mfn + 1) * PAGE_SIZE])
        return digest.digest()

    def _on_event(self, event: MachineEvent) -> None:
        run = self._by_name.get(event.partition)
        if run is not None and event.event == "console":
            run.console += str(event.args.get("text", "")).encode(errors="replace") + b"\n"

    def reset(self, *, count: bool = True) -> None:
        if self.history is not None and self.log:
            self.history.append(self.log)
        self.log = []
        self.runs = []
        self._by_name = {}
        self._budget_broken = None
        self._build()
        if count:
            self.examples += 1

    def seal(self) -> None:
        """Nothing to freeze: every example builds its machine (full partitions have no snapshots)."""

    # -- invariants ---------------------------------------------------------------------
    def invariants(self) -> list[Any]:
        return [self.frame_accounting, self.pv_memory, self.fv_confinement, self.victims_running, self.budget,
                self.fv_no_cpl0, self.fv_explained_end, self.fv_progress]  # fmt: skip

    def fv_no_cpl0(self) -> None:
        """The call gate's target never ran: it sets a flag the guest reports as "target reached" (on a PC
        it does run; under the SPK the CPL 0 tripwire must end the partition first)."""
        for run in self.runs:
            line = next((text for text in run.console.splitlines() if CPL0_REACHED in text), None)
            if line is not None:
                message = f"seed {run.seed:#x} ({run.mode}): the guest's code ran at CPL 0: {line.decode()!r}"
                raise Violation("fv_no_cpl0", message)

    def frame_accounting(self) -> None:
        try:
            self.machine.check_invariants()
        except Exception as exc:
            raise Violation("frame_accounting", str(exc)) from exc
        frames = self.machine.frames
        for pid in self.machine.partitions:
            quota = self.machine.info(pid).quota_frames
            if len(frames.owned(pid)) != quota:
                raise Violation("frame_accounting", f"partition {pid} holds {len(frames.owned(pid))} frames, "
                                                    f"its quota is {quota}")  # fmt: skip

    def pv_memory(self) -> None:
        for pid, before in self._victim_hashes.items():
            if self._hash_frames(pid) != before:
                raise Violation("pv_memory", f"victim {pid}'s frames changed")
        view, zero = self.machine.ram.view, bytes(PAGE_SIZE)
        for mfn in self.machine.frames.owned(0):
            if view[mfn * PAGE_SIZE : (mfn + 1) * PAGE_SIZE] != zero:
                raise Violation("pv_memory", f"free frame {mfn:#x} is not zero")

    def fv_confinement(self) -> None:
        owners_of = self.machine.frames.owners
        for run in self.runs:
            if run.pid not in self.machine.partitions:
                continue
            quota = self.machine.info(run.pid).quota_frames * PAGE_SIZE
            state = self.machine.full_state(run.pid)
            guest = 0
            for region in state["memory"]:  # type: ignore[attr-defined]
                start, size, first = int(region["guest_physical"]), int(region["size"]), int(region["host_frame"])
                owners = set(owners_of[first : first + size // PAGE_SIZE])
                if owners != {run.pid} or start != 0:
                    raise Violation("fv_confinement", f"partition {run.pid}'s guest memory at {start:#x} is frames "
                                                      f"of {sorted(owners)}")  # fmt: skip
                guest += size
            if guest != quota:
                raise Violation("fv_confinement", f"partition {run.pid} has {guest:#x} bytes of guest memory, its "
                                                  f"quota is {quota:#x}")  # fmt: skip
            for region in state["mmu"]["regions"]:  # type: ignore[index]
                start, size = int(region["engine_physical"]), int(region["size"])
                if (start == 0) != (size == quota) or 0 < start < quota:
                    raise Violation("fv_confinement", f"partition {run.pid}'s engine maps {region} over or beside "
                                                      f"its {quota:#x} bytes")  # fmt: skip

    def fv_explained_end(self) -> None:
        for run in self.runs:
            if run.pid not in self.machine.partitions or run.end:
                continue
            state = self.machine.state(run.pid)
            if state == "exited":
                run.end = "exit"
                if not run.console.rstrip().endswith(END_MARKER) and END_MARKER not in run.console:
                    raise Violation("fv_explained_end", f"seed {run.seed:#x} ({run.mode}) exited without its end "
                                                        f"marker, last line {run.last_line()!r}")  # fmt: skip
            elif state == "faulted":
                fault = self.machine.fault_of(run.pid)
                kind = fault.kind if fault is not None else "?"
                run.end = f"fault {kind}"
                if kind == "internal_error":
                    raise Violation("no_host_exception", f"ring 0 raised inside the full partition: {fault}")
                if not explained(run, kind):
                    raise Violation("fv_explained_end", f"seed {run.seed:#x} ({run.mode}): {kind} "
                                                        f"({fault.detail if fault else ''}) in {run.last_line()!r}, "
                                                        "which a PC survives")  # fmt: skip

    def fv_progress(self) -> None:
        for run in self.runs:
            if not run.end and run.quiet_windows >= STALL_WINDOWS:
                if storm_outruns_its_handler(run, self.machine.full_state(run.pid)):
                    continue
                message = f"seed {run.seed:#x} ({run.mode}) wrote nothing for {run.quiet_windows} windows"
                raise Violation("fv_progress", f"{message}, last line {run.last_line()!r}")

    # -- actions ------------------------------------------------------------------------
    def do_boot(self, seed: int, mode: str) -> int:
        """A new full partition running fvfuzz with ``seed`` under ``mode``'s MMU (the previous one destroyed)."""
        for run in self.runs:
            if run.pid in self.machine.partitions:
                self.machine.destroy_partition(run.pid)
        name = f"fvfuzz{len(self.runs)}"
        pid = self.machine.create_full_partition(name, fvfuzz_elf(), QUOTA_FRAMES, mmu=mode)
        self.machine.serial_input(pid, COM1, seed_bytes(seed))
        run = GuestRun(pid, seed & (2**64 - 1), mode)
        self.runs.append(run)
        self._by_name[name] = run
        return pid

    def do_run(self, windows: int) -> str:
        """Up to ``windows`` windows of the current guest, every invariant checked after each."""
        if not self.runs or self.runs[-1].pid not in self.machine.partitions:
            return "no guest"
        run = self.runs[-1]
        for _ in range(min(windows, MAX_RUN)):
            if self.machine.state(run.pid) not in ("ready", "blocked"):
                break
            before = len(run.console) + len(run.partial)
            self.run_partition(run.pid, WINDOW)
            run.partial = bytes(self.machine.partitions[run.pid].console_buffer)
            run.windows += 1
            run.quiet_windows = 0 if len(run.console) + len(run.partial) > before else run.quiet_windows + 1
            self.check()
        return self.machine.state(run.pid)

    def do_victims_run(self) -> None:
        self.run_victims()

    def do_determinism(self) -> str:
        """The example's actions so far, again on a fresh world: the same traces, or ``determinism`` breaks."""
        twin = FullVirtWorld()
        for action in self.log[:-1]:
            if action[0] != "determinism":
                twin.perform(action)
        mine, theirs = [r.trace() for r in self.runs], [r.trace() for r in twin.runs]
        if mine != theirs or self.machine.now != twin.machine.now:
            raise Violation("determinism", f"a second run of the same actions differs: {self._diff(mine, theirs)}")
        for run, other in zip(self.runs, twin.runs, strict=True):
            if run.pid in self.machine.partitions and other.pid in twin.machine.partitions:
                a, b = self.machine.full_state(run.pid)["traps"], twin.machine.full_state(other.pid)["traps"]
                if a != b:
                    raise Violation("determinism", f"trapped-operation counters differ: {a} vs {b}")
        return "same"

    @staticmethod
    def _diff(mine: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]) -> str:
        for a, b in zip(mine, theirs, strict=False):
            if a != b:
                ca, cb = a[2], b[2]
                at = next((i for i in range(min(len(ca), len(cb))) if ca[i] != cb[i]), min(len(ca), len(cb)))
                first, second = ca[at : at + 60], cb[at : at + 60]
                return f"seed {a[0]:#x} ({a[1]}): console differs at byte {at}: {first!r} vs {second!r}"
        return f"{len(mine)} runs vs {len(theirs)}"


SEEDS = st.integers(0, 2**64 - 1)


@register("fullvirt", "An unmodified PC kernel fuzzing privileged instructions, page tables, ports and interrupts "
                      "as a full partition (nested and shadow MMU) beside paravirtual ones", FullVirtWorld)  # fmt: skip
class FullVirtCampaign(CampaignMachine):
    @rule(seed=SEEDS, which=st.integers(0, len(MODES) - 1))
    def boot(self, seed: int, which: int) -> None:
        modes = type(self.world).modes if isinstance(self.world, FullVirtWorld) else MODES
        self.act("boot", seed, modes[which % len(modes)])

    @rule(windows=st.integers(1, MAX_RUN))
    def run(self, windows: int) -> None:
        self.act("run", windows)

    @rule()
    def victims_run(self) -> None:
        self.act("victims_run")

    @rule()
    def determinism(self) -> None:
        self.act("determinism")
