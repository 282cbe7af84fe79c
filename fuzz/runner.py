"""Run campaigns: budgets, seeds, statistics, findings, replay files, workers.

:func:`run_campaign` runs one campaign with hypothesis for a number of
examples or seconds, in batches of examples with seeds derived from the run's
seed (so a run is repeatable), and stops at the first finding: hypothesis
shrinks it, the runner replays the shrunk action list on a fresh reset to
confirm it, and writes it as a replay file.

:func:`run` runs several campaigns, in this process or in worker
processes (``workers``) or on a Ray cluster (``ray_address``); each worker
takes its own slice of the seed space, and the statistics are gathered in
one :class:`Summary`.

Errors: :class:`ValueError` for an unknown campaign or a bad budget;
``RuntimeError`` when Ray is asked for and not installed.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.stateful import run_state_machine_as_test

import fuzz.campaigns  # noqa: F401  (registers every campaign)
from fuzz.campaigns.base import REGISTRY, Campaign, CampaignMachine
from fuzz.mutate import Mutator
from fuzz.replay import Replay, replay, run_program, world_of
from fuzz.world import Violation

#: Steps per example at most (hypothesis shrinks below that). Resets are cheap, so
#: many short programs beat few long ones: hypothesis also discards fewer of them
#: for exceeding its early size limits.
STEPS = 10
#: Examples per hypothesis run in a time-bounded campaign (each run has a fixed cost:
#: hypothesis reads the test's source to name it).
BATCH = 50
#: Mutated programs per hypothesis example in a time-budgeted run, and the corpus kept.
MUTATIONS = 8
CORPUS_MAX = 500
#: Seeds of batch b of worker w: seed * SEED_STRIDE + b * workers + w (disjoint per worker).
SEED_STRIDE = 1_000_003


@dataclass
class Finding:
    """One broken invariant, shrunk, confirmed (or not) by a replay."""

    campaign: str
    invariant: str
    message: str
    steps: int
    reproduced: bool
    replay_file: str | None
    seed: int


@dataclass
class CampaignStats:
    name: str
    examples: int = 0
    executions: int = 0
    invariant_checks: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def execs_per_s(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def merge(self, other: CampaignStats) -> None:
        self.examples += other.examples
        self.executions += other.executions
        self.invariant_checks += other.invariant_checks
        self.seconds = max(self.seconds, other.seconds)
        self.findings += other.findings

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["execs_per_s"] = round(self.execs_per_s, 1)
        return data


@dataclass
class Summary:
    """Everything a run did, by campaign."""

    seed: int
    workers: int
    seconds: float = 0.0
    campaigns: dict[str, CampaignStats] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return [f for stats in self.campaigns.values() for f in stats.findings]

    @property
    def executions(self) -> int:
        return sum(s.executions for s in self.campaigns.values())

    def add(self, stats: CampaignStats) -> None:
        if stats.name in self.campaigns:
            self.campaigns[stats.name].merge(stats)
        else:
            self.campaigns[stats.name] = stats

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "workers": self.workers, "seconds": round(self.seconds, 3),
            "executions": self.executions,
            "execs_per_s": round(self.executions / self.seconds, 1) if self.seconds else 0.0,
            "invariant_checks": sum(s.invariant_checks for s in self.campaigns.values()),
            "examples": sum(s.examples for s in self.campaigns.values()),
            "findings": [asdict(f) for f in self.findings],
            "campaigns": {name: s.to_json() for name, s in self.campaigns.items()},
        }  # fmt: skip


Progress = Callable[[CampaignStats], None]


def campaign(name: str) -> Campaign:
    """Errors: ValueError naming the known campaigns."""
    if name not in REGISTRY:
        raise ValueError(f"unknown campaign {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples, stateful_step_count=STEPS, deadline=None, database=None, derandomize=False,
        suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )  # fmt: skip


def _batch(chosen: Campaign, batch_seed: int, examples: int, out_dir: Path | None) -> Finding | None:
    """One hypothesis run; the finding it shrank to (confirmed by a replay), or None."""
    world = world_of(chosen.world.kind)

    def factory() -> CampaignMachine:
        return chosen.machine(world)

    seed(batch_seed)(factory)
    try:
        # hypothesis takes any callable returning a state machine (its type says the class).
        run_state_machine_as_test(factory, settings=_settings(examples))  # type: ignore[arg-type]
    except Violation as violation:
        return _confirm(chosen, batch_seed, violation.invariant, violation.message, list(world.log), out_dir)
    except Exception as exc:  # the campaign's own machinery failed: still reported, with its last actions
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _confirm(chosen, batch_seed, "campaign_error", detail, list(world.log), out_dir)
    return None


def _reproduces(chosen: Campaign, actions: list[Any], invariant: str) -> int:
    """Steps a replay of ``actions`` takes to break ``invariant`` again (0: it does not)."""
    again = replay(Replay(chosen.name, chosen.world.kind, actions))
    return len(again.steps) if again.violation is not None and again.violation.invariant == invariant else 0


def minimise(chosen: Campaign, actions: list[Any], invariant: str) -> list[Any]:
    """Drop actions one at a time while the finding still shows (hypothesis shrinks the
    program it generated; this removes steps whose results later ones do not need)."""
    index = 0
    while index < len(actions):
        candidate = actions[:index] + actions[index + 1 :]
        steps = _reproduces(chosen, candidate, invariant)
        if steps:
            actions = candidate[:steps]
        else:
            index += 1
    return actions


def _confirm(
    chosen: Campaign, batch_seed: int, invariant: str, message: str, actions: list[Any], out_dir: Path | None
) -> Finding:
    """Replay the shrunk actions on a fresh reset, minimise them, write the replay file."""
    steps = _reproduces(chosen, actions, invariant)
    if steps:
        actions = minimise(chosen, actions[:steps], invariant)
        final = replay(Replay(chosen.name, chosen.world.kind, actions)).violation
        message = final.message if final is not None else message  # what the short program shows
    recorded = Replay(chosen.name, chosen.world.kind, actions, invariant, message, batch_seed)
    path = None
    if out_dir is not None:
        path = str(recorded.write(out_dir / f"{chosen.name}-{invariant}-{batch_seed}.json"))
    return Finding(chosen.name, invariant, message, len(actions), bool(steps), path, batch_seed)


@dataclass(frozen=True)
class Job:
    """What one worker runs: its slice of the seed space and its budget."""

    campaigns: tuple[str, ...]
    seed: int
    worker: int = 0
    workers: int = 1
    examples: int | None = None
    seconds: float | None = None
    out_dir: str | None = None
    #: With a time budget, follow every hypothesis batch with a mutation round.
    mutate: bool = True


def run_campaign(name: str, job: Job, on_progress: Progress | None = None) -> CampaignStats:
    """Run one campaign under ``job``'s budget (per campaign) until it ends or finds something."""
    chosen = campaign(name)
    world = world_of(chosen.world.kind)
    stats = CampaignStats(name)
    out_dir = Path(job.out_dir) if job.out_dir else None
    remaining = job.examples
    start = time.monotonic()
    batch = 0
    corpus: list[list[Any]] = []
    mutating = job.mutate and job.seconds is not None
    while True:
        count = BATCH if remaining is None else min(BATCH, remaining)
        before = (world.examples, world.executions, world.checks)
        batch_seed = job.seed * SEED_STRIDE + batch * job.workers + job.worker
        if mutating:
            world.history = []
        finding = _batch(chosen, batch_seed, count, out_dir)
        if mutating:
            corpus = (corpus + (world.history or []))[-CORPUS_MAX:]
            world.history = None
            if finding is None:
                deadline = start + (job.seconds or 0.0)
                round_ = _Round(Random(batch_seed), MUTATIONS * count, deadline)
                finding = _mutation_round(chosen, round_, corpus, out_dir, batch_seed)
        stats.examples += world.examples - before[0]
        stats.executions += world.executions - before[1]
        stats.invariant_checks += world.checks - before[2]
        stats.seconds = time.monotonic() - start
        if finding is not None:
            stats.findings.append(finding)
        if on_progress is not None:
            on_progress(stats)
        batch += 1
        if remaining is not None:
            remaining -= count
        if finding is not None or (remaining is not None and remaining <= 0):
            break
        if job.seconds is not None and stats.seconds >= job.seconds:
            break
    return stats


