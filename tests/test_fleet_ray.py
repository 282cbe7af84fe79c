"""``spk fleet`` on Ray: hosts as actors on one local Ray instance.

Ray takes seconds to start, so one instance and one run serve every check
here; ``spk fleet`` uses an instance that is already up and leaves it
running. The run on Ray is compared with the same run in this
process: the decisions come from the file, the seed and the gossip only, so
the reports must be equal, whatever order Ray ran the actors in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from spgs.fleet.config import load_fleet
from spgs.fleet.report import FleetReport
from spgs.fleet.runner import LocalTransport, run_fleet
from spk_tools.cli import app

ray = pytest.importorskip("ray", reason="the cluster extra (pip install '.[cluster]') is not installed")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fleet.toml"


def test_spk_fleet_on_ray(tmp_path: Path) -> None:
    """One test, one Ray instance: starting Ray takes seconds, and a test of its own per check would
    start one per xdist worker. Each check below is a function of its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        plot = tmp_path / "load.png"
        result = CliRunner().invoke(app, ["fleet", str(EXAMPLE), "--json", "--no-scaling", "--plot", str(plot)])
        assert ray.is_initialized()  # the instance that was up was used, and left running
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    loaded = load_fleet(EXAMPLE)
    in_process = run_fleet(loaded, LocalTransport())
    converges_from_one_host_carrying_everything(metrics, in_process)
    same_report_on_ray_and_in_process(metrics, in_process)
    a_failure_restarts_elsewhere_and_declares_exactly_the_work_lost(metrics, in_process)
    assert metrics["fleet_plot"] == str(plot)
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and plot.stat().st_size > 10_000


def converges_from_one_host_carrying_everything(metrics: dict[str, Any], in_process: FleetReport) -> None:
    assert metrics["fleet_imbalance_start"] == 4.0  # h0 carries all: max/mean = hosts
    assert metrics["fleet_imbalance_after"] <= 1.2
    assert metrics["fleet_rounds_to_converge"] is not None
    assert metrics["fleet_migrations"] > 0 and metrics["fleet_migration_bytes"] > 0
    first = in_process.history[0].hosts
    assert first["h0"]["load"] > 0 and all(first[h]["load"] == 0 for h in ("h1", "h2", "h3"))
    converged = in_process.history[metrics["fleet_rounds_to_converge"]]
    assert converged.imbalance <= 1.2


def same_report_on_ray_and_in_process(metrics: dict[str, Any], in_process: FleetReport) -> None:
    expected = json.loads(json.dumps(in_process.metrics))
    assert {k: v for k, v in metrics.items() if k in expected} == expected
    listed = [{k: v for k, v in e.items() if k != "phase"} for e in in_process.of_kind("migrated")]
    assert metrics["fleet_migration_list"] == json.loads(json.dumps(listed))


def a_failure_restarts_elsewhere_and_declares_exactly_the_work_lost(
    metrics: dict[str, Any], in_process: FleetReport
) -> None:
    failed = in_process.of_kind("failed")
    assert [e["host"] for e in failed] == ["h2"]
    fail_round = failed[0]["round"]
    ticks = in_process.round_ticks
    before = in_process.history[fail_round - 1].hosts["h2"]
    assert before["partitions"], "the failed host ran nothing: the check would prove nothing"
    restarted = {e["partition"]: e for e in in_process.of_kind("restarted")}
    assert sorted(restarted) == sorted(before["partitions"])  # every one, and only those
    assert metrics["fleet_lost_partitions"] == []
    for name, event in restarted.items():
        assert event["host"] != "h2"
        # The checkpoint it came back from: the last one h2 sent of it before dying.
        sent = [e["round"] for e in in_process.of_kind("checkpoint") if e["host"] == "h2" and name in e["partitions"]]
        assert event["checkpoint_round"] == max(r for r in sent if r < fail_round)
        checkpoint_round = event["checkpoint_round"]
        # Declared loss: the virtual time between that checkpoint and the failure, and the instructions
        # the partition ran in it (read here from the rounds' status, not from the host's own books).
        assert event["lost_ticks"] == (fail_round - checkpoint_round - 1) * ticks > 0
        ran = before["instructions"][name] - in_process.history[checkpoint_round].hosts["h2"]["instructions"][name]
        assert event["lost_instructions"] == ran > 0
        assert event["resumed_instructions"] == event["checkpoint_instructions"]
        assert metrics["fleet_lost_ticks"][name] == event["lost_ticks"]
        # It runs again on its new host afterwards.
        assert any(name in h["partitions"] for h in in_process.history[-1].hosts.values())
    assert metrics["fleet_rounds_to_reconverge"][0] is not None
