"""Noninterference as a two-run property: a secret must not reach an observer.

Two machines, identical but for one partition, the *secret*: on each side
it holds different data and does different things (hypercalls, random
code, idling). The *observer*, with no channel from the secret, makes the
same hypercalls on both sides, in the same windows. Everything it can see
must be equal on both sides after every step (the property seL4's
information-flow proof states, checked here by testing):

* the result of each hypercall, and the registers ring 0 left it (rcx,
  rdx, rsi, rdi, r8..r11, dumped by the agent after every call);
* its whole memory (every frame of its quota, byte for byte);
* virtual time (the machines' clocks, and what TIME returns);
* how its action ended (yield, fault, window end);
* the messages it receives and the state of its ports: each side has a
  channel of its own (a queue from a port to another of the same partition),
  so the secret's traffic runs beside the observer's and must not show in it.

Windows are fixed: a secret that idles, faults or loops still uses its
whole window, so the observer's time never depends on the secret.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.agent import MB_SCRATCH, WINDOW, Agent, data_address
from fuzz.campaigns.base import ARGUMENT, CampaignMachine, register
from fuzz.campaigns.code import BLOBS
from fuzz.campaigns.hypercalls import FREE_CALLS
from fuzz.world import Violation, World
from spk.abi import Hypercall

#: Bytes of the secret's data area the campaign may overwrite with "secret" data.
SECRET_SPAN = 0x400
#: Calls that change ring 0's state (the secret's likely ways to be noticed)...
CHANGING = [Hypercall.FRAME_ALLOC, Hypercall.FRAME_FREE, Hypercall.ASPACE_CREATE, Hypercall.MAP, Hypercall.UNMAP,
            Hypercall.TIMER_SET, Hypercall.CONSOLE_WRITE, Hypercall.RAISE_ERROR, Hypercall.MEASURE]  # fmt: skip
#: ...and calls that read it (the observer's likely ways to notice), favoured over the rest.
READING = [Hypercall.VERSION, Hypercall.TIME_NOW, Hypercall.FRAME_ALLOC, Hypercall.PART_LIST, Hypercall.PART_QUERY,
           Hypercall.PORT_STATUS, Hypercall.ATTEST]  # fmt: skip


#: Port names (each side's channel has a source and a destination port), written into
#: both agents' scratch pages so that either may try any of them.
PORT_NAMES = ("obs_out", "obs_in", "sec_out", "sec_in")
NAME_AREA, NAME_SLOT, SEND_AREA, RECEIVE_AREA, MESSAGE_SIZE = 0x800, 16, 0x900, 0x980, 64


#: Port hypercalls with arguments that reach the ports: names of both sides, small
#: handles, the agent's own buffers, message lengths around the channel's size.
PORT_CALLS = st.one_of(
    st.integers(0, len(PORT_NAMES) - 1).map(
        lambda i: (Hypercall.PORT_OPEN, data_address(NAME_AREA + NAME_SLOT * i), len(PORT_NAMES[i]))
    ),
    st.tuples(st.integers(0, 3), st.integers(0, MESSAGE_SIZE + 1)).map(
        lambda t: (Hypercall.PORT_SEND, t[0], data_address(SEND_AREA), t[1])
    ),
    st.integers(0, 3).map(lambda h: (Hypercall.PORT_RECEIVE, h, data_address(RECEIVE_AREA), MESSAGE_SIZE)),
    st.integers(0, 3).map(lambda h: (Hypercall.PORT_STATUS, h)),
).map(lambda call: tuple(int(word) for word in call))


class SecretWorld(World):
    """One side: an observer agent and a secret agent on one machine, each with a channel of its own."""

    ram_bytes = 1 << 20  # ring 0's frames and the two agents' 96 each

    def __init__(self) -> None:
        super().__init__()
        self.observer = Agent(self.machine, name="observer")
        self.secret = Agent(self.machine, name="secret")
        for agent, prefix in ((self.observer, "obs"), (self.secret, "sec")):
            channel = self.machine.create_channel("queuing", MESSAGE_SIZE, depth=4)
            self.machine.attach_port(agent.pid, f"{prefix}_out", channel, "source")
            self.machine.attach_port(agent.pid, f"{prefix}_in", channel, "destination")
        for agent in (self.observer, self.secret):
            for slot, name in enumerate(PORT_NAMES):
                agent.write(NAME_AREA + NAME_SLOT * slot, name.encode())
            agent.write(SEND_AREA, bytes(range(MESSAGE_SIZE)))
            self.run_partition(agent.pid, WINDOW)
        for agent, first in ((self.observer, 0), (self.secret, 2)):  # handles 0 (out) and 1 (in), opened
            for slot in (first, first + 1):
                name_at = (data_address(NAME_AREA + NAME_SLOT * slot), len(PORT_NAMES[slot]))
                agent.hypercall(Hypercall.PORT_OPEN, name_at)
        self.seal()
        self.observer_frames = [mfn for mfn, entry in enumerate(self.snapshot.frames) if entry[0] == self.observer.pid]

    def writers(self) -> set[int]:
        return {self.observer.pid, self.secret.pid}

    def on_reset(self) -> None:
        self.observer.forget_layout()
        self.secret.forget_layout()

    def observer_memory(self) -> str:
        """SHA-256 over every frame of the observer's quota, in frame order."""
        digest = hashlib.sha256()
        view = self.machine.ram.view
        for mfn in self.observer_frames:
            digest.update(view[mfn << 12 : (mfn + 1) << 12])
        return digest.hexdigest()

    def observe(self, number: int, args: tuple[int, ...]) -> tuple[Any, ...]:
        """The observer makes one hypercall; everything it can see afterwards."""
        outcome = self.agent_hypercall(self.observer, number, args)
        return (outcome.result, outcome.fault, outcome.reason, self.observer.registers(), self.machine.now,
                self.observer_memory())  # fmt: skip

    def secret_turn(self, action: list[Any] | tuple[Any, ...]) -> None:
        """One window of the secret, doing ``action`` (idle, hypercall, code or data)."""
        kind, args = action[0], tuple(action[1:])
        if kind == "idle":
            self.secret.run_window()
        elif kind == "hypercall":
            self.agent_hypercall(self.secret, args[0], args[1:])
        elif kind == "code":
            self.agent_code(self.secret, args[0])
        elif kind == "data":
            self.secret.write(MB_SCRATCH + args[0] % SECRET_SPAN, bytes.fromhex(args[1])[: PAGE_REST])
            self.secret.run_window()
        else:
            raise ValueError(f"no secret action {kind!r}")


