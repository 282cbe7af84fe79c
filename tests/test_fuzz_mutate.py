"""Mutation rounds (fuzz/mutate.py): seeded edits of hypothesis's programs, through the same checks."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

import pytest

from fuzz import runner
from fuzz.mutate import MAX_STEPS, Mutator
from fuzz.replay import Replay, replay
from fuzz.runner import _mutation_round, _Round, campaign, run
from spk.abi import Hypercall
from tests.test_fuzz import no_owner_check  # noqa: F401  (the fixture)

CORPUS = [
    [("hypercall", 4), ("hypercall", 15), ("hypercall", 6, 1, 0x40_0000, 0x14, 2)],
    [("code", "90c3"), ("victims_run",), ("secret", ["hypercall", 15], ["idle"])],
]


def test_mutation_is_repeatable_and_keeps_actions_well_formed() -> None:
    first = [Mutator(Random(7), CORPUS).program() for _ in range(50)]
    again = [Mutator(Random(7), CORPUS).program() for _ in range(50)]
    assert first == again
    names = {action[0] for program in CORPUS for action in program}
    for program in first:
        assert 0 < len(program) <= MAX_STEPS
        assert all(action[0] in names for action in program)  # names are never mutated
    assert any(program not in CORPUS for program in first)


def test_a_code_blob_stays_hex_of_the_same_length() -> None:
    programs = [Mutator(Random(seed), [[("code", "90c3")]]).program() for seed in range(40)]
    blobs = {action[1] for program in programs for action in program}
    assert all(len(blob) == 4 and bytes.fromhex(blob) for blob in blobs)
    assert len(blobs) > 1


@pytest.mark.usefixtures("no_owner_check")
def test_a_mutation_round_reports_a_finding_minimised() -> None:
    finding = _mutation_round(campaign("hypercalls"), _Round(Random(1), 100), [CORPUS[0]], None, 1)
    assert finding is not None and finding.invariant == "frame_accounting"
    assert finding.reproduced and finding.steps == 2


class _WorkClock:
    """A clock for fuzz.runner that moves with the work done, never with the wall clock.

    A hypothesis batch of n examples costs n units, a mutated program one: a run
    under a time budget is then the same sequence of rounds on any machine.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.rounds: list[tuple[str, int]] = []  # ("hypothesis", examples) or ("mutation", programs)

    def monotonic(self) -> float:
        return self.now

    def batch(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(chosen: Any, batch_seed: int, examples: int, bounds: Any) -> Any:
            self.rounds.append(("hypothesis", examples))
            done = original(chosen, batch_seed, examples, bounds)
            self.now += examples
            return done

        return timed

    def program(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(world: Any, program: Any) -> Any:
            if not self.rounds or self.rounds[-1][0] != "mutation":
                self.rounds.append(("mutation", 0))
            self.rounds[-1] = ("mutation", self.rounds[-1][1] + 1)
            done = original(world, program)
            self.now += 1
            return done

        return timed


@pytest.fixture
def work_clock(monkeypatch: pytest.MonkeyPatch) -> _WorkClock:
    """A work clock for fuzz.runner; batches of 5 examples, rounds of at most 10 programs."""
    clock = _WorkClock()
    monkeypatch.setattr(runner, "BATCH", 5)
    monkeypatch.setattr(runner, "MUTATIONS", 2)
    monkeypatch.setattr(runner, "_batch", clock.batch(runner._batch))
    monkeypatch.setattr(runner, "run_program", clock.program(runner.run_program))
    return clock


def test_a_time_budget_mixes_hypothesis_and_mutation(work_clock: _WorkClock) -> None:
    mixed = run(["hypercalls"], seed=3, seconds=40, clock=work_clock.monotonic)
    assert mixed.findings == []
    # Each hypothesis batch is followed by a mutation round of its programs (up to MUTATIONS per
    # example); the last round stops at the budget, not at its count.
    assert work_clock.rounds == [
        ("hypothesis", 5), ("mutation", 10), ("hypothesis", 5), ("mutation", 10), ("hypothesis", 5), ("mutation", 5),
    ]  # fmt: skip
    assert mixed.campaigns["hypercalls"].seconds == 40
    assert mixed.campaigns["hypercalls"].executions > mixed.campaigns["hypercalls"].examples


def test_without_mutation_a_time_budget_runs_hypothesis_alone(work_clock: _WorkClock) -> None:
    pure = run(["hypercalls"], seed=3, seconds=12, mutate=False, clock=work_clock.monotonic)
    assert pure.findings == []
    assert work_clock.rounds == [("hypothesis", 5)] * 3  # 15 units: the budget of 12 ends in the third batch
    assert pure.campaigns["hypercalls"].seconds == 15


def test_an_examples_budget_never_mutates(work_clock: _WorkClock) -> None:
    run(["hypercalls"], seed=3, examples=10, clock=work_clock.monotonic)
    assert work_clock.rounds == [("hypothesis", 5), ("hypothesis", 5)]


def test_mutation_rounds_and_replays_perform_a_program_alike() -> None:
    from fuzz.replay import run_program, world_of

    program = [("hypercall", Hypercall.ASPACE_CREATE), ("hypercall", Hypercall.VERSION)]
    direct, replayed = run_program(world_of("agent"), program), replay(Replay("hypercalls", "agent", program))
    assert direct.clean and replayed.clean
    assert direct.steps == replayed.steps
