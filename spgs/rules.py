"""The configuration rules that span several fields, one small function each.

After Muen's ``mucfgcheck``: every rule has a name (its function's name),
checks one thing and reports every violation it finds (not only the first),
naming the partition, channel or port, the line, and for a conflict both
sides with their addresses, offsets or lines. :data:`RULES` is the list that
:func:`spgs.config.load` (and so ``spk validate``) runs, in order, once every
field has passed its own check; each rule has a negative test named
``test_<rule>_rejected`` in ``tests/test_rules.py`` and a row in
docs/config.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from spgs.config import (
    FATAL_EVENTS,
    FULL_EVENTS,
    MAX_STDIN,
    MAX_TIME,
    PARA_EVENTS,
    PartitionConfig,
    Problem,
    SystemDescription,
    _LineIndex,
)
from spgs.images import bundled, bundled_source, is_path
from spgs.rootfs import rootfs_source_problem
from spk.abi import PAGE_SIZE

#: Ring 0 keeps the first MiB of RAM for itself.
RING0_RESERVED = 1 << 20
#: Most windows one major frame may hold, repetitions by period included.
MAX_WINDOWS = 4096
#: What a full partition's kernel may assume of its physical memory: the reference
#: kernel (partitions/pcref) identity-maps and uses the first 4 MiB.
FULL_MIN_MEMORY = 4 << 20
#: Ring 0's boot page tables of a full partition, in the top pages of its quota
#: (a PML4, a PDPT, a page directory and a page table; docs/fullvirt.md).
FULL_BOOT_TABLE_PAGES = 4
#: The smallest quota of a full partition (rule full_quota_too_small).
FULL_MIN_QUOTA = FULL_MIN_MEMORY + FULL_BOOT_TABLE_PAGES * PAGE_SIZE


@dataclass(frozen=True)
class Context:
    """What a rule reads: the description, where it came from, its line index."""

    desc: SystemDescription
    file: str
    base_dir: Path
    lines: _LineIndex

    def problem(self, path: tuple[str | int, ...], rule: str, message: str) -> Problem:
        loc = tuple(str(p) for p in path)
        return Problem(self.file, self.lines.find(loc), ".".join(loc), rule, message)

    def line(self, *path: str | int) -> str:
        """``line N`` of a path, for the other side of a conflict (``no line`` when it has none)."""
        found = self.lines.find(path)
        return f"line {found}" if found else "no line"


Rule = Callable[[Context], Iterator[Problem]]
#: Every rule, in the order it runs; a rule's name is its function's name.
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def check_all(ctx: Context) -> list[Problem]:
    """Run every rule; all problems, in rule order."""
    return [problem for check in RULES for problem in check(ctx)]


# -- names -------------------------------------------------------------------
@rule
def duplicate_name(ctx: Context) -> Iterator[Problem]:
    """Partition and channel names are unique, and so are a partition's port names."""
    named: list[tuple[str, list[str]]] = [
        ("partition", [p.name for p in ctx.desc.partition]),
        ("channel", [c.name for c in ctx.desc.channel]),
    ]
    for kind, names in named:
        for i, k in _seen_before(names):
            yield ctx.problem(
                (kind, i, "name"), "duplicate_name",
                f"{names[i]!r} already names {kind} {k} ({ctx.line(kind, k, 'name')})",
            )  # fmt: skip
    for i, part in enumerate(ctx.desc.partition):
        for j, k in _seen_before([port.name for port in part.ports]):
            yield ctx.problem(
                ("partition", i, "ports", j, "name"), "duplicate_name",
                f"{part.name}: port {part.ports[j].name!r} already declared as port {k} "
                f"({ctx.line('partition', i, 'ports', k)})",
            )  # fmt: skip


def _seen_before(keys: Sequence[object]) -> Iterator[tuple[int, int]]:
    """(index, index of its first occurrence) for every key seen before; None keys are skipped."""
    first: dict[object, int] = {}
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in first:
            yield index, first[key]
        else:
            first[key] = index


# -- memory ------------------------------------------------------------------
@rule
def quota_exceeds_ram(ctx: Context) -> Iterator[Problem]:
    """All quotas together fit in RAM, less what ring 0 keeps."""
    total = sum(p.memory for p in ctx.desc.partition)
    budget = ctx.desc.system.memory - RING0_RESERVED
    if total > budget:
        each = ", ".join(f"{p.name} {p.memory >> 10} KiB" for p in ctx.desc.partition)
        yield ctx.problem(
            ("system", "memory"), "quota_exceeds_ram",
            f"partition quotas total {total >> 10} KiB > {budget >> 10} KiB available to partitions ({each})",
        )  # fmt: skip


