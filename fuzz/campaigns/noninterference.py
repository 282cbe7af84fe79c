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
* how its action ended (yield, fault, window end).

Windows are fixed: a secret that idles, faults or loops still uses its
whole window, so the observer's time never depends on the secret.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.agent import MB_SCRATCH, WINDOW, Agent
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


class SecretWorld(World):
    """One side: an observer agent and a secret agent on one machine."""

    ram_bytes = 1 << 20  # ring 0's frames and the two agents' 96 each

    def __init__(self) -> None:
        super().__init__()
        self.observer = Agent(self.machine, name="observer")
        self.secret = Agent(self.machine, name="secret")
        for agent in (self.observer, self.secret):
            self.run_partition(agent.pid, WINDOW)
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
        outcome = self.observer.hypercall(number, args)
        self.note_result(number, outcome.result)
        self.settle(outcome, self.observer)
        return (outcome.result, outcome.fault, outcome.reason, self.observer.registers(), self.machine.now,
                self.observer_memory())  # fmt: skip

    def secret_turn(self, action: list[Any] | tuple[Any, ...]) -> None:
        """One window of the secret, doing ``action`` (idle, hypercall, code or data)."""
        kind, args = action[0], tuple(action[1:])
        if kind == "idle":
            self.secret.run_window()
        elif kind == "hypercall":
            outcome = self.secret.hypercall(args[0], args[1:])
            self.note_result(args[0], outcome.result)
            self.settle(outcome, self.secret)
        elif kind == "code":
            self.settle(self.secret.code(bytes.fromhex(args[0])), self.secret)
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
