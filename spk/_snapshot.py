"""Machine snapshots: the whole state of one host, taken and restored between runs.

A snapshot holds physical RAM (one copy), the frame table, and a pickled copy
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
restored while the vCPU runs, restored on (or compared with) another
machine, or compared over frames that are not in RAM.
"""

from __future__ import annotations

import ctypes
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spk._engine import Context
from spk._frames import FrameType
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

#: The machine's tables that make up its state beyond RAM and the frame table: restored
#: in place, as its parts (lifecycle, world switch, trap paths) hold the same objects.
STATE_TABLES = ("partitions", "channels", "declared")


@dataclass(frozen=True)
class Snapshot:
    """One machine's state at one instant (opaque to ring 1: take and restore only).

    ``frames`` is the frame table as (owner, type, map count, writable
    count) per frame, for readers such as the fuzzer's oracles; ``state``
    is the pickled machine state a restore loads.
    """

    machine_id: int  #: the token of the machine that took it
    now: int
    ram: bytes
    frames: tuple[tuple[int, FrameType, int, int], ...]
    state: bytes

    def address(self) -> int:
        """Where the RAM copy lives (for comparisons in C)."""
        return int(ctypes.cast(ctypes.c_char_p(self.ram), ctypes.c_void_p).value or 0)


def _shared(machine: Machine) -> dict[str, Any]:
    """The machine's own infrastructure: referred to by name in a snapshot, never copied."""
    return {"machine": machine, "ram": machine.ram, "frames": machine.frames, "engine": machine.engine,
            "walker": machine.walker, "world": machine.world}  # fmt: skip


class _Pickler(pickle.Pickler):
    """Pickles the machine state; shared objects by name, engine contexts by their bytes."""

    def __init__(self, file: io.BytesIO, machine: Machine) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = {id(obj): name for name, obj in _shared(machine).items()}

    def persistent_id(self, obj: Any) -> Any:
        name = self._names.get(id(obj))
        if name is not None:
            return name
        if isinstance(obj, Context):
            return ("context", ctypes.string_at(obj.handle, obj.size))
        return None


class _Unpickler(pickle.Unpickler):
    """Loads a snapshot's state onto its machine: new engine contexts, shared objects as they are."""

    def __init__(self, file: io.BytesIO, machine: Machine) -> None:
        super().__init__(file)
        self._machine = machine
        self._objects = _shared(machine)

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid[0] == "context":
            context = self._machine.engine.new_context()
            ctypes.memmove(context.handle, pid[1], context.size)
            return context
        return self._objects[pid]


def _check_idle(machine: Machine, what: str) -> None:
    if machine.running:
        raise InternalError(f"{what} while the vCPU runs")


def take(machine: Machine) -> Snapshot:
    """Capture ``machine`` (between runs only)."""
    _check_idle(machine, "snapshot")
    frames = tuple(machine.frames.values())
    buffer = io.BytesIO()
    state: dict[str, Any] = {name: getattr(machine, name) for name in STATE_TABLES}
    state["now"], state["next_pid"] = machine.now, machine.lifecycle.next_pid
    state["health"], state["requests"] = machine.reports.health, machine.reports.requests
    _Pickler(buffer, machine).dump((state, machine.frames.state(), machine.frames.index()))
    return Snapshot(machine.token, machine.now, bytes(machine.ram.view), frames, buffer.getvalue())


def _check_own(machine: Machine, snapshot: Snapshot, what: str) -> None:
    if snapshot.machine_id != machine.token or len(snapshot.ram) != machine.ram.size:
        raise InternalError(f"a snapshot {what} only on the machine that took it")


def restore(machine: Machine, snapshot: Snapshot) -> None:
    """Put ``machine`` back to ``snapshot``; the snapshot stays usable for the next restore.

    The state is loaded before anything of the machine changes: if loading
    fails (no engine context left, say), the machine is as it was.
    """
    _check_idle(machine, "restore")
    _check_own(machine, snapshot, "restores")
    state, frame_state, index = _Unpickler(io.BytesIO(snapshot.state), machine).load()
    old = list(machine.partitions.values())
    machine.ram.view[:] = snapshot.ram
    machine.frames.set_state(frame_state)
    machine.frames.set_index(index)
    for name in STATE_TABLES:
        table = getattr(machine, name)
        table.clear()
        table.update(state[name])
    machine.now, machine.lifecycle.next_pid = state["now"], state["next_pid"]
    machine.reports.health, machine.reports.requests = state["health"], state["requests"]
    for partition in old:
        partition.context.free()
    machine.drop_caches()


def changed_frames(machine: Machine, snapshot: Snapshot, runs: Sequence[tuple[int, int]] | None = None) -> list[int]:
    """Frames whose bytes differ from ``snapshot`` (dirty-page tracking by comparison).

    ``runs`` limits the comparison to (first frame, count) runs; by default
    all of RAM. One ``memcmp`` per run when nothing changed; otherwise
    chunks, then the pages of the chunks that differ. Errors: InternalError
    for another machine's snapshot.
    """
    _check_own(machine, snapshot, "compares")
    here, there = machine.ram.address, snapshot.address()
    changed: list[int] = []
    runs = [(0, machine.ram.frames)] if runs is None else runs
    for first, count in runs:
        if first < 0 or count < 0 or first + count > machine.ram.frames:
            raise InternalError(f"frames {first}+{count} are not all in RAM ({machine.ram.frames} frames)")
    for first, count in runs:
        start, end = first << PAGE_SHIFT, (first + count) << PAGE_SHIFT
        if not _MEMCMP(here + start, there + start, end - start):
            continue
        chunk = _CHUNK_FRAMES * PAGE_SIZE
        for base in range(start, end, chunk):
            length = min(chunk, end - base)
            if _MEMCMP(here + base, there + base, length):
                changed += [
                    (base + offset) >> PAGE_SHIFT
                    for offset in range(0, length, PAGE_SIZE)
                    if _MEMCMP(here + base + offset, there + base + offset, PAGE_SIZE)
                ]
    return changed