@rule
def region_alignment(ctx: Context) -> Iterator[Problem]:
    """A fixed region (``address``) starts on a 4 KiB page."""
    for i, p in enumerate(ctx.desc.partition):
        if p.address is not None and p.address % PAGE_SIZE:
            yield ctx.problem(("partition", i, "address"), "region_alignment",
                              f"{p.name}: address {p.address:#x} is not 4 KiB aligned")  # fmt: skip


@rule
def region_outside_ram(ctx: Context) -> Iterator[Problem]:
    """A fixed region lies above ring 0's reserve and ends inside RAM."""
    ram = ctx.desc.system.memory
    for i, p in enumerate(ctx.desc.partition):
        if p.address is None:
            continue
        end = p.address + p.memory
        if p.address < RING0_RESERVED or end > ram:
            yield ctx.problem(
                ("partition", i, "address"), "region_outside_ram",
                f"{p.name}: [{p.address:#x}, {end:#x}) is not inside [{RING0_RESERVED:#x}, {ram:#x}), "
                "the RAM left to partitions",
            )  # fmt: skip


@rule
def memory_overlap(ctx: Context) -> Iterator[Problem]:
    """Fixed regions of two partitions never overlap."""
    fixed = [(i, p) for i, p in enumerate(ctx.desc.partition) if p.address is not None]
    for at, (i, a) in enumerate(fixed):
        for j, b in fixed[at + 1 :]:
            assert a.address is not None and b.address is not None
            if a.address < b.address + b.memory and b.address < a.address + a.memory:
                yield ctx.problem(
                    ("partition", j, "address"), "memory_overlap",
                    f"{b.name} [{b.address:#x}, {b.address + b.memory:#x}) overlaps "
                    f"{a.name} [{a.address:#x}, {a.address + a.memory:#x}) ({ctx.line('partition', i, 'address')})",
                )  # fmt: skip


# -- images ------------------------------------------------------------------
def image_problem(ref: str, kind: str, base_dir: Path) -> str | None:
    """Why ``ref`` names no image (the words of :class:`spgs.images.ImageNotFound`), or None."""
    if is_path(ref):
        folder = ref.endswith("/")
        if (base_dir / ref).is_dir() if folder else (base_dir / ref).is_file():
            return None
        what = "folder of C sources" if folder else "image file"
        return f"{kind} {what} {ref!r} not found (relative to {base_dir.name or '.'})"
    if bundled_source(kind, ref) is not None:
        return None
    return f"no bundled {kind} named {ref!r} (bundled: {', '.join(bundled(kind))})"


@rule
def unknown_image(ctx: Context) -> Iterator[Problem]:
    """Every kernel ``image`` names a bundled kernel or an existing file."""
    for i, p in enumerate(ctx.desc.partition):
        why = image_problem(p.image, "kernel", ctx.base_dir)
        if why:
            yield ctx.problem(("partition", i, "image"), "unknown_image", f"{p.name}: {why}")


@rule
def unknown_app(ctx: Context) -> Iterator[Problem]:
    """Every entry of ``apps`` names a bundled app or an existing file."""
    for i, p in enumerate(ctx.desc.partition):
        for j, app in enumerate(p.apps):
            why = image_problem(app, "app", ctx.base_dir)
            if why:
                yield ctx.problem(("partition", i, "apps", j), "unknown_app", f"{p.name}: {why}")


# -- Linux partitions (docs/linux.md) -----------------------------------------------
_LINUX_FIELDS = ("rootfs", "files", "env", "stdin")


@rule
def linux_command_required(ctx: Context) -> Iterator[Problem]:
    """A partition of the ``linux`` kernel, or with rootfs, files, env or stdin, names the program to run."""
    for i, p in enumerate(ctx.desc.partition):
        if p.command or p.full:  # a full partition's stdin feeds its COM1 (rule full_para_field refuses the rest)
            continue
        given = [f for f in _LINUX_FIELDS if f in p.model_fields_set]
        if p.image == "linux" or given:
            why = f"sets {', '.join(given)}" if given else "runs the linux kernel"
            message = f"{p.name}: {why} but has no command (the program to run, e.g. [\"/bin/sh\"])"
            yield ctx.problem(("partition", i, given[0] if given else "image"), "linux_command_required", message)