@dataclass(frozen=True)
class _Round:
    """A mutation round: its random source, how many programs at most, and when the budget ends."""

    rng: Random
    programs: int
    deadline: float = float("inf")


def _mutation_round(
    chosen: Campaign, round_: _Round, corpus: list[list[Any]], out_dir: Path | None, seed_: int
) -> Finding | None:
    """Mutated corpus programs through the world, until the round's count or deadline; the first
    finding, minimised, or None."""
    world = world_of(chosen.world.kind)
    mutator = Mutator(round_.rng, corpus)
    if not mutator.corpus:
        return None
    for _ in range(round_.programs):
        if time.monotonic() >= round_.deadline:
            break
        program = mutator.program()
        violation = run_program(world, program).violation
        if violation is not None:
            return _confirm(chosen, seed_, violation.invariant, violation.message, program, out_dir)
    return None


def run_job(job: Job, on_progress: Progress | None = None) -> list[CampaignStats]:
    """Every campaign of ``job`` in turn, each with its share of the time budget."""
    share = None if job.seconds is None else job.seconds / max(1, len(job.campaigns))
    results = []
    for name in job.campaigns:
        budget = Job(job.campaigns, job.seed, job.worker, job.workers, job.examples, share, job.out_dir, job.mutate)
        results.append(run_campaign(name, budget, on_progress))
    return results


