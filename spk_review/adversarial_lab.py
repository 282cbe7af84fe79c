"""The adversarial suite's laboratory: a configured system with one attacker in it.

An attack runs the very system a description configures, plus one extra
partition, :data:`ATTACKER`, that runs an attacker image. A baseline run
puts an idle stand-in (``bench_yield``, which gives every window up) in the
same slot: same quota, same window, same place in RAM (placement depends on
the seed and the quotas only). Everything but the extra partition's code is
then the same in both runs, and the SPK's determinism makes the comparison
exact: every other partition must observe exactly what it observed in the
baseline (its memory byte for byte, its console lines, windows, exits and
faults at the same virtual times, its counters), ring 0's own frames must be
unchanged, free RAM must stay zero, and ring 0's invariants must hold after
every major frame.

Placing the attacker (written down in :attr:`Lab.placement` for the evidence):
its shape is copied from the configuration's first paravirtual ``guest``
partition, or with ``full=True`` its first full one (the *template*: memory
quota, window length, health table when an attack asks for the configured
policy; a full attacker runs under the template's ``mmu``); its window is appended to the major frame (the
frame grows by that window; the configured windows keep their offsets); RAM
grows when the quotas would not fit; secure boot is not applied to it (the
suite assumes the worst case, a malicious image that is signed). An attack
that needs a channel gets a private one from the attacker to itself, which
no configured partition can reach.

Reading and writing the attacker's data area goes through the machine's
public attributes (its partitions' boot spaces, the page-table walker, RAM),
as the fuzz campaign does; nothing here imports a private ``spk`` module.

Errors: :class:`spgs.config.ConfigError` and the image errors of
:func:`spgs.images.build` from :class:`Lab`; a run never raises for what
the guest does (ring 0 turns it into events), but host errors propagate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from spgs.config import (
    FATAL_EVENTS,
    ChannelConfig,
    HealthConfig,
    LoadedConfig,
    PartitionConfig,
    PortConfig,
    SystemConfig,
    SystemDescription,
    WindowConfig,
    load,
)
from spgs.images import build
from spgs.rules import FULL_MIN_QUOTA, RING0_RESERVED, explicit, major_frame
from spgs.system import PartitionPlan, System, image_label, plan
from spk import InternalError, Machine, MachineEvent
from spk.abi import KERNEL_DATA_VADDR, PAGE_SIZE

#: Name of the extra partition (a suffix is added if the configuration uses it).
ATTACKER = "adversary"
#: What runs in the attacker's slot in the baseline: gives every window up.
STAND_IN = "bench_yield"
#: The attacker's private channel ends (a queuing channel from one to the other).
LOOP_SOURCE, LOOP_DESTINATION = "adv_tx", "adv_rx"
LOOP_MESSAGE_SIZE, LOOP_DEPTH = 16, 2
#: The platform attestation key of every run: a fixed seed, so runs are
#: deterministic (never a real key: it only signs the attacker's own quotes).
ATTESTATION_SEED = hashlib.sha256(b"spk review: adversarial suite platform key").digest()
OWNER_RING0, OWNER_FREE = -1, 0
#: Frames an attacker may allocate beyond what it needs to boot (spaces, tables, frames).
FRAME_SLACK = 32


def _layout() -> dict[str, int]:
    """The numeric ``.equ`` lines of partitions/adversarial/attack.inc.

    The data-area layout and the record tags are defined once, in the
    include the attackers assemble; the host reads the same numbers.
    """
    text = (resources.files("partitions") / "adversarial" / "attack.inc").read_text()
    found = re.findall(r"^\.equ\s+(\w+),\s*(0x[0-9A-Fa-f]+|\d+)\s*(?:#.*)?$", text, re.MULTILINE)
    return {name: int(value, 0) for name, value in found}


LAYOUT = _layout()


@dataclass(frozen=True)
class AttackerSpec:
    """What runs in the attacker's slot, and what the run needs.

    ``health``: "halt" (halt on every fatal event, the default table),
    "template" (the configured policy of the template partition) or "warm"
    (warm-restart on every fatal event but internal_error, up to 64 times).
    """

    kernel: str
    apps: tuple[str, ...] = ()
    health: str = "halt"
    #: what a full partition's COM1 receives first
    stdin: str | None = None
    loop_channel: bool = False
    instrument: bool = False
    frames: int = 3
    params: Callable[[Machine, int, Lab], bytes] | None = None
    full: bool = False  #: a full partition: ``kernel`` is a bundled PC kernel, ``stdin`` its COM1 input

    @property
    def kind(self) -> str:
        """The image kind of its kernel (spgs.images): "pc" for a full partition."""
        return "pc" if self.full else "kernel"


@dataclass(frozen=True)
class Snapshot:
    """What the other partitions could observe, at the end of one major frame."""

    frame: int
    time: int
    events: int  #: events recorded so far
    memory: dict[str, str]  #: owner -> SHA-256 of its frames (ring 0 and every partition but the attacker)
    partitions: dict[str, dict[str, Any]]  #: name -> PartitionInfo as a dict
    channels: dict[str, tuple[int, int]]  #: configured channel -> (sent, received)


@dataclass(frozen=True)
class Fetch:
    """One read of guest memory by ring 0 (instrumented ``machine.mem.copy_in``)."""

    time: int
    cr3: int
    va: int
    length: int


@dataclass
class Run:
    """One run of the system with something in the attacker's slot."""

    system: System
    pid: int
    name: str  #: the attacker's partition name
    events: list[MachineEvent] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    invariant_error: str | None = None
    fetches: list[Fetch] = field(default_factory=list)

    @property
    def machine(self) -> Machine:
        return self.system.machine

    def attacker_events(self, kind: str) -> list[MachineEvent]:
        return [e for e in self.events if e.partition == self.name and e.event == kind]


