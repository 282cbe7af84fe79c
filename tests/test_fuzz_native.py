"""The native campaign: ring 0's native MAP, UNMAP and YIELD against its Python handlers (docs/fuzzing.md).

A bounded seeded run must be clean; a handler made to differ from the
native path (the entry it writes, or the frame it accepts) must be found and
shrunk to a short replay that names the difference, and run clean again on
the real SPK.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import spk._paging as paging
from fuzz.replay import load, replay
from fuzz.runner import run
from spk.abi import Hypercall, Status
from spk.errors import SpkError


def test_the_native_campaign_runs_clean() -> None:
    summary = run(["native"], seed=0, examples=30)
    stats = summary.campaigns["native"]
    assert summary.findings == []
    assert stats.examples == 30 and stats.invariant_checks == stats.executions >= 30


def test_an_entry_the_handler_writes_otherwise_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """MAP's handler made to leave out the accessed bit: the native path, which sets it, now differs."""
    monkeypatch.setattr(paging, "PTE_A", 0)
    [finding] = run(["native"], seed=0, examples=100, out_dir=tmp_path).findings
    assert finding.invariant == "native_agrees" and "RAM at" in finding.message, finding
    assert finding.reproduced and finding.steps <= 4
    recorded = load(Path(str(finding.replay_file)))
    assert recorded.actions[-1][:2] == ("hypercall", Hypercall.MAP)
    monkeypatch.undo()
    assert replay(recorded).clean


def test_a_rule_only_the_handler_checks_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAP's handler made to refuse a frame mapped already, which the native path accepts: the answers differ."""
    original = paging.AddressSpace.check_map

    def stricter(self: paging.AddressSpace, va: int, mfn: int, write: bool, user: bool) -> None:
        original(self, va, mfn, write, user)
        if self.frames.map_counts[mfn]:
            raise SpkError(Status.DENIED, "made stricter than the native path")

    monkeypatch.setattr(paging.AddressSpace, "check_map", stricter)
    [finding] = run(["native"], seed=0, examples=100).findings
    assert finding.invariant == "native_agrees" and "the answer was 0" in finding.message, finding
    assert finding.reproduced and finding.steps <= 4