class _Gather:
    """Sums the latest statistics of every worker per campaign, for one progress display."""

    def __init__(self, on_progress: Progress) -> None:
        self.on_progress = on_progress
        self.latest: dict[tuple[str, int], CampaignStats] = {}

    def report(self, worker: int, stats: CampaignStats) -> None:
        self.latest[stats.name, worker] = stats
        total = CampaignStats(stats.name)
        for (name, _worker), part in self.latest.items():
            if name == stats.name:
                total.merge(part)
        self.on_progress(total)


def run(
    campaigns: list[str] | None = None,
    *,
    seed: int = 0,
    examples: int | None = None,
    seconds: float | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    out_dir: Path | None = None,
    on_progress: Progress | None = None,
    mutate: bool = True,
) -> Summary:
    """Run campaigns (all by default) and gather one summary.

    ``examples`` is per campaign (shared among workers): pure hypothesis, a
    repeatable count. ``seconds`` is the whole run's budget (each worker
    spends it on all campaigns in turn); with ``mutate`` every hypothesis
    batch is followed by a mutation round (:mod:`fuzz.mutate`).
    ``on_progress`` gets a campaign's statistics (summed over workers) after each batch.
    Errors: ValueError (unknown campaign, no budget, workers < 1),
    RuntimeError (Ray not installed).
    """
    names = list(campaigns or sorted(REGISTRY))
    for name in names:
        campaign(name)
    if (examples is None) == (seconds is None):
        raise ValueError("give exactly one budget: examples or seconds")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    share = None if examples is None else max(1, -(-examples // workers))
    jobs = [
        Job(tuple(names), seed, w, workers, share, seconds, str(out_dir) if out_dir else None, mutate)
        for w in range(workers)
    ]
    start = time.monotonic()
    report = None if on_progress is None else _Gather(on_progress).report
    if ray_address is not None:
        from fuzz.cluster import run_on_ray

        results = run_on_ray(ray_address, jobs, report)
    elif workers == 1:
        results = [run_job(jobs[0], on_progress)]
    else:
        from fuzz.cluster import run_in_processes

        results = run_in_processes(jobs, report)
    summary = Summary(seed, workers)
    for worker_stats in results:
        for stats in worker_stats:
            summary.add(stats)
    summary.seconds = time.monotonic() - start
    return summary
