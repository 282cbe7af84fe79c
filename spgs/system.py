"""Ring 1: build a system from its description and run it in time windows.

Policy lives here, mechanism in ``spk``: this module lays the windows of the
major frame out from the configuration (:func:`spgs.rules.effective_windows`),
wires the channels, applies each partition's health table to the events
ring 0 reports (and to overruns), and carries out the management requests
of system partitions. It talks to ring 0 only through ``spk``'s public API.

Time: each window has a fixed length in virtual instructions; time a
partition leaves unused (yield, block, exit, halt) stays idle and is never
given to another partition, so no partition's behaviour can shift another's
windows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Protocol

from spgs.cbuild import BuildError
from spgs.config import ConfigError, LoadedConfig, PartitionConfig, Problem, SystemDescription
from spgs.elfimage import symbols_of
from spgs.fullvirt import COM1, kernel_problem, serial_base, stdin_of
from spgs.images import build, is_path
from spgs.rootfs import partition_modules, rootfs_verdict
from spgs.rules import RING0_RESERVED, effective_windows
from spgs.trust import Slot, Verdict, sha256, trusted_keys, verify_image
from spk import (
    DebugError,
    DebugSession,
    DebugStop,
    ImageError,
    LoadImage,
    Machine,
    MachineEvent,
    PartitionInfo,
    RunOutcome,
    check_app_image,
    load_image,
)
from spk.abi import PAGE_SIZE, PartOp

EventListener = Callable[[MachineEvent], None]
#: Frames at the bottom of RAM left to ring 0 (1 MiB, as the rules say).
RING0_RESERVED_FRAMES = RING0_RESERVED // PAGE_SIZE


DebugAction = Literal["continue", "step", "detach", "kill"]


class Debugger(Protocol):
    """Whoever debugs one partition (the gdb stub): ring 1 calls it, never the other way.

    While a call runs the whole system stands still: no virtual time
    passes and no other partition runs. Other partitions keep their windows.
    """

    def on_stop(self, session: DebugSession, stop: DebugStop) -> DebugAction:
        """The partition stopped; inspect it through ``session``, then say how to go on.

        ``continue`` and ``step`` resume it (step: stop before its next
        instruction), ``detach`` lets it run on undebugged, ``kill`` ends
        the whole run where it stands.
        """

    def on_end(self, state: str, exit_code: int | None) -> None:
        """The partition will not stop again: it is ``exited``, ``faulted``, ``stopped``,
        ``destroyed`` or the run is ``over``."""

    def interrupt_requested(self) -> bool:
        """Polled between windows: True asks for a stop before the partition's next instruction."""


@dataclass
class PartitionPlan:
    name: str
    kernel_label: str
    kernel: bytes  #: the kernel image's file, as built or read (flat or ELF): what is signed and measured
    apps: list[tuple[str, bytes]]
    quota_frames: int
    config: PartitionConfig
    #: secure-boot verdicts of the partition's images (kernel first); empty when off
    verdicts: list[Verdict] = field(default_factory=list)
    #: a full partition's COM1 input (``stdin`` or ``stdin_file``), read once when planned
    stdin: bytes | None = None

    @property
    def full(self) -> bool:
        """A full-virtualization partition (an unmodified PC kernel)?"""
        return self.config.full

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
    usage: dict[str, Usage] = field(default_factory=dict)
    declared: list[str] = field(default_factory=list)
    #: how each partition is virtualized, by name: "para", "full (nested)" or "full (shadow)"
    virtualization: dict[str, str] = field(default_factory=dict)


def kernel_kind(p: PartitionConfig) -> str:
    """How a partition's kernel is built: "pc" for a full partition (a bare PC kernel), else "kernel"."""
    return "pc" if p.full else "kernel"


def virtualization_label(p: PartitionConfig) -> str:
    """``para``, or ``full (nested)`` / ``full (shadow)``: what the summary shows."""
    return f"full ({p.effective_mmu})" if p.full else "para"


def image_label(ref: str) -> str:
    """How an image is named in measurements and start info: its stem."""
    return (Path(ref).stem or Path(ref).name) if is_path(ref) else ref


