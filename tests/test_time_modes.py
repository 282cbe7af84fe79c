"""``[system] time``: exact (deterministic, the default) and fast (host clock, labelled, refused for goldens)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spgs.config import ConfigError, load
from spk import Machine
from spk_tools.cli import app
from tests.guests import bundled

FAST = textwrap.dedent("""\
    [system]
    name = "fastdemo"
    memory = "8MiB"
    max_ticks = 300_000
    time = "fast"

    [[partition]]
    name = "cpu"
    image = "bench_compute"
    window = 100_000
""")


def test_time_is_exact_by_default_and_fast_on_request(tmp_path: Path) -> None:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    assert load(path).description.system.time == "fast"
    path.write_text(FAST.replace('time = "fast"\n', ""))
    assert load(path).description.system.time == "exact"


def test_an_unknown_time_mode_is_a_typed_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "slow.toml"
    path.write_text(FAST.replace('"fast"', '"slow"'))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert "system.time" in str(err.value)


def test_a_fast_launch_runs_and_says_it_is_not_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    trace = tmp_path / "t.jsonl"
    result = CliRunner().invoke(app, ["launch", str(path), "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    assert "NOT deterministic" in result.output  # the runner mixes stderr in
    header = json.loads(trace.read_text().splitlines()[0])
    assert header["args"]["time"] == "fast"


def test_golden_values_are_refused_for_fast_time(tmp_path: Path) -> None:
    from spgs.signing import sign_system
    from spgs.trust import TrustError, keygen

    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    private, _public = keygen(tmp_path, "vendor")
    with pytest.raises(TrustError, match="time_not_exact"):
        sign_system(path, private, tmp_path / "signed")


def test_fast_machines_count_host_time_and_still_preempt() -> None:
    m = Machine(8 << 20, time_mode="fast")
    try:
        pid = m.create_partition("cpu", bundled("kernel", "bench_compute"), [], 64)
        outcome = m.run(pid, 200_000)  # 0.2 ms of host time: a spinning partition is stopped
        assert outcome.reason == "window_end" and m.now >= 200_000
    finally:
        m.engine.close()


def test_exact_runs_are_repeatable_bit_for_bit() -> None:
    """The same partition and windows give the same retired instructions and registers, twice."""
    runs = []
    for _ in range(2):
        m = Machine(8 << 20)
        pid = m.create_partition("sort", bundled("kernel", "bench_sort"), [], 64)
        for end in range(50_000, 1_000_000, 73_331):
            m.run(pid, end)
        runs.append((m.now, m.info(pid).counters, m.engine.read("rax"), m.engine.read("rip")))
    assert runs[0] == runs[1]
