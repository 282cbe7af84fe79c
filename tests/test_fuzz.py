"""The isolation campaigns: bounded seeded runs, deliberately broken checks found and shrunk, replays.

The profile here is small (``make fuzz`` and ``spk fuzz --seconds`` run the
long ones); every campaign still runs, and each class of oracle is shown to
catch a ring-0 check switched off by a monkeypatch, within the CI budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import spk._hypercalls as hypercalls
import spk._paging as paging
from fuzz.replay import Replay, ReplayError, load, replay
from fuzz.runner import run
from spk.abi import ABI_VERSION, Hypercall
from spk_tools.cli import app

REGRESSIONS = Path(__file__).parent / "regressions"
#: Examples per campaign in `make test` (each example is up to fuzz.runner.STEPS steps).
PROFILE = {"hypercalls": 40, "code": 20, "noninterference": 20}


@pytest.mark.parametrize("name", sorted(PROFILE))
def test_campaign_runs_clean_on_the_spk(name: str) -> None:
    summary = run([name], seed=0, examples=PROFILE[name])
    stats = summary.campaigns[name]
    assert summary.findings == []
    assert stats.examples == PROFILE[name]  # exactly the budget
    assert stats.executions >= stats.examples  # every example makes at least one step
    assert stats.invariant_checks == stats.executions


def comparable(summary: Any) -> dict[str, Any]:
    data = summary.to_json()
    for key in ("seconds", "execs_per_s"):
        data.pop(key)
    for stats in data["campaigns"].values():
        stats.pop("seconds")
        stats.pop("execs_per_s")
    return dict(data)


def test_the_same_seed_gives_the_same_run() -> None:
    assert comparable(run(["hypercalls"], seed=5, examples=6)) == comparable(run(["hypercalls"], seed=5, examples=6))


@pytest.fixture
def no_owner_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MAP without its ownership rule: the check faked to see every frame as the caller's."""
    original = paging.AddressSpace.check_map

    def check_map(self: paging.AddressSpace, va: int, mfn: int, write: bool, user: bool) -> None:
        if not self.frames.valid(mfn):
            return original(self, va, mfn, write, user)
        frame = self.frames[mfn]
        owner, frame.owner = frame.owner, self.owner
        try:
            original(self, va, mfn, write, user)
        finally:
            frame.owner = owner

    monkeypatch.setattr(paging.AddressSpace, "check_map", check_map)
    yield


def test_a_broken_ownership_check_is_found_and_shrunk_to_a_short_replay(
    no_owner_check: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = run(["hypercalls"], seed=0, examples=200, out_dir=tmp_path)
    [finding] = summary.findings
    assert finding.invariant == "frame_accounting" and "foreign frame" in finding.message
    assert finding.reproduced and finding.steps <= 3
    recorded = load(Path(str(finding.replay_file)))
    assert [a[0] for a in recorded.actions] == ["hypercall"] * finding.steps
    assert recorded.actions[-1][1] == Hypercall.MAP
    again = replay(recorded)
    assert again.violation is not None and again.violation.invariant == "frame_accounting"
    result = CliRunner().invoke(app, ["replay", str(finding.replay_file)])
    assert result.exit_code == 1, result.output
    assert "finding reproduced" in result.output

    monkeypatch.undo()  # the real SPK: the same program is refused, the replay runs clean
    assert replay(recorded).clean
    result = CliRunner().invoke(app, ["replay", str(finding.replay_file)])
    assert result.exit_code == 0 and "every invariant held" in result.output


def test_a_leak_into_a_hypercall_result_breaks_noninterference(monkeypatch: pytest.MonkeyPatch) -> None:
    """VERSION made to count every partition's data frames: the secret's allocations show."""
    spec = hypercalls.TABLE[Hypercall.VERSION]

    def leaky(m: Any, p: Any, ctx: Any, a: tuple[int, ...]) -> object:
        return ABI_VERSION + sum(1 for f in m.frames.entries if f.type.value == "data")

    monkeypatch.setitem(hypercalls.TABLE, int(Hypercall.VERSION), replace(spec, handler=leaky))
    [finding] = run(["noninterference"], seed=0, examples=300).findings
    assert finding.invariant == "noninterference", finding
    assert finding.reproduced and finding.steps <= 4


def test_regressions_replay_clean() -> None:
    files = sorted(REGRESSIONS.glob("*.json"))
    assert files, "tests/regressions holds the replays of past findings"
    for path in files:
        result = replay(load(path))
        assert result.clean, f"{path.name}: {result.violation}"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "not JSON"),
        ('{"format": "other"}', "not a replay file"),
        ('{"format": "spk-fuzz-replay/1", "world": "agent", "actions": [[1]]}', "'actions' must be"),
        ('{"format": "spk-fuzz-replay/1", "world": "mars", "actions": []}', "unknown world 'mars'"),
    ],
)
def test_a_bad_replay_file_is_refused_with_its_name(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ReplayError, match=error):
        load(path)
    result = CliRunner().invoke(app, ["replay", str(path)])
    assert result.exit_code == 2 and "bad.json" in result.output