@rule
def linux_apps(ctx: Context) -> Iterator[Problem]:
    """A Linux partition runs its ``command``, not SPK apps: its boot modules are the rootfs, cmdline and stdin."""
    for i, p in enumerate(ctx.desc.partition):
        if p.command and p.apps:
            message = f"{p.name}: a Linux partition has no apps (it runs its command from its rootfs)"
            yield ctx.problem(("partition", i, "apps"), "linux_apps", message)


@rule
def unknown_rootfs(ctx: Context) -> Iterator[Problem]:
    """``rootfs`` names a folder or a tar archive, relative to the configuration file."""
    for i, p in enumerate(ctx.desc.partition):
        why = None if p.rootfs is None else rootfs_source_problem(p.rootfs, ctx.base_dir)
        if why:
            yield ctx.problem(("partition", i, "rootfs"), "unknown_rootfs", f"{p.name}: rootfs {why}")


@rule
def linux_file_missing(ctx: Context) -> Iterator[Problem]:
    """Every host file of ``files`` is a readable regular file (an absolute path, or relative to the configuration)."""
    for i, p in enumerate(ctx.desc.partition):
        for inside, host in p.files.items():
            path = ctx.base_dir / host
            if not path.is_file() or not os.access(path, os.R_OK):
                yield ctx.problem(("partition", i, "files", inside), "linux_file_missing",
                                  f"{p.name}: {inside}: host file {host!r} is not a readable regular file")  # fmt: skip


# -- full virtualization (docs/fullvirt.md) -------------------------------------------
#: What a full partition does not have, and why: the fields of the paravirtual and Linux kinds.
_NOT_FULL = {
    "apps": "no apps (the SPK's boot modules are a paravirtual kernel's; a PC kernel brings its own)",
    "rootfs": "no rootfs (a Linux partition's)", "files": "no files (a Linux partition's)",
    "command": "no command (a Linux partition's)", "env": "no env (a Linux partition's)",
    "role": "no role = 'system' (the management hypercalls are a paravirtual kernel's)",
}  # fmt: skip
#: What only a full partition has (a port's ``serial`` too).
_ONLY_FULL = ("mmu", "stdin_file")


@rule
def full_field_on_para(ctx: Context) -> Iterator[Problem]:
    """``mmu``, ``stdin_file`` and a port's ``serial`` belong to full partitions (``virtualization = "full"``)."""
    for i, p in enumerate(ctx.desc.partition):
        if p.full:
            continue
        for key in _ONLY_FULL:
            if key in p.model_fields_set:
                message = f"{p.name}: {key} applies to full partitions only (virtualization = \"full\")"
                yield ctx.problem(("partition", i, key), "full_field_on_para", message)
        for j, port in enumerate(p.ports):
            if port.serial is not None:
                yield ctx.problem(("partition", i, "ports", j, "serial"), "full_field_on_para",
                                  f"{p.name}: port {port.name}: serial applies to full partitions only (a paravirtual "
                                  "kernel opens its ports with PORT_OPEN)")  # fmt: skip


@rule
def full_para_field(ctx: Context) -> Iterator[Problem]:
    """A full partition has no field of the paravirtual and Linux kinds: apps, rootfs, files, command, env, role."""
    for i, p in enumerate(ctx.desc.partition):
        if not p.full:
            continue
        for key, why in _NOT_FULL.items():
            value = getattr(p, key)
            if key in p.model_fields_set and value not in ([], {}, "guest"):  # an empty list says nothing
                yield ctx.problem(("partition", i, key), "full_para_field", f"{p.name}: a full partition has {why}")


@rule
def full_image(ctx: Context) -> Iterator[Problem]:
    """A full partition's kernel is a PC kernel: C (bundled, ``.c``, a folder) or an ELF file; no assembly, no linux."""
    for i, p in enumerate(ctx.desc.partition):
        if not p.full:
            continue
        source = None if is_path(p.image) else bundled_source("kernel", p.image)
        if p.image == "linux":
            why = "the linux kernel is paravirtual (it runs on the SPK's ABI)"
        elif p.image.endswith(".asm") or (source is not None and source.name.endswith(".asm")):
            why = f"{p.image!r} is assembly for the SPK's ABI"
        else:
            continue
        yield ctx.problem(("partition", i, "image"), "full_image",
                          f"{p.name}: {why}; a full partition runs a PC kernel: C built as kind pc "
                          "(a bundled name such as pcref, a .c file or a folder/) or an .elf/.bin file")  # fmt: skip


