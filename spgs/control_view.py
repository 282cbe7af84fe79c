"""What the management API reads: a consistent picture of a running system, made between windows.

:class:`spgs.control.Controller` builds a :class:`View` on the system's own
thread, between two windows, and publishes it whole; readers on other
threads only ever see a finished one (never a half-updated system). A
view is plain data (dicts, lists, numbers, strings), ready to be sent as
JSON, and is never changed once published.

QoS, per partition: ``cpu_share`` is the instructions it ran in the last
major frame over the frame's length (its share of the one CPU),
``allocated_share`` its window time over the frame's length,
``window_use`` the fraction of its window time it used since boot,
``last_frame_use`` the same for the last major frame. Channel ``rate`` is
the messages sent in the last major frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spgs.system import System
from spk.abi import PAGE_SIZE

#: Partition states as the API names them: ring 0's, plus the two a partition has without an id.
STATES = ("ready", "blocked", "paused", "exited", "faulted", "stopped", "declared", "refused")


@dataclass
class FrameMarks:
    """Counters at the end of the previous major frame, to turn totals into per-frame figures."""

    used: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    cpu_share: dict[str, float] = field(default_factory=dict)
    rate: dict[str, float] = field(default_factory=dict)

    def close_frame(self, system: System) -> None:
        """A major frame ended: the per-frame figures of the frame that just ended."""
        frame = system.major_frame or 1
        for name, usage in system.usage.items():
            self.cpu_share[name] = (usage.used - self.used.get(name, 0)) / frame
            self.used[name] = usage.used
        for name, cid in system.channel_ids.items():
            sent = system.machine.channels[cid].sent
            self.rate[name] = float(sent - self.sent.get(name, 0))
            self.sent[name] = sent


@dataclass(frozen=True)
class View:
    """One published picture of the system (see the module's docstring)."""

    system: dict[str, Any]
    partitions: list[dict[str, Any]]
    qos: dict[str, Any]

    def partition(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.partitions if p["name"] == name), None)


def _window_time(system: System, name: str) -> int:
    return sum(d for n, _s, d in system.windows if n == name)


def qos_of(system: System, marks: FrameMarks, name: str) -> dict[str, Any]:
    usage = system.usage[name]
    pid = system.pid_of(name)
    info = system.machine.info(pid) if pid is not None else None
    frame = system.major_frame or 1
    return {
        "cpu_share": marks.cpu_share.get(name, 0.0),
        "allocated_share": _window_time(system, name) / frame,
        "window_use": usage.use,
        "last_frame_use": usage.last_frame_use,
        "overruns": usage.overruns,
        "health_events": usage.health_events,
        "windows": usage.windows,
        "frames_used": info.frames_in_use if info else 0,
        "quota_frames": info.quota_frames if info else system.config_of(name).memory // PAGE_SIZE,
    }


def partition_of(system: System, marks: FrameMarks, name: str, staged: dict[str, Any] | None) -> dict[str, Any]:
    """One partition as GET /partitions/{name} shows it."""
    config = system.config_of(name)
    pid = system.pid_of(name)
    refused = any(r.name == name for r in system.refused)
    info = system.machine.info(pid) if pid is not None else None
    state = "refused" if refused else info.state if info else "declared"
    counters = info.counters if info else None
    fault = None
    if info is not None and info.fault is not None:
        fault = info.fault.kind
    return {
        "name": name,
        "pid": system.pids.get(name),
        "state": state,
        "role": config.role,
        "boot": config.boot,
        "memory": config.memory,
        "window": _window_time(system, name),
        "quota_frames": info.quota_frames if info else config.memory // PAGE_SIZE,
        "frames_used": info.frames_in_use if info else 0,
        "restarts": info.restarts if info else 0,
        "exit_code": info.exit_code if info else None,
        "fault": fault,
        "counters": {
            "instructions": counters.instructions if counters else 0,
            "hypercalls": counters.hypercalls if counters else 0,
            "syscalls": counters.syscalls if counters else 0,
            "faults": counters.faults if counters else 0,
        },
        "qos": qos_of(system, marks, name),
        "staged_image": staged,
    }


def take_view(
    system: System, marks: FrameMarks, *, frames: int, max_ticks: int, over: bool, pace: float, mutations: int,
    staged: dict[str, dict[str, Any]], events: list[dict[str, Any]],
) -> View:  # fmt: skip
    """A view of ``system`` now (call it on the system's thread, between windows)."""
    names = [p.name for p in system.plans]
    partitions = [partition_of(system, marks, n, staged.get(n)) for n in names]
    qos = {
        "now": system.machine.now,
        "major_frames": frames,
        "partitions": {p["name"]: p["qos"] for p in partitions},
        "channels": {
            name: {
                "sent": system.machine.channels[cid].sent,
                "received": system.machine.channels[cid].received,
                "rate": marks.rate.get(name, 0.0),
            }
            for name, cid in system.channel_ids.items()
        },
    }
    desc = system.config.description
    info = {
        "name": system.name,
        "now": system.machine.now,
        "major_frames": frames,
        "major_frame": system.major_frame,
        "max_ticks": max_ticks,
        "over": over,
        "pace": pace,
        "windows": [{"partition": n, "start": s, "duration": d} for n, s, d in system.windows],
        "secure_boot": desc.trust.secure_boot,
        "mutations": mutations,
        "events": list(events),
    }
    return View(info, partitions, qos)