@pytest.mark.parametrize("action", [["hypercall", "abc"], ["code", "zz"], ["victims_run", 1, 2]])
def test_a_replay_whose_action_cannot_run_is_a_bad_file_not_a_finding(tmp_path: Path, action: list[Any]) -> None:
    path = Replay("hypercalls", "agent", [tuple(action)]).write(tmp_path / "bad-action.json")
    assert replay(load(path)).violation is not None
    assert replay(load(path)).violation.invariant == "campaign_error"  # type: ignore[union-attr]
    result = CliRunner().invoke(app, ["replay", str(path)])
    assert result.exit_code == 2 and "bad-action.json: action 1 cannot run" in result.output


def test_an_exception_out_of_ring0_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from spk import Machine

    original = Machine.run

    def run_lost(self: Machine, pid: int, until: int) -> Any:
        self.partitions = {}  # ring 0's own state broken: its run raises KeyError from inside spk
        return original(self, pid, until)

    monkeypatch.setattr(Machine, "run", run_lost)
    again = replay(Replay("hypercalls", "agent", [("hypercall", Hypercall.VERSION)]))
    assert again.violation is not None and again.violation.invariant == "no_host_exception"
    monkeypatch.undo()
    assert replay(Replay("hypercalls", "agent", [("hypercall", Hypercall.VERSION)])).clean


def test_a_victims_frame_handed_to_the_agent_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """FRAME_ALLOC made to take a victim's unused quota frame (table, index and pool counts kept
    consistent): the oracles see a frame move between partitions, whatever the agent does next."""
    from spk._frames import FrameType

    def stealing_alloc(m: Any, p: Any, ctx: Any, a: tuple[int, ...]) -> object:
        table = m.frames
        victim = next(pid for pid in m.partitions if pid != p.pid)
        mfn = next(x for x in table.owned(victim) if table[x].type is FrameType.POOL)
        table._owned[victim].remove(mfn)
        table._pool[victim] -= 1
        table._owned[p.pid] = sorted([*table._owned[p.pid], mfn])
        frame = table.entries[mfn]
        frame.owner, frame.type = p.pid, FrameType.DATA
        return mfn

    spec = hypercalls.TABLE[Hypercall.FRAME_ALLOC]
    monkeypatch.setitem(hypercalls.TABLE, int(Hypercall.FRAME_ALLOC), replace(spec, handler=stealing_alloc))
    [finding] = run(["hypercalls"], seed=0, examples=100).findings
    assert finding.invariant == "frame_accounting" and finding.steps == 1, finding


def test_spk_fuzz_reports_json_and_exits_zero_when_clean(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fuzz", "--examples", "2", "--seed", "1", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert set(data["campaigns"]) >= set(PROFILE)
    assert data["executions"] > 0 and data["findings"] == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--campaign", "nope"], "unknown campaign 'nope'"),
        (["--seconds", "1", "--examples", "2"], "either --seconds"),
        (["--examples", "0"], "at least 1"),
        (["--examples", "1", "--out", "README.md/findings"], "cannot write replay files"),
    ],
)
def test_spk_fuzz_refuses_bad_usage(args: list[str], error: str) -> None:
    result = CliRunner().invoke(app, ["fuzz", *args])
    assert result.exit_code == 2 and error in result.output


def test_workers_split_the_examples_and_merge_their_statistics() -> None:
    progress: list[Any] = []
    summary = run(["hypercalls"], seed=2, examples=6, workers=2, on_progress=progress.append)
    stats = summary.campaigns["hypercalls"]
    assert summary.workers == 2 and stats.examples == 6 and summary.findings == []
    assert progress, "the workers' batches are reported while they run"
    assert (progress[-1].examples, progress[-1].executions) == (stats.examples, stats.executions)


def test_replay_of_a_recorded_program_repeats_its_results() -> None:
    recorded = Replay("hypercalls", "agent", [("hypercall", Hypercall.ASPACE_CREATE), ("hypercall", Hypercall.VERSION)])
    first, second = replay(recorded), replay(recorded)
    assert first.steps == second.steps and first.clean
    assert first.steps[1][1] == ABI_VERSION
