"""One host of a fleet: an SPK machine, its partitions, and the local rules it follows.

A :class:`FleetHost` knows its own machine, the fleet file and seed (as a
:class:`HostSpec`), and what its neighbours told it: nothing else. Each
round it goes through four phases (:data:`spgs.fleet.messages.PHASES`), each
taking the messages addressed to it and handing back the ones it sends:

* run: take in migration payloads (a partition that arrives is checkpointed
  to the buddy at once and acknowledged), run every partition in a window
  sized by its demand, checkpoint to the buddy when due, gossip its load to
  its neighbours and a heartbeat (what it runs, how far each has got) to
  its buddy;
* decide: read the gossip, declare dead a neighbour silent for
  ``suspect_after`` rounds (restarting what it held of the dead host's from
  the last checkpoint, and saying exactly what was lost), and offer
  partitions to neighbours by :func:`spgs.fleet.rules.choose_offers`;
* answer: take or refuse offers (:func:`spgs.fleet.rules.accept_offers`);
* move: for each offer taken, start a live migration (a pre-copy round of
  every frame); for each one under way, another pre-copy round of the
  frames written since, or, when few enough are left (or after
  ``max_precopy_rounds``), stop and copy.

The real mechanism does the moving (:mod:`spgs.migration`): frames, page
tables relocated, vCPU, measurements; checkpoints are its payloads too. The
host never reads a clock: virtual time advances ``round_ticks`` per round,
the same on every host (their machines stay in lockstep, which migration
requires). Nothing here knows whether it runs in a Ray actor or in-process.

Errors: a host never raises for what its peers send it; a payload that does
not import (MigrationError) drops that migration and is reported as an event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from spgs.fleet.buddy import Vault
from spgs.fleet.config import FleetSettings
from spgs.fleet.messages import HostStatus, Message, PartitionStatus, PhaseResult
from spgs.fleet.moves import Checkpoint, MoveError, Mover, OutgoingMove
from spgs.fleet.rules import HostLoad, Offer, accept_offers, choose_offers
from spk import Machine, MachineEvent, SpkError


@dataclass(frozen=True)
class BootImage:
    """A partition a host creates at start: its images and quota."""

    name: str
    kernel_label: str
    kernel: bytes
    apps: list[tuple[str, bytes]]
    quota_frames: int


@dataclass(frozen=True)
class HostSpec:
    """Everything a host is given: its part of the fleet file, its neighbours, the seed."""

    name: str
    capacity: float
    neighbours: list[str]
    settings: FleetSettings
    demand: dict[str, list[tuple[int, float]]]  #: every partition of the fleet: its demand steps
    boot: list[BootImage] = field(default_factory=list)
    join: int = 0  #: the round it starts in
    leave: int | None = None
    memory: int | None = None  #: its RAM (None: the fleet's host_memory)

    def platform_seed(self) -> bytes:
        """This host's attestation key seed, derived from the fleet seed and its name (a demo key:
        a real fleet gives each host its own; quotes name the host that signed them)."""
        return hashlib.sha256(f"spk-fleet-platform/{self.settings.seed}/{self.name}".encode()).digest()


def demand_at(steps: list[tuple[int, float]], round_: int) -> float:
    current = 0.0
    for start, amount in steps:
        if start > round_:
            break
        current = amount
    return current


@dataclass
class _Heard:
    round: int
    load: HostLoad
    time: int
    gone: bool = False


class FleetHost:
    """One host: its machine, its partitions, its view of its neighbours (see the module docstring)."""

    def __init__(self, spec: HostSpec, mover: Mover) -> None:
        self.spec = spec
        self.name = spec.name
        self.settings = spec.settings
        self.mover = mover
        self._events: list[dict[str, Any]] = []
        self.machine = Machine(
            spec.memory or spec.settings.host_memory, on_event=self._on_machine_event,
            attestation_key=spec.platform_seed(),
        )
        self.machine.advance(spec.join * spec.settings.round_ticks)
        self.pids: dict[str, int] = {}
        for boot in spec.boot:
            self.pids[boot.name] = self.machine.create_partition(
                boot.name, boot.kernel, boot.apps, boot.quota_frames, kernel_name=boot.kernel_label
            )
        self.view: dict[str, _Heard] = {}
        self.dead: set[str] = set()
        self.outgoing: dict[str, OutgoingMove] = {}
        self.incoming: dict[str, tuple[str, float]] = {}  #: partition -> (source host, demand)
        self.sinks: dict[str, Any] = {}
        self.vault = Vault()  #: what it keeps as its neighbours' buddy
        self.arrived: list[str] = []  #: partitions to checkpoint to the buddy at once
        self.buddy_sent: str | None = None
        self.round = spec.join
        self.gone = False

    # -- helpers ---------------------------------------------------------------
    def _on_machine_event(self, event: MachineEvent) -> None:
        if event.event in ("kernel_fault", "exited", "stopped"):
            self._event("partition_" + event.event, partition=event.partition)

    def _event(self, kind: str, **args: Any) -> None:
        self._events.append({"round": self.round, "host": self.name, "event": kind, **args})

    def _result(self, outbox: list[Message], status: HostStatus | None = None) -> PhaseResult:
        events, self._events = self._events, []
        return PhaseResult(outbox, events, status, self.gone)

    def demand(self, partition: str) -> float:
        return demand_at(self.spec.demand.get(partition, [(0, 0.0)]), self.round)

    def leaving(self) -> bool:
        return self.spec.leave is not None and self.round >= self.spec.leave

    def hosted_load(self) -> float:
        return sum(self.demand(p) for p in self.pids)

    def committed_load(self) -> float:
        """The load it gossips: what it will run once the moves under way are done."""
        staying = sum(self.demand(p) for p in self.pids if p not in self.outgoing)
        return staying + sum(self.demand(p) for p in self.incoming)

    def me(self) -> HostLoad:
        return HostLoad(self.name, self.committed_load(), self.spec.capacity, self.leaving())

    def live_neighbours(self) -> list[str]:
        return [n for n in self.spec.neighbours if n not in self.dead and not self._is_gone(n)]

    def _is_gone(self, name: str) -> bool:
        heard = self.view.get(name)
        return heard is not None and heard.gone

    def buddy(self) -> str | None:
        """Who keeps this host's checkpoints: its first live neighbour by name."""
        live = self.live_neighbours()
        return live[0] if live else None

    def time(self) -> int:
        return self.machine.now

    # -- phase 1: run ------------------------------------------------------------
    def run(self, round_: int, inbox: list[Message]) -> PhaseResult:
        """Payloads in, one round of windows, checkpoints and heartbeat to the buddy, gossip out."""
        self.round = round_
        outbox: list[Message] = []
        self._common(inbox)
        for msg in sorted((m for m in inbox if m.kind == "payload"), key=Message.order):
            self._payload(msg, outbox)
        for name in sorted(self.incoming):
            if name not in self.sinks:  # taken last round, yet no first payload came: the source gave it up
                del self.incoming[name]
                self._event("migration_dropped", partition=name, reason="no payload")
        self._windows()
        outbox += self._to_buddy()
        me = self.me()
        empty = not self.pids and not self.incoming and not self.outgoing
        left = me.leaving and empty
        for n in self.live_neighbours():
            outbox.append(Message(self.name, n, "gossip", {"load": me, "time": self.time(), "gone": left}))
        if left:
            self._event("left")
            self.gone = True
        return self._result(outbox, self.status())

    def _common(self, inbox: list[Message]) -> None:
        """Messages any phase takes in as they come: checkpoints and heartbeats it keeps as a buddy."""
        for msg in sorted(inbox, key=Message.order):
            if msg.kind in ("checkpoint", "heartbeat"):
                self.vault.take(msg.source, msg.body)
            elif msg.kind == "ack":
                self._acked(msg.body["partition"], msg.source, msg.body["ok"])

    def _payload(self, msg: Message, outbox: list[Message]) -> None:
        name = msg.body["partition"]
        if self.incoming.get(name, ("", 0.0))[0] != msg.source:
            self._event("payload_dropped", partition=name, source=msg.source)
            return
        try:
            pid = self.mover.accept(self.machine, self.sinks, name, msg.body["data"])
        except (MoveError, SpkError) as exc:
            self._event("migration_refused", partition=name, source=msg.source, reason=str(exc))
            self.incoming.pop(name, None)
            self.sinks.pop(name, None)
            outbox.append(Message(self.name, msg.source, "ack", {"partition": name, "ok": False}))
            return
        if pid is None:
            return
        self.incoming.pop(name, None)
        self.sinks.pop(name, None)
        self.pids[name] = pid
        self.arrived.append(name)
        self._event("arrived", partition=name, source=msg.source)
        outbox.append(Message(self.name, msg.source, "ack", {"partition": name, "ok": True}))

    def _windows(self) -> None:
        """One round of virtual time: each partition a window proportional to its demand.

        A demand unit is ``round_ticks / capacity`` ticks; when the demand is
        above capacity every window shrinks in proportion (the host cannot meet
        its partitions' needs: the rules will move some away). Time left over
        stays idle, so the round is the same length on every host.
        """
        ticks = self.settings.round_ticks
        start = self.round * ticks
        total = max(self.spec.capacity, self.hosted_load())
        cursor = start
        for name in sorted(self.pids):
            window = int(ticks * self.demand(name) / total)
            pid = self.pids[name]
            if window <= 0:
                continue
            self.machine.advance(cursor)
            if self.machine.info(pid).state in ("ready", "blocked"):
                self.machine.run(pid, cursor + window)
            cursor += window
            self.machine.take_health_events()
            self.machine.take_requests()
        self.machine.advance(start + ticks)

    def _to_buddy(self) -> list[Message]:
        """Checkpoints when due (and of every new arrival), and a heartbeat naming what runs here."""
        buddy = self.buddy()
        if buddy is None:
            return []
        due = (self.round + 1) % self.settings.checkpoint_every == 0 or buddy != self.buddy_sent
        names = sorted(self.pids) if due else sorted(set(self.arrived) & set(self.pids))
        self.arrived = []
        self.buddy_sent = buddy
        checkpoints: dict[str, Checkpoint] = {}
        for name in names:
            checkpoints[name] = self.mover.checkpoint(self.machine, name, self.round)
        manifest = self._manifest()
        size = sum(len(c.data) for c in checkpoints.values())
        kind = "checkpoint" if checkpoints else "heartbeat"
        if checkpoints:
            self._event("checkpoint", partitions=names, buddy=buddy, bytes=size)
        body = {"checkpoints": checkpoints, "manifest": manifest, "time": self.time()}
        return [Message(self.name, buddy, kind, body, size)]

    def _manifest(self) -> dict[str, int]:
        """What runs here and how far each has got (the buddy restarts these, and only these)."""
        return {name: self.machine.info(pid).counters.instructions for name, pid in sorted(self.pids.items())}

    def status(self) -> HostStatus:
        parts = []
        for name, pid in sorted(self.pids.items()):
            info = self.machine.info(pid)
            parts.append(PartitionStatus(name, self.demand(name), info.counters.instructions, info.state))
        return HostStatus(self.name, self.round, self.time(), self.spec.capacity, self.hosted_load(),
                          self.committed_load(), self.leaving(), parts)  # fmt: skip

    # -- phase 2: decide ----------------------------------------------------------
    def decide(self, round_: int, inbox: list[Message]) -> PhaseResult:
        """Gossip in; neighbours silent too long declared dead; offers out."""
        self.round = round_
        self._common(inbox)
        for msg in sorted((m for m in inbox if m.kind == "gossip"), key=Message.order):
            self.view[msg.source] = _Heard(round_, msg.body["load"], msg.body["time"], msg.body["gone"])
            if msg.body["gone"]:
                self._event("neighbour_left", neighbour=msg.source)
        for n in sorted(self.view):
            heard = self.view[n]
            if n not in self.dead and not heard.gone and round_ - heard.round >= self.settings.suspect_after:
                self._declare_dead(n)
        outbox: list[Message] = []
        if self.gone:
            return self._result(outbox)
        live = [self.view[n].load for n in self.live_neighbours() if n in self.view]
        movable = [(p, self.demand(p)) for p in sorted(self.pids) if p not in self.outgoing]
        s = self.settings
        offers = choose_offers(self.me(), movable, live, band_low=s.band.low, band_high=s.band.high,
                               hysteresis=s.hysteresis)  # fmt: skip
        for offer in offers:
            outbox.append(Message(self.name, offer.target, "offer", {"offer": offer}))
        return self._result(outbox)

    def _declare_dead(self, host: str) -> None:
        """A neighbour fell silent: restart what it left with me, undo moves with it."""
        self.dead.add(host)
        heard = self.view[host]
        self._event("declared_dead", neighbour=host, last_heard_round=heard.round, last_heard_time=heard.time)
        restarted, events = self.vault.restart(host, self.machine, self.mover, self.pids)
        for event in events:
            kind = event.pop("event")
            self._event(kind, **event)
        self.pids.update(restarted)
        self.arrived.extend(sorted(restarted))
        for name in sorted(self.outgoing):
            move = self.outgoing[name]
            if move.target != host:
                continue
            del self.outgoing[name]
            self._undo(move, "migration_aborted")
        for name in sorted(self.incoming):
            if self.incoming[name][0] == host:
                del self.incoming[name]
                self.sinks.pop(name, None)
                self._event("migration_dropped", partition=name, source=host)

    # -- phase 3: answer -----------------------------------------------------------
    def answer(self, round_: int, inbox: list[Message]) -> PhaseResult:
        """Offers in: take those the rules allow, refuse the rest."""
        self.round = round_
        self._common(inbox)
        offers: list[Offer] = [m.body["offer"] for m in sorted(inbox, key=Message.order) if m.kind == "offer"]
        offers = [o for o in offers if o.source not in self.dead]
        s = self.settings
        if self.gone:
            answers: list[tuple[Offer, list[str]]] = [(o, []) for o in offers]
        else:
            answers = accept_offers(self.me(), offers, band_high=s.band.high, hysteresis=s.hysteresis)
        outbox = []
        for offer, taken in answers:
            accepted = []
            for name, demand in offer.partitions:
                if name in taken and name not in self.pids and name not in self.incoming:
                    self.incoming[name] = (offer.source, demand)
                    accepted.append(name)
            outbox.append(Message(self.name, offer.source, "reply", {"accepted": accepted}))
        return self._result(outbox)

    # -- phase 4: move ---------------------------------------------------------------
    def move(self, round_: int, inbox: list[Message]) -> PhaseResult:
        """Pre-copy rounds and stop-and-copy of the moves under way; new moves start."""
        self.round = round_
        self._common(inbox)
        outbox: list[Message] = []
        for name in sorted(self.outgoing):
            move = self.outgoing[name]
            if move.stopped:
                continue
            if move.should_stop(self.settings.stop_frames, self.settings.max_precopy_rounds):
                data = self.mover.stop_and_copy(self.machine, move)
                del self.pids[name]
                buddy = self.buddy()
                if buddy is not None:  # it no longer runs here: the buddy must not restart it
                    body = {"manifest": self._manifest(), "time": self.time()}
                    outbox.append(Message(self.name, buddy, "heartbeat", body))
            else:
                data = move.precopy()
            outbox.append(Message(self.name, move.target, "payload", {"partition": name, "data": data}, len(data)))
        for msg in sorted((m for m in inbox if m.kind == "reply"), key=Message.order):
            for name in msg.body["accepted"]:
                if name not in self.pids or name in self.outgoing or msg.source in self.dead:
                    continue
                move = self.mover.start(self.machine, name, msg.source)
                self.outgoing[name] = move
                data = move.precopy()
                self._event("migration_started", partition=name, target=msg.source)
                body = {"partition": name, "data": data}
                outbox.append(Message(self.name, msg.source, "payload", body, len(data)))
        return self._result(outbox)

    def _undo(self, move: OutgoingMove, kind: str) -> None:
        """A move that will not complete: the partition runs on here (back from its final state if it had left)."""
        try:
            restored = self.mover.abort(self.machine, move)
        except (MoveError, SpkError) as exc:
            self._event("lost", partition=move.name, target=move.target, reason=str(exc))
            return
        if restored is not None:
            self.pids[move.name] = restored
            self.arrived.append(move.name)
        self._event(kind, partition=move.name, target=move.target, stopped=restored is not None)

    def _acked(self, name: str, target: str, ok: bool) -> None:
        """The destination took the partition (it runs there now), or refused it (it comes back here)."""
        move = self.outgoing.get(name)
        if move is None or move.target != target:
            return
        del self.outgoing[name]
        if not ok:
            self._undo(move, "migration_rolled_back")
            return
        stats = {k: v for k, v in move.stats().items() if k != "partition"}
        self._event("migrated", partition=name, target=target, **stats)
