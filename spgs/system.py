"""Ring 1: build a system from its description and run it in time windows.

Policy lives here, mechanism in ``spk``: this module decides the order of the
windows (a fixed round-robin for now, one window per partition per major
frame), their lengths, and what a kernel fault leads to (the partition is
halted, the others run on). It talks to ring 0 only through ``spk``'s
public API.

Time: each window has a fixed length in virtual instructions; time a
partition leaves unused (yield, block, exit, halt) stays idle and is never
given to another partition, so no partition's behaviour can shift another's
windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from spgs.config import ConfigError, LoadedConfig, Problem
from spgs.images import build
from spgs.trust import Verdict, sha256, trusted_keys, verify_image
from spk import Machine, MachineEvent, PartitionInfo
from spk.abi import PAGE_SIZE

EventListener = Callable[[MachineEvent], None]
#: Frames at the bottom of RAM left to ring 0 before the first partition.
RING0_RESERVED_FRAMES = 64


@dataclass
class PartitionPlan:
    name: str
    window: int
    kernel_label: str
    kernel: bytes
    apps: list[tuple[str, bytes]]
    quota_frames: int
    #: secure-boot verdicts of the partition's images (kernel first); empty when off
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def refusals(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]


@dataclass(frozen=True)
class RefusedPartition:
    """A partition secure boot did not let boot (enforce mode)."""

    name: str
    reasons: list[str]


@dataclass
class SystemReport:
    """What a run did, per partition, for the summary table."""

    end_time: int
    major_frames: int
    partitions: list[PartitionInfo] = field(default_factory=list)
    refused: list[RefusedPartition] = field(default_factory=list)


def image_label(ref: str) -> str:
    """How an image is named in measurements and start info: its stem."""
    return Path(ref).stem if ref.endswith((".asm", ".bin")) else ref


def plan(config: LoadedConfig, *, secure_boot: str | None = None, today: date | None = None) -> list[PartitionPlan]:
    """Build every image the description names and check it against secure boot.

    ``secure_boot`` overrides ``[trust].secure_boot``. Errors: ConfigError
    (a quota too small for its images), ImageNotFound, AssemblyError,
    TrustError (an unreadable trusted key).
    """
    desc = config.description
    wanted = [("kernel", p.image) for p in desc.partition]
    wanted += [("app", a) for p in desc.partition for a in p.apps]
    images = build(wanted, config.path.parent)
    problems = []
    for i, p in enumerate(desc.partition):
        needed = Machine.frames_to_boot(len(images[("kernel", p.image)]), [len(images[("app", a)]) for a in p.apps])
        if p.memory // PAGE_SIZE < needed:
            problems.append(
                Problem(
                    str(config.path), config.lines.find(("partition", str(i), "memory")), f"partition.{i}.memory",
                    "quota_below_boot_size",
                    f"{p.name}: quota of {p.memory >> 10} KiB < {needed * PAGE_SIZE >> 10} KiB its images need to boot",
                )
            )  # fmt: skip
    if problems:
        raise ConfigError(problems)
    mode = secure_boot or desc.trust.secure_boot
    trusted = trusted_keys([config.path.parent / k for k in desc.trust.keys]) if mode != "off" else {}
    when = today or desc.trust.reference_date or date.today()

    def check(kind: str, ref: str) -> Verdict:
        if not ref.endswith(".bin"):
            return Verdict(ref, False, "unsigned", "built from source: not a signed image")
        verdict = verify_image(config.path.parent / ref, trusted, when)
        if verdict.ok and verdict.digest != sha256(images[(kind, ref)]):
            return Verdict(ref, False, "tampered", "changed between verification and loading")
        return verdict

    plans = []
    for p in desc.partition:
        verdicts = []
        if mode != "off":
            verdicts = [check("kernel", p.image)] + [check("app", a) for a in p.apps]
        plans.append(
            PartitionPlan(
                name=p.name,
                window=p.window,
                kernel_label=image_label(p.image),
                kernel=images[("kernel", p.image)],
                apps=[(image_label(a), images[("app", a)]) for a in p.apps],
                quota_frames=p.memory // PAGE_SIZE,
                verdicts=verdicts,
            )
        )
    return plans


class System:
    """A booted system: the machine, its partitions and the window schedule."""

    def __init__(
        self,
        config: LoadedConfig,
        plans: list[PartitionPlan],
        listener: EventListener,
        *,
        trace_hypercalls: bool = False,
        secure_boot: str | None = None,
        attestation_key: bytes | None = None,
    ) -> None:
        desc = config.description
        self.name = desc.system.name
        self._listener = listener
        self.machine = Machine(
            desc.system.memory, on_event=listener, trace_hypercalls=trace_hypercalls, attestation_key=attestation_key
        )
        mode = secure_boot or desc.trust.secure_boot
        self.refused: list[RefusedPartition] = []
        booting: list[PartitionPlan] = []
        for p in plans:
            reasons = [f"{Path(v.path).name}: {v.code}: {v.reason}" for v in p.refusals]
            if p.verdicts:
                decision = "refused" if reasons and mode == "enforce" else "warned" if reasons else "verified"
                args = {"mode": mode, "decision": decision, "reasons": reasons}
                listener(MachineEvent(0, p.name, "secure_boot", args))
            if reasons and mode == "enforce":
                self.refused.append(RefusedPartition(p.name, reasons))
            else:
                booting.append(p)
        self.plans = booting
        hints = self._placement(desc.system.seed)
        self.pids = [
            self.machine.create_partition(
                p.name, p.kernel, p.apps, p.quota_frames, frame_hint=hint,
                kernel_name=p.kernel_label, config_digest=config.digest,
            )
            for p, hint in zip(booting, hints, strict=True)
        ]  # fmt: skip
        # A refused partition keeps its window, idle: refusing one partition
        # must not shift the others' windows (no borrowing, ever).
        pid_of = {p.name: pid for p, pid in zip(booting, self.pids, strict=True)}
        self.schedule: list[tuple[int | None, int]] = [(pid_of.get(p.name), p.window) for p in plans]
        self.major_frame = sum(w for _, w in self.schedule)

    def pid_of(self, name: str) -> int | None:
        """The pid of a booted partition, by name."""
        for pid in self.pids:
            if self.machine.info(pid).name == name:
                return pid
        return None

    def _placement(self, seed: int) -> list[int]:
        """First-frame hints: the partitions laid out in RAM in a seed-drawn order.

        The seed moves partitions around physical memory; what a partition
        observes must not depend on where it sits (a test checks that its
        console output and virtual times are the same for several seeds).
        """
        order = list(range(len(self.plans)))
        state = seed or 1
        for i in range(len(order) - 1, 0, -1):
            state = (state * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
            j = (state >> 33) % (i + 1)
            order[i], order[j] = order[j], order[i]
        hints = [0] * len(order)
        cursor = RING0_RESERVED_FRAMES
        for item in order:
            hints[item] = cursor
            cursor += self.plans[item].quota_frames
        return hints

    def live(self) -> bool:
        return any(self.machine.info(pid).state in ("ready", "blocked") for pid in self.pids)

    def run(self, max_ticks: int, on_frame: Callable[[SystemReport], None] | None = None) -> SystemReport:
        """Run major frames until every partition is done or ``max_ticks`` passes."""
        machine = self.machine
        frames = 0
        while self.live() and machine.now < max_ticks:
            for pid, window in self.schedule:
                if machine.now >= max_ticks:
                    break
                end = min(machine.now + window, max_ticks)
                if pid is None:  # refused by secure boot: its window stays idle
                    machine.advance(end)
                    continue
                self._listener(MachineEvent(machine.now, machine.info(pid).name, "window", {"end": end}))
                outcome = machine.run(pid, end)
                if outcome.reason == "fault":
                    self._apply_health_policy(pid)
                machine.advance(end)
            frames += 1
            if on_frame is not None:
                on_frame(self.report(frames))
        return self.report(frames)

    def _apply_health_policy(self, pid: int) -> None:
        """A faulted guest kernel is halted; every other partition runs on."""
        info = self.machine.info(pid)
        self.machine.stop_partition(pid)
        fault = info.fault
        self._listener(
            MachineEvent(
                self.machine.now, info.name, "health_action",
                {"action": "halt", "event": fault.kind if fault else "unknown"},
            )
        )  # fmt: skip

    def report(self, frames: int) -> SystemReport:
        infos = [self.machine.info(pid) for pid in self.pids]
        return SystemReport(self.machine.now, frames, infos, list(self.refused))


def load_and_plan(
    path: Path, *, secure_boot: str | None = None, today: date | None = None
) -> tuple[LoadedConfig, list[PartitionPlan]]:
    from spgs.config import load

    config = load(path)
    return config, plan(config, secure_boot=secure_boot, today=today)
