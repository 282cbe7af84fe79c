"""Budgets are kept: ``--examples N`` runs exactly N examples per campaign, ``--seconds S`` ends
within one example of S.

No test here reads the wall clock for its verdict: the runner takes a clock,
and these clocks move with the work done (actions performed), so a run under
a time budget is the same sequence of examples on any machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fuzz.cluster
from fuzz.mutate import MAX_STEPS
from fuzz.replay import world_of
from fuzz.runner import STEPS, Job, examples_share, plan_jobs, run, run_job
from fuzz.world import Violation, World
from spk_tools.cli import app
from tests.test_fuzz import no_owner_check  # noqa: F401  (the fixture)

#: Seconds one action costs on the work clock.
TICK = 0.01


class WorkClock:
    """Time is the number of actions the agent world performed since the clock was made, times TICK."""

    def __init__(self) -> None:
        self.world = world_of("agent")
        self.origin = self.world.executions

    def __call__(self) -> float:
        return (self.world.executions - self.origin) * TICK


def test_an_examples_budget_runs_exactly_that_many_examples() -> None:
    # Hypothesis stops at 50 *valid* test cases; with seed 7 eight more ran out of data or were
    # rejected, each after a reset and some actions: 58 programs ran where 50 were asked.
    world = world_of("agent")
    resets = world.examples
    summary = run(["hypercalls"], seed=7, examples=50)
    assert summary.findings == []
    assert summary.campaigns["hypercalls"].examples == 50
    assert world.examples - resets == 50  # the world was reset for 50 programs, no more
    assert summary.to_json()["examples"] == 50


@pytest.mark.parametrize(("examples", "workers", "shares"), [(7, 3, [3, 2, 2]), (6, 2, [3, 3]), (2, 3, [1, 1])])
def test_workers_share_the_examples_exactly(examples: int, workers: int, shares: list[int]) -> None:
    jobs = plan_jobs(["hypercalls", "code"], seed=1, examples=examples, start=0.0, seconds=None, workers=workers)
    assert [job.examples for job in jobs] == shares  # a worker with nothing to do gets no job
    assert sum(examples_share(examples, workers, w) for w in range(workers)) == examples
    assert {job.workers for job in jobs} == {workers}  # seed slices stay disjoint


def test_a_time_budget_ends_within_one_example_of_it() -> None:
    clock = WorkClock()
    summary = run(["hypercalls"], seed=3, seconds=2.0, clock=clock, mutate=False)
    stats = summary.campaigns["hypercalls"]
    assert summary.findings == []
    # 2 s is 200 actions: about 25 examples, so several batches of hypothesis examples
    # would have run past it; no example starts after the budget, and one has at most STEPS steps.
    assert 2.0 <= summary.seconds < 2.0 + STEPS * TICK
    assert stats.seconds == summary.seconds and stats.examples > 0


def test_a_time_budget_ends_within_one_example_with_mutation_rounds() -> None:
    clock = WorkClock()
    summary = run(["hypercalls"], seed=3, seconds=3.0, clock=clock)
    stats = summary.campaigns["hypercalls"]
    assert summary.findings == []
    assert 3.0 <= summary.seconds < 3.0 + MAX_STEPS * TICK  # a mutated program has at most MAX_STEPS
    assert stats.examples > 0 and stats.executions > stats.examples


def test_campaigns_share_the_time_budget_and_each_keeps_its_slot() -> None:
    clock = WorkClock()
    summary = run(["code", "hypercalls"], seed=4, seconds=2.0, clock=clock, mutate=False)
    code, hypercalls = summary.campaigns["code"], summary.campaigns["hypercalls"]
    assert code.examples > 0 and hypercalls.examples > 0
    assert 1.0 <= code.seconds < 1.0 + STEPS * TICK  # the first campaign's slot ends at half the budget
    assert 2.0 <= summary.seconds < 2.0 + STEPS * TICK


def test_a_worker_that_starts_late_shares_what_is_left() -> None:
    work = WorkClock()
    job = Job(("code", "hypercalls"), seed=5, deadline=2.0, mutate=False)
    code, hypercalls = run_job(job, clock=lambda: 1.0 + work())  # started at 1.0: 1 s left, 0.5 s each
    assert 0.5 <= code.seconds < 0.5 + STEPS * TICK and hypercalls.examples > 0
    assert 2.0 <= 1.0 + work() < 2.0 + STEPS * TICK


class _AfterFirstViolation:
    """A clock that stands still until an action breaks an invariant, then jumps far past any budget."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self) -> float:
        return 1e9 if self.seen else 0.0


@pytest.fixture
def violation_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[_AfterFirstViolation]:
    clock = _AfterFirstViolation()
    perform = World.perform

    def watched(self: World, action: Any) -> Any:
        try:
            return perform(self, action)
        except Violation:
            clock.seen = True
            raise

    monkeypatch.setattr(World, "perform", watched)
    yield clock


@pytest.mark.usefixtures("no_owner_check")
def test_a_deadline_during_shrinking_keeps_the_finding(violation_clock: _AfterFirstViolation, tmp_path: Path) -> None:
    world = world_of("agent")
    resets = world.examples
    summary = run(["hypercalls"], seed=0, seconds=100.0, clock=violation_clock, out_dir=tmp_path)
    [finding] = summary.findings
    examples = summary.campaigns["hypercalls"].examples
    # Shrinking stopped at the deadline: no test case after the failing one, only the replay confirming it.
    assert world.examples - resets == examples + 2  # the confirming replay, and the one reading its message
    assert finding.invariant == "frame_accounting" and finding.reproduced
    assert finding.replay_file is not None and Path(finding.replay_file).exists()
    assert 1 <= finding.steps <= MAX_STEPS


def test_a_job_past_its_deadline_does_nothing() -> None:
    job = Job(("hypercalls", "code"), seed=0, examples=5, deadline=10.0)
    stats = run_job(job, clock=lambda: 10.0)
    assert [(s.name, s.examples, s.executions) for s in stats] == [("hypercalls", 0, 0), ("code", 0, 0)]


def test_workers_read_the_deadline_on_the_shared_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[list[Job]] = []

    def record(jobs: list[Job], report: Any = None) -> list[Any]:
        handed.append(jobs)
        return []

    monkeypatch.setattr(fuzz.cluster, "run_in_processes", record)
    monkeypatch.setattr(fuzz.cluster, "run_on_ray", lambda address, jobs, report=None: record(jobs))
    before = time.time()
    summary = run(["hypercalls"], seed=0, seconds=30.0, workers=2)
    run(["hypercalls"], seed=0, seconds=30.0, ray_address="local")
    after = time.time()
    for jobs in handed:
        for job in jobs:  # read by the parent before any worker starts: starting them is spent from it
            assert job.deadline is not None and before + 30.0 <= job.deadline <= after + 30.0
    assert summary.campaigns["hypercalls"].examples == 0  # every campaign has its row


def test_a_worker_judges_its_deadline_on_the_shared_clock() -> None:
    # A deadline a second ago on the wall clock: a worker reading another clock would run its examples.
    job = Job(("hypercalls",), seed=0, examples=3, deadline=time.time() - 1)
    [stats] = fuzz.cluster._work(job)
    assert stats.examples == 0


def test_spk_fuzz_reports_the_exact_count(tmp_path: Path) -> None:
    args = [
        "fuzz",
        "-c",
        "hypercalls",
        "-c",
        "code",
        "--examples",
        "7",
        "--seed",
        "3",
        "--json",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert data["examples"] == 14
    assert {name: c["examples"] for name, c in data["campaigns"].items()} == {"hypercalls": 7, "code": 7}
