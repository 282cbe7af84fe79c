"""What fleet hosts say to each other, and what each tells whoever runs it.

Every message is addressed host to host. The network (Ray, or the
in-process runner) carries a message produced in one phase of a round to
its target at the next phase, and drops it when the target is not there
(dead, gone, not joined yet): a host learns of a neighbour's death only from
its silence. ``size`` counts the bulk bytes a message carries (pre-copy
payloads, checkpoints); control messages (gossip, offers, replies, acks,
heartbeats) are the ones counted per host per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Phases of a round, in order: run (payloads in, windows, gossip out), decide (gossip in, offers
#: out), answer (offers in, replies out), move (replies in, migration payloads out).
PHASES = ("run", "decide", "answer", "move")
#: Kinds of message that carry no bulk data.
CONTROL = frozenset({"gossip", "offer", "reply", "ack", "heartbeat"})
#: Kinds that carry partition state.
BULK = frozenset({"payload", "checkpoint"})


@dataclass(frozen=True)
class Message:
    source: str
    target: str
    kind: str
    body: Any
    size: int = 0  #: bulk bytes carried

    def order(self) -> tuple[str, str, str]:
        """How an inbox is sorted before a host reads it: never by arrival."""
        partition = str(self.body.get("partition", "")) if isinstance(self.body, dict) else ""
        return (self.source, self.kind, partition)


@dataclass
class PartitionStatus:
    name: str
    demand: float
    instructions: int
    state: str


@dataclass
class HostStatus:
    """One host after a round's run phase: what the live table and the plot show."""

    name: str
    round: int
    time: int
    capacity: float
    load: float  #: demand of the partitions it runs now
    committed: float  #: load it gossips: minus partitions leaving, plus those coming
    leaving: bool
    partitions: list[PartitionStatus] = field(default_factory=list)

    @property
    def utilisation(self) -> float:
        return self.load / self.capacity


@dataclass
class PhaseResult:
    """What a host hands back after one phase: its outgoing messages, its events, its status (run phase)."""

    outbox: list[Message]
    events: list[dict[str, Any]]
    status: HostStatus | None = None
    gone: bool = False  #: the host has left the fleet (after handing its work on)