def image_problems(
    config: LoadedConfig,
    images: dict[tuple[str, str], bytes],
    skip: Collection[str] = (),
    linux: dict[str, list[tuple[str, bytes]]] | None = None,
) -> list[Problem]:
    """What keeps the built images of ``config`` from booting, one problem per way.

    Every check ring 0 or a guest kernel would make when loading, made
    before anything runs so ``spk validate`` refuses what ``spk launch``
    would: a kernel against the rules of :func:`spk.load_image` (an ELF
    file's segments, a flat image's size), an app against those of
    :func:`spk.check_app_image`, and a quota too small for the images
    (quota_below_boot_size), a Linux partition's boot modules (``linux``,
    by partition: :func:`spgs.rootfs.modules`) included. Partitions named
    in ``skip`` (refused by secure boot) are not looked at: their images
    are never parsed.
    """
    problems: list[Problem] = []
    path = str(config.path)

    def problem(i: int, where: tuple[str, ...], rule: str, message: str) -> None:
        line = config.lines.find(("partition", str(i), *where))
        problems.append(Problem(path, line, ".".join(("partition", str(i), *where)), rule, message))

    for i, p in enumerate(config.description.partition):
        if p.name in skip:
            continue
        if p.full:  # an unmodified PC kernel: ring 0's full-partition loader's rules, checked here first
            found = kernel_problem(images[("pc", p.image)], p.memory)
            if found is not None:
                problem(i, ("image",) if found[0] == "full_kernel_elf" else ("memory",), found[0],
                        f"{p.name}: kernel {p.image!r}: {found[1]}")  # fmt: skip
            continue
        kernel: LoadImage | None = None
        try:
            kernel = load_image(images[("kernel", p.image)])
        except ImageError as exc:
            problem(i, ("image",), exc.rule, f"{p.name}: kernel {p.image!r}: {exc}")
        for j, ref in enumerate(p.apps):
            try:
                check_app_image(images[("app", ref)])
            except ImageError as exc:
                problem(i, ("apps", str(j)), exc.rule, f"{p.name}: app {ref!r}: {exc}")
        if kernel is None:
            continue
        sizes = [len(images[("app", a)]) for a in p.apps] + [len(m) for _n, m in (linux or {}).get(p.name, [])]
        needed = Machine.frames_to_boot(kernel, sizes)
        if p.memory // PAGE_SIZE < needed:
            problem(i, ("memory",), "quota_below_boot_size",
                    f"{p.name}: quota of {p.memory >> 10} KiB < {needed * PAGE_SIZE >> 10} KiB its images need to boot")
    return problems


