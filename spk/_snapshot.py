"""Machine snapshots: the whole state of one host, taken and restored between runs.

A snapshot holds physical RAM (one copy), the frame table, and a deep copy
of every partition (spaces, contexts, ports, measurements, counters), every
channel with its queued messages, the declared ids, pending health events
and management requests, and virtual time. Restoring it puts the machine
back exactly: a run after a restore is bit-for-bit the run after the
snapshot (the fuzzer's fast reset, and a first step towards moving a
partition's host state elsewhere).

What is shared, not copied: the engine, RAM, the frame table object and the
walker are the machine's own and stay; only their contents go back. The
engine's caches (translated code, TLB, loaded CR3) are dropped on restore,
as they describe the state being left.

Errors: :class:`spk.errors.InternalError` when a snapshot is taken or
restored while the vCPU runs, or restored on another machine.
"""

from __future__ import annotations

import copy
import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spk._frames import Frame, FrameType
from spk.abi import PAGE_SHIFT, PAGE_SIZE
from spk.errors import InternalError

if TYPE_CHECKING:
    from spk._machine import Machine

_LIBC = ctypes.CDLL(None)
_MEMCMP = _LIBC.memcmp
_MEMCMP.restype = ctypes.c_int
_MEMCMP.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
#: Frames compared at once before looking page by page (a comparison is one C call).
_CHUNK_FRAMES = 16

#: The machine attributes that make up its state beyond RAM and the frame table.
STATE_ATTRIBUTES = ("partitions", "channels", "declared", "_health", "_requests", "now", "_next_pid")


@dataclass(frozen=True)
class Snapshot:
    """One machine's state at one instant (opaque to ring 1: take and restore only)."""

    machine_id: int
    ram: bytes
    frames: tuple[tuple[int, FrameType, int, int], ...]
    state: dict[str, Any]

    def address(self) -> int:
        """Where the RAM copy lives (for comparisons in C)."""
        return int(ctypes.cast(ctypes.c_char_p(self.ram), ctypes.c_void_p).value or 0)

    @property
    def now(self) -> int:
        """Virtual time when it was taken."""
        return int(self.state["now"])


def _shared(machine: Machine) -> dict[int, Any]:
    """The deep-copy memo that keeps the machine's own infrastructure shared."""
    return {id(obj): obj for obj in (machine, machine.ram, machine.frames, machine.engine, machine.walker)}


def _check_idle(machine: Machine, what: str) -> None:
    if machine.running:
        raise InternalError(f"{what} while the vCPU runs")


def take(machine: Machine) -> Snapshot:
    """Capture ``machine`` (between runs only)."""
    _check_idle(machine, "snapshot")
    frames = tuple((f.owner, f.type, f.map_count, f.writable_count) for f in machine.frames.entries)
    state = copy.deepcopy({name: getattr(machine, name) for name in STATE_ATTRIBUTES}, _shared(machine))
    return Snapshot(id(machine), bytes(machine.ram.view), frames, state)


def restore(machine: Machine, snapshot: Snapshot) -> None:
    """Put ``machine`` back to ``snapshot``; the snapshot stays usable for the next restore."""
    _check_idle(machine, "restore")
    if snapshot.machine_id != id(machine) or len(snapshot.ram) != machine.ram.size:
        raise InternalError("a snapshot restores only on the machine that took it")
    machine.ram.view[:] = snapshot.ram
    machine.frames.entries[:] = [Frame(*entry) for entry in snapshot.frames]
    for partition in machine.partitions.values():
        partition.context.free()
    state = copy.deepcopy(snapshot.state, _shared(machine))
    for name in STATE_ATTRIBUTES:
        setattr(machine, name, state[name])
    machine.drop_caches()


def changed_frames(machine: Machine, snapshot: Snapshot) -> list[int]:
    """Frames whose bytes differ from ``snapshot`` (dirty-page tracking by comparison).

    One ``memcmp`` over RAM when nothing changed; otherwise chunks, then the
    pages of the chunks that differ. Errors: InternalError for another
    machine's snapshot.
    """
    if snapshot.machine_id != id(machine):
        raise InternalError("a snapshot compares only with the machine that took it")
    here, there, size = machine.ram.address, snapshot.address(), machine.ram.size
    if not _MEMCMP(here, there, size):
        return []
    changed: list[int] = []
    chunk = _CHUNK_FRAMES * PAGE_SIZE
    for base in range(0, size, chunk):
        length = min(chunk, size - base)
        if _MEMCMP(here + base, there + base, length):
            changed += [
                (base + offset) >> PAGE_SHIFT
                for offset in range(0, length, PAGE_SIZE)
                if _MEMCMP(here + base + offset, there + base + offset, PAGE_SIZE)
            ]
    return changed
