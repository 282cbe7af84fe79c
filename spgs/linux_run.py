"""Run one Linux program in a partition of its own, straight on ring 0's API, and collect what it did.

What the differential test, the benchmark and the fuzz campaign share: the
``linux`` kernel with the boot modules :mod:`spgs.rootfs` packs, on a
machine holding that one partition, run in windows until the partition ends
or a bound of virtual time passes. Console lines are collected as ring 0
emits them (fd 1 and 2 of every process, in order). Same inputs, same run:
nothing here reads the wall clock.

Errors: :class:`spgs.rootfs.RootfsError`, :class:`spgs.images.ImageNotFound`,
:class:`spgs.cbuild.BuildError`, :class:`spk.SpkError` (a quota too small
for the modules).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from spgs.images import build
from spgs.rootfs import RootfsError, cmdline, pack, resolve
from spk import KernelFault, Machine, MachineEvent
from spk.abi import PAGE_SIZE

#: The summary line the kernel prints when some call returned ENOSYS (docs/linux.md).
UNSUPPORTED_PREFIX = "linux: unsupported syscalls: "
#: RAM ring 0 keeps below the partitions.
_RING0_BYTES = 1 << 20


@functools.cache
def linux_kernel() -> bytes:
    """The bundled ``linux`` kernel's ELF (built once per process, cached on disk)."""
    return build([("kernel", "linux")], Path.cwd())[("kernel", "linux")]


def linux_modules(
    rootfs: Path | None, files: dict[str, Path], command: list[str], env: list[str], stdin: bytes | None
) -> list[tuple[str, bytes]]:
    """The modules a Linux partition boots with (see :func:`spgs.rootfs.modules`)."""
    archive = pack(rootfs, files)
    if resolve(archive, command[0]) is None:
        raise RootfsError("command", "linux_command_missing", f"no file {command[0]!r} in the rootfs")
    mods = [("rootfs", archive), ("cmdline", cmdline(command, env))]
    if stdin is not None:
        mods.append(("stdin", stdin))
    return mods


@dataclass
class LinuxRun:
    """What a Linux partition did."""

    state: str  #: exited, faulted, stopped, or ready/blocked when the bound passed first
    exit_code: int | None
    ticks: int  #: virtual time when it ended (or the bound)
    lines: list[str] = field(default_factory=list)  #: console lines, the unsupported-syscalls summary excluded
    unsupported: str | None = None  #: the summary line's list (``name=count, ...``), when printed
    fault: KernelFault | None = None
    events: list[MachineEvent] = field(default_factory=list)

    @property
    def output(self) -> str:
        """The console as text: every line, each ended by a newline."""
        return "".join(f"{line}\n" for line in self.lines)


def run_linux(
    modules: list[tuple[str, bytes]],
    *,
    memory: int = 32 << 20,
    max_ticks: int = 2_000_000_000,
    window: int = 10_000_000,
    name: str = "linux",
) -> LinuxRun:
    """Boot the ``linux`` kernel with ``modules`` on a machine of its own; run it until it ends or ``max_ticks``."""
    events: list[MachineEvent] = []
    machine = Machine(memory + _RING0_BYTES, on_event=events.append)
    pid = machine.create_partition(
        name, linux_kernel(), modules, memory // PAGE_SIZE, frame_hint=_RING0_BYTES // PAGE_SIZE
    )
    while machine.now < max_ticks and machine.state(pid) in ("ready", "blocked"):
        end = min(machine.now + window, max_ticks)
        machine.run(pid, end)
        machine.advance(end)
    info = machine.info(pid)
    lines = [e.args["text"] for e in events if e.event == "console" and e.partition == name]
    unsupported = None
    if lines and lines[-1].startswith(UNSUPPORTED_PREFIX):
        unsupported = lines.pop()[len(UNSUPPORTED_PREFIX) :]
    return LinuxRun(info.state, info.exit_code, machine.now, lines, unsupported, info.fault, events)
