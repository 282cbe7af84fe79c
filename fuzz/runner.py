"""Run campaigns: budgets, seeds, statistics, findings, replay files, workers.

:func:`run_campaign` runs one campaign with hypothesis for a number of
examples or seconds, in batches of examples with seeds derived from the run's
seed (so a run is repeatable), and stops at the first finding: hypothesis
shrinks it, the runner replays the shrunk action list on a fresh reset to
confirm it, and writes it as a replay file.

Budgets are kept: an example is one program run from a reset (one
hypothesis test case, or one mutated program), and an examples budget runs
exactly that many per campaign; a time budget is checked before every
example, shrinking and minimising included, on a clock the caller may give
(tests drive it by the work done, never by the wall clock).

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from random import Random
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.stateful import run_state_machine_as_test

import fuzz.campaigns  # noqa: F401  (registers every campaign)
from fuzz.campaigns.base import REGISTRY, Campaign, CampaignMachine
from fuzz.mutate import Mutator
from fuzz.replay import Replay, replay, run_program, world_of
from fuzz.world import Violation, World

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
INF = float("inf")
#: A clock: seconds, from any origin (only differences and comparisons are used).
Clock = Callable[[], float]


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


def _clock(clock: Clock | None) -> Clock:
    """The clock to use: the one given, else this process's monotonic clock (looked up now)."""
    return clock if clock is not None else time.monotonic


def shared_clock() -> float:
    """The clock of jobs run in other processes or on other hosts: the wall clock, the one they share.

    A job's deadline is read on it by the parent and by the worker
    (hosts of a Ray cluster are assumed kept in step, by NTP or the like).
    """
    return time.time()


@dataclass(frozen=True)
class _Bounds:
    """Where a batch writes replay files, its clock, and when its time budget ends (on that clock)."""

    out_dir: Path | None
    clock: Clock
    deadline: float = INF

    def spent(self) -> bool:
        return self.clock() >= self.deadline


@dataclass(frozen=True)
class _Batch:
    """What one hypothesis run did: its finding (or None) and the examples it generated."""

    finding: Finding | None
    examples: int


class _Spent(KeyboardInterrupt):
    """Ends a hypothesis run from inside when its examples or its time are spent.

    A KeyboardInterrupt: the one exception hypothesis lets out of a test case
    without recording the test case (an Exception is a failure to shrink; any
    other is recorded, and hypothesis then finds a test case cut short before
    its first draw inconsistent with the ones before it).
    """


class _Examples:
    """The factory hypothesis calls for each test case: counts the examples and keeps the bounds.

    Hypothesis stops at ``max_examples`` *valid* test cases, and runs more when
    some ran out of data or were rejected: each of those ran from a reset too.
    So the count is kept here: once ``limit`` examples ran (and none failed),
    or once the deadline passed, the next test case ends the run
    (:class:`_Spent`). After a failure the test cases are hypothesis's
    shrinking, not new examples: they are not counted, and only the deadline
    stops them; the shortest failing program seen is kept for that case.
    """

    def __init__(self, chosen: Campaign, world: World, limit: int, bounds: _Bounds) -> None:
        self.chosen, self.world, self.limit, self.bounds = chosen, world, limit, bounds
        self.started = 0
        self.last: CampaignMachine | None = None
        #: (invariant, message, actions) of the shortest failing program so far.
        self.failure: tuple[str, str, list[Any]] | None = None

    def note(self) -> None:
        """Keep the last test case's failure if it is the shortest so far."""
        machine, self.last = self.last, None
        if machine is None or machine.failure is None or machine.program is None:
            return
        error = machine.failure
        if isinstance(error, Violation):
            invariant, message = error.invariant, error.message
        else:
            invariant, message = "campaign_error", _describe(error)
        if self.failure is None or len(machine.program) < len(self.failure[2]):
            self.failure = (invariant, message, machine.program)

    def machine(self) -> CampaignMachine:
        """A fresh machine (its world reset), or :class:`_Spent` when the batch's budget is spent."""
        self.note()
        if self.bounds.spent() or (self.failure is None and self.started >= self.limit):
            raise _Spent
        if self.failure is None:
            self.started += 1
        self.last = self.chosen.machine(self.world)
        return self.last


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _batch(chosen: Campaign, batch_seed: int, examples: int, bounds: _Bounds) -> _Batch:
    """One hypothesis run of exactly ``examples`` examples (fewer when it finds something or the
    deadline passes); the finding it shrank to (confirmed by a replay), or None."""
    world = world_of(chosen.world.kind)
    made = _Examples(chosen, world, examples, bounds)

    def factory() -> CampaignMachine:
        return made.machine()

    seed(batch_seed)(factory)
    try:
        # hypothesis takes any callable returning a state machine (its type says the class).
        run_state_machine_as_test(factory, settings=_settings(examples))  # type: ignore[arg-type]
    except _Spent:
        made.note()
        if made.failure is None:
            return _Batch(None, made.started)
        invariant, message, actions = made.failure  # shrinking cut short by the deadline
        return _Batch(_confirm(chosen, batch_seed, invariant, message, actions, bounds), made.started)
    except Violation as violation:
        found = _confirm(chosen, batch_seed, violation.invariant, violation.message, list(world.log), bounds)
        return _Batch(found, made.started)
    except Exception as exc:  # the campaign's own machinery failed: still reported, with its last actions
        return _Batch(_confirm(chosen, batch_seed, "campaign_error", _describe(exc), list(world.log), bounds),
                      made.started)  # fmt: skip
    return _Batch(None, made.started)


