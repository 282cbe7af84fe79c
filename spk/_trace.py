"""Events the SPK reports, and the JSON-lines trace.

The SPK reports what happened (a console line, a fault, an exit, a
hypercall); ring 1 decides what to show and what to do. Every record carries
the virtual time, so a trace of the same configuration and seed is
byte-identical from run to run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass(frozen=True)
class MachineEvent:
    """One thing that happened, at virtual time ``time``."""

    time: int
    partition: str
    event: str
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None


EventSink = Callable[[MachineEvent], None]


class TraceWriter:
    """Writes events as JSON lines: time, partition, event, args, result."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: MachineEvent) -> None:
        record = {
            "t": event.time,
            "partition": event.partition,
            "event": event.event,
            "args": event.args,
            "result": event.result,
        }
        self._stream.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