@rule
def full_quota_too_small(ctx: Context) -> Iterator[Problem]:
    """A full partition's quota holds the 4 MiB a PC kernel may use, plus ring 0's boot page tables."""
    for i, p in enumerate(ctx.desc.partition):
        if p.full and p.memory < FULL_MIN_QUOTA:
            yield ctx.problem(
                ("partition", i, "memory"), "full_quota_too_small",
                f"{p.name}: quota of {p.memory >> 10} KiB < {FULL_MIN_QUOTA >> 10} KiB: a full partition's kernel "
                f"may use the first {FULL_MIN_MEMORY >> 20} MiB, and ring 0's {FULL_BOOT_TABLE_PAGES} boot "
                "page tables sit above it",
            )  # fmt: skip


@rule
def full_port_serial(ctx: Context) -> Iterator[Problem]:
    """Each port of a full partition names the UART it is wired to (``serial = "com2"`` to ``"com4"``)."""
    for i, p in enumerate(ctx.desc.partition):
        if not p.full:
            continue
        for j, port in enumerate(p.ports):
            if port.serial is None:
                yield ctx.problem(("partition", i, "ports", j), "full_port_serial",
                                  f"{p.name}: port {port.name}: a full partition's port is a serial cable; "
                                  "name its UART: serial = \"com2\", \"com3\" or \"com4\"")  # fmt: skip


@rule
def serial_port_shared(ctx: Context) -> Iterator[Problem]:
    """A UART is one cable: two ports of a full partition never name the same one."""
    for i, p in enumerate(ctx.desc.partition):
        if not p.full:
            continue
        for j, k in _seen_before([port.serial for port in p.ports]):
            port = p.ports[j]
            yield ctx.problem(
                ("partition", i, "ports", j, "serial"), "serial_port_shared",
                f"{p.name}: port {port.name}: {port.serial} is already the cable of port {p.ports[k].name} "
                f"({ctx.line('partition', i, 'ports', k)}); a UART is wired to one channel end",
            )  # fmt: skip


@rule
def health_event_kind(ctx: Context) -> Iterator[Problem]:
    """A health table sets only events its partition's kind can raise."""
    for i, p in enumerate(ctx.desc.partition):
        foreign = PARA_EVENTS if p.full else FULL_EVENTS
        kind = "a full" if p.full else "a paravirtual"
        for event in foreign:
            if event in p.health.model_fields_set:
                other = "paravirtual kernels only" if p.full else "full partitions only"
                yield ctx.problem(("partition", i, "health", event), "health_event_kind",
                                  f"{p.name}: {kind} partition never raises {event} ({other})")  # fmt: skip


@rule
def full_health_action(ctx: Context) -> Iterator[Problem]:
    """A full partition is halted or cold-restarted: no kernel data area to keep warm, no trap entry to propagate to."""
    for i, p in enumerate(ctx.desc.partition):
        if not p.full:
            continue
        for event in p.health.model_fields_set - {"restart_limit"}:
            action = p.health.action(event)
            if action in ("warm_restart", "propagate"):
                why = ("ring 0 knows no data area of a PC kernel to keep" if action == "warm_restart"
                       else "a PC kernel has no SPK trap entry to deliver it to")  # fmt: skip
                yield ctx.problem(("partition", i, "health", event), "full_health_action",
                                  f"{p.name}: {event} = '{action}' does not apply to a full partition: {why} "
                                  "(use halt or cold_restart)")  # fmt: skip


@rule
def stdin_and_stdin_file(ctx: Context) -> Iterator[Problem]:
    """A full partition's COM1 input is ``stdin`` or ``stdin_file``, not both."""
    for i, p in enumerate(ctx.desc.partition):
        if p.stdin is not None and p.stdin_file is not None:
            yield ctx.problem(("partition", i, "stdin_file"), "stdin_and_stdin_file",
                              f"{p.name}: both stdin ({ctx.line('partition', i, 'stdin')}) and stdin_file "
                              "are given; keep one")  # fmt: skip


