"""What every campaign shares: a hypothesis state machine over one world.

A campaign is a :class:`hypothesis.stateful.RuleBasedStateMachine` whose
rules only *choose* actions; :meth:`CampaignMachine.act` hands each one to
the world, which performs it and checks every invariant (see
:mod:`fuzz.world`). Keeping the execution in the world is what makes a
finding replayable: a replay file is the list of actions, and the replay
performs them through the same method, with the same checks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.stateful import RuleBasedStateMachine

from fuzz.world import World
from spk.abi import KERNEL_BASE, KERNEL_END, PAGE_SIZE, USER_END

U64 = st.integers(min_value=0, max_value=2**64 - 1)
#: Values on the edges ring 0 must get right: page and half boundaries, sign, wrap.
EDGES = st.sampled_from([0, 1, PAGE_SIZE - 1, USER_END - PAGE_SIZE, USER_END, KERNEL_BASE - PAGE_SIZE, KERNEL_BASE,
                         KERNEL_END - PAGE_SIZE, KERNEL_END, 2**63, 2**64 - PAGE_SIZE, 2**64 - 1])  # fmt: skip
#: Hostile or plausible argument words.
ARGUMENT = st.one_of(EDGES, U64, st.integers(0, 64), st.integers(1, 2**20).map(lambda n: n * PAGE_SIZE))


class CampaignMachine(RuleBasedStateMachine):
    """The rules of one campaign, acting on a world the runner provides."""

    world: World
    #: Set when the example ends: the exception a step raised (a finding), else None.
    failure: Exception | None = None
    #: The actions the example performed, when it failed.
    program: list[Any] | None = None

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        world.reset()

    def act(self, *action: Any) -> Any:
        """Perform one action in the world (which checks every invariant after it)."""
        return self.world.perform(tuple(action))

    def teardown(self) -> None:
        """Note how the example ended, for the runner (:mod:`fuzz.runner` counts and bounds examples).

        Hypothesis calls this from a ``finally`` block, so the exception a step
        raised is the one in flight (hypothesis reads it the same way for its
        own reports). Its control exceptions (an example that ran out of data
        or was rejected) are not failures.
        """
        error = sys.exc_info()[1]
        if isinstance(error, Exception) and not isinstance(error, HypothesisException):
            self.failure = error
            self.program = list(self.world.log)


@dataclass(frozen=True)
class Campaign:
    """A named campaign: the world it attacks and the rules that attack it."""

    name: str
    summary: str
    world: type[World]
    machine: type[CampaignMachine]


REGISTRY: dict[str, Campaign] = {}


def register(name: str, summary: str, world: type[World]) -> Callable[[type[CampaignMachine]], type[CampaignMachine]]:
    """Class decorator adding a campaign to :data:`REGISTRY`."""

    def add(machine: type[CampaignMachine]) -> type[CampaignMachine]:
        REGISTRY[name] = Campaign(name, summary, world, machine)
        return machine

    return add