def _reproduces(chosen: Campaign, actions: list[Any], invariant: str) -> int:
    """Steps a replay of ``actions`` takes to break ``invariant`` again (0: it does not)."""
    again = replay(Replay(chosen.name, chosen.world.kind, actions))
    return len(again.steps) if again.violation is not None and again.violation.invariant == invariant else 0


def minimise(
    chosen: Campaign, actions: list[Any], invariant: str, *, stop: Callable[[], bool] | None = None
) -> list[Any]:
    """Drop actions one at a time while the finding still shows (hypothesis shrinks the
    program it generated; this removes steps whose results later ones do not need).

    ``stop`` ends the search early (the time budget): every program kept on
    the way still shows the finding.
    """
    index = 0
    while index < len(actions) and not (stop is not None and stop()):
        candidate = actions[:index] + actions[index + 1 :]
        steps = _reproduces(chosen, candidate, invariant)
        if steps:
            actions = candidate[:steps]
        else:
            index += 1
    return actions


def _confirm(
    chosen: Campaign, batch_seed: int, invariant: str, message: str, actions: list[Any], bounds: _Bounds
) -> Finding:
    """Replay the shrunk actions on a fresh reset, minimise them (until the deadline), write the replay file."""
    steps = _reproduces(chosen, actions, invariant)
    if steps:
        actions = minimise(chosen, actions[:steps], invariant, stop=bounds.spent)
        final = replay(Replay(chosen.name, chosen.world.kind, actions)).violation
        message = final.message if final is not None else message  # what the short program shows
    recorded = Replay(chosen.name, chosen.world.kind, actions, invariant, message, batch_seed)
    path = None
    if bounds.out_dir is not None:
        path = str(recorded.write(bounds.out_dir / f"{chosen.name}-{invariant}-{batch_seed}.json"))
    return Finding(chosen.name, invariant, message, len(actions), bool(steps), path, batch_seed)


@dataclass(frozen=True)
class Job:
    """What one worker runs: its slice of the seed space and its budget.

    ``examples`` is this worker's exact share of each campaign's examples;
    ``deadline`` is when the run's time budget ends, on the clock the job runs
    with (:func:`shared_clock` in another process).
    """

    campaigns: tuple[str, ...]
    seed: int
    worker: int = 0
    workers: int = 1
    examples: int | None = None
    deadline: float | None = None
    out_dir: str | None = None
    #: With a time budget, follow every hypothesis batch with a mutation round.
    mutate: bool = True


def run_campaign(name: str, job: Job, on_progress: Progress | None = None, clock: Clock | None = None) -> CampaignStats:
    """Run one campaign under ``job``'s budget until it is spent or the campaign finds something.

    With ``job.examples``, exactly that many examples (fewer only after a
    finding); with ``job.deadline`` (on ``clock``), no example starts after it.
    """
    clock = _clock(clock)
    chosen = campaign(name)
    stats = CampaignStats(name)
    deadline = INF if job.deadline is None else job.deadline
    remaining = job.examples
    begin = clock()
    if remaining == 0 or begin >= deadline:
        return stats
    world = world_of(chosen.world.kind)
    bounds = _Bounds(Path(job.out_dir) if job.out_dir else None, clock, deadline)
    batch = 0
    corpus: list[list[Any]] = []
    mutating = job.mutate and job.deadline is not None
    while True:
        count = BATCH if remaining is None else min(BATCH, remaining)
        before = (world.executions, world.checks)
        batch_seed = job.seed * SEED_STRIDE + batch * job.workers + job.worker
        if mutating:
            world.history = []
        result = _batch(chosen, batch_seed, count, bounds)
        finding = result.finding
        stats.examples += result.examples
        if mutating:
            corpus = (corpus + (world.history or []))[-CORPUS_MAX:]
            world.history = None
            if finding is None:
                round_ = _Round(Random(batch_seed), MUTATIONS * count, deadline, clock)
                finding = _mutation_round(chosen, round_, corpus, bounds.out_dir, batch_seed)
                stats.examples += round_.ran
        stats.executions += world.executions - before[0]
        stats.invariant_checks += world.checks - before[1]
        stats.seconds = clock() - begin
        if finding is not None:
            stats.findings.append(finding)
        if on_progress is not None:
            on_progress(stats)
        batch += 1
        if remaining is not None:
            remaining -= result.examples
            if remaining <= 0 or result.examples == 0:  # spent, or hypothesis has nothing left to try
                break
        if finding is not None or bounds.spent():
            break
    return stats


