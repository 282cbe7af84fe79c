"""The partition object: one guest kernel, its spaces, its vCPU state.

A partition is the SPK's unit of isolation. It owns a quota of frames, a
kernel half shared by its address spaces, a table of handles to those
spaces, a saved vCPU context, its registered entry points, one virtual
timer and its counters. It holds no policy: who runs when, and what happens
after a fault, is decided by ring 1.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from spk._channels import Port
from spk._engine import Context
from spk._frames import GuestFrames
from spk._image import LoadImage
from spk._measure import Measurements
from spk._paging import AddressSpace, KernelHalf
from spk.abi import EntryKind


class State(enum.Enum):
    """Mechanism-level state (ring 1 layers its own vocabulary on top)."""

    READY = "ready"  #: may run in its windows
    BLOCKED = "blocked"  #: waiting for an event (BLOCK)
    EXITED = "exited"  #: called EXIT
    FAULTED = "faulted"  #: its kernel faulted; waits for policy
    STOPPED = "stopped"  #: stopped by ring 1 (halt)
    PAUSED = "paused"  #: paused by ring 1; resume brings back the state it had


@dataclass
class Counters:
    """What one partition consumed and caused, for the summary and QoS."""

    #: ticks charged (exact time: instruction bytes retired, plus the part of a budget
    #: too short for the next instruction); the name is the ABI's (PART_QUERY)
    instructions: int = 0
    hypercalls: int = 0
    syscalls: int = 0
    faults: int = 0
    timer_upcalls: int = 0
    windows: int = 0
    preemptions: int = 0


@dataclass
class KernelFault:
    """Why a partition's kernel was stopped (for ring 1's health monitor)."""

    kind: str  #: memory_violation, illegal_instruction, privileged_instruction, unexpected_trap, internal_error
    vector: int
    rip: int
    address: int
    detail: str


@dataclass
class Module:
    name: str
    first_mfn: int
    pages: int
    size: int


#: Handles the native MAP and UNMAP know (SpaceTable.native); a space with a
#: larger handle is served by ring 0's handler alone (its every call, not its errors only).
NATIVE_SPACE_SLOTS = 128


class SpaceTable(dict[int, AddressSpace]):
    """A partition's address spaces by handle, with their CR3s in a native array.

    ``native[h]`` is the CR3 of space ``h`` (0: no such space) for every
    handle below :data:`NATIVE_SPACE_SLOTS`: ring 0's native MAP and UNMAP
    (``_clock.c``) read it while the partition runs. Every change goes
    through ``[]=``, ``del``, ``pop`` and ``clear``, which keep the array in
    step; the dict methods that would bypass them are refused.
    """

    def __init__(self, spaces: Mapping[int, AddressSpace] | None = None) -> None:
        super().__init__()
        self.native = (ctypes.c_uint64 * NATIVE_SPACE_SLOTS)()
        #: host address of ``native`` (what a window arms the native path with)
        self.native_address = ctypes.addressof(self.native)
        for handle, space in (spaces or {}).items():
            self[handle] = space

    def __setitem__(self, handle: int, space: AddressSpace) -> None:
        super().__setitem__(handle, space)
        if 0 <= handle < NATIVE_SPACE_SLOTS:
            self.native[handle] = space.cr3

    def __delitem__(self, handle: int) -> None:
        super().__delitem__(handle)
        if 0 <= handle < NATIVE_SPACE_SLOTS:
            self.native[handle] = 0

    def pop(self, handle: int, *default: AddressSpace) -> AddressSpace:  # type: ignore[override]
        if handle not in self:
            if default:
                return default[0]
            raise KeyError(handle)
        space = super().pop(handle)
        if 0 <= handle < NATIVE_SPACE_SLOTS:
            self.native[handle] = 0
        return space

    def clear(self) -> None:
        super().clear()
        ctypes.memset(self.native, 0, ctypes.sizeof(self.native))

    def _refused(self, *_args: object, **_kwargs: object) -> NoReturn:
        raise TypeError("a SpaceTable changes only through []=, del, pop and clear (its native array follows them)")

    update = setdefault = popitem = __ior__ = _refused

    def __reduce__(self) -> tuple[type[SpaceTable], tuple[dict[int, AddressSpace]]]:
        """Pickle as a plain dict of the spaces (a snapshot): the native array is rebuilt."""
        return SpaceTable, (dict(self),)


@dataclass
class Partition:
    pid: int
    name: str
    quota: int
    kernel: KernelHalf
    spaces: dict[int, AddressSpace]
    context: Context
    modules: list[Module] = field(default_factory=list)
    #: the kernel image it was built from (its segments' permissions and addresses)
    image: LoadImage | None = None
    state: State = State.READY
    current_space: int = 0
    next_handle: int = 1
    entries: dict[EntryKind, int] = field(default_factory=dict)
    kernel_stack: int = 0
    timer_deadline: int = 0
    timer_pending: bool = False
    exit_code: int | None = None
    fault: KernelFault | None = None
    counters: Counters = field(default_factory=Counters)
    console_buffer: bytearray = field(default_factory=bytearray)
    measurements: Measurements = field(default_factory=Measurements)
    #: ports ring 1 gave this partition, by name, and those it opened (handles)
    ports: dict[str, Port] = field(default_factory=dict)
    open_ports: list[Port] = field(default_factory=list)
    #: granted by ring 1 to partitions of role "system": management hypercalls
    may_manage: bool = False
    restarts: int = 0
    paused_from: State | None = None
    #: health events ring 1 propagates, waiting for the vCPU to be at CPL 3
    pending_traps: list[tuple[int, int, int]] = field(default_factory=list)
    #: (stack top, kernel-half generation, physical address of the top)
    stack_cache: tuple[int, int, int] | None = None
    #: its own frame numbers, once it has migrated (None: they are the machine's)
    guest_frames: GuestFrames | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spaces, SpaceTable):
            self.spaces = SpaceTable(self.spaces)

    def space(self, handle: int) -> AddressSpace | None:
        return self.spaces.get(handle)
