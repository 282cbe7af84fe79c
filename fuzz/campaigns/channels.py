"""Channels: random traffic, overflow, wrong-direction and unowned-port use, hostile buffers.

The world (:class:`ChannelWorld`) gives the agent both ends of the story:
source ports on a queuing and a sampling channel whose destinations are a
peer partition (``partitions/fuzz_peer.asm``, which drains them into logs
in its own memory and sends back every window) and, for the queuing one,
the agent itself; destination ports on a queuing and a sampling channel the
peer writes; and, between the two idle victims, a channel the agent has no
port of at all, whose destination has the same name as one of the agent's.

The world keeps a model of every channel, built only from what it saw the
agent and the peer do, and predicts every port hypercall's result from the
ABI (the set of statuses that apply, or the value). The invariants it adds:

* ``channel_bounds``: no queue holds more than its depth, no message is
  empty or longer than its channel's ``message_size``;
* ``channel_contents``: every queue and sampling slot holds exactly what the
  model says: nothing ever appears on a channel the agent has no source port
  of (a wrong-direction send), a BUSY send left every queue as it was (all
  or nothing), a failed receive consumed nothing;
* ``channel_delivery``: what the peer found in its memory, and what the
  agent received, are byte for byte the messages sent on that channel;
* ``port_results``: each port hypercall returned one of the results the
  ABI allows at that point (foreign port names are NOT_FOUND, unopened and
  huge handles BAD_HANDLE, wrapping or foreign buffers BAD_ADDRESS...).

The peer may change its own frames only once it has run (it receives into
them); everything else stays confined as in every world.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.agent import MB_DONE, MB_RESULT, MB_SCRATCH, image, signed
from fuzz.agent import data_address as data
from fuzz.campaigns.base import EDGES, U64, CampaignMachine, register
from fuzz.world import VICTIM_QUOTA, VICTIM_WINDOW, AgentWorld, Violation
from spk.abi import (
    GDT_VADDR,
    KERNEL_DATA_SIZE,
    KERNEL_IMAGE_VADDR,
    KERNEL_STACK_SIZE,
    KERNEL_STACK_TOP,
    PAGE_SIZE,
    PORT_NAME_MAX,
    START_INFO_VADDR,
    Hypercall,
    Status,
)

_MASK64 = (1 << 64) - 1
PEER_IMAGE = "fuzz_peer"


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of the world: its shape, and which role holds which named end."""

    name: str
    kind: str
    message_size: int
    depth: int
    source: tuple[str, str]  #: (role, port name)
    destinations: tuple[tuple[str, str], ...]


CHANNELS = (
    ChannelSpec("q1", "queuing", 32, 4, ("agent", "aq_out"), (("peer", "in0"), ("agent", "aq_echo"))),
    ChannelSpec("s1", "sampling", 16, 1, ("agent", "as_out"), (("peer", "in1"),)),
    ChannelSpec("q2", "queuing", 24, 3, ("peer", "out0"), (("agent", "aq_in"),)),
    ChannelSpec("s2", "sampling", 40, 1, ("peer", "out1"), (("agent", "as_in"),)),
    ChannelSpec("q3", "queuing", 16, 2, ("victim0", "vq_out"), (("victim1", "aq_in"),)),
)
#: The agent's ports, in the order it opens them at set-up: handle i is AGENT_PORTS[i].
AGENT_PORTS = ("aq_out", "as_out", "aq_echo", "aq_in", "as_in")
#: Names in the agent's scratch area: its own, other partitions', a valid unknown one, one too long.
NAMES = (*AGENT_PORTS, "in0", "in1", "out0", "out1", "vq_out", "x" * PORT_NAME_MAX, "y" * (PORT_NAME_MAX + 1))
NAME_SLOT = 32
#: Offsets in the agent's data area (scratch: after the mailbox, in its first page).
NAME_AREA, SEND_BUFFER, RECEIVE_BUFFER = MB_SCRATCH, 0x400, 0x800
PAYLOAD_MAX = 80  #: longer than every channel's message_size
#: The peer's data area (see partitions/fuzz_peer.asm).
PEER_DESTINATIONS, PEER_SOURCES = ("in0", "in1"), ("out0", "out1")
PEER_RECEIVED, PEER_SENT, PEER_LOG, PEER_LOG_SIZE, PEER_SLOT, PEER_SLOTS, PEER_MESSAGE_MAX = (
    0x40, 0x80, 0x1000, 0x800, 0x80, 16, 64)  # fmt: skip