@dataclass
class _Round:
    """A mutation round: its random source, how many programs at most, when the budget ends (on
    ``clock``, by default this process's monotonic clock); ``ran`` counts the programs it ran."""

    rng: Random
    programs: int
    deadline: float = INF
    clock: Clock | None = None
    ran: int = 0


def _mutation_round(
    chosen: Campaign, round_: _Round, corpus: list[list[Any]], out_dir: Path | None, seed_: int
) -> Finding | None:
    """Mutated corpus programs through the world, until the round's count or deadline; the first
    finding, minimised (until the deadline), or None."""
    world = world_of(chosen.world.kind)
    mutator = Mutator(round_.rng, corpus)
    if not mutator.corpus:
        return None
    bounds = _Bounds(out_dir, _clock(round_.clock), round_.deadline)
    for _ in range(round_.programs):
        if bounds.spent():
            break
        program = mutator.program()
        round_.ran += 1
        violation = run_program(world, program).violation
        if violation is not None:
            return _confirm(chosen, seed_, violation.invariant, violation.message, program, bounds)
    return None


def run_job(job: Job, on_progress: Progress | None = None, clock: Clock | None = None) -> list[CampaignStats]:
    """Every campaign of ``job`` in turn, each until the end of its slot of the time budget.

    The time left when the job starts (a worker starts late: the budget is
    the run's) is cut into equal slots, one per campaign, fixed then: a
    campaign that ends early (a finding) leaves its time to the next one.
    """
    clock = _clock(clock)
    begin = clock()
    results = []
    count = len(job.campaigns)
    for index, name in enumerate(job.campaigns):
        deadline = None
        if job.deadline is not None:
            deadline = begin + max(0.0, job.deadline - begin) * (index + 1) / count
        results.append(run_campaign(name, replace(job, deadline=deadline), on_progress, clock))
    return results


def examples_share(examples: int, workers: int, worker: int) -> int:
    """Worker ``worker``'s exact share of ``examples``: the shares of all workers add up to it."""
    return examples // workers + (1 if worker < examples % workers else 0)


def plan_jobs(
    names: list[str], *, seed: int, examples: int | None, start: float, seconds: float | None, workers: int,
    out_dir: Path | None = None, mutate: bool = True,
) -> list[Job]:  # fmt: skip
    """One job per worker that has work: exact shares of the examples, one deadline for all."""
    deadline = None if seconds is None else start + seconds
    jobs = []
    for w in range(workers):
        share = None if examples is None else examples_share(examples, workers, w)
        if share != 0:
            jobs.append(Job(tuple(names), seed, w, workers, share, deadline, str(out_dir) if out_dir else None,
                            mutate))  # fmt: skip
    return jobs


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
    clock: Clock | None = None,
) -> Summary:
    """Run campaigns (all by default) and gather one summary.

    ``examples`` is per campaign, exactly (split among the workers; fewer only
    when a finding ends the campaign): pure hypothesis, a repeatable count.
    ``seconds`` is the whole run's budget, counted from this call (starting
    workers or Ray is spent from it): each worker spends it on all campaigns
    in turn, each campaign its slot, and no example starts after its slot
    ends. With ``mutate`` every hypothesis batch is followed by a mutation
    round (:mod:`fuzz.mutate`). ``clock`` is the clock of a run in this
    process (default: the monotonic clock); workers in other processes read
    the deadline on :func:`shared_clock`. ``on_progress`` gets a campaign's
    statistics (summed over workers) after each batch.
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
    clock = _clock(clock)
    here = ray_address is None and workers == 1
    job_clock = clock if here else shared_clock
    began = clock()
    jobs = plan_jobs(
        names, seed=seed, examples=examples, start=job_clock(), seconds=seconds, workers=workers, out_dir=out_dir,
        mutate=mutate,
    )  # fmt: skip
    report = None if on_progress is None else _Gather(on_progress).report
    if ray_address is not None:
        from fuzz.cluster import run_on_ray

        results = run_on_ray(ray_address, jobs, report)
    elif here:
        results = [run_job(jobs[0], on_progress, clock)]
    else:
        from fuzz.cluster import run_in_processes

        results = run_in_processes(jobs, report)
    summary = Summary(seed, workers)
    for name in names:  # every campaign has a row, the ones no worker had time for too
        summary.add(CampaignStats(name))
    for worker_stats in results:
        for stats in worker_stats:
            summary.add(stats)
    summary.seconds = clock() - began
    return summary
