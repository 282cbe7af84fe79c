"""What a host keeps as the buddy of its neighbours, and the restart when one of them dies.

Each host sends its buddy (its first live neighbour by name) checkpoints of
its partitions and, every round, a heartbeat: which partitions run there and
how many instructions each has executed. When the buddy declares the host
dead it restarts every partition of the last heartbeat from its checkpoint,
and declares for each exactly what was lost: the virtual time between the
checkpoint and the last heartbeat, and the instructions run in it.

Errors: none raised; a checkpoint that does not restore is reported as a
``lost`` event.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from spgs.fleet.moves import Checkpoint, MoveError, Mover
from spk import Machine, SpkError


@dataclass
class Held:
    """What a buddy holds of one neighbour."""

    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    manifest: dict[str, int] = field(default_factory=dict)  #: partition -> instructions when last heard
    time: int = 0  #: virtual time of its last heartbeat


class Vault:
    """Checkpoints and heartbeats of the neighbours a host is the buddy of."""

    def __init__(self) -> None:
        self._held: dict[str, Held] = {}

    def take(self, source: str, body: dict[str, Any]) -> None:
        """A checkpoint or heartbeat message's body: keep the checkpoints of what still runs there."""
        held = self._held.setdefault(source, Held())
        held.checkpoints.update(body.get("checkpoints", {}))
        if "manifest" in body:
            held.manifest = dict(body["manifest"])
            held.time = body["time"]
            held.checkpoints = {k: v for k, v in held.checkpoints.items() if k in held.manifest}

    def restart(
        self, dead: str, machine: Machine, mover: Mover, running: Container[str]
    ) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Restart on ``machine`` what ``dead`` ran, from its checkpoints; (pids, events).

        A partition already ``running`` here, or without a checkpoint, is not
        restarted (a ``lost`` event says why).
        """
        held = self._held.pop(dead, None)
        pids: dict[str, int] = {}
        events: list[dict[str, Any]] = []
        if held is None:
            return pids, events
        for name in sorted(held.manifest):
            checkpoint = held.checkpoints.get(name)
            if checkpoint is None or name in running:
                reason = "no checkpoint held" if checkpoint is None else "already runs here"
                events.append({"event": "lost", "partition": name, "failed_host": dead, "reason": reason})
                continue
            try:
                pid = mover.restore(machine, checkpoint)
            except (MoveError, SpkError) as exc:
                events.append({"event": "lost", "partition": name, "failed_host": dead, "reason": str(exc)})
                continue
            pids[name] = pid
            events.append({
                "event": "restarted", "partition": name, "failed_host": dead, "checkpoint_round": checkpoint.round,
                "checkpoint_time": checkpoint.time, "failed_after": held.time,
                "lost_ticks": held.time - checkpoint.time, "checkpoint_instructions": checkpoint.instructions,
                "resumed_instructions": machine.info(pid).counters.instructions,
                "lost_instructions": held.manifest[name] - checkpoint.instructions,
            })  # fmt: skip
        return pids, events
