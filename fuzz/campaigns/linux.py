"""Linux system calls with hostile arguments, from a real static program in a Linux partition.

The world boots the ``linux`` kernel (docs/linux.md) with the static glibc
probe (``linux_probe.c``) in ``serve`` mode as its first process, beside two
idle victims, and snapshots it once the probe waits at its mailbox: a page of
its own .bss the host writes through the machine's RAM, found by the
probe's symbol and the process's page tables. An action is a batch of up to
:data:`BATCH` system calls the probe makes from its real process context,
through the real trap path (the ``syscall`` instruction at CPL 3, ring 0,
the Linux kernel at CPL 2), each argument either a hostile word (kernel-half
and non-canonical addresses, unmapped and huge ranges, negative numbers,
bad descriptors) or a pointer into a scratch buffer of the probe. A fork
forks for real; a batch of forks is a fork bomb the partition's quota bounds.

Besides the invariants of every world (frames, memory confinement of the
victims and ring 0, victims running, budgets, no host exception), two of
this campaign:

* ``linux_kernel_alive``: no system call, however hostile, faults the
  Linux kernel (a ``kernel_fault`` of the partition): a process may die,
  the kernel may not;
* ``linux_errno_range``: a result is a value or ``-errno`` with errno from 1
  to 4095 (the probe prints ``probe: bad return`` otherwise).

When the probe itself dies (a signal, an exit, an execve that worked) the
partition is restarted and the probe booted again, as the agent is.
"""

from __future__ import annotations

import functools
import io
import struct
from typing import Any

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection
from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.campaigns.base import EDGES, U64, CampaignMachine, register
from fuzz.campaigns.linux_probe import probe, probe_file
from fuzz.world import Violation, World
from spgs.linux_run import linux_kernel, linux_modules
from spk import MachineEvent
from spk.abi import PAGE_SIZE

#: System calls per action (the probe's mailbox holds 32).
BATCH = 8
_MAGIC = 0x53504B2D4C4E5850
_HEADER = struct.Struct("<4Q")
_RECORD = struct.Struct("<II6Q")
_RESULTS = _HEADER.size + 32 * _RECORD.size
#: Quota of the Linux partition: the kernel, the rootfs module (the probe), the probe's memory and children.
QUOTA_FRAMES = 2048
#: Instructions per window of the Linux partition, and windows an action may take before it is cut short.
LINUX_WINDOW = 400_000
MAX_WINDOWS = 40
#: System calls not drawn: the probe's own end (exit, exit_group) would make every batch a restart.
_NOT_DRAWN = frozenset({60, 231})
#: Every Linux x86-64 number up to clone3 and some beyond, mostly the ones the personality implements.
IMPLEMENTED = [0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 32, 33, 39, 57, 58, 59, 61, 63, 72,
               79, 80, 89, 102, 104, 107, 108, 110, 158, 186, 217, 218, 228, 257, 262, 292, 293, 302, 318]  # fmt: skip
NUMBER = st.one_of(
    st.sampled_from(IMPLEMENTED), st.integers(0, 460).filter(lambda n: n not in _NOT_DRAWN), st.integers(461, 2**32 - 1)
)
#: Hostile words: the ring's edges, kernel-half and non-canonical addresses, negative numbers, bad descriptors.
HOSTILE = st.one_of(
    EDGES, U64, st.integers(-5, 70).map(lambda n: n % 2**64), st.integers(1, 2**20).map(lambda n: n * PAGE_SIZE),
    st.sampled_from([0x400000, 0x4AB000, 0x7FFF_FFFF_F000, 0x8000_0000_0000, 0xFFFF_8000_0000_0000,
                     0xFFFF_FFFF_8000_0000, 2**31, 2**32, 2**63 - 1]),
)  # fmt: skip
CALL = st.tuples(NUMBER, st.integers(0, 63), st.lists(HOSTILE, min_size=6, max_size=6))


@functools.cache
def mailbox_va() -> int:
    """The address of ``probe_mailbox`` in the probe (a static executable: fixed)."""
    elf = ELFFile(io.BytesIO(probe()))
    symbols = elf.get_section_by_name(".symtab")
    assert isinstance(symbols, SymbolTableSection), "the probe keeps its symbol table"
    (symbol,) = symbols.get_symbol_by_name("probe_mailbox") or []
    return int(symbol["st_value"])


@functools.cache
def _modules() -> tuple[tuple[str, bytes], ...]:
    return tuple(linux_modules(None, {"/probe": probe_file()}, ["/probe", "serve"], [], None))


