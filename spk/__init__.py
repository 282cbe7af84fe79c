"""SPK: the ring-0 mechanism kernel of the secure platform (public API).

Ring 1 (``spgs``) and tools use only what this module exports; everything
else in ``spk`` is private (``spk._*``) and may change. ``tests/test_api.py``
pins this list.
"""

from spk import abi
from spk._engine import bare_run
from spk._machine import Machine, PartitionInfo, RunOutcome
from spk._partition import Counters, KernelFault
from spk._snapshot import Snapshot
from spk._trace import EventSink, MachineEvent, TraceWriter
from spk.errors import EngineError, ImageError, InternalError, OutOfMemory, SpkError

__all__ = [
    "Counters",
    "EngineError",
    "EventSink",
    "ImageError",
    "InternalError",
    "KernelFault",
    "Machine",
    "MachineEvent",
    "OutOfMemory",
    "PartitionInfo",
    "RunOutcome",
    "Snapshot",
    "SpkError",
    "TraceWriter",
    "abi",
    "bare_run",
]