@rule
def stdin_file_missing(ctx: Context) -> Iterator[Problem]:
    """``stdin_file`` is a readable regular file (absolute, or relative to the configuration) of at most 64 KiB."""
    for i, p in enumerate(ctx.desc.partition):
        if p.stdin_file is None:
            continue
        path = ctx.base_dir / p.stdin_file
        if not path.is_file() or not os.access(path, os.R_OK):
            message = f"{p.name}: stdin_file {p.stdin_file!r} is not a readable regular file"
        elif path.stat().st_size > MAX_STDIN:
            message = f"{p.name}: stdin_file {p.stdin_file!r} has {path.stat().st_size} bytes, more than {MAX_STDIN}"
        else:
            continue
        yield ctx.problem(("partition", i, "stdin_file"), "stdin_file_missing", message)


# -- time ----------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """One window of the major frame (a repetition by period is a window too)."""

    partition: int  #: index in ``[[partition]]``
    index: int | None  #: index in the partition's ``windows``; None: its ``window`` (automatic layout)
    repeat: int  #: 0 for the window as written, k for its repetition k periods later
    start: int
    duration: int
    cpu: int

    @property
    def end(self) -> int:
        return self.start + self.duration


def explicit(parts: list[PartitionConfig]) -> bool:
    """Does the description list windows (else they are laid out automatically)?"""
    return any(p.windows for p in parts)