PORT_CALLS = frozenset({Hypercall.PORT_OPEN, Hypercall.PORT_SEND, Hypercall.PORT_RECEIVE, Hypercall.PORT_STATUS})
#: Calls after which the agent's current space may map more or less than its boot layout.
LAYOUT_CALLS = frozenset({Hypercall.MAP, Hypercall.UNMAP, Hypercall.ASPACE_SWITCH, Hypercall.IRET})


def peer_message(seq: int, port: int) -> bytes:
    """What the peer sends as its ``seq``-th message on source ``port`` (0 or 1)."""
    return struct.pack("<QQ", seq, port)


def channel_of(role: str, port: str) -> ChannelSpec:
    return next(c for c in CHANNELS if (role, port) in (c.source, *c.destinations))


def _error(status: Status) -> int:
    return -int(status)


@dataclass(frozen=True)
class Expected:
    """The results the ABI allows for one call: some statuses, or a value in a range."""

    errors: frozenset[int] = frozenset()
    values: range = range(0)

    def accepts(self, result: int) -> bool:
        return result in self.errors if result < 0 else result in self.values

    def __str__(self) -> str:
        names = sorted(Status(-e).name for e in self.errors)
        shown = f"{self.values.start}" if len(self.values) == 1 else f"{self.values.start}..{self.values.stop - 1}"
        return " or ".join(names + ([shown] if len(self.values) else []))


def fails(*statuses: Status) -> Expected:
    return Expected(frozenset(_error(s) for s in statuses))


def succeeds(value: int) -> Expected:
    return Expected(values=range(value, value + 1))


@dataclass
class ChannelModel:
    """What ring 0's channels must hold, from what the agent and the peer were seen to do."""

    #: channel name -> (pid, port) of each attached queuing destination -> its messages
    queues: dict[str, dict[tuple[int, str], deque[bytes]]] = field(default_factory=dict)
    latest: dict[str, bytes | None] = field(default_factory=dict)  #: sampling channels
    opened: list[str] = field(default_factory=list)  #: the agent's open ports, by handle
    peer_received: list[int] = field(default_factory=lambda: [0, 0])  #: counts read in the peer's memory
    peer_sent: list[int] = field(default_factory=lambda: [0, 0])

    def deliver(self, spec: ChannelSpec, message: bytes) -> None:
        """A send succeeded: every attached destination (queuing) or the slot (sampling) has it."""
        if spec.kind == "queuing":
            for queue in self.queues[spec.name].values():
                queue.append(message)
        else:
            self.latest[spec.name] = message

    def forget(self, pid: int) -> None:
        """Ring 0 drops what waits for a restarted partition."""
        for queues in self.queues.values():
            for (owner, _port), queue in queues.items():
                if owner == pid:
                    queue.clear()


