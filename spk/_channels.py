"""Channels and ports: the only way data crosses partitions.

A channel is created by ring 1 from the system description and has one
source port and one or more destination ports, each owned by a partition.
Ring 0 copies messages: a sender's bytes are copied in once from its space
and kept in ring 0; a receiver gets a copy in its own space. No frame is
ever shared, so a channel cannot become a covert write path into memory.

* **Sampling**: the latest message wins; a reader gets it as often as it
  likes and learns its age (virtual time since it was written) to judge it
  against the channel's refresh period.
* **Queuing**: a bounded FIFO per destination; a send is all-or-nothing
  (BUSY when any destination's queue is full), a receive takes the oldest.

Errors are :class:`spk.errors.SpkError` with the status the ABI documents.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from spk.abi import Status
from spk.errors import SpkError


class ChannelKind(enum.Enum):
    SAMPLING = "sampling"
    QUEUING = "queuing"


class Direction(enum.Enum):
    SOURCE = "source"
    DESTINATION = "destination"


@dataclass
class Port:
    """One end of a channel, owned by one partition."""

    owner: int
    name: str
    direction: Direction
    channel: Channel
    queue: deque[bytes] = field(default_factory=deque)  #: queuing destinations only

    def __post_init__(self) -> None:
        if self.direction is Direction.DESTINATION:
            self.channel.destinations.append(self)


@dataclass
class Channel:
    cid: int
    kind: ChannelKind
    message_size: int
    depth: int
    refresh: int
    destinations: list[Port] = field(default_factory=list)
    latest: bytes | None = None
    written_at: int = 0
    sent: int = 0
    received: int = 0
    #: ring 1's ends of a relay to the channel's other half on another host (spgs.migration):
    #: ``relay_in`` sends what arrives from there, ``relay_out`` receives what must go there
    relay_in: Port | None = None
    relay_out: Port | None = None
    #: ``sent`` when relay_out last took the sampling message
    relayed: int = -1

    def send(self, port: Port, message: bytes, now: int) -> None:
        """Errors: DENIED (not a source), INVALID_ARGUMENT (size), BUSY (a queue full)."""
        if port.direction is not Direction.SOURCE:
            raise SpkError(Status.DENIED, f"port {port.name} is a destination port")
        if not 0 < len(message) <= self.message_size:
            raise SpkError(Status.INVALID_ARGUMENT, f"message of {len(message)} bytes (1..{self.message_size})")
        if self.kind is ChannelKind.SAMPLING:
            self.latest, self.written_at = message, now
        else:
            if any(len(d.queue) >= self.depth for d in self.destinations):
                raise SpkError(Status.BUSY, f"a destination queue of channel {self.cid} is full")
            for destination in self.destinations:
                destination.queue.append(message)
        self.sent += 1

    def peek(self, port: Port) -> bytes:
        """The message a receive would return. Errors: DENIED, NOT_FOUND (none)."""
        if port.direction is not Direction.DESTINATION:
            raise SpkError(Status.DENIED, f"port {port.name} is a source port")
        if self.kind is ChannelKind.SAMPLING:
            if self.latest is None:
                raise SpkError(Status.NOT_FOUND, "no message written yet")
            return self.latest
        if not port.queue:
            raise SpkError(Status.NOT_FOUND, "queue empty")
        return port.queue[0]

    def consume(self, port: Port) -> None:
        """Take the message :meth:`peek` returned (queuing: pop; sampling: none)."""
        if self.kind is ChannelKind.QUEUING:
            port.queue.popleft()
        self.received += 1

    def status(self, port: Port, now: int) -> int:
        """Queuing: messages waiting (destination) or free slots (source).
        Sampling: age of the latest message. Errors: NOT_FOUND (sampling, none yet)."""
        if self.kind is ChannelKind.SAMPLING:
            if self.latest is None:
                raise SpkError(Status.NOT_FOUND, "no message written yet")
            return now - self.written_at
        if port.direction is Direction.DESTINATION:
            return len(port.queue)
        return min((self.depth - len(d.queue) for d in self.destinations), default=self.depth)


def attach_relay(channel: Channel, direction: Direction) -> Port:
    """Ring 1's end of a relay on ``channel`` (owner 0, no partition); the same one if attached already."""
    if direction is Direction.SOURCE:
        if channel.relay_in is None:
            channel.relay_in = Port(0, "relay-in", Direction.SOURCE, channel)
        return channel.relay_in
    if channel.relay_out is None:
        channel.relay_out = Port(0, "relay-out", Direction.DESTINATION, channel)
    return channel.relay_out


def relay_take(channel: Channel, limit: int) -> list[tuple[bytes, int]]:
    """Up to ``limit`` messages waiting for the other host, oldest first, with when each was written.

    Queuing: taken off the relay's queue (that frees room for the senders here);
    sampling: the latest message, once per write. Errors: SpkError(NOT_FOUND)
    without a relay_out end.
    """
    port = channel.relay_out
    if port is None:
        raise SpkError(Status.NOT_FOUND, f"channel {channel.cid} has no relay out")
    if channel.kind is ChannelKind.SAMPLING:
        if channel.latest is None or channel.relayed == channel.sent or limit < 1:
            return []
        channel.relayed = channel.sent
        return [(channel.latest, channel.written_at)]
    out: list[tuple[bytes, int]] = []
    while port.queue and len(out) < limit:
        out.append((port.queue.popleft(), channel.written_at))
    return out


def relay_put(channel: Channel, messages: list[tuple[bytes, int]], now: int) -> int:
    """Send messages from the other host in order until one does not fit; returns how many went.

    Queuing: all-or-nothing per message, as a partition's send (a full
    destination queue here stops the relay: the rest wait in ring 1).
    Sampling: the newest wins, keeping the time it was written at.
    Errors: SpkError(NOT_FOUND) without a relay_in end.
    """
    port = channel.relay_in
    if port is None:
        raise SpkError(Status.NOT_FOUND, f"channel {channel.cid} has no relay in")
    done = 0
    for message, written_at in messages:
        if channel.kind is ChannelKind.SAMPLING:
            channel.send(port, message, now)
            channel.written_at = min(written_at, now)
            channel.relayed = channel.sent  # arrived from there: never sent back
        else:
            try:
                channel.send(port, message, now)
            except SpkError as exc:
                if exc.status is Status.BUSY:
                    break
                raise
        done += 1
    return done
