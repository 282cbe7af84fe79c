"""Ring 1: manage a running system from outside (the management API's controller).

A :class:`Controller` runs a :class:`spgs.system.System` on its own thread,
window after window, optionally paced so a person can watch (``pace``
major frames per second of wall time; 0 runs unpaced). Other threads (the
HTTP server's) never touch the system: they

* read the latest :class:`spgs.control_view.View`, a consistent picture
  made by the system's thread between two windows and published whole;
* :meth:`Controller.submit` a mutation, which is queued with a sequence
  number and applied by the system's thread between windows, in the order
  of the sequence numbers (first come, first applied). A mutation that
  changes the schedule waits for the end of the major frame, and the ones
  queued after it wait with it, so the order never changes.

Every operation on a partition goes through :meth:`spgs.system.System.manage`,
the policy the PART_CONTROL hypercall of a system partition goes through,
and is traced there as a ``management`` event with ``requester =
"api:<token name>"``. Virtual time never depends on the wall clock: the
same mutations applied after the same windows give the same run (the
trace records where each was applied).

Errors: :class:`ControlError` (``code`` says which: ``not_found``,
``conflict``, ``refused``, ``invalid``, ``unavailable``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spgs import control_changes
from spgs.config import LoadedConfig
from spgs.control_errors import ControlError
from spgs.control_events import EventHub, Subscriber
from spgs.control_view import FrameMarks, View, take_view
from spgs.system import PartitionPlan, System, image_label
from spk import EventSink, ImageError, MachineEvent, SpkError
from spk.abi import PartOp

__all__ = ["OPS", "Applied", "ControlError", "Controller"]

#: Operations on a partition, by the name the API gives them.
OPS = {
    "pause": PartOp.PAUSE,
    "resume": PartOp.RESUME,
    "stop": PartOp.HALT,
    "restart": PartOp.RESTART,
    "start": PartOp.START,
    "destroy": PartOp.DESTROY,
}
#: Health and management events kept for readers (the most recent).
RECENT_EVENTS = 100
#: Major frames of QoS history kept (GET /qos/history).
HISTORY = 300


@dataclass(frozen=True)
class Applied:
    """What became of one mutation: applied at virtual time ``t``, after ``windows`` windows of the run."""

    seq: int
    requester: str
    partition: str
    op: str
    outcome: str
    t: int
    windows: int
    result: Any = None

    @property
    def done(self) -> bool:
        return self.outcome == "done"


@dataclass
class _Mutation:
    seq: int
    requester: str
    partition: str
    op: str
    apply: Callable[[System], tuple[str, Any]]
    future: Future[Applied]
    at_frame_end: bool = False




class Controller:
    """A system running on its own thread, managed from others (see the module's docstring)."""

    def __init__(self, system: System, *, max_ticks: int, pace: float = 0.0) -> None:
        """``system`` must have been built with :meth:`listener` as (part of) its event listener."""
        self.system = system
        self.max_ticks = max_ticks
        self.pace = pace
        self._lock = threading.Condition()
        self._queue: deque[_Mutation] = deque()
        self._seq = 0
        self._applied = 0
        self._windows = 0
        self._frames = 0
        self._over = False
        self._stopping = False
        self._marks = FrameMarks()
        self._staged: dict[str, dict[str, Any]] = {}
        self._versions: dict[tuple[str, str, str], int] = {}
        self._hub = EventHub(RECENT_EVENTS)
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._thread: threading.Thread | None = None
        self._paced_at: float | None = None
        self.error: BaseException | None = None
        self._view = self._take_view()

    @classmethod
    def boot(
        cls, config: LoadedConfig, plans: list[PartitionPlan], *, trace: EventSink | None = None,
        max_ticks: int, pace: float = 0.0, secure_boot: str | None = None, attestation_key: bytes | None = None,
    ) -> Controller:  # fmt: skip
        """Boot the system ``plans`` describe (as ``spk launch`` does) under a new controller, not started yet.

        Every event goes to ``trace`` (all of them, hypercalls left out), then
        to the controller. Errors: SpkError from booting a partition.
        """
        forward = _Forward(trace)
        system = System(config, plans, forward, secure_boot=secure_boot, attestation_key=attestation_key)
        controller = cls(system, max_ticks=max_ticks, pace=pace)
        forward.controller = controller
        return controller

    # -- events (called on the system's thread by the system's listener) ------------------
    def listener(self, event: MachineEvent) -> None:
        """Pass to the system (after the trace writer): turns its events into the API's event stream."""
        if event.event in ("restarted", "created"):
            self._staged.pop(event.partition, None)  # the staged image is the one it runs now
        self._hub.listener(event)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(kind, data)`` for every event (``qos``, ``state``, ``health``, ``management``).

        It is called on the system's thread: it must not block (hand the
        data to another thread). Returns the function that unsubscribes.
        """
        return self._hub.subscribe(subscriber)

    # -- reads ------------------------------------------------------------------------
    @property
    def view(self) -> View:
        """The latest consistent picture of the system (made between windows)."""
        return self._view

    def _take_view(self) -> View:
        return take_view(
            self.system, self._marks, frames=self._frames, max_ticks=self.max_ticks, over=self._over,
            pace=self.pace, mutations=self._applied, staged=self._staged, events=self._hub.recent(),
        )  # fmt: skip

    def _publish_view(self, *, frame: bool) -> None:
        old = self._view
        self._view = self._take_view()
        if frame:
            self._hub.notify("qos", self._view.qos)
        if [(p["state"], p["restarts"]) for p in old.partitions] != [
            (p["state"], p["restarts"]) for p in self._view.partitions
        ]:
            self._hub.notify("state", {"partitions": self._view.partitions})

    # -- mutations --------------------------------------------------------------------
    def known(self, name: str) -> None:
        """Errors: ControlError(not_found) when the description has no partition ``name``."""
        if all(p.name != name for p in self.system.plans):
            known = ", ".join(p.name for p in self.system.plans)
            raise ControlError("not_found", f"no partition named {name!r} (partitions: {known})", "name")

    def operate(self, name: str, op: str, *, requester: str, warm: bool = False) -> Future[Applied]:
        """Queue an operation on a partition (``pause``, ``resume``, ``stop``, ``restart``, ``start``, ``destroy``).

        Applied through :meth:`System.manage`. Errors: ControlError
        (not_found for an unknown partition, invalid for an unknown op).
        """
        self.known(name)
        if op not in OPS:
            raise ControlError("invalid", f"unknown operation {op!r} (operations: {', '.join(OPS)})", "op")
        if warm and op != "restart":
            raise ControlError("invalid", "mode applies to restart only", "mode")
        refused = next((r for r in self.system.refused if r.name == name), None)

        def apply(system: System) -> tuple[str, Any]:
            if refused is not None:
                outcome = f"ignored: refused by secure boot ({'; '.join(refused.reasons)})"
                system.record(name, "management", {"requester": requester, "op": OPS[op].name.lower(),
                                                   "outcome": outcome})  # fmt: skip
                return outcome, None
            try:
                outcome = system.manage(name, OPS[op], requester=requester, warm=warm)
            except (ImageError, SpkError) as exc:
                return f"ignored: {exc}", None
            if outcome == "done" and op in ("restart", "start"):
                self._staged.pop(name, None)  # a staged image is loaded by the next restart or start
            return outcome, None

        label = "restart (warm)" if warm else op
        return self.submit(name, label, apply, requester=requester)

    def patch(self, name: str, *, memory: int | str | None, window: int | None, requester: str) -> Future[Applied]:
        """Queue a change of a partition's window and/or quota (:func:`spgs.control_changes.patch`).

        Applied at the end of a major frame (a new window changes the
        schedule). Errors: ControlError (not_found, invalid when nothing is asked).
        """
        self.known(name)
        if memory is None and window is None:
            raise ControlError("invalid", "nothing to change: give memory or window", "memory")

        def apply(system: System) -> tuple[str, Any]:
            with _traced(system, name, "set", requester):
                return control_changes.patch(system, name, memory=memory, window=window, requester=requester), None

        return self.submit(name, "set", apply, requester=requester, at_frame_end=True)

    def create(self, fragment: dict[str, Any], *, requester: str) -> Future[Applied]:
        """Check and build a new partition (on the caller's thread), then queue its creation for a frame's end.

        Errors: ControlError (invalid: a field, an image; conflict: the name is taken).
        """
        part = control_changes.check_fragment(fragment)
        if any(p.name == part.name for p in self.system.plans):
            raise ControlError("conflict", f"a partition named {part.name!r} exists", "name")
        images = control_changes.build_fragment(self.system, part)

        def apply(system: System) -> tuple[str, Any]:
            if any(p.name == part.name for p in system.plans):  # created meanwhile by an earlier request
                raise ControlError("conflict", f"a partition named {part.name!r} exists", "name")
            with _traced(system, part.name, "create", requester):
                return control_changes.create(system, fragment, images, requester=requester), None

        return self.submit(part.name, "create", apply, requester=requester, at_frame_end=True)

    def stage_image(
        self, name: str, *, kind: str, label: str, files: dict[str, bytes], requester: str
    ) -> Future[Applied]:  # fmt: skip
        """Queue the verification and staging of an uploaded signed image (:func:`spgs.control_changes.stage_image`)."""
        self.known(name)
        key = (name, kind, label)

        def apply(system: System) -> tuple[str, Any]:
            current = self._versions.get(key)
            if current is None:
                current = self._boot_version(system, name, kind, label)
            staged = control_changes.stage_image(system, name, kind=kind, label=label, files=files, current=current,
                                                 requester=requester)  # fmt: skip
            self._versions[key] = staged["security_version"]
            self._staged[name] = staged
            return "done", staged

        return self.submit(name, "stage_image", apply, requester=requester)

    @staticmethod
    def _boot_version(system: System, name: str, kind: str, label: str) -> int:
        """The security version of the image a slot booted with (0 when it was not a verified signed image)."""
        plan = system.plan_of(name)
        refs = [plan.config.image, *plan.config.apps]
        kinds = ["kernel"] + ["app"] * len(plan.config.apps)
        for verdict, ref, ref_kind in zip(plan.verdicts, refs, kinds, strict=False):
            if verdict.ok and ref_kind == kind and image_label(ref) == label:
                return control_changes.signed_version(Path(verdict.path))
        return 0

    def call(self, name: str, what: str, fn: Callable[[System], Any], *, requester: str) -> Future[Applied]:
        """Run ``fn(system)`` on the system's thread between windows (a read that needs the live machine)."""
        return self.submit(name, what, lambda system: ("done", fn(system)), requester=requester)

    def submit(
        self, name: str, op: str, apply: Callable[[System], tuple[str, Any]], *, requester: str,
        at_frame_end: bool = False,
    ) -> Future[Applied]:  # fmt: skip
        """Queue ``apply`` to run between windows, after everything queued before it.

        ``apply`` returns (outcome, result); an exception it raises is set on
        the future. Errors: ControlError(unavailable) once the controller is closed.
        """
        future: Future[Applied] = Future()
        with self._lock:
            if self._stopping or self.error is not None:
                raise ControlError("unavailable", "the system is shutting down")
            self._seq += 1
            self._queue.append(_Mutation(self._seq, requester, name, op, apply, future, at_frame_end))
            self._lock.notify_all()
        return future

    def _apply_queued(self, *, frame_end: bool) -> int:
        """Apply queued mutations in order (on the system's thread); how many were applied.

        The view is published before any requester hears back, so a read
        made after an answer always sees the change.
        """
        answers: list[tuple[Future[Applied], Applied | Exception]] = []
        while True:
            with self._lock:
                if not self._queue or (self._queue[0].at_frame_end and not frame_end):
                    break
                mutation = self._queue.popleft()
            if not mutation.future.set_running_or_notify_cancel():
                continue  # its requester gave up waiting: it is not applied
            try:
                outcome, result = mutation.apply(self.system)
            except Exception as exc:  # the requester hears of it; the system goes on
                answers.append((mutation.future, exc))
            else:
                self._applied += 1
                answers.append((mutation.future, Applied(mutation.seq, mutation.requester, mutation.partition,
                                                         mutation.op, outcome, self.system.machine.now,
                                                         self._windows, result)))  # fmt: skip
        if answers:
            self._publish_view(frame=False)
        for future, answer in answers:
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
        return len(answers)

    # -- the system's thread ------------------------------------------------------------
    def start(self) -> None:
        """Start running the system on its own thread."""
        self._thread = threading.Thread(target=self._main, name="spk-system", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the run at the next window's end and wait for the thread; queued mutations are cancelled."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            while self._queue:
                self._queue.popleft().future.set_exception(ControlError("unavailable", "the system was shut down"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            while not self._stopping:
                if self.system.live() and self.system.machine.now < self.max_ticks:
                    self._over = False
                    self.system.run(self.max_ticks, self._on_frame, between=self._between)
                    self._hub.flush()
                if self._stopping:
                    break
                self._over = True
                self._publish_view(frame=True)
                self._idle()
        except _Stopping:
            pass
        except BaseException as exc:  # kept for the API to report: never a traceback
            self.error = exc
            with self._lock:
                self._stopping = True
                while self._queue:  # nobody waits in vain for a system that stopped
                    failed = ControlError("unavailable", f"the system stopped: {exc}")
                    self._queue.popleft().future.set_exception(failed)
        finally:
            self._over = True
            self._view = self._take_view()

    def _idle(self) -> None:
        """The run is over: apply mutations as they come (a start or restart may bring it back to life)."""
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    raise _Stopping
            applied = self._apply_queued(frame_end=True)
            if applied and self.system.live() and self.system.machine.now < self.max_ticks:
                return

    def _between(self) -> None:
        self._windows += 1
        if self._stopping:
            raise _Stopping
        self._hub.flush()
        self._apply_queued(frame_end=False)

    def history(self, frames: int = HISTORY) -> list[dict[str, Any]]:
        """The QoS of the last ``frames`` major frames (at most HISTORY), oldest first."""
        with self._lock:
            kept = list(self._history)
        return kept[-frames:] if frames > 0 else []

    def _on_frame(self, _report: object) -> None:
        self._frames += 1
        self._marks.close_frame(self.system)
        shares = {name: {"cpu_share": self._marks.cpu_share.get(name, 0.0), "last_frame_use": usage.last_frame_use}
                  for name, usage in self.system.usage.items()}  # fmt: skip
        entry = {"major_frames": self._frames, "now": self.system.machine.now, "partitions": shares}
        with self._lock:
            self._history.append(entry)
        self._apply_queued(frame_end=True)
        self._publish_view(frame=True)
        if self.pace <= 0:
            return
        # Wall time paces the run, never its virtual time: a frame every 1/pace seconds (no burst to catch up).
        now = time.monotonic()
        deadline = max(now, (self._paced_at or now) + 1.0 / self.pace)
        self._paced_at = deadline
        while True:
            with self._lock:
                left = deadline - time.monotonic()
                if self._stopping:
                    raise _Stopping
                if left <= 0:
                    return
                if not self._queue:
                    self._lock.wait(left)
            self._apply_queued(frame_end=True)


@contextmanager
def _traced(system: System, name: str, op: str, requester: str) -> Iterator[None]:
    """Trace a change the policy refuses, as the change itself is traced when it is made."""
    try:
        yield
    except ControlError as exc:
        system.record(name, "management", {"requester": requester, "op": op, "outcome": f"refused: {exc}"})
        raise


class _Forward:
    """The system's listener: every event to the trace, then to the controller once it exists."""

    def __init__(self, trace: EventSink | None) -> None:
        self.trace = trace
        self.controller: Controller | None = None

    def __call__(self, event: MachineEvent) -> None:
        if self.trace is not None:
            self.trace(event)
        if self.controller is not None:
            self.controller.listener(event)


class _Stopping(Exception):
    """Raised on the system's thread to end the run at a window's end (close())."""