#: The longest secret data write that stays inside the scratch page.
PAGE_REST = 0x1000 - MB_SCRATCH - SECRET_SPAN


class NoninterferenceWorld(SecretWorld):
    """Both sides; this object is the left one and holds the right one as ``twin``."""

    kind = "noninterference"

    def __init__(self) -> None:
        super().__init__()
        self.twin = SecretWorld()

    def reset(self, *, count: bool = True) -> None:
        super().reset(count=count)
        if hasattr(self, "twin"):  # the first reset runs inside set-up, before the twin exists
            self.twin.reset(count=False)

    def check(self) -> None:
        super().check()
        self.twin.check()
        if self.machine.now != self.twin.machine.now:
            raise Violation("noninterference", f"clocks differ: {self.machine.now} and {self.twin.machine.now}")

    def do_observe(self, number: int, *args: int) -> Any:
        left, right = self.observe(number, args), self.twin.observe(number, args)
        if left != right:
            names = ("result", "fault", "end", "registers", "time", "memory")
            differ = [f"{n}: {a!r} vs {b!r}" for n, a, b in zip(names, left, right, strict=True) if a != b]
            raise Violation("noninterference", f"hypercall {number} observed differently: {'; '.join(differ)}")
        return left[0]

    def do_secret(self, left: list[Any], right: list[Any]) -> None:
        self.secret_turn(left)
        self.twin.secret_turn(right)


SECRET_CALLS = st.tuples(
    st.one_of(st.sampled_from(CHANGING), st.sampled_from(FREE_CALLS)), st.lists(ARGUMENT, max_size=3)
).map(lambda t: ("hypercall", int(t[0]), *t[1]))
SECRET_ACTIONS = st.one_of(
    st.just(("idle",)),
    SECRET_CALLS,
    BLOBS.map(lambda blob: ("code", blob.hex())),
    st.tuples(st.integers(0, SECRET_SPAN), st.binary(min_size=1, max_size=64)).map(
        lambda t: ("data", t[0], t[1].hex())
    ),
)


@register(
    "noninterference", "two runs differing only in a secret partition: the observer must not tell", NoninterferenceWorld
)
class NoninterferenceCampaign(CampaignMachine):
    @rule(left=SECRET_ACTIONS, right=SECRET_ACTIONS)
    def secret(self, left: tuple[Any, ...], right: tuple[Any, ...]) -> None:
        self.act("secret", list(left), list(right))

    @rule(left=SECRET_CALLS, right=st.one_of(st.just(("idle",)), SECRET_CALLS))
    def secret_calls(self, left: tuple[Any, ...], right: tuple[Any, ...]) -> None:
        """Hypercalls on one side at least: the commonest way for a secret to change ring 0's state."""
        self.act("secret", list(left), list(right))

    @rule(number=st.one_of(st.sampled_from(READING), st.sampled_from(FREE_CALLS)), args=st.lists(ARGUMENT, max_size=5))
    def observe(self, number: int, args: list[int]) -> None:
        self.act("observe", int(number), *args)

    @rule(left=PORT_CALLS, right=st.one_of(st.just(()), PORT_CALLS))
    def secret_traffic(self, left: tuple[int, ...], right: tuple[int, ...]) -> None:
        """The secret uses ports (its own, or the observer's names) on one side or both."""
        self.act("secret", ["hypercall", *left], ["hypercall", *right] if right else ["idle"])

    @rule(call=PORT_CALLS)
    def observe_ports(self, call: tuple[int, ...]) -> None:
        self.act("observe", *call)