class ChannelWorld(AgentWorld):
    """The agent, a peer on the far end of its channels, two idle victims; a model of every channel."""

    kind = "channels"
    ram_bytes = 5 << 18  # 1.25 MiB: ring 0's 15 frames, the agent's 96, the victims' and the peer's 64 each

    def __init__(self) -> None:
        self.peer = -1
        self.cids: dict[str, int] = {}
        self.roles: dict[str, int] = {}
        self.model = ChannelModel()
        self.resyncs = 0
        self._layout = self.boot_layout()
        self._layout_dirty = False
        self._port_failures: list[str] = []
        self._delivery_failures: list[str] = []
        super().__init__()

    # -- set-up -------------------------------------------------------------------
    def seal(self) -> None:
        """AgentWorld made the victims and the agent; channels, the peer and open ports go in the snapshot too."""
        self.peer = self.machine.create_partition("peer", image(PEER_IMAGE), [], VICTIM_QUOTA)
        self.victims.append(self.peer)
        self.roles = {"agent": self.agent.pid, "peer": self.peer, "victim0": self.victims[0],
                      "victim1": self.victims[1]}  # fmt: skip
        for spec in CHANNELS:
            self.cids[spec.name] = self.machine.create_channel(
                spec.kind, spec.message_size, depth=spec.depth, refresh=0
            )
        for pid in self.roles.values():
            self.attach_ports(pid)
        self.run_partition(self.peer, VICTIM_WINDOW)  # boot: it opens its ports and yields
        for i, name in enumerate(NAMES):
            self.agent.write(NAME_AREA + NAME_SLOT * i, name.encode())
        for handle, name in enumerate(AGENT_PORTS):
            opened = self.agent.hypercall(Hypercall.PORT_OPEN, self.name_of(NAMES.index(name)))
            assert opened.result == handle, f"the agent opened {name} as {opened}"
        super().seal()

    def attach_ports(self, pid: int) -> None:
        """Give ``pid`` its ends of every channel, as ring 1 does when it starts a partition."""
        for spec in CHANNELS:
            ends = [(spec.source, "source")] + [(d, "destination") for d in spec.destinations]
            for (role, port), direction in ends:
                if self.roles[role] == pid:
                    self.machine.attach_port(pid, port, self.cids[spec.name], direction)

    @staticmethod
    def name_of(slot: int) -> tuple[int, int]:
        """(pointer, length) of name ``slot`` in the agent's scratch area."""
        return data(NAME_AREA + NAME_SLOT * slot), len(NAMES[slot].encode())

    def on_reset(self) -> None:
        super().on_reset()
        self.model = ChannelModel(opened=list(AGENT_PORTS))
        for spec in CHANNELS:
            if spec.kind == "queuing":
                self.model.queues[spec.name] = {(self.roles[r], p): deque() for r, p in spec.destinations}
            else:
                self.model.latest[spec.name] = None
        self._layout_dirty = False
        self._port_failures.clear()
        self._delivery_failures.clear()

    def invariants(self) -> list[Callable[[], None]]:
        return [*super().invariants(), self.channel_bounds, self.channel_contents, self.channel_delivery,
                self.port_results]  # fmt: skip

    # -- the agent's side -----------------------------------------------------------
    def agent_ready(self) -> bool:
        """Whether the agent can take an action (lifecycle actions may pause, halt or destroy it)."""
        return self.agent.pid in self.machine.partitions and self.machine.state(self.agent.pid) == "ready"

    def partition_restarted(self, pid: int, *, warm: bool) -> None:
        """Ring 0 rebuilt ``pid`` on its quota: its queues are empty, its ports closed, its layout the boot one."""
        self.model.forget(pid)
        if pid == self.agent.pid:
            self.model.opened.clear()
            self._layout_dirty = False
            self.agent.forget_layout()
        if pid == self.peer and not warm:  # a cold start zeroes its counters; a warm one keeps its data area
            self.model.peer_received, self.model.peer_sent = [0, 0], [0, 0]

    def _after_agent(self, resets: int) -> None:
        if self.agent.resets != resets:  # settle() restarted it (a fault, or a runaway)
            self.partition_restarted(self.agent.pid, warm=False)

    def do_hypercall(self, number: int, *args: int) -> int | None:
        """Any hypercall; port calls go through the model so that it stays exact."""
        if number in PORT_CALLS:
            return self.port_call(number, args)
        if not self.agent_ready():
            return None
        resets, done = self.agent.resets, self._agent_word(MB_DONE)
        result = super().do_hypercall(number, *args)
        if result is None and self.agent_ready() and self._agent_word(MB_DONE) == done:
            # It yielded inside the call (YIELD itself): let it finish now, so that every
            # action completes in its own window (port_call's fallback counts on it).
            self.agent.run_window()
        if number in LAYOUT_CALLS and (result is None or result >= 0):
            self._layout_dirty = True
        self._after_agent(resets)
        return result

    def do_code(self, blob_hex: str) -> str | None:
        """Code may do anything to ports and mappings: the model trusts ring 0 afterwards."""
        if not self.agent_ready():
            return None
        resets = self.agent.resets
        fault = super().do_code(blob_hex)
        self._layout_dirty = True
        self._after_agent(resets)
        self.resync()
        return fault

    def do_port_open(self, ptr: int, length: int) -> int | None:
        return self.port_call(Hypercall.PORT_OPEN, (ptr, length))

    def do_port_send(self, handle: int, ptr: int, length: int, payload_hex: str = "") -> int | None:
        """Write ``payload`` into the send buffer, then PORT_SEND (from wherever ``ptr`` points)."""
        return self.port_call(Hypercall.PORT_SEND, (handle, ptr, length), bytes.fromhex(payload_hex))

    def do_port_receive(self, handle: int, ptr: int, length: int) -> int | None:
        return self.port_call(Hypercall.PORT_RECEIVE, (handle, ptr, length))

    def do_port_status(self, handle: int) -> int | None:
        return self.port_call(Hypercall.PORT_STATUS, (handle,))

    def port_call(self, number: int, args: tuple[int, ...], payload: bytes = b"") -> int | None:
        """One port hypercall by the agent, its result checked against the model's prediction."""
        if not self.agent_ready():
            return None
        if payload:
            self.agent.write(SEND_BUFFER, payload[:PAYLOAD_MAX])
        words = tuple(a & _MASK64 for a in (*args, 0, 0, 0)[:3])
        expected, effect = self.predict(number, words)
        resets, done = self.agent.resets, self._agent_word(MB_DONE)
        outcome = self.agent.hypercall(number, args)
        result = outcome.result
        if result is None and self._agent_word(MB_DONE) == done + 1:
            result = signed(self._agent_word(MB_RESULT))  # it completed, then stopped (e.g. its code was received over)
        self.note_result(number, result)
        restart = False
        if result is None:
            self.resync()  # the call never completed: what ring 0 did is unknown, so trust it from here
        elif not expected.accepts(result):
            self._port_failures.append(f"{Hypercall(number).name}{words} returned {result}, expected {expected}")
        else:
            restart = effect(result)
        self.settle(outcome)
        if restart and self.agent.resets == resets and self.agent_ready():
            self.agent.reset()  # a message landed on its code or mailbox: start it again, clean
        self._after_agent(resets)
        return result

    def _agent_word(self, offset: int) -> int:
        return int(struct.unpack("<Q", self.agent.read(offset, 8))[0])

    # -- the model's predictions ------------------------------------------------------
    def predict(self, number: int, a: tuple[int, ...]) -> tuple[Expected, Callable[[int], bool]]:
        """What the call may return now, and what a result does to the model (True: restart the agent)."""
        if number == Hypercall.PORT_OPEN:
            return self._predict_open(a[0], a[1])
        if a[0] >= len(self.model.opened):
            return fails(Status.BAD_HANDLE), _nothing
        name = self.model.opened[a[0]]
        spec = channel_of("agent", name)
        source = spec.source == ("agent", name)
        if number == Hypercall.PORT_SEND:
            return self._predict_send(spec, source, a[1], a[2])
        if number == Hypercall.PORT_RECEIVE:
            return self._predict_receive(spec, name, source, a[1], a[2])
        return self._predict_status(spec, name, source), _nothing

    def _predict_open(self, ptr: int, length: int) -> tuple[Expected, Callable[[int], bool]]:
        if not 0 < length <= PORT_NAME_MAX:
            return fails(Status.INVALID_ARGUMENT), _nothing
        if not self.reachable(ptr, length, write=False):
            return fails(Status.BAD_ADDRESS), _nothing
        raw = self.agent_bytes(ptr, length)
        name = raw.decode("utf-8", "replace") if raw is not None else None
        if name not in AGENT_PORTS:
            return fails(Status.NOT_FOUND), _nothing
        assert name is not None
        opened = self.model.opened

        def effect(_result: int) -> bool:
            if name not in opened:
                opened.append(name)
            return False

        return succeeds(opened.index(name) if name in opened else len(opened)), effect

    def _predict_send(
        self, spec: ChannelSpec, source: bool, ptr: int, length: int
    ) -> tuple[Expected, Callable[[int], bool]]:
        errors = set()
        if not 0 < length <= spec.message_size:
            errors.add(Status.INVALID_ARGUMENT)
        elif not self.reachable(ptr, length, write=False):
            errors.add(Status.BAD_ADDRESS)
        if not source:
            errors.add(Status.DENIED)
        elif spec.kind == "queuing" and any(len(q) >= spec.depth for q in self.model.queues[spec.name].values()):
            errors.add(Status.BUSY)
        if errors:
            return fails(*errors), _nothing
        message = self.agent_bytes(ptr, length)

        def effect(_result: int) -> bool:
            if message is None:  # ring 0 read what the model cannot: keep going from ring 0's view
                self.resync()
            else:
                self.model.deliver(spec, message)
            return False

        return succeeds(0), effect

    def _predict_receive(
        self, spec: ChannelSpec, name: str, source: bool, ptr: int, length: int
    ) -> tuple[Expected, Callable[[int], bool]]:
        if source:
            return fails(Status.DENIED), _nothing
        queue = self.model.queues[spec.name][(self.agent.pid, name)] if spec.kind == "queuing" else None
        message = self.model.latest[spec.name] if queue is None else (queue[0] if queue else None)
        if message is None:
            return fails(Status.NOT_FOUND), _nothing
        errors = set()
        if len(message) > length:
            errors.add(Status.NO_MEMORY)
        if not self.reachable(ptr, len(message), write=True):
            errors.add(Status.BAD_ADDRESS)
        if errors:
            return fails(*errors), _nothing
        expected = message

        def effect(_result: int) -> bool:
            if queue is not None:
                queue.popleft()
            inside = data(MB_SCRATCH) <= ptr and ptr + len(expected) <= data(KERNEL_DATA_SIZE)
            if inside and not self._layout_dirty:
                got = self.agent_bytes(ptr, len(expected))
                if got != expected:
                    self._delivery_failures.append(
                        f"the agent received {_show(got)} on {name}, the channel held {_show(expected)}"
                    )
            return not inside  # anywhere else may be its code or its mailbox

        return succeeds(len(message)), effect

    def _predict_status(self, spec: ChannelSpec, name: str, source: bool) -> Expected:
        if spec.kind == "sampling":
            return fails(Status.NOT_FOUND) if self.model.latest[spec.name] is None else Expected(values=range(2**63))
        queues = self.model.queues[spec.name]
        if not source:
            return succeeds(len(queues.get((self.agent.pid, name), ())))
        return succeeds(min((spec.depth - len(q) for q in queues.values()), default=spec.depth))

    # -- the agent's memory, as ring 0 should see it ---------------------------------------
    @staticmethod
    def boot_layout() -> list[tuple[int, int, bool]]:
        """The agent's boot layout: (start, end, writable), from the ABI's boot state."""
        image_end = KERNEL_IMAGE_VADDR + -(-len(image("fuzz_agent")) // PAGE_SIZE) * PAGE_SIZE
        return [
            (KERNEL_IMAGE_VADDR, image_end, True),
            (data(0), data(KERNEL_DATA_SIZE), True),
            (KERNEL_STACK_TOP - KERNEL_STACK_SIZE, KERNEL_STACK_TOP, True),
            (START_INFO_VADDR, START_INFO_VADDR + PAGE_SIZE, False),
            (GDT_VADDR, GDT_VADDR + PAGE_SIZE, False),
        ]

    def reachable(self, va: int, length: int, *, write: bool) -> bool:
        """Whether ring 0 may read (write) ``[va, va+length)`` for the agent.

        From the boot layout while the agent has not changed its mappings
        (an oracle independent of the page tables); after a MAP, UNMAP or
        space switch, from ring 0's own walker.
        """
        if self._layout_dirty:
            cr3 = self.machine.partitions[self.agent.pid].context.cr3
            return self.machine.walker.spans(cr3, va, length, write=write, user=False) is not None
        if length == 0:
            return True
        cursor, end = va, va + length
        if end > 1 << 64:
            return False
        while cursor < end:
            region = next((r for r in self._layout if r[0] <= cursor < r[1] and (r[2] or not write)), None)
            if region is None:
                return False
            cursor = region[1]
        return True

    def agent_bytes(self, va: int, length: int) -> bytes | None:
        """The bytes at ``va`` in the agent's current space (None if unreadable)."""
        cr3 = self.machine.partitions[self.agent.pid].context.cr3
        pieces = self.machine.walker.spans(cr3, va, length, write=False, user=False)
        return None if pieces is None else b"".join(self.machine.ram.read(pa, n) for pa, n in pieces)

    def resync(self) -> None:
        """Take ring 0's channels as the model (after an action whose effect on them is unknown)."""
        self.resyncs += 1
        for spec in CHANNELS:
            channel = self.machine.channels[self.cids[spec.name]]
            if spec.kind == "queuing":
                self.model.queues[spec.name] = {(d.owner, d.name): deque(d.queue) for d in channel.destinations}
            else:
                self.model.latest[spec.name] = channel.latest
        agent = self.machine.partitions.get(self.agent.pid)
        self.model.opened = [p.name for p in agent.open_ports] if agent is not None else []

    # -- the peer's side -----------------------------------------------------------------
    def run_victims(self) -> None:
        """Each live, ready victim gets a window; the peer may then write its own frames."""
        for pid in self.victims:
            if pid in self.machine.partitions and self.machine.state(pid) == "ready":
                if pid == self.peer:
                    self.allow_writes(pid)
                self.run_partition(pid, VICTIM_WINDOW)

    def do_victims_run(self) -> None:
        self.run_victims()
        if self.peer in self.machine.partitions:
            self.collect_peer()

    def collect_peer(self) -> None:
        """Check what the peer received against the model; add what it sent."""
        read = self._peer_reader()
        model = self.model
        for index, port in enumerate(PEER_DESTINATIONS):
            spec, known = channel_of("peer", port), model.peer_received[index]
            count = int.from_bytes(read(PEER_RECEIVED + 8 * index, 8), "little")
            if not known <= count <= known + PEER_SLOTS:
                self._delivery_failures.append(f"the peer's count on {port} went from {known} to {count}")
                continue
            for k in range(known, count):
                slot = PEER_LOG + index * PEER_LOG_SIZE + (k % PEER_SLOTS) * PEER_SLOT
                length = min(int.from_bytes(read(slot, 8), "little"), PEER_MESSAGE_MAX)
                got = read(slot + 8, length)
                queue = model.queues[spec.name].get((self.peer, port)) if spec.kind == "queuing" else None
                sent = model.latest[spec.name] if queue is None else (queue.popleft() if queue else None)
                if got != sent:
                    self._delivery_failures.append(
                        f"the peer received {_show(got)} on {port} ({spec.name}), the agent sent {_show(sent)}"
                    )
            model.peer_received[index] = count
        for index, port in enumerate(PEER_SOURCES):
            spec, known = channel_of("peer", port), model.peer_sent[index]
            count = int.from_bytes(read(PEER_SENT + 8 * index, 8), "little")
            if count < known:
                self._delivery_failures.append(f"the peer's sent count on {port} went from {known} to {count}")
                continue
            for seq in range(known, count):
                model.deliver(spec, peer_message(seq, index))
            model.peer_sent[index] = count

    def _peer_reader(self) -> Callable[[int, int], bytes]:
        """Read the peer's data area by offset (through its boot space; pages cached for this read)."""
        cr3 = self.machine.partitions[self.peer].spaces[0].cr3
        pages: dict[int, int] = {}

        def read(offset: int, length: int) -> bytes:
            page = offset & ~(PAGE_SIZE - 1)
            if page not in pages:
                translation = self.machine.walker.translate(cr3, data(page))
                assert translation is not None, "a partition's data area is always mapped"
                pages[page] = translation.paddr
            return self.machine.ram.read(pages[page] + offset - page, length)

        return read

    # -- invariants ------------------------------------------------------------------------
    def channel_bounds(self) -> None:
        for cid, channel in self.machine.channels.items():
            for port in channel.destinations:
                if len(port.queue) > channel.depth:
                    raise Violation("channel_bounds", f"channel {cid}: {port.name} holds {len(port.queue)} "
                                                      f"messages, depth {channel.depth}")  # fmt: skip
            held = [m for port in channel.destinations for m in port.queue]
            for message in held + ([channel.latest] if channel.latest is not None else []):
                if not 0 < len(message) <= channel.message_size:
                    raise Violation("channel_bounds", f"channel {cid} holds a message of {len(message)} bytes "
                                                      f"(message_size {channel.message_size})")  # fmt: skip

    def channel_contents(self) -> None:
        for spec in CHANNELS:
            channel = self.machine.channels[self.cids[spec.name]]
            whose = "a channel the agent has no source port of" if spec.source[0] != "agent" else "the agent's channel"
            if spec.kind == "queuing":
                actual = {(d.owner, d.name): list(d.queue) for d in channel.destinations}
                expected = {key: list(queue) for key, queue in self.model.queues[spec.name].items()}
                if actual != expected:
                    key = min(k for k in actual.keys() | expected.keys() if actual.get(k) != expected.get(k))
                    held, wanted = _show_all(actual.get(key)), _show_all(expected.get(key))
                    raise Violation("channel_contents", f"{spec.name} ({whose}): queue {key} holds {held}, "
                                                        f"expected {wanted}")  # fmt: skip
            elif channel.latest != self.model.latest[spec.name]:
                raise Violation("channel_contents", f"{spec.name} ({whose}): latest message {_show(channel.latest)}, "
                                                    f"expected {_show(self.model.latest[spec.name])}")  # fmt: skip

    def channel_delivery(self) -> None:
        if self._delivery_failures:
            failure = self._delivery_failures[0]
            self._delivery_failures.clear()
            raise Violation("channel_delivery", failure)

    def port_results(self) -> None:
        if self._port_failures:
            failure = self._port_failures[0]
            self._port_failures.clear()
            raise Violation("port_results", failure)


def _nothing(_result: int) -> bool:
    return False


def _show(message: bytes | None) -> str:
    return "nothing" if message is None else f"{len(message)} bytes {message[:16].hex()}"


def _show_all(messages: list[bytes] | None) -> str:
    return "no queue" if messages is None else "[" + ", ".join(_show(m) for m in messages) + "]"


# -- strategies -----------------------------------------------------------------------------
OWN_HANDLE = st.integers(0, len(AGENT_PORTS) - 1)
#: The agent's handles, its sources (for sends) or destinations (for receives) twice as likely.
SENDING = st.sampled_from([0, 0, 1, 1, 2, 3, 4])
RECEIVING = st.sampled_from([2, 2, 3, 3, 4, 4, 0, 1])
#: Handles never opened, huge ones, and the agent's own.
ANY_HANDLE = st.one_of(OWN_HANDLE, st.integers(0, 40), EDGES, U64)
#: Readable or not: the start-info page (read-only), the GDT, the agent's code, a range across the
#: end of its data area or its stack, any edge or word.
ELSEWHERE = st.sampled_from([START_INFO_VADDR, GDT_VADDR, KERNEL_IMAGE_VADDR, data(KERNEL_DATA_SIZE - 8),
                             data(KERNEL_DATA_SIZE - 64), KERNEL_STACK_TOP - 16, START_INFO_VADDR - 8])  # fmt: skip
SEND_POINTER = st.one_of(st.just(data(SEND_BUFFER)), ELSEWHERE, EDGES, U64)
RECEIVE_POINTER = st.one_of(st.just(data(RECEIVE_BUFFER)), ELSEWHERE, EDGES, U64)
LENGTH = st.one_of(st.integers(0, PAYLOAD_MAX), st.sampled_from([2**64 - 1, 2**63, 2**32, PAGE_SIZE]))
MESSAGE = st.binary(min_size=1, max_size=16)  #: fits every channel


@register("channels", "channel traffic, overflow, wrong-direction and unowned-port use, hostile buffers",
          ChannelWorld)  # fmt: skip
class ChannelCampaign(CampaignMachine):
    @rule(handle=SENDING, message=MESSAGE)
    def send(self, handle: int, message: bytes) -> None:
        """Well-formed traffic on any of the agent's ports (three of five are destinations: wrong direction)."""
        self.act("port_send", handle, data(SEND_BUFFER), len(message), message.hex())

    @rule(messages=st.lists(MESSAGE, min_size=2, max_size=6))
    def burst(self, messages: list[bytes]) -> None:
        """Messages in a row on the queuing source: queues fill, then BUSY."""
        for message in messages:
            self.act("port_send", AGENT_PORTS.index("aq_out"), data(SEND_BUFFER), len(message), message.hex())

    @rule(handle=ANY_HANDLE, ptr=SEND_POINTER, length=LENGTH, payload=st.binary(max_size=PAYLOAD_MAX))
    def hostile_send(self, handle: int, ptr: int, length: int, payload: bytes) -> None:
        self.act("port_send", handle, ptr, length, payload.hex())

    @rule(handle=RECEIVING, times=st.integers(1, 4))
    def receive(self, handle: int, times: int) -> None:
        """Drain one of the agent's ports (two of five are sources: wrong direction)."""
        for _ in range(times):
            self.act("port_receive", handle, data(RECEIVE_BUFFER), PEER_MESSAGE_MAX)

    @rule(handle=ANY_HANDLE, ptr=RECEIVE_POINTER, length=LENGTH)
    def hostile_receive(self, handle: int, ptr: int, length: int) -> None:
        self.act("port_receive", handle, ptr, length)

    @rule(handle=ANY_HANDLE)
    def status(self, handle: int) -> None:
        self.act("port_status", handle)

    @rule(slot=st.integers(0, len(NAMES) - 1))
    def open_port(self, slot: int) -> None:
        """Its own names (the same handle again), other partitions' names, an unknown and a too-long one."""
        self.act("port_open", *ChannelWorld.name_of(slot))

    @rule(ptr=st.one_of(st.integers(0, NAME_SLOT * len(NAMES)).map(lambda k: data(NAME_AREA + k)), EDGES, U64),
          length=st.one_of(st.integers(0, PORT_NAME_MAX + 2), EDGES))  # fmt: skip
    def hostile_open(self, ptr: int, length: int) -> None:
        self.act("port_open", ptr, length)

    @rule()
    def victims_run(self) -> None:
        self.act("victims_run")