def major_frame(desc: SystemDescription) -> int:
    """The major frame's length (instructions).

    ``[system].major_frame`` when given. Otherwise, with automatic layout,
    the sum of the ``window`` lengths; with explicit windows, the least
    common multiple of the periods, raised to the first multiple of it that
    holds every window of the partitions without a period.
    """
    if desc.system.major_frame:
        return desc.system.major_frame
    parts = desc.partition
    if not explicit(parts):
        return sum(p.window for p in parts)
    unit = math.lcm(*(p.period for p in parts if p.period))
    end = max((w.start + w.duration for p in parts if not p.period for w in p.windows), default=0)
    return max(unit, -(-end // unit) * unit)


def _repeats(part: PartitionConfig, frame: int) -> int:
    return max(1, frame // part.period) if part.period else 1


def window_count(desc: SystemDescription) -> int:
    """How many windows one major frame holds, repetitions included."""
    if not explicit(desc.partition):
        return len(desc.partition)
    frame = major_frame(desc)
    return sum(len(p.windows) * _repeats(p, frame) for p in desc.partition)


def effective_windows(desc: SystemDescription) -> tuple[list[Window], int]:
    """The windows of one major frame, sorted by vCPU and start, and its length.

    Without any ``windows``, each partition gets one window of ``window``
    instructions on vCPU 0, in configuration order, from offset 0. With
    explicit windows, a partition's windows repeat every ``period`` inside
    the major frame (see :func:`major_frame`). Raises ValueError past
    :data:`MAX_WINDOWS` windows or a frame longer than MAX_TIME (rules
    ``too_many_windows``, ``major_frame_too_long``: never after ``load``).
    """
    frame = major_frame(desc)
    if frame > MAX_TIME:
        raise ValueError(f"a major frame longer than {MAX_TIME}")
    if not explicit(desc.partition):
        windows, cursor = [], 0
        for i, p in enumerate(desc.partition):
            windows.append(Window(i, None, 0, cursor, p.window, 0))
            cursor += p.window
        return windows, frame
    if window_count(desc) > MAX_WINDOWS:
        raise ValueError(f"more than {MAX_WINDOWS} windows in the major frame")
    windows = [
        Window(i, j, k, w.start + k * (p.period or 0), w.duration, w.cpu)
        for i, p in enumerate(desc.partition)
        for j, w in enumerate(p.windows)
        for k in range(_repeats(p, frame))
    ]
    return sorted(windows, key=lambda w: (w.cpu, w.start, w.partition)), frame


def _frame_words(ctx: Context) -> str:
    """The major frame, and where it comes from."""
    if ctx.desc.system.major_frame:
        return f"major frame {ctx.desc.system.major_frame} ({ctx.line('system', 'major_frame')})"
    return f"major frame {major_frame(ctx.desc)} (derived: no [system].major_frame)"


def _describe(ctx: Context, w: Window) -> str:
    name = ctx.desc.partition[w.partition].name
    which = "window" if w.index is None else f"window {w.index}"
    again = f" (repeat {w.repeat}, period {ctx.desc.partition[w.partition].period})" if w.repeat else ""
    return f"{name} {which}{again} [{w.start}, {w.end})"


def _window_path(w: Window) -> tuple[str | int, ...]:
    return ("partition", w.partition, "window") if w.index is None else ("partition", w.partition, "windows", w.index)


@rule
def window_and_windows(ctx: Context) -> Iterator[Problem]:
    """A partition gives ``window`` (automatic layout) or ``windows``, not both."""
    for i, p in enumerate(ctx.desc.partition):
        if p.windows and "window" in p.model_fields_set:
            yield ctx.problem(("partition", i, "window"), "window_and_windows",
                              f"{p.name}: window = {p.window} is ignored when windows are listed "
                              f"({ctx.line('partition', i, 'windows')}); remove one")  # fmt: skip


@rule
def window_missing(ctx: Context) -> Iterator[Problem]:
    """Either every partition lists its windows, or none does (then they are laid out in order)."""
    if not explicit(ctx.desc.partition):
        return
    listing = next(i for i, p in enumerate(ctx.desc.partition) if p.windows)
    for i, p in enumerate(ctx.desc.partition):
        if not p.windows:
            yield ctx.problem(
                ("partition", i, "windows"), "window_missing",
                f"{p.name}: no windows, while {ctx.desc.partition[listing].name} lists its own "
                f"({ctx.line('partition', listing, 'windows')})",
            )  # fmt: skip


@rule
def period_without_windows(ctx: Context) -> Iterator[Problem]:
    """``period`` repeats listed windows: it needs ``windows``."""
    for i, p in enumerate(ctx.desc.partition):
        if p.period is not None and not p.windows:
            yield ctx.problem(("partition", i, "period"), "period_without_windows",
                              f"{p.name}: period = {p.period} but no windows to repeat")  # fmt: skip


@rule
def window_cpu(ctx: Context) -> Iterator[Problem]:
    """A window runs on an existing vCPU."""
    cpus = ctx.desc.system.cpus
    for i, p in enumerate(ctx.desc.partition):
        for j, w in enumerate(p.windows):
            if w.cpu >= cpus:
                message = f"{p.name}: window {j} on vCPU {w.cpu}, the system has {cpus} (vCPUs 0 to {cpus - 1})"
                yield ctx.problem(("partition", i, "windows", j, "cpu"), "window_cpu", message)


@rule
def major_frame_too_long(ctx: Context) -> Iterator[Problem]:
    """A major frame derived from the windows is at most MAX_TIME long, as a given one is."""
    parts = ctx.desc.partition
    if ctx.desc.system.major_frame or not explicit(parts) or major_frame(ctx.desc) <= MAX_TIME:
        return
    unit, periodic = 1, []
    for i, p in enumerate(parts):
        if p.period:
            unit = math.lcm(unit, p.period)
            periodic.append(f"{p.name} {p.period}")
            if unit > MAX_TIME:
                yield ctx.problem(
                    ("partition", i, "period"), "major_frame_too_long",
                    f"{p.name}: the least common multiple of the periods ({', '.join(periodic)}) is longer than "
                    f"{MAX_TIME}, the longest major frame; set [system].major_frame",
                )  # fmt: skip
                return
    i, j, w = max(
        ((i, j, w) for i, p in enumerate(parts) if not p.period for j, w in enumerate(p.windows)),
        key=lambda found: found[2].start + found[2].duration,
    )
    yield ctx.problem(
        ("partition", i, "windows", j), "major_frame_too_long",
        f"{parts[i].name} window {j} [{w.start}, {w.start + w.duration}) makes the derived major frame "
        f"{major_frame(ctx.desc)} longer than {MAX_TIME}",
    )  # fmt: skip


def _frame_fits(ctx: Context) -> bool:
    return major_frame(ctx.desc) <= MAX_TIME


@rule
def too_many_windows(ctx: Context) -> Iterator[Problem]:
    """A major frame holds at most MAX_WINDOWS windows, repetitions by period included."""
    if not explicit(ctx.desc.partition) or not _frame_fits(ctx) or window_count(ctx.desc) <= MAX_WINDOWS:
        return
    frame = major_frame(ctx.desc)
    counts = [len(p.windows) * _repeats(p, frame) for p in ctx.desc.partition]
    i = max(range(len(counts)), key=counts.__getitem__)
    p = ctx.desc.partition[i]
    each = f", {len(p.windows)} every period {p.period}" if p.period else ""
    yield ctx.problem(
        ("partition", i, "period" if p.period else "windows"), "too_many_windows",
        f"{p.name}: {counts[i]} windows in the {_frame_words(ctx)}{each}; {sum(counts)} in all > {MAX_WINDOWS}",
    )  # fmt: skip


def _schedulable(ctx: Context) -> bool:
    """Explicit windows, few enough to list: what the frame rules below check."""
    return explicit(ctx.desc.partition) and _frame_fits(ctx) and window_count(ctx.desc) <= MAX_WINDOWS


@rule
def major_frame_not_multiple_of_period(ctx: Context) -> Iterator[Problem]:
    """The major frame is a whole number of every partition's period."""
    if not explicit(ctx.desc.partition) or not _frame_fits(ctx):
        return
    frame = major_frame(ctx.desc)
    for i, p in enumerate(ctx.desc.partition):
        if p.period and frame % p.period:
            yield ctx.problem(
                ("partition", i, "period"), "major_frame_not_multiple_of_period",
                f"{p.name}: {_frame_words(ctx)} is not a multiple of period {p.period}",
            )  # fmt: skip


@rule
def window_outside_major_frame(ctx: Context) -> Iterator[Problem]:
    """Every window ends inside the major frame, and a periodic window inside its period."""
    if not _frame_fits(ctx):
        return
    frame = major_frame(ctx.desc)
    where = _frame_words(ctx)
    if not explicit(ctx.desc.partition):
        for auto in effective_windows(ctx.desc)[0]:
            if auto.end > frame:
                message = f"{_describe(ctx, auto)}, laid out in file order, ends after the {where}"
                yield ctx.problem(_window_path(auto), "window_outside_major_frame", message)
        return
    for i, p in enumerate(ctx.desc.partition):
        for j, w in enumerate(p.windows):
            end = w.start + w.duration
            if p.period and end > p.period:
                message = f"{p.name} window {j} [{w.start}, {end}) ends after its period {p.period}"
            elif end > frame:
                message = f"{p.name} window {j} [{w.start}, {end}) ends after the {where}"
            else:
                continue
            yield ctx.problem(("partition", i, "windows", j), "window_outside_major_frame", message)


@rule
def window_overlap(ctx: Context) -> Iterator[Problem]:
    """No two windows on one vCPU overlap (repetitions by period included).

    A pair of windows as written is reported once, at its first overlap.
    """
    if not _schedulable(ctx):
        return
    seen: set[tuple[int, int | None, int, int | None]] = set()
    active: list[Window] = []
    for b in effective_windows(ctx.desc)[0]:
        active = [a for a in active if a.cpu == b.cpu and a.end > b.start]
        for a in active:
            pair = (a.partition, a.index, b.partition, b.index)
            if (a.partition, a.index) == (b.partition, b.index) or pair in seen:
                continue  # a window over its own repetition: it ends after its period (rule above)
            seen.add(pair)
            yield ctx.problem(
                _window_path(b), "window_overlap",
                f"{_describe(ctx, b)} overlaps {_describe(ctx, a)} ({ctx.line(*_window_path(a))}) on vCPU {b.cpu}",
            )  # fmt: skip
        active.append(b)


# -- channels ------------------------------------------------------------------
def _ends(ctx: Context, i: int) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """A channel's ends: (path, "partition.port", the direction the port must have)."""
    ch = ctx.desc.channel[i]
    yield ("channel", i, "source"), ch.source, "source"
    for k, ref in enumerate(ch.destinations):
        yield ("channel", i, "destinations", k), ref, "destination"


def _port(ctx: Context, ref: str) -> tuple[int, int] | None:
    """(partition index, port index) of ``"partition.port"``, or None."""
    part_name, _, port_name = ref.partition(".")
    for i, p in enumerate(ctx.desc.partition):
        if p.name == part_name:
            return next(((i, j) for j, port in enumerate(p.ports) if port.name == port_name), None)
    return None


@rule
def unknown_channel_endpoint(ctx: Context) -> Iterator[Problem]:
    """Each end of a channel is ``"partition.port"``: an existing partition and one of its ports."""
    names = {p.name: i for i, p in enumerate(ctx.desc.partition)}
    for i, ch in enumerate(ctx.desc.channel):
        for path, ref, _wanted in _ends(ctx, i):
            part_name, dot, port_name = ref.partition(".")
            if not dot or not part_name or not port_name:
                why = f"{ref!r} is not 'partition.port'"
            elif part_name not in names:
                why = f"{ref!r} names no partition {part_name!r} (partitions: {', '.join(names)})"
            elif _port(ctx, ref) is None:
                part = ctx.desc.partition[names[part_name]]
                declared = ", ".join(p.name for p in part.ports) or "none"
                why = (f"{ref!r}: partition {part_name} ({ctx.line('partition', names[part_name])}) has no port "
                       f"{port_name!r} (its ports: {declared})")  # fmt: skip
            else:
                continue
            yield ctx.problem(path, "unknown_channel_endpoint", f"channel {ch.name}: {why}")


@rule
def port_direction(ctx: Context) -> Iterator[Problem]:
    """A channel's source is a source port; its destinations are destination ports."""
    for i, ch in enumerate(ctx.desc.channel):
        for path, ref, wanted in _ends(ctx, i):
            found = _port(ctx, ref)
            if found is None:
                continue
            pi, pj = found
            port = ctx.desc.partition[pi].ports[pj]
            if port.direction != wanted:
                yield ctx.problem(
                    path, "port_direction",
                    f"channel {ch.name}: {ref} is declared a {port.direction} port (partition.{pi}.ports.{pj}, "
                    f"{ctx.line('partition', pi, 'ports', pj)}), used as the {wanted}",
                )  # fmt: skip


@rule
def port_in_two_channels(ctx: Context) -> Iterator[Problem]:
    """A port is an end of one channel, once."""
    first: dict[str, tuple[str, tuple[str | int, ...]]] = {}
    for i, ch in enumerate(ctx.desc.channel):
        for path, ref, _wanted in _ends(ctx, i):
            if ref in first:
                other, other_path = first[ref]
                what = "listed twice in" if other == ch.name else "already an end of"
                yield ctx.problem(
                    path, "port_in_two_channels",
                    f"channel {ch.name}: {ref} is {what} channel {other} "
                    f"({'.'.join(map(str, other_path))}, {ctx.line(*other_path)})",
                )  # fmt: skip
            first.setdefault(ref, (ch.name, path))


@rule
def depth_on_sampling_channel(ctx: Context) -> Iterator[Problem]:
    """``depth`` is for queuing channels: a sampling channel holds one message, the latest."""
    for i, ch in enumerate(ctx.desc.channel):
        if ch.kind == "sampling" and "depth" in ch.model_fields_set:
            yield ctx.problem(("channel", i, "depth"), "depth_on_sampling_channel",
                              f"channel {ch.name}: depth applies to queuing channels only; "
                              "a sampling channel holds the latest message")  # fmt: skip


@rule
def refresh_on_queuing_channel(ctx: Context) -> Iterator[Problem]:
    """``refresh`` is for sampling channels: a queued message stays until it is received."""
    for i, ch in enumerate(ctx.desc.channel):
        if ch.kind == "queuing" and "refresh" in ch.model_fields_set:
            yield ctx.problem(("channel", i, "refresh"), "refresh_on_queuing_channel",
                              f"channel {ch.name}: refresh applies to sampling channels only; "
                              "a queued message stays until it is received")  # fmt: skip


# -- health ----------------------------------------------------------------------
@rule
def health_action_fatal(ctx: Context) -> Iterator[Problem]:
    """A kernel that faulted cannot go on: ignore, log and propagate do not apply to fatal events."""
    for i, p in enumerate(ctx.desc.partition):
        for event in FATAL_EVENTS:
            action = p.health.action(event)
            if action in ("ignore", "log", "propagate"):
                yield ctx.problem(("partition", i, "health", event), "health_action_fatal",
                                  f"{p.name}: {event} is fatal to the guest kernel; '{action}' cannot apply "
                                  "(use halt, cold_restart or warm_restart)")  # fmt: skip


# -- boot ------------------------------------------------------------------------
@rule
def no_boot_partition(ctx: Context) -> Iterator[Problem]:
    """At least one partition starts at boot."""
    if not any(p.boot for p in ctx.desc.partition):
        yield ctx.problem(("partition",), "no_boot_partition", "no partition has boot = true (the default)")


@rule
def no_system_partition(ctx: Context) -> Iterator[Problem]:
    """A partition with ``boot = false`` is started by a system partition: one must boot."""
    if any(p.boot for p in ctx.desc.partition) and not any(p.boot and p.role == "system" for p in ctx.desc.partition):
        for i, p in enumerate(ctx.desc.partition):
            if not p.boot:
                yield ctx.problem(("partition", i, "boot"), "no_system_partition",
                                  f"{p.name}: boot = false, but no partition with role = 'system' boots "
                                  "to start it")  # fmt: skip