@dataclass(frozen=True)
class Placement:
    """How the attacker was placed in the configured system (for the evidence)."""

    name: str
    template: str
    quota: int
    window: str
    notes: tuple[str, ...]


class Lab:
    """The configured system, ready to run with an attacker or the stand-in.

    Builds every image once: the configuration's (:func:`spgs.system.plan`),
    the attackers' and the stand-in's.

    Errors: ConfigError, ImageNotFound, AssemblyError, TrustError.
    """

    def __init__(
        self, config_path: Path, specs: list[AttackerSpec], *, seed: int | None = None, full: bool = False
    ) -> None:
        config = load(config_path)
        if seed is not None:
            system = config.description.system.model_copy(update={"seed": seed})
            config = dataclasses.replace(config, description=config.description.model_copy(update={"system": system}))
        self.config = config
        desc = config.description
        guests = [p for p in desc.partition if p.role == "guest" and p.boot and p.full == full]
        self.template = guests[0] if guests else desc.partition[0]
        self.victims = [p.name for p in desc.partition if p.role == "guest"]
        self.observers = [p.name for p in desc.partition if p.role == "system"]
        self.plans = plan(config)
        wanted = [("kernel", STAND_IN)] + [(s.kind, s.kernel) for s in specs]
        wanted += [("app", a) for s in specs for a in s.apps]
        self.images = build(wanted, config_path.parent)
        needed = max(self._frames_needed(s) for s in specs) if specs else 0
        self.placement, self._system, self._shape = self._place(desc, needed)

    # -- placing the attacker -------------------------------------------------
    def _frames_needed(self, spec: AttackerSpec) -> int:
        """Frames an attacker needs to boot, plus room for what it allocates (FRAME_SLACK).

        A full partition's quota is at least what ring 1's rules ask of one
        (its kernel's 4 MiB and ring 0's boot tables).
        """
        if spec.full:
            return FULL_MIN_QUOTA // PAGE_SIZE
        apps = [len(self.images[("app", a)]) for a in spec.apps]
        return Machine.frames_to_boot(len(self.images[("kernel", spec.kernel)]), apps) + FRAME_SLACK

    def _place(self, desc: SystemDescription, needed: int) -> tuple[Placement, SystemConfig, dict[str, Any]]:
        """The attacker's name, quota, RAM and window: the template's shape, appended."""
        names = {p.name for p in desc.partition}
        name = next(n for n in (ATTACKER, *(f"{ATTACKER}{i}" for i in range(2, 99))) if n not in names)
        quota, system, notes = self._quota(desc, needed)
        shape, system, window = self._window(desc, system)
        return Placement(name, self.template.name, quota, window, tuple(notes)), system, shape

    def _quota(self, desc: SystemDescription, needed: int) -> tuple[int, SystemConfig, list[str]]:
        """The template's quota (raised to what the attackers need), and RAM grown to fit it."""
        quota, notes, system = self.template.memory, [], desc.system
        if quota < needed * PAGE_SIZE:
            quota = needed * PAGE_SIZE
            notes.append(f"quota raised from {self.template.memory >> 10} KiB to {quota >> 10} KiB for its images")
        total = sum(p.memory for p in desc.partition) + quota
        if total > system.memory - RING0_RESERVED:
            memory = -(-(total + RING0_RESERVED) // (1 << 20)) << 20
            notes.append(f"RAM grown from {system.memory >> 20} MiB to {memory >> 20} MiB to hold the attacker's quota")
            system = system.model_copy(update={"memory": memory})
        return quota, system, notes

    def _window(self, desc: SystemDescription, system: SystemConfig) -> tuple[dict[str, Any], SystemConfig, str]:
        """A window as long as the template's, after the configured ones; the major frame grows by it."""
        frame, t = major_frame(desc), self.template
        if explicit(desc.partition):
            start, length = frame, t.windows[0].duration if t.windows else t.window
            shape: dict[str, Any] = {"windows": [WindowConfig(start=start, duration=length)]}
        else:  # automatic layout: after the configured windows, in configuration order
            start, length = sum(p.window for p in desc.partition), t.window
            shape = {"window": length}
        if desc.system.major_frame or explicit(desc.partition):
            system = system.model_copy(update={"major_frame": frame + length})
        return shape, system, f"[{start}, {start + length}) of a major frame grown from {frame} to {frame + length}"

    def _partition(self, spec: AttackerSpec) -> PartitionConfig:
        ports = []
        if spec.loop_channel:
            ports = [PortConfig(name=LOOP_SOURCE, direction="source"),
                     PortConfig(name=LOOP_DESTINATION, direction="destination")]  # fmt: skip
        if spec.full:  # a full partition: the template's MMU, its COM1 input, no apps, no port
            return PartitionConfig(
                name=self.placement.name, image=spec.kernel, virtualization="full", mmu=self.template.mmu,
                stdin=spec.stdin, memory=self.placement.quota, health=self._health(spec.health), **self._shape,
            )  # fmt: skip
        return PartitionConfig(
            name=self.placement.name, image=spec.kernel, apps=list(spec.apps), memory=self.placement.quota,
            ports=ports, health=self._health(spec.health), **self._shape,
        )  # fmt: skip

    def _health(self, kind: str) -> HealthConfig:
        if kind == "template":
            return self.template.health
        if kind == "warm":
            warm: dict[str, Any] = {event: "warm_restart" for event in FATAL_EVENTS if event != "internal_error"}
            return HealthConfig().model_copy(update={**warm, "restart_limit": 64})
        return HealthConfig()

    def loop_channel_name(self) -> str:
        names = {c.name for c in self.config.description.channel}
        return next(n for n in ("adversary-loop", *(f"adversary-loop{i}" for i in range(2, 99))) if n not in names)

    def _description(self, spec: AttackerSpec) -> SystemDescription:
        desc = self.config.description
        channels = list(desc.channel)
        if spec.loop_channel:
            name = self.placement.name
            channels.append(ChannelConfig(
                name=self.loop_channel_name(), kind="queuing", source=f"{name}.{LOOP_SOURCE}",
                destinations=[f"{name}.{LOOP_DESTINATION}"], message_size=LOOP_MESSAGE_SIZE, depth=LOOP_DEPTH,
            ))  # fmt: skip
        partitions = [*desc.partition, self._partition(spec)]
        return desc.model_copy(update={"system": self._system, "partition": partitions, "channel": channels})

    def _plan(self, spec: AttackerSpec, config: PartitionConfig) -> PartitionPlan:
        apps = [(image_label(a), self.images[("app", a)]) for a in spec.apps]
        return PartitionPlan(
            name=config.name, kernel_label=image_label(spec.kernel), kernel=self.images[(spec.kind, spec.kernel)],
            apps=apps, quota_frames=config.memory // PAGE_SIZE, config=config,
            stdin=spec.stdin.encode() if spec.stdin is not None else None,
        )  # fmt: skip

    # -- running ------------------------------------------------------------------
    def boot(self, spec: AttackerSpec) -> Run:
        """Boot the system with ``spec`` in the attacker's slot (nothing has run yet)."""
        desc = self._description(spec)
        config = LoadedConfig(self.config.path, desc, self.config.lines, self.config.digest)
        plans = [*self.plans, self._plan(spec, desc.partition[-1])]
        events: list[MachineEvent] = []
        system = System(config, plans, events.append, attestation_key=ATTESTATION_SEED)
        pid = system.pid_of(self.placement.name)
        if pid is None:
            raise InternalError(f"the attacker {self.placement.name} did not boot")
        run = Run(system, pid, self.placement.name, events)
        if spec.params is not None:
            write_data(system.machine, pid, LAYOUT["D_PARAMS"], spec.params(system.machine, pid, self))
        if spec.instrument:
            run.fetches = instrument(system.machine)
        return run

    def run(self, spec: AttackerSpec, frames: int, *, every_frame: bool = False) -> Run:
        """Boot and run ``frames`` major frames (fewer when nothing is left to run).

        Ring 0's invariants are checked after every frame; the first failure
        is kept in ``invariant_error``. A snapshot of what the other
        partitions observed is taken at the end (``every_frame``: after each frame).
        """
        run = self.boot(spec)
        system = run.system

        def after_frame(_report: object) -> None:
            if run.invariant_error is None:
                try:
                    system.machine.check_invariants()
                except InternalError as exc:
                    run.invariant_error = f"after major frame {len(run.snapshots) + 1}: {exc}"
            if every_frame:
                run.snapshots.append(self.snapshot(run))

        report = system.run(frames * system.major_frame, on_frame=after_frame)
        if not every_frame:
            run.snapshots.append(self.snapshot(run, report.major_frames))
        return run

    def snapshot(self, run: Run, frame: int | None = None) -> Snapshot:
        """What the configured partitions could observe now (the attacker excluded)."""
        machine = run.machine
        names = {pid: name for name, pid in run.system.pids.items()}
        memory = owner_digests(machine, names, skip={run.pid, OWNER_FREE})
        partitions = {}
        for name in self.victims:
            pid = run.system.pid_of(name)
            partitions[name] = dataclasses.asdict(machine.info(pid)) if pid is not None else {"state": "not running"}
        channels = {
            ch.name: (machine.channels[cid].sent, machine.channels[cid].received)
            for ch in self.config.description.channel
            for cid in [run.system.channel_ids[ch.name]]
        }
        number = frame if frame is not None else len(run.snapshots) + 1
        return Snapshot(number, machine.now, len(run.events), memory, partitions, channels)


# -- guest memory -------------------------------------------------------------------
def _data_paddr(machine: Machine, pid: int, offset: int) -> int:
    """Physical address of a byte of the partition's data area (its boot space)."""
    space = machine.partitions[pid].spaces[0]
    found = machine.walker.translate(space.cr3, KERNEL_DATA_VADDR + offset)
    if found is None:
        raise InternalError(f"partition {pid}: data area offset {offset:#x} is not mapped")
    return found.paddr


def read_data(machine: Machine, pid: int, offset: int, length: int) -> bytes:
    """Bytes of a partition's data area, page by page."""
    out = bytearray()
    while length > 0:
        chunk = min(length, PAGE_SIZE - (offset % PAGE_SIZE))
        out += machine.ram.read(_data_paddr(machine, pid, offset), chunk)
        offset, length = offset + chunk, length - chunk
    return bytes(out)


def write_data(machine: Machine, pid: int, offset: int, data: bytes) -> None:
    """Write bytes into a partition's data area, page by page (before it runs)."""
    done = 0
    while done < len(data):
        chunk = min(len(data) - done, PAGE_SIZE - ((offset + done) % PAGE_SIZE))
        machine.ram.write(_data_paddr(machine, pid, offset + done), data[done : done + chunk])
        done += chunk


@dataclass(frozen=True)
class Record:
    """One record of an attacker's log (partitions/adversarial/attack.inc)."""

    tag: int
    words: tuple[int, ...]  #: the seven words after the tag


def read_log(machine: Machine, pid: int) -> list[Record]:
    """The attacker's log: every record it wrote, in order."""
    base = LAYOUT["D_LOG"]
    count = min(struct.unpack("<Q", read_data(machine, pid, base, 8))[0], LAYOUT["LOG_MAX"])
    raw = read_data(machine, pid, base + 64, 64 * count)
    records = []
    for i in range(count):
        words = struct.unpack_from("<8Q", raw, 64 * i)
        records.append(Record(words[0], words[1:]))
    return records


def u64s(*values: int) -> bytes:
    """Little-endian u64 words (negative values as two's complement)."""
    return struct.pack(f"<{len(values)}Q", *(v & (2**64 - 1) for v in values))


# -- ring-0 facts ---------------------------------------------------------------------
def owner_digests(machine: Machine, names: dict[int, str], skip: set[int]) -> dict[str, str]:
    """SHA-256 of every owner's frames, in frame order ("ring 0", then partitions by name)."""
    runs: dict[int, list[tuple[int, int]]] = {}
    for mfn, frame in enumerate(machine.frames.entries):
        if frame.owner in skip:
            continue
        spans = runs.setdefault(frame.owner, [])
        if spans and spans[-1][1] == mfn:
            spans[-1] = (spans[-1][0], mfn + 1)
        else:
            spans.append((mfn, mfn + 1))
    out = {}
    for owner, spans in runs.items():
        digest = hashlib.sha256()
        for start, end in spans:
            digest.update(machine.ram.view[start * PAGE_SIZE : end * PAGE_SIZE])
        label = "ring 0" if owner == OWNER_RING0 else names.get(owner, f"partition {owner}")
        out[label] = digest.hexdigest()
    return out


def nonzero_free_frames(machine: Machine) -> list[int]:
    """Frames of nobody (free RAM) that are not all zero: there must be none."""
    zero = bytes(PAGE_SIZE)
    entries = machine.frames.entries
    return [mfn for mfn, f in enumerate(entries) if f.owner == OWNER_FREE and machine.ram.frame_bytes(mfn) != zero]


def frame_label(machine: Machine, names: dict[int, str], mfn: int) -> str:
    """Whose frame ``mfn`` is and of which type, as the frame table says now."""
    if not 0 <= mfn < len(machine.frames.entries):
        return f"frame {mfn:#x} (past the end of RAM)"
    frame = machine.frames.entries[mfn]
    owner = {OWNER_RING0: "ring 0", OWNER_FREE: "free RAM"}.get(frame.owner) or names.get(frame.owner, "?")
    return f"frame {mfn:#x} ({owner}, {frame.type.value})"


def instrument(machine: Machine) -> list[Fetch]:
    """Record every guest read ring 0's hypercalls make (``machine.mem.copy_in``, which they all call).

    The hypercall handlers read guest buffers through the machine's guest
    memory object, not through ``Machine.copy_in`` (which delegates to it):
    the instrument sits where every read passes.
    """
    fetches: list[Fetch] = []
    mem = machine.mem
    original = mem.copy_in

    def copy_in(cr3: int, va: int, length: int) -> bytes:
        fetches.append(Fetch(machine.time_now(), cr3, va, length))
        return original(cr3, va, length)

    mem.copy_in = copy_in  # type: ignore[method-assign]
    return fetches
