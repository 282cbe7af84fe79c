"""Mutation rounds (fuzz/mutate.py): seeded edits of hypothesis's programs, through the same checks."""

from __future__ import annotations

from random import Random

import pytest

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


def test_a_time_budget_mixes_hypothesis_and_mutation() -> None:
    mixed = run(["hypercalls"], seed=3, seconds=1.5)
    pure = run(["hypercalls"], seed=3, seconds=1.5, mutate=False)
    assert mixed.campaigns["hypercalls"].seconds < 1.5 + 3.0  # a round stops at the budget (plus one batch)
    assert mixed.findings == [] and pure.findings == []
    # a mutation round runs several programs per hypothesis example
    assert mixed.campaigns["hypercalls"].examples > pure.campaigns["hypercalls"].examples


def test_mutation_rounds_and_replays_perform_a_program_alike() -> None:
    from fuzz.replay import run_program, world_of

    program = [("hypercall", Hypercall.ASPACE_CREATE), ("hypercall", Hypercall.VERSION)]
    direct, replayed = run_program(world_of("agent"), program), replay(Replay("hypercalls", "agent", program))
    assert direct.clean and replayed.clean
    assert direct.steps == replayed.steps
