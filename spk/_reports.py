"""What ring 0 reports to ring 1: console lines, kernel faults, health events, management requests.

Ring 0 decides nothing about a partition that misbehaves or asks for
something: it records the fact and queues it for ring 1, which drains the
queues between windows (:meth:`Reports.take_health_events`,
:meth:`Reports.take_requests`) and decides. Console output is cut into
lines here, one event per line, with a bound on the host's work per
write. :class:`PartitionInfo` and :func:`partition_table` are the
read-only views of partitions ring 1 and the PART_LIST hypercall get.

Errors: none of its own; the event listener's errors are the world
switch's to handle (:meth:`spk._world.PvWorldSwitch.emit`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from spk._partition import Counters, KernelFault, Partition, State
from spk.abi import PartOp, PartState

CONSOLE_LINE_MAX = 512
CONSOLE_LINES_PER_CALL = 64

STATE_CODES = {
    State.READY: PartState.READY, State.BLOCKED: PartState.BLOCKED, State.EXITED: PartState.EXITED,
    State.FAULTED: PartState.FAULTED, State.STOPPED: PartState.STOPPED, State.PAUSED: PartState.PAUSED,
}  # fmt: skip


class Emit(Protocol):
    """Report an event of partition ``p`` to ring 1's listener (:meth:`spk._world.PvWorldSwitch.emit`)."""

    def __call__(self, p: Partition, event: str, args: dict[str, object], result: object = None) -> None: ...


@dataclass(frozen=True)
class HealthEvent:
    """Something the health monitor (ring 1) must decide about."""

    pid: int
    event: str  #: a KernelFault kind, or guest_error
    detail: str


@dataclass(frozen=True)
class ManagementRequest:
    """A system partition asked ring 1 to act on a partition (PART_CONTROL)."""

    requester: int
    target: int
    op: PartOp


@dataclass(frozen=True)
class PartitionInfo:
    """A read-only view of one partition for ring 1."""

    pid: int
    name: str
    state: str
    quota_frames: int
    frames_in_use: int
    exit_code: int | None
    fault: KernelFault | None
    counters: Counters
    restarts: int = 0
    virtualization: str = "para"  #: "para" or "full"
    mmu: str = ""  #: a full partition's memory virtualization: "nested" or "shadow"


def partition_info(p: Partition, free_frames: int) -> PartitionInfo:
    """``p`` as ring 1 sees it, with ``free_frames`` of its quota unused."""
    return PartitionInfo(
        pid=p.pid, name=p.name, state=p.state.value, quota_frames=p.quota, frames_in_use=p.quota - free_frames,
        exit_code=p.exit_code, fault=p.fault, counters=p.counters, restarts=p.restarts,
    )  # fmt: skip


def partition_table(partitions: Mapping[int, Partition], declared: Mapping[int, str]) -> list[tuple[int, int, str]]:
    """(id, PartState, name) of every running or declared partition, by id."""
    rows = [(pid, int(STATE_CODES[p.state]), p.name) for pid, p in partitions.items()]
    rows += [(pid, int(PartState.DECLARED), name) for pid, name in declared.items()]
    return sorted(rows)


class Reports:
    """One machine's reports to ring 1: the queues it drains and the console's lines.

    ``emit`` sends an event to ring 1's listener; ``request_stop`` stops
    the vCPU (a faulted kernel leaves it at once).
    """

    def __init__(self, emit: Emit, request_stop: Callable[[str], None]) -> None:
        self._emit = emit
        self._request_stop = request_stop
        #: health events not yet taken by ring 1 (in the order they happened)
        self.health: list[HealthEvent] = []
        #: management requests not yet taken by ring 1
        self.requests: list[ManagementRequest] = []

    def console(self, p: Partition, data: bytes) -> None:
        """Split a partition's output into lines, CONSOLE_LINES_PER_CALL at most per call.

        The cap bounds the host's work for one hypercall (4096 newlines would
        otherwise be 4096 events); the rest of that write is dropped, said so.
        """
        buf = p.console_buffer
        buf.extend(data)
        emitted = 0
        while True:
            if emitted == CONSOLE_LINES_PER_CALL:
                dropped = buf.count(b"\n")
                buf.clear()
                if dropped:
                    self._emit(p, "console", {"text": f"[spk: {dropped} more lines of this write dropped]"})
                return
            emitted += 1
            cut = buf.find(b"\n")
            if cut < 0 and len(buf) < CONSOLE_LINE_MAX:
                return
            end = cut if cut >= 0 else CONSOLE_LINE_MAX
            line = buf[:end].decode("utf-8", "replace")
            del buf[: end + (1 if cut >= 0 else 0)]
            self._emit(p, "console", {"text": line})

    def kernel_fault(self, p: Partition, kind: str, vector: int, rip: int, address: int, detail: str) -> None:
        """Stop ``p``'s kernel for good: record the fault, report it, queue it for the health monitor."""
        p.state = State.FAULTED
        p.counters.faults += 1
        p.fault = KernelFault(kind, vector, rip, address, detail)
        args = {"kind": kind, "vector": vector, "rip": rip, "address": address, "detail": detail}
        self._emit(p, "kernel_fault", args)
        self.health.append(HealthEvent(p.pid, kind, detail))
        self._request_stop("fault")

    def internal_error(self, p: Partition, exc: Exception) -> None:
        """A host-side exception on ``p``'s behalf: its kernel faults with ``internal_error``."""
        self.kernel_fault(p, "internal_error", 0, 0, 0, f"{type(exc).__name__}: {exc}")

    def health_event(self, p: Partition, event: str, detail: str) -> None:
        """Queue an event for ring 1's health monitor (which traces it)."""
        self.health.append(HealthEvent(p.pid, event, detail))

    def take_health_events(self) -> list[HealthEvent]:
        """The health events so far, oldest first; the queue is empty after."""
        events, self.health = self.health, []
        return events

    def management_request(self, requester: Partition, target: int, op: PartOp) -> None:
        """Queue a PART_CONTROL request for ring 1 and trace it."""
        self.requests.append(ManagementRequest(requester.pid, target, op))
        self._emit(requester, "management_request", {"target": target, "op": op.name.lower()})

    def take_requests(self) -> list[ManagementRequest]:
        """The management requests so far, oldest first; the queue is empty after."""
        requests, self.requests = self.requests, []
        return requests
