"""The management API's event stream: the system's health and management events, and QoS frames, to subscribers.

An :class:`EventHub` is fed the system's events on the system's thread
(:meth:`EventHub.listener`) and by the controller (``qos`` after each major
frame, ``state`` when a partition's state changed); it calls every
subscriber with (kind, data) and keeps the latest health and management
events for readers. A health event is sent once the health monitor has
decided on it, with its ``action`` (``ignore`` when the table ignores it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from spk import MachineEvent

Subscriber = Callable[[str, dict[str, Any]], None]


class EventHub:
    """Subscribers and recent events (see the module's docstring); safe to subscribe from any thread."""

    def __init__(self, keep: int) -> None:
        self._lock = threading.Lock()
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._subscribers: list[Subscriber] = []
        self._pending_health: dict[str, Any] | None = None

    def listener(self, event: MachineEvent) -> None:
        """One event of the system (on its thread)."""
        if self._pending_health is not None and event.event != "health_action":
            self.flush()
        a = event.args
        if event.event == "health_event":
            self._pending_health = {"t": event.time, "partition": event.partition, "event": a["event"],
                                    "detail": a["detail"], "action": "ignore"}  # fmt: skip
        elif event.event == "health_action":
            pending = self._pending_health or {"t": event.time, "partition": event.partition, "event": a["event"],
                                               "detail": a["detail"]}  # fmt: skip
            pending["action"] = a["action"]
            self._pending_health = pending
            self.flush()
        elif event.event == "management":
            data = {"t": event.time, "partition": event.partition, "requester": a["requester"], "op": a["op"],
                    "outcome": a["outcome"]}  # fmt: skip
            self._publish("management", data)

    def flush(self) -> None:
        """Send a health event still waiting for its action (none came: the table ignores it)."""
        pending, self._pending_health = self._pending_health, None
        if pending is not None:
            self._publish("health", pending)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._recent.append({"kind": kind, **data})
        self.notify(kind, data)

    def recent(self) -> list[dict[str, Any]]:
        """The latest health and management events, oldest first, each with its ``kind``."""
        with self._lock:
            return list(self._recent)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def notify(self, kind: str, data: dict[str, Any]) -> None:
        """Call every subscriber with one event."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber(kind, data)