def plan(config: LoadedConfig, *, secure_boot: str | None = None, today: date | None = None) -> list[PartitionPlan]:
    """Build every image the description names and check it against secure boot.

    ``secure_boot`` overrides ``[trust].secure_boot``. A full partition's
    kernel is built as a bare PC kernel (kind ``pc``). Errors: ConfigError
    (every problem of :func:`image_problems`), ImageNotFound,
    AssemblyError, BuildError (for a full partition's kernel, naming the
    partition), TrustError (an unreadable trusted key).
    """
    desc = config.description
    wanted = [("kernel", p.image) for p in desc.partition if not p.full]
    wanted += [("app", a) for p in desc.partition for a in p.apps]
    images = build(wanted, config.path.parent)
    for p in desc.partition:
        if p.full:  # one at a time: a build error names the full partition whose kernel it is
            try:
                images.update(build([("pc", p.image)], config.path.parent))
            except BuildError as exc:
                raise BuildError(f"{exc}\n(partition {p.name} is virtualization = \"full\": its kernel {p.image!r} "
                                 "is built as a bare PC kernel, kind pc, and brings its own start-up code: "
                                 "docs/fullvirt.md)") from None  # fmt: skip
    linux, linux_problems = partition_modules(config)
    if linux_problems:
        raise ConfigError(linux_problems)
    mode = secure_boot or desc.trust.secure_boot
    trusted = trusted_keys([config.path.parent / k for k in desc.trust.keys]) if mode != "off" else {}
    when = today or desc.trust.reference_date or date.today()

    def check(p: PartitionConfig, kind: str, ref: str) -> Verdict:
        if not ref.endswith(".bin"):
            return Verdict(ref, False, "unsigned", "built from source: not a signed image")
        slot = Slot(p.name, kind, image_label(ref))  # signed for this slot, and recent enough, or refused
        verdict = verify_image(
            config.path.parent / ref, trusted, when, slot=slot, min_security_version=p.min_security_version
        )
        # A full partition's kernel is signed in the kernel slot like any kernel; it was built as kind pc.
        built = kernel_kind(p) if kind == "kernel" else kind
        if verdict.ok and verdict.digest != sha256(images[(built, ref)]):
            return Verdict(ref, False, "tampered", "changed between verification and loading")
        return verdict

    verdicts_of = {
        p.name: [check(p, "kernel", p.image)] + [check(p, "app", a) for a in p.apps]
        + ([rootfs_verdict(p, config.path.parent, linux[p.name][0][1], trusted, when)] if p.name in linux else [])
        if mode != "off" else []
        for p in desc.partition
    }  # fmt: skip
    # Secure boot first: an image it refuses is never parsed (an untrusted ELF
    # reaches no parser), and its partition is refused alone, as a tampered one is.
    refused = {p.name for p in desc.partition if mode == "enforce" and any(not v.ok for v in verdicts_of[p.name])}
    problems = image_problems(config, images, skip=refused, linux=linux)
    if problems:
        raise ConfigError(problems)

    plans = []
    for i, p in enumerate(desc.partition):
        verdicts = verdicts_of[p.name]
        try:
            stdin = stdin_of(p, config.path.parent)
        except OSError as exc:  # it was there when the rules ran
            line = config.lines.find(("partition", str(i), "stdin_file"))
            problem = Problem(str(config.path), line, f"partition.{i}.stdin_file", "stdin_file_missing",
                              f"{p.name}: stdin_file {p.stdin_file!r}: {exc.strerror or exc}")  # fmt: skip
            raise ConfigError([problem]) from None
        plans.append(
            PartitionPlan(
                name=p.name,
                kernel_label=image_label(p.image),
                kernel=images[(kernel_kind(p), p.image)],
                apps=[(image_label(a), images[("app", a)]) for a in p.apps] + linux.get(p.name, []),
                quota_frames=p.memory // PAGE_SIZE,
                config=p,
                verdicts=verdicts,
                stdin=stdin if p.full else None,  # a Linux partition's stdin is one of its modules
            )
        )
    return plans


@dataclass
class Usage:
    """Per-partition time accounting, for the summary and the monitor."""

    windows: int = 0
    window_time: int = 0  #: virtual time of its windows so far
    used: int = 0  #: instructions it ran in them
    overruns: int = 0  #: windows that ended with the partition still running
    last_frame_use: float = 0.0  #: fraction of its window time used in the last major frame
    health_events: int = 0

    @property
    def use(self) -> float:
        return self.used / self.window_time if self.window_time else 0.0


