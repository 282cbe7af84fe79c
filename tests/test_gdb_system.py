"""Ring 1's side of debugging: System.attach_debugger, its Debugger protocol, and determinism at system scale.

A scripted debugger (no gdb, no socket) stops, steps, continues, sets
breakpoints and interrupts at random on the example system (the reference
C kernel and its apps: syscalls, timers, app faults, port I/O); every event
of the run, at the same virtual time, must be the undebugged run's.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from spgs.system import DebugAction, System, load_and_plan
from spk import DebugSession, DebugStop, MachineEvent, PartitionInfo
from spk.abi import APP_IMAGE_VADDR, KERNEL_IMAGE_VADDR

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "partitions.toml"


class Scripted:
    """A debugger that answers at random (seeded), within a budget of stops."""

    def __init__(self, seed: int, step: float, limit: int, *, interrupts: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.step, self.limit, self.interrupts = step, limit, interrupts
        self.stops: list[DebugStop] = []
        self.ended: tuple[str, int | None] | None = None

    def on_stop(self, session: DebugSession, stop: DebugStop) -> DebugAction:
        self.stops.append(stop)
        assert session.registers()["rip"] == stop.rip
        session.read_memory(stop.rip, 1)
        if len(self.stops) == 1:
            for offset in (0, 0x10, 0x40):
                session.set_breakpoint(APP_IMAGE_VADDR + offset)
            session.set_breakpoint(KERNEL_IMAGE_VADDR + 0x20)
        if len(self.stops) > self.limit:
            return "detach"
        return "step" if self.rng.random() < self.step else "continue"

    def on_end(self, state: str, exit_code: int | None) -> None:
        self.ended = (state, exit_code)

    def interrupt_requested(self) -> bool:
        return self.rng.random() < self.interrupts


def _run(debugger: Scripted | None = None, target: str = "") -> tuple[list[MachineEvent], list[PartitionInfo]]:
    events: list[MachineEvent] = []
    loaded, plans = load_and_plan(EXAMPLE)
    system = System(loaded, plans, events.append, trace_hypercalls=True)
    if debugger is not None:
        system.attach_debugger(target, debugger)
    report = system.run(loaded.description.system.max_ticks)
    return events, report.partitions


@pytest.fixture(scope="module")
def undebugged() -> tuple[list[MachineEvent], list[PartitionInfo]]:
    return _run()


@pytest.mark.parametrize(
    ("target", "seed", "step", "limit"),
    [("alpha", 1, 1.0, 3000), ("beta", 1, 1.0, 3000), ("beta", 2, 0.5, 3000), ("gamma", 3, 0.05, 100_000)],
)
def test_a_debugged_system_runs_as_the_undebugged_one(
    undebugged: tuple[list[MachineEvent], list[PartitionInfo]], target: str, seed: int, step: float, limit: int
) -> None:
    debugger = Scripted(seed, step, limit)
    events, infos = _run(debugger, target)
    assert len(debugger.stops) >= 5
    assert [s.time for s in debugger.stops] == sorted(s.time for s in debugger.stops)
    assert events == undebugged[0]
    assert [i.counters for i in infos] == [i.counters for i in undebugged[1]]


def test_the_debugger_hears_the_end_of_its_partition() -> None:
    debugger = Scripted(0, 0.0, 10, interrupts=0.0)
    _run(debugger, "alpha")
    assert debugger.ended == ("exited", 0)
    assert debugger.stops[0].kind == "entry" and debugger.stops[0].time == 0


def test_kill_ends_the_run_at_the_stop() -> None:
    class Killer(Scripted):
        def on_stop(self, session: DebugSession, stop: DebugStop) -> DebugAction:
            super().on_stop(session, stop)
            return "kill" if len(self.stops) == 3 else "step"

    events: list[MachineEvent] = []
    loaded, plans = load_and_plan(EXAMPLE)
    system = System(loaded, plans, events.append)
    killer = Killer(0, 1.0, 10, interrupts=0.0)
    system.attach_debugger("beta", killer)
    report = system.run(loaded.description.system.max_ticks)
    assert report.end_time == killer.stops[-1].time
    assert report.major_frames == 0 and killer.ended is None


def test_only_a_running_partition_can_be_debugged() -> None:
    loaded, plans = load_and_plan(EXAMPLE)
    system = System(loaded, plans, lambda _e: None)
    with pytest.raises(ValueError, match="no running partition 'delta' to debug"):
        system.attach_debugger("delta", Scripted(0, 0.0, 1))
