"""SPK: the ring-0 mechanism kernel of the secure platform (public API).

Ring 1 (``spgs``) and tools use only what this module exports; everything
else in ``spk`` is private (``spk._*``) and may change. ``tests/test_api.py``
pins this list.
"""

from spk import abi
from spk._debug import REGISTERS as DEBUG_REGISTERS
from spk._debug import DebugError, DebugSession, DebugStop
from spk._engine import bare_run, bare_windows
from spk._fv_cpu import HOOK_OPERATIONS as _HOOK_OPERATIONS
from spk._fv_emulate import Emulator as _Emulator
from spk._image import LoadImage, Segment, check_app_image, load_image
from spk._machine import Machine, PartitionInfo, RunOutcome
from spk._migrate import DirtyLog, PartitionExport
from spk._partition import Counters, KernelFault
from spk._snapshot import Snapshot
from spk._trace import EventSink, MachineEvent, TraceWriter
from spk.errors import EngineError, ImageError, InternalError, MigrationError, OutOfMemory, SpkError

__all__ = [
    "DEBUG_REGISTERS",
    "Counters",
    "DebugError",
    "DebugSession",
    "DebugStop",
    "DirtyLog",
    "EngineError",
    "EventSink",
    "ImageError",
    "InternalError",
    "KernelFault",
    "LoadImage",
    "Machine",
    "MachineEvent",
    "MigrationError",
    "OutOfMemory",
    "PartitionExport",
    "PartitionInfo",
    "RunOutcome",
    "Segment",
    "Snapshot",
    "SpkError",
    "TraceWriter",
    "abi",
    "bare_run",
    "bare_windows",
    "check_app_image",
    "full_trapped_operations",
    "load_image",
]


def full_trapped_operations() -> dict[str, str]:
    """Every operation a full partition's vCPU traps, by the counter name ``Machine.full_state`` reports.

    The value says how ring 0 gets it and what it does (docs/fullvirt.md).
    Derived from the emulator's handlers and the vCPU's hooks, so the list
    cannot drift from the code.
    """
    return dict(sorted({**_Emulator.operations(), **_HOOK_OPERATIONS}.items()))