class System:
    """A booted system: the machine, its partitions, windows, channels, health monitor."""

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
        self.config = config
        self.name = desc.system.name
        self._listener = listener
        self.machine = Machine(
            desc.system.memory, on_event=self._on_machine_event, trace_hypercalls=trace_hypercalls,
            attestation_key=attestation_key, time_mode=desc.system.time,
        )  # fmt: skip
        mode = secure_boot or desc.trust.secure_boot
        self.refused: list[RefusedPartition] = []
        self.plans = plans
        self._plan_of = {p.name: p for p in plans}
        self.pids: dict[str, int] = {}  #: every partition that has an id: running or declared
        self.usage: dict[str, Usage] = {p.name: Usage() for p in plans}
        allowed = []
        for p in plans:
            reasons = [f"{Path(v.path).name}: {v.code}: {v.reason}" for v in p.refusals]
            if p.verdicts:
                decision = "refused" if reasons and mode == "enforce" else "warned" if reasons else "verified"
                args = {"mode": mode, "decision": decision, "reasons": reasons}
                listener(MachineEvent(0, p.name, "secure_boot", args))
            if reasons and mode == "enforce":
                self.refused.append(RefusedPartition(p.name, reasons))
            else:
                allowed.append(p)
        self.hints = self._placement(desc.system.seed)
        # Fixed regions first, so that no partition placed by the seed takes them.
        for p in sorted(allowed, key=lambda q: q.config.address is None):
            if p.config.boot:
                self._start(p)
            else:
                self.pids[p.name] = self.machine.declare_partition(p.name)
        self.channel_ids = {
            ch.name: self.machine.create_channel(ch.kind, ch.message_size, depth=ch.depth, refresh=ch.refresh)
            for ch in desc.channel
        }
        for p in allowed:
            if p.name in self.pids and self.pids[p.name] in self.machine.partitions:
                self._attach_ports(p)
        # A refused or stopped partition keeps its windows, idle: no
        # partition's fate may shift another's windows (no borrowing, ever).
        windows, self.major_frame = effective_windows(desc)
        self.windows = [(plans[w.partition].name, w.start, w.duration) for w in windows if w.cpu == 0]
        self._debugger: tuple[str, Debugger, DebugSession] | None = None
        self._killed = False
        #: Who carries out PART_CONTROL migrate (a host pair or fleet: spgs.migration); it gets the
        #: partition's name and returns the outcome to trace. None: this host is alone, it is ignored.
        self.migrator: Callable[[str], str] | None = None

    # -- debugging -------------------------------------------------------------------

    def _on_machine_event(self, event: MachineEvent) -> None:
        """Pass ring 0's events on, naming the code of a fault from its image's symbols.

        A kernel fault's rip is looked up in the partition's kernel image, an
        app fault's in the module ring 0 found behind it; ``where`` is
        ``function+0xoff (file.c:line)`` when that image is an ELF with
        symbols (docs/guest.md), and absent otherwise.
        """
        if event.event in ("kernel_fault", "app_fault"):
            where = self.describe_code(event.partition, event.args.get("rip"), event.args.get("module"))
            if where is not None:
                event.args["where"] = where
        self._listener(event)

    def describe_code(self, partition: str, rip: object, module: object = None) -> str | None:
        """``function+0xoff (file.c:line)`` of ``rip`` in a partition's kernel, or in its app ``module``."""
        plan = self._plan_of.get(partition)
        if plan is None or not isinstance(rip, int):
            return None
        if module is None:
            image = plan.kernel
        else:
            image = next((data for label, data in plan.apps if label == module), b"")
        symbols = symbols_of(image)
        return symbols.describe(rip) if symbols is not None else None
    def attach_debugger(self, name: str, debugger: Debugger) -> None:
        """Debug partition ``name``: it stops before its first instruction.

        Errors: ValueError when no partition of that name is running, or
        ring 0 refuses to debug it (a full-virtualization partition).
        """
        pid = self.pid_of(name)
        if pid is None:
            known = ", ".join(p.name for p in self.plans)
            raise ValueError(f"no running partition {name!r} to debug (partitions: {known})")
        try:
            session = self.machine.debug_attach(pid)
        except DebugError as exc:  # not a bug of the caller's: say why, by the partition's name
            raise ValueError(f"{name}: {exc}".replace(f"partition {pid} is", "it is")) from None
        self._debugger = (name, debugger, session)

    def _debug_stops(self, pid: int, end: int, outcome: RunOutcome) -> RunOutcome:
        """Serve the debugger while ``pid`` is stopped; returns the run's outcome once it is not.

        The window goes on where it stopped: what the partition executes,
        and when, is what it would have been without a debugger.
        """
        executed = outcome.executed
        while outcome.reason == "debug_stop" and self._debugger is not None:
            _name, debugger, session = self._debugger
            action = debugger.on_stop(session, session.stop or DebugStop(pid, "entry", 0, self.machine.now))
            if action == "kill":
                self._end_debugging()
                self._killed = True
                break
            if action == "detach":
                self._end_debugging()
            else:
                session.resume(step=action == "step")
            outcome = self.machine.run(pid, end)
            executed += outcome.executed
        return RunOutcome(outcome.pid, outcome.reason, executed, outcome.end_time)

    def _end_debugging(self) -> None:
        self.machine.debug_detach()
        self._debugger = None

    def _debug_poll(self, *, over: bool = False) -> None:
        """After a window: tell the debugger its partition is gone, or pass on its interrupt."""
        if self._debugger is None:
            return
        name, debugger, session = self._debugger
        pid = self.pid_of(name)
        state = self.machine.info(pid).state if pid is not None else "destroyed"
        if over or state not in ("ready", "blocked", "paused"):
            self._end_debugging()
            debugger.on_end("over" if over and state in ("ready", "blocked", "paused") else state,
                            self.machine.info(pid).exit_code if pid is not None else None)  # fmt: skip
        elif debugger.interrupt_requested():
            session.interrupt()

    # -- partitions ------------------------------------------------------------
    def _plan(self, name: str) -> PartitionPlan:
        return next(p for p in self.plans if p.name == name)

    def _start(self, p: PartitionPlan) -> None:
        index = self.plans.index(p)
        if p.full:
            self.pids[p.name] = self.machine.create_full_partition(
                p.name, p.kernel, p.quota_frames, mmu=p.config.effective_mmu, frame_hint=self.hints[index],
                exact_placement=p.config.address is not None, kernel_name=p.kernel_label,
                config_digest=self.config.digest, pid=self.pids.get(p.name),
            )  # fmt: skip
            self._feed_stdin(p)
            return
        self.pids[p.name] = self.machine.create_partition(
            p.name, p.kernel, p.apps, p.quota_frames, frame_hint=self.hints[index],
            exact_placement=p.config.address is not None, kernel_name=p.kernel_label,
            config_digest=self.config.digest, pid=self.pids.get(p.name), may_manage=p.config.role == "system",
        )  # fmt: skip

    def _feed_stdin(self, p: PartitionPlan) -> None:
        """A full partition's ``stdin``, into its COM1's receive buffer (at boot and after a restart)."""
        if p.stdin:
            self.machine.serial_input(self.pids[p.name], COM1, p.stdin)

    def _attach_ports(self, p: PartitionPlan) -> None:
        """Wire the partition's channel ends: PV ports by name, a full partition's as serial cables (UARTs)."""
        pid = self.pids[p.name]
        serial = {port.name: port.serial for port in p.config.ports}
        for ch in self.config.description.channel:
            ends = [(ch.source, "source")] + [(d, "destination") for d in ch.destinations]
            for ref, direction in ends:
                part, _, port = ref.partition(".")
                if part != p.name:
                    continue
                line = serial.get(port)
                if p.full and line is not None:  # the rules make every port of a full partition name one
                    self.machine.attach_serial(pid, serial_base(line), self.channel_ids[ch.name], direction)
                else:
                    self.machine.attach_port(pid, port, self.channel_ids[ch.name], direction)

    def _restart(self, pid: int, plan: PartitionPlan, *, warm: bool) -> None:
        """Restart a partition from its images on its own quota (health monitor, management).

        A full partition is re-created by ring 0 from its kernel ELF (always
        cold: the rules allow no warm restart) and gets its COM1 input again.
        Errors: ImageError (the partition is left as it was).
        """
        self.machine.reset_partition(
            pid, plan.kernel, [] if plan.full else plan.apps, warm=warm and not plan.full,
            kernel_name=plan.kernel_label, config_digest=self.config.digest,
        )  # fmt: skip
        if plan.full:
            self._feed_stdin(plan)

    def config_of(self, name: str) -> PartitionConfig:
        """A partition's configuration, by name. Errors: KeyError for a name the description lacks."""
        return self._plan_of[name].config

    def plan_of(self, name: str) -> PartitionPlan:
        """A partition's plan (its images, as the next start or restart loads them). Errors: KeyError."""
        return self._plan_of[name]

    def pid_of(self, name: str) -> int | None:
        """The pid of a running partition, by name."""
        pid = self.pids.get(name)
        return pid if pid is not None and pid in self.machine.partitions else None

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
        fixed = sorted(
            (p.config.address // PAGE_SIZE, p.config.address // PAGE_SIZE + p.quota_frames)
            for p in self.plans
            if p.config.address is not None
        )
        hints = [0] * len(order)
        cursor = RING0_RESERVED_FRAMES
        for item in order:
            plan = self.plans[item]
            if plan.config.address is not None:
                hints[item] = plan.config.address // PAGE_SIZE
                continue
            for start, end in fixed:  # never lay a partition over a fixed region
                if cursor < end and start < cursor + plan.quota_frames:
                    cursor = end
            hints[item] = cursor
            cursor += plan.quota_frames
        return hints

    def live(self) -> bool:
        """Is anything left to run? (A paused partition may be resumed.)"""
        states = ("ready", "blocked", "paused")
        return any(self.machine.info(pid).state in states for pid in self.machine.partitions)

    # -- time --------------------------------------------------------------------
    def run(
        self, max_ticks: int, on_frame: Callable[[SystemReport], None] | None = None,
        *, between: Callable[[], None] | None = None,
    ) -> SystemReport:  # fmt: skip
        """Run major frames until every partition is done or ``max_ticks`` passes.

        ``between`` is called after every window, before the next begins: the
        one place where an outside controller (:mod:`spgs.control`) may act
        on the system, so what it does happens at a definite virtual time.
        """
        machine = self.machine
        frames = 0
        while self.live() and machine.now < max_ticks and not self._killed:
            frame_start = machine.now
            used_this_frame: dict[str, int] = {}
            for name, start, duration in self.windows:
                begin = frame_start + start
                if begin >= max_ticks:
                    break
                machine.advance(begin)
                end = min(begin + duration, max_ticks)
                self._window(name, begin, end, used_this_frame)
                if self._killed:
                    break
                machine.advance(end)
                self._debug_poll()
                if between is not None:
                    between()
            if self._killed:
                break
            machine.advance(min(frame_start + self.major_frame, max_ticks))
            frames += 1
            for name, usage in self.usage.items():
                share = sum(d for n, _s, d in self.windows if n == name)
                usage.last_frame_use = used_this_frame.get(name, 0) / share if share else 0.0
            if on_frame is not None:
                on_frame(self.report(frames))
        self._debug_poll(over=True)
        return self.report(frames)

    def _window(self, name: str, begin: int, end: int, used: dict[str, int]) -> None:
        machine = self.machine
        pid = self.pid_of(name)
        usage = self.usage[name]
        usage.windows += 1
        usage.window_time += end - begin
        if pid is None or machine.info(pid).state not in ("ready", "blocked"):
            return  # refused, declared, destroyed, paused, halted or done: the window passes idle
        self._listener(MachineEvent(begin, name, "window", {"end": end}))
        outcome = machine.run(pid, end)
        if outcome.reason == "debug_stop":
            outcome = self._debug_stops(pid, end, outcome)
        usage.used += outcome.executed
        used[name] = used.get(name, 0) + outcome.executed
        if outcome.reason == "window_end" and machine.info(pid).state == "ready":
            usage.overruns += 1
            self._health(pid, "overrun", f"still running at the end of its window ({end})")
        for event in machine.take_health_events():
            self._health(event.pid, event.event, event.detail)
        for request in machine.take_requests():
            self._manage(request.requester, request.target, request.op)

    # -- health monitor ------------------------------------------------------------
    def _health(self, pid: int, event: str, detail: str) -> None:
        """Apply the partition's health table to one event; every decision is traced."""
        info = self.machine.info(pid)
        plan = self._plan(info.name)
        table = plan.config.health
        action = table.action(event)
        self.usage[info.name].health_events += 1
        self._listener(MachineEvent(self.machine.now, info.name, "health_event", {"event": event, "detail": detail}))
        if action in ("cold_restart", "warm_restart") and info.restarts >= table.restart_limit:
            action = "halt"
            detail = f"{detail}; restart limit {table.restart_limit} reached"
        if action != "ignore":
            args = {"event": event, "action": action, "detail": detail}
            self._listener(MachineEvent(self.machine.now, info.name, "health_action", args))
        if action == "halt":
            self.machine.stop_partition(pid)
        elif action in ("cold_restart", "warm_restart"):
            self._restart(pid, plan, warm=action == "warm_restart")
        elif action == "propagate":
            self.machine.propagate(pid, event)

    # -- management (requests of system partitions) ----------------------------------
    def _manage(self, requester: int, target: int, op: PartOp) -> None:
        machine = self.machine
        name = next((n for n, pid in self.pids.items() if pid == target), None)
        who = machine.info(requester).name if requester in machine.partitions else str(requester)
        self.manage(name or str(target), op, requester=who)

    def manage(self, name: str, op: PartOp, *, requester: str, warm: bool = False) -> str:
        """Carry out one management operation on partition ``name``; returns its outcome.

        The one policy for every requester: a system partition's
        PART_CONTROL hypercall and the management API (:mod:`spgs.control`,
        ``requester = "api:<token name>"``) both come here. The outcome is
        ``done`` or ``ignored: why`` (nothing changed); either way it is
        traced as a ``management`` event. ``warm`` makes RESTART keep the
        measurements and the kernel's data area (as the health monitor's
        warm_restart does); a full partition restarts cold (its trace event
        says ``mode: cold``). Errors: ImageError from a restart or start with
        a bad image (the partition is left as it was).
        """
        machine = self.machine
        target = self.pids.get(name, -1)
        running = target in machine.partitions
        outcome = "done"
        if name not in self.pids:
            outcome = "ignored: unknown partition"
        elif op is PartOp.START:
            if running:
                outcome = "ignored: already running"
            else:
                plan = self._plan(name)
                self._start(plan)
                self._attach_ports(plan)
        elif not running:
            outcome = "ignored: not running"
        elif op is PartOp.PAUSE:
            outcome = "done" if machine.pause_partition(target) else "ignored: not ready or blocked"
        elif op is PartOp.RESUME:
            outcome = "done" if machine.resume_partition(target) else "ignored: not paused"
        elif op is PartOp.HALT:
            machine.stop_partition(target)
        elif op is PartOp.RESTART:
            self._restart(target, self._plan(name), warm=warm)
        elif op is PartOp.DESTROY:
            machine.destroy_partition(target)
        elif op is PartOp.MIGRATE:
            outcome = self.migrator(name) if self.migrator is not None else "ignored: no other host"
        args = {"requester": requester, "op": op.name.lower(), "outcome": outcome}
        if warm and op is PartOp.RESTART:  # a full partition restarts cold whatever is asked: say so
            args["mode"] = "cold" if name in self._plan_of and self._plan_of[name].full else "warm"
        self._listener(MachineEvent(machine.now, name, "management", args))
        return outcome

    # -- changes from outside (spgs.control), made between major frames -------------------
    def record(self, partition: str, event: str, args: dict[str, object]) -> None:
        """Pass a ring-1 event (a change the management API made) to the listener: the trace."""
        self._listener(MachineEvent(self.machine.now, partition, event, dict(args)))

    def reschedule(self) -> None:
        """Lay the windows out again from the description (changed by the caller); call between major frames.

        Errors: ValueError from :func:`spgs.rules.effective_windows` (never
        for a description the rules passed).
        """
        windows, major_frame = effective_windows(self.config.description)
        self.windows = [(self.plans[w.partition].name, w.start, w.duration) for w in windows if w.cpu == 0]
        self.major_frame = major_frame

    def add_partition(self, plan: PartitionPlan) -> None:
        """Add a partition the description now lists last (a partition created through the API).

        Its windows join the schedule (:meth:`reschedule`); it starts now
        when ``boot``, placed first fit in free RAM. Call between major
        frames. Errors: SpkError (OutOfMemory, ImageError) from starting it:
        it is then declared, not running.
        """
        self.plans.append(plan)
        self._plan_of[plan.name] = plan
        self.usage[plan.name] = Usage()
        self.hints.append(RING0_RESERVED_FRAMES)
        self.reschedule()
        self.pids[plan.name] = self.machine.declare_partition(plan.name)
        if plan.config.boot:
            self._start(plan)
            self._attach_ports(plan)

    def report(self, frames: int) -> SystemReport:
        infos = [self.machine.info(pid) for pid in sorted(self.machine.partitions)]
        # How each partition is virtualized: ring 0's word for a running one, the description's for the rest.
        kinds = {p.name: virtualization_label(p.config) for p in self.plans}
        kinds |= {i.name: f"full ({i.mmu})" if i.virtualization == "full" else "para" for i in infos}
        return SystemReport(self.machine.now, frames, infos, list(self.refused), dict(self.usage),
                            sorted(name for pid, name in self.machine.declared.items()), kinds)  # fmt: skip


def run_bound(description: SystemDescription, *, seed: int | None, max_ticks: int | None) -> int:
    """Apply a command line's ``seed`` override to ``description``; the run's bound in ticks.

    The bound is ``max_ticks`` when given, else the description's own.
    Errors: ValueError for a bound that is not positive.
    """
    if seed is not None:
        description.system.seed = seed
    bound = max_ticks if max_ticks is not None else description.system.max_ticks
    if bound <= 0:
        raise ValueError("--max-ticks must be positive")
    return bound


def load_and_plan(
    path: Path, *, secure_boot: str | None = None, today: date | None = None
) -> tuple[LoadedConfig, list[PartitionPlan]]:
    from spgs.config import load

    config = load(path)
    return config, plan(config, secure_boot=secure_boot, today=today)
