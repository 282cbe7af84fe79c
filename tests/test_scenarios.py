"""Scenario tests: boot whole systems from a TOML description each."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from spgs.config import load
from spgs.system import System, plan
from spk import MachineEvent, TraceWriter
from tests.guests import Recorder

ROOT = Path(__file__).resolve().parent.parent


def boot(path: Path, listener: object) -> System:
    config = load(path)
    return System(config, plan(config), listener)  # type: ignore[arg-type]


def test_example_system_contains_the_misbehaving_apps() -> None:
    rec = Recorder()
    system = boot(ROOT / "partitions.toml", rec)
    report = system.run(1_500_000)
    states = {p.name: p for p in report.partitions}
    assert states["alpha"].state == "exited" and states["alpha"].exit_code == 0
    assert states["beta"].state == "exited" and states["beta"].exit_code == 0
    # Every misbehaving app is stopped by its own kernel, bad_spin by the watchdog; then gamma ends.
    assert states["gamma"].state == "exited" and states["gamma"].exit_code == 0
    gamma = rec.lines("gamma")
    assert sum("killed" in line for line in gamma) == 8
    assert sum("killed: watchdog" in line for line in gamma) == 1
    assert gamma[-1] == "refkernel: all apps done"
    assert not any("SUCCEEDED" in line or "LEAKED" in line for line in gamma)
    assert "hello from ring 3" in rec.lines("alpha")
    assert [f"counter: {i}" for i in range(1, 6)] == [x for x in rec.lines("alpha") if x.startswith("counter")]
    assert rec.lines("beta")[-1] == "refkernel: all apps done"
    system.machine.check_invariants()


def test_windows_follow_the_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(textwrap.dedent("""
        [system]
        memory = "8MiB"
        [[partition]]
        name = "a"
        image = "bench_compute"
        window = 3000
        [[partition]]
        name = "b"
        image = "bench_compute"
        window = 5000
    """))
    rec = Recorder()
    system = boot(cfg, rec)
    system.run(16_000)
    starts = [(e.partition, e.time, e.args["end"]) for e in rec.of("window")]
    assert starts == [("a", 0, 3000), ("b", 3000, 8000), ("a", 8000, 11000), ("b", 11000, 16000)]
    assert [p.counters.instructions for p in system.report(2).partitions] == [6000, 10000]


def _trace(seed: int) -> tuple[str, list[str]]:
    import io

    config = load(ROOT / "partitions.toml")
    config.description.system.seed = seed
    stream = io.StringIO()
    writer = TraceWriter(stream)
    lines: list[str] = []

    def listener(event: MachineEvent) -> None:
        writer(event)
        if event.event == "console":
            lines.append(f"{event.partition}:{event.time}:{event.args['text']}")

    system = System(config, plan(config), listener, trace_hypercalls=True)
    system.run(600_000)
    return stream.getvalue(), lines


def test_same_seed_gives_byte_identical_trace() -> None:
    first, _ = _trace(7)
    second, _ = _trace(7)
    assert first == second
    assert all(json.loads(line)["event"] for line in first.splitlines())


def test_placement_seed_changes_nothing_partitions_observe() -> None:
    _, seven = _trace(7)
    _, other = _trace(12345)
    assert seven == other
