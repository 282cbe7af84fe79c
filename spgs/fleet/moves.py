"""The host side of moving partitions: live migration and checkpoints, by :mod:`spgs.migration`.

A fleet host calls only this small interface; the mechanism is the real one
(frames, page tables relocated by ring 0, vCPU, ports, measurements), and
its payloads are the bytes hosts ship to each other. Payloads between the
hosts of one fleet are authenticated with a key derived from the fleet's
seed (:func:`link_key`): a demo key, as the platform keys are.

Safety of a move against a failure: when a partition stops on its source,
the source keeps its final state (:meth:`MigrationSource.rollback`) until
the destination acknowledges it; if the destination is declared dead first,
the partition resumes on the source as it left, having lost nothing.

Errors: :class:`MoveError` (a payload or checkpoint that does not import).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from spgs.migration import MigrationError, MigrationSink, MigrationSource, checkpoint, restore_checkpoint
from spk import Machine

MoveError = MigrationError


def link_key(seed: int) -> bytes:
    """The key authenticating payloads between the hosts of a fleet (derived from its seed: a demo key)."""
    return hashlib.sha256(f"spk-fleet-link/{seed}".encode()).digest()


@dataclass(frozen=True)
class Checkpoint:
    """A partition's state at one instant, as its buddy keeps it."""

    partition: str
    round: int
    time: int  #: virtual time it was taken at
    instructions: int  #: the partition's instruction count then
    data: bytes


class OutgoingMove:
    """A live migration under way from this host."""

    def __init__(self, machine: Machine, name: str, target: str, key: bytes) -> None:
        self.name = name
        self.target = target
        self.source = MigrationSource(machine, name, key=key)
        self.rounds = 0
        self.stopped = False

    def precopy(self) -> bytes:
        self.rounds += 1
        return self.source.precopy()

    def should_stop(self, stop_frames: int, max_rounds: int) -> bool:
        return self.source.pending() <= stop_frames or self.rounds >= max_rounds

    def stats(self) -> dict[str, Any]:
        return dict(self.source.stats.as_dict())


class Mover:
    """Migration and checkpoints for the hosts of one fleet (all with the same link key)."""

    def __init__(self, seed: int) -> None:
        self.key = link_key(seed)

    def start(self, machine: Machine, name: str, target: str) -> OutgoingMove:
        return OutgoingMove(machine, name, target, self.key)

    def stop_and_copy(self, machine: Machine, move: OutgoingMove) -> bytes:
        """The final payload; the partition leaves the machine (its state is kept until acknowledged)."""
        move.stopped = True
        return move.source.stop_and_copy()

    def abort(self, machine: Machine, move: OutgoingMove) -> int | None:
        """The destination is gone: the partition runs on here (its pid when it had stopped)."""
        if not move.stopped:
            move.source.abort()  # it never stopped: it runs on here, untouched
            return None
        return move.source.rollback()

    def accept(self, machine: Machine, sinks: dict[str, Any], name: str, data: bytes) -> int | None:
        """One payload of partition ``name`` in; its pid here once the final one is."""
        sink = sinks.get(name)
        if sink is None:
            sink = sinks[name] = MigrationSink(machine, key=self.key)
        pid: int | None = sink.accept(data)
        return pid

    def checkpoint(self, machine: Machine, name: str, round_: int) -> Checkpoint:
        pid = next(pid for pid in sorted(machine.partitions) if machine.info(pid).name == name)
        data = checkpoint(machine, name, key=self.key)
        return Checkpoint(name, round_, machine.now, machine.info(pid).counters.instructions, data)

    def restore(self, machine: Machine, saved: Checkpoint) -> int:
        return restore_checkpoint(machine, saved.data, key=self.key)