class LinuxWorld(World):
    """The Linux kernel running the probe, beside two idle victims."""

    kind = "linux"
    ram_bytes = (1 << 20) + QUOTA_FRAMES * PAGE_SIZE + 2 * 64 * PAGE_SIZE

    def __init__(self) -> None:
        self.linux_events: list[MachineEvent] = []
        super().__init__(on_event=self._on_event)
        self.add_victims(2)
        self.pid = self.machine.create_partition("linux", linux_kernel(), list(_modules()), QUOTA_FRAMES)
        self.restarts = 0
        self._mailbox: int | None = None
        self._boot()
        self.seal()

    def _on_event(self, event: MachineEvent) -> None:
        if event.partition == "linux" and event.event in ("console", "kernel_fault", "app_fault"):
            self.linux_events.append(event)

    def writers(self) -> set[int]:
        return {self.pid}

    def on_reset(self) -> None:
        self._mailbox = None
        self.linux_events.clear()

    # -- the probe ------------------------------------------------------------------------
    def _find_mailbox(self) -> int | None:
        """Physical address of the live mailbox: the probe's page with the magic (children clear theirs)."""
        machine, va = self.machine, mailbox_va()
        for space in machine.partitions[self.pid].spaces.values():
            found = machine.walker.translate(space.cr3, va)
            if found is not None and machine.ram.read_u64(found.paddr) == _MAGIC:
                return int(found.paddr)
        return None

    def _boot(self) -> None:
        """Run the partition until the probe waits at its mailbox. Errors: Violation when it never does."""
        for _ in range(MAX_WINDOWS * 4):
            self._mailbox = self._find_mailbox()
            if self._mailbox is not None:
                return
            if self.machine.state(self.pid) not in ("ready", "blocked"):
                break
            self.run_partition(self.pid, LINUX_WINDOW)
        self._alive()
        raise Violation("linux_kernel_alive", f"the probe never reached its mailbox ({self.machine.state(self.pid)})")

    def _restart(self) -> None:
        self.machine.reset_partition(self.pid, linux_kernel(), list(_modules()))
        self.restarts += 1
        self._boot()

    def _alive(self) -> None:
        """The ``linux_kernel_alive`` and ``no_host_exception`` checks of the partition's state."""
        fault = self.machine.fault_of(self.pid)
        if fault is not None and fault.kind == "internal_error":
            raise Violation("no_host_exception", f"ring 0 raised inside the Linux partition: {fault}")
        if self.machine.state(self.pid) == "faulted":
            raise Violation("linux_kernel_alive", f"the Linux kernel faulted: {fault}")

    def invariants(self) -> list[Any]:
        return [*super().invariants(), self._alive, self._errno_range]

    def _errno_range(self) -> None:
        lines = [e.args["text"] for e in self.linux_events if e.event == "console"]
        bad = [line for line in lines if line.startswith("probe: bad return")]
        if bad:
            raise Violation("linux_errno_range", bad[0])

    # -- actions --------------------------------------------------------------------------
    def do_syscalls(self, calls: list[list[Any]]) -> list[int] | None:
        """The probe makes ``calls`` ([number, pointer flags, [six arguments]] each); their results, or None."""
        if self._mailbox is None:
            self._mailbox = self._find_mailbox()
            if self._mailbox is None:
                self._restart()
        assert self._mailbox is not None
        ram, box = self.machine.ram, self._mailbox
        batch = calls[:BATCH]
        records = b"".join(_RECORD.pack(n & 0xFFFF_FFFF, f & 0x3F, *(a & (2**64 - 1) for a in args[:6]))
                           for n, f, args in batch)  # fmt: skip
        ram.write(box + _HEADER.size, records)
        ram.write_u64(box + 24, len(batch))
        seq = ram.read_u64(box + 8) + 1
        ram.write_u64(box + 8, seq)
        for _ in range(MAX_WINDOWS):
            if self.machine.state(self.pid) not in ("ready", "blocked"):
                break
            self.run_partition(self.pid, LINUX_WINDOW)
            self.run_victims()
            if ram.read_u64(box) == _MAGIC and ram.read_u64(box + 16) == seq:
                raw = ram.read(box + _RESULTS, 8 * len(batch))
                return list(struct.unpack(f"<{len(batch)}q", raw))
        self._alive()
        # The probe died, or is stuck (a blocking call): a fresh one for the next action.
        self._mailbox = None
        if self.machine.state(self.pid) in ("exited", "stopped", "ready", "blocked"):
            self._restart()
        return None

    def do_victims_run(self) -> None:
        self.run_victims()


@register("linux", "Linux system calls with hostile arguments from a static program in a Linux partition", LinuxWorld)
class LinuxCampaign(CampaignMachine):
    @rule(calls=st.lists(CALL, min_size=1, max_size=BATCH))
    def syscalls(self, calls: list[tuple[int, int, list[int]]]) -> None:
        self.act("syscalls", [[n, f, list(args)] for n, f, args in calls])

    @rule(count=st.integers(1, BATCH))
    def fork_bomb(self, count: int) -> None:
        """fork() ``count`` times in one batch: every child forks again (2**count processes), the quota bounds it."""
        self.act("syscalls", [[57, 0, [0] * 6]] * count)

    @rule()
    def victims_run(self) -> None:
        self.act("victims_run")
