"""Machine snapshots: a restore puts every bit of state back, and the run after it repeats exactly."""

from __future__ import annotations

import hashlib

import pytest

from spk import InternalError, Machine
from tests.guests import Recorder, bundled, refsystem, run_until_done


def fingerprint(m: Machine) -> tuple[object, ...]:
    """RAM, the frame table, virtual time and each partition's visible state."""
    frames = tuple((f.owner, f.type, f.map_count, f.writable_count) for f in m.frames.entries)
    infos = tuple((i.state, i.exit_code, i.frames_in_use, vars(i.counters)) for i in (m.info(p) for p in m.partitions))
    return hashlib.sha256(bytes(m.ram.view)).hexdigest(), frames, m.now, repr(infos)


def test_the_run_after_a_restore_is_the_run_after_the_snapshot() -> None:
    recorder = Recorder()
    m, pid = refsystem(["hello", "counter", "sleeper"], recorder)
    end = m.now + 30_000
    m.run(pid, end)
    m.advance(end)
    snapshot = m.snapshot()
    before = fingerprint(m)
    recorder.events.clear()
    run_until_done(m, [pid])
    first_events, first = list(recorder.events), fingerprint(m)
    assert first != before

    m.restore(snapshot)
    assert fingerprint(m) == before
    recorder.events.clear()
    run_until_done(m, [pid])
    assert fingerprint(m) == first
    assert [(e.event, e.partition, e.args) for e in recorder.events] == [
        (e.event, e.partition, e.args) for e in first_events
    ]


def test_a_snapshot_survives_many_restores_and_partition_lifecycles() -> None:
    m = Machine(4 << 20)
    image = bundled("kernel", "bench_yield")
    keep = m.create_partition("keep", image, [], 32)
    snapshot = m.snapshot()
    before = fingerprint(m)
    for _ in range(3):
        extra = m.create_partition("extra", image, [], 32)
        m.destroy_partition(keep)
        m.run(extra, m.now + 1_000)
        m.restore(snapshot)
        assert fingerprint(m) == before
        assert list(m.partitions) == [keep]
        m.check_invariants()


def test_changed_frames_names_exactly_the_frames_written() -> None:
    m = Machine(2 << 20)
    snapshot = m.snapshot()
    assert m.changed_frames(snapshot) == []
    m.ram.write(0x1_2345, b"x")
    m.ram.write(0x3_0000 - 1, b"yz")  # crosses into the next frame
    assert m.changed_frames(snapshot) == [0x12, 0x2F, 0x30]
    assert m.changed_frames(snapshot, [(0x20, 0x10)]) == [0x2F]
    m.restore(snapshot)
    assert m.changed_frames(snapshot) == []


def test_a_snapshot_restores_only_on_its_own_machine() -> None:
    first, second = Machine(2 << 20), Machine(2 << 20)
    snapshot = first.snapshot()
    with pytest.raises(InternalError, match="only on the machine that took it"):
        second.restore(snapshot)
    with pytest.raises(InternalError, match="compares only on the machine that took it"):
        second.changed_frames(snapshot)
    assert first.token != second.token  # ids are reused by Python: snapshots name machines by token


@pytest.mark.parametrize("runs", [[(-5, 3)], [(200, 1000)], [(0, -1)]])
def test_changed_frames_refuses_frames_outside_ram(runs: list[tuple[int, int]]) -> None:
    m = Machine(1 << 20)
    with pytest.raises(InternalError, match="not all in RAM"):
        m.changed_frames(m.snapshot(), runs)


def test_a_restore_that_fails_leaves_the_machine_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(4 << 20)
    pid = m.create_partition("p", bundled("kernel", "bench_yield"), [], 32)
    snapshot = m.snapshot()
    m.run(pid, m.now + 1_000)
    before = fingerprint(m)

    def no_context() -> None:
        raise InternalError("no engine context left")

    monkeypatch.setattr(m.engine, "new_context", no_context)
    with pytest.raises(InternalError, match="no engine context"):
        m.restore(snapshot)
    monkeypatch.undo()
    assert fingerprint(m) == before
    assert m.run(pid, m.now + 1_000).reason == "yield"  # its context is still whole


def test_partial_recount_checks_the_named_partitions() -> None:
    m = Machine(4 << 20)
    image = bundled("kernel", "bench_yield")
    a, b = m.create_partition("a", image, [], 32), m.create_partition("b", image, [], 32)
    m.check_invariants([a])
    frame = next(f for f in m.frames.entries if f.owner == b and f.map_count)
    frame.map_count += 1  # a count of b's drifts: only a recount that includes b sees it
    m.check_invariants([a])
    with pytest.raises(InternalError, match="counts"):
        m.check_invariants([b])
    with pytest.raises(InternalError, match="counts"):
        m.check_invariants()
