"""The example systems of examples/, booted from their TOML, as a user launches them."""

from __future__ import annotations

from pathlib import Path

from spgs.config import load
from spgs.system import System, plan
from tests.guests import Recorder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, ticks: int | None = None) -> tuple[System, Recorder]:
    rec = Recorder()
    config = load(EXAMPLES / name)
    system = System(config, plan(config), rec)
    system.run(ticks or config.description.system.max_ticks)
    return system, rec


def test_producer_consumer_queuing_and_sampling() -> None:
    system, rec = run("producer_consumer.toml")
    assert [x for x in rec.lines("consumer") if x.startswith("consumer: got")] == [
        f"consumer: got msg {n}" for n in range(1, 6)
    ]
    readings = [line.split() for line in rec.lines("monitor") if line.startswith("monitor: value")]
    # The sensor writes in its window just before the monitor's: each read
    # sees the latest value, one window old, inside the refresh period.
    assert [int(r[2]) for r in readings] == [10, 20, 30, 40, 50, 60]
    assert all(int(r[4]) <= 60_000 for r in readings)
    assert {i.name: i.state for i in system.report(0).partitions} == dict.fromkeys(
        ("producer", "consumer", "sensor", "monitor"), "exited"
    )
    system.machine.check_invariants()


def test_arinc_faulty_partition_is_restarted_then_halted_by_policy() -> None:
    system, rec = run("arinc.toml")
    actions = [(e.args["event"], e.args["action"]) for e in rec.of("health_action") if e.partition == "faulty"]
    assert actions == [("memory_violation", "cold_restart")] * 2 + [("memory_violation", "halt")]
    faulty = next(i for i in system.report(0).partitions if i.name == "faulty")
    assert faulty.restarts == 2 and faulty.state == "stopped"


def test_arinc_fault_leaves_the_other_windows_unchanged() -> None:
    _faulty, with_fault = run("arinc.toml", 1_200_000)
    _healthy, without = run("arinc_healthy.toml", 1_200_000)

    def healthy_view(rec: Recorder) -> list[tuple[str, str, int, object]]:
        keep = ("window", "console", "hypercall")
        return [(e.partition, e.event, e.time, e.args.get("end", e.args.get("text")))
                for e in rec.events if e.partition in ("alpha", "beta") and e.event in keep]  # fmt: skip

    assert healthy_view(with_fault) == healthy_view(without)
    assert any(e.event == "window" for e in with_fault.events if e.partition == "alpha")


def test_management_by_a_system_partition_only() -> None:
    system, rec = run("management.toml")
    assert "manager: starting later" in rec.lines("manager")
    assert "hello from ring 3" in rec.lines("later")
    assert rec.lines("intruder") == ["intruder: part_list -2", "intruder: part_control -2", "intruder: port_open -8"]
    started = [e.args for e in rec.of("management")]
    assert started == [{"requester": "manager", "op": "start", "outcome": "done"}]
    assert system.pid_of("later") is not None
