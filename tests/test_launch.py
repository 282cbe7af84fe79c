"""``spk launch`` as CI and a user at a terminal meet it: exit status, live view, Ctrl-C, traces.

Nothing here waits for wall time: the Ctrl-C test waits for the run's first
output line, then for the process to end.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pyte
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from spgs.system import RefusedPartition, SystemReport
from spk import Counters, PartitionInfo
from spk_tools import cli
from spk_tools.cli import app
from spk_tools.launch_status import EXIT_NOT_AS_INTENDED, HaltCauses, problems
from spk_tools.trace_file import TRACE_EVENTS
from spk_tools.wording import plural
from tests.test_cli import _ENV_OVERRIDES, ROOT, SPK, _subprocess_env

ARINC = ROOT / "examples" / "arinc.toml"
EXAMPLE = ROOT / "partitions.toml"


def invoke(*args: str | Path) -> Result:
    return CliRunner(env=_ENV_OVERRIDES).invoke(app, [str(a) for a in args])


def events(path: Path) -> list[dict[str, Any]]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


# --- exit status ---------------------------------------------------------------------------------


def test_a_halt_the_health_table_decided_exits_0_and_1_with_strict() -> None:
    # faulty is restarted twice, then halted at its restart limit: what its table says.
    result = invoke("launch", ARINC)
    assert result.exit_code == 0, result.stderr
    assert "stopped: memory_violation" in result.stdout
    strict = invoke("launch", ARINC, "--strict")
    assert strict.exit_code == EXIT_NOT_AS_INTENDED
    assert strict.stdout == result.stdout  # the same run, the same summary
    assert strict.stderr.splitlines() == [
        "error: faulty: halted by its health monitor after memory_violation: vector 14 error 0x2; "
        "restart limit 2 reached (an error with --strict)"
    ]


def test_strict_passes_a_run_where_nothing_halts() -> None:
    result = invoke("launch", EXAMPLE, "--max-ticks", "200000", "--strict")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_partitions_refused_by_secure_boot_exit_1_one_line_each() -> None:
    result = invoke("launch", EXAMPLE, "--secure-boot", "enforce", "--max-ticks", "100000")
    assert result.exit_code == EXIT_NOT_AS_INTENDED
    assert result.stderr.splitlines()[-4:] == [
        "error: alpha: refused by secure boot",
        "error: beta: refused by secure boot",
        "error: gamma: refused by secure boot",
        "error: no partition booted",
    ]


def _info(name: str, state: str) -> PartitionInfo:
    return PartitionInfo(1, name, state, 64, 10, None, None, Counters())


def test_one_refused_partition_among_running_ones_is_a_problem() -> None:
    report = SystemReport(100, 1, [_info("a", "ready")], [RefusedPartition("b", ["b.bin: tampered"])])
    assert problems(report, HaltCauses()) == ["b: refused by secure boot"]


def test_a_faulted_partition_is_a_problem_a_halted_one_only_with_strict() -> None:
    report = SystemReport(100, 1, [_info("a", "faulted"), _info("b", "stopped"), _info("c", "exited")])
    assert problems(report, HaltCauses()) == ["a: faulted (a fault) and no health action was taken"]
    assert problems(report, HaltCauses(), strict=True)[1] == "b: halted (an error with --strict)"


def test_halt_causes_follow_the_last_decision() -> None:
    from spk import MachineEvent

    causes = HaltCauses()
    causes(MachineEvent(5, "p", "management", {"requester": "boss", "op": "halt", "outcome": "done"}))
    assert causes.causes == {"p": "halted by boss"}
    causes(MachineEvent(6, "p", "restarted", {"warm": False, "restarts": 1}))
    assert causes.causes == {}


# --- the live view -------------------------------------------------------------------------------


def _terminal_text(raw: str, columns: int, rows: int) -> list[str]:
    """What a terminal of ``rows`` rows holds after ``raw``: its scrollback then its screen,
    right-stripped, without the empty lines at the end."""
    screen = pyte.HistoryScreen(columns, rows, history=10_000)
    pyte.Stream(screen).feed(raw.replace("\n", "\r\n"))
    scrolled = ["".join(line[x].data for x in range(columns)) for line in screen.history.top]
    lines = [line.rstrip() for line in scrolled + screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("rows", [60, 8])  # 8: the table is taller than the terminal
def test_monitor_ends_showing_exactly_the_final_summary(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    plain = invoke("launch", ARINC)
    head, title, table = plain.stdout.partition("arinc: virtual time")
    terminal = io.StringIO()

    def console() -> Console:
        return Console(file=terminal, force_terminal=True, force_interactive=True, width=150, height=rows,
                       color_system=None, legacy_windows=False)  # fmt: skip

    monkeypatch.setattr(cli, "_console", console)
    result = invoke("launch", ARINC, "--monitor")
    assert result.exit_code == 0, result.stderr
    shown = _terminal_text(terminal.getvalue(), 150, rows)
    # The console lines, then the summary once: the live table ended as the final state, no stale frame.
    console_lines = [line for line in head.splitlines() if line.startswith("[")]
    assert [line for line in shown if line.startswith("[")] == console_lines
    rest = [line.strip() for line in shown if not line.startswith("[")]
    assert rest == [line.strip() for line in (title + table).splitlines()]


def test_counts_are_singular_or_plural() -> None:
    assert [plural(1, "major frame"), plural(2, "major frame"), plural(0, "tick")] == [
        "1 major frame", "2 major frames", "0 ticks",
    ]  # fmt: skip
    one_frame = invoke("launch", ARINC, "--max-ticks", "100000")
    titles = [line.strip() for line in one_frame.stdout.splitlines() if "virtual time" in line]
    assert titles == ["arinc: virtual time 100,000 ticks, 1 major frame"]


# --- Ctrl-C --------------------------------------------------------------------------------------


def test_ctrl_c_prints_the_summary_so_far_and_exits_130(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl.gz"
    args = [str(SPK), "launch", "partitions.toml", "--max-ticks", str(10**15), "--trace", str(trace)]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the run is under way once a partition has printed
    assert first.startswith("["), first
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert re.fullmatch(r"interrupted at virtual time [\d,]+: the summary is of the run so far\n", stderr), stderr
    assert "example: virtual time" in rest and "gamma" in rest
    assert events(trace)[0]["event"] == "system"  # the trace was closed whole (gzip trailer included)


# --- traces: filters and gzip --------------------------------------------------------------------


def test_gzip_trace_is_deterministic_and_holds_the_plain_trace(tmp_path: Path) -> None:
    for name in ("a.jsonl", "a.jsonl.gz", "b.jsonl.gz"):
        assert invoke("launch", ARINC, "--max-ticks", "300000", "--trace", tmp_path / name).exit_code == 0
    packed = (tmp_path / "a.jsonl.gz").read_bytes()
    assert packed == (tmp_path / "b.jsonl.gz").read_bytes()
    assert gzip.decompress(packed) == (tmp_path / "a.jsonl").read_bytes()
    flags, mtime = packed[3], int.from_bytes(packed[4:8], "little")
    assert (flags & 0x08, mtime) == (0, 0)  # no file name, no time in the header
    assert len(packed) < (tmp_path / "a.jsonl").stat().st_size / 4


def test_trace_events_keeps_only_the_kinds_asked_for(tmp_path: Path) -> None:
    only = tmp_path / "only.jsonl"
    assert invoke("launch", ARINC, "--trace", only, "--trace-events", "console,health_action").exit_code == 0
    kept = events(only)
    assert kept[0]["args"]["events"] == ["system", "console", "health_action"]
    assert {e["event"] for e in kept[1:]} == {"console", "health_action"}
    everything = tmp_path / "all.jsonl"
    assert invoke("launch", ARINC, "--trace", everything).exit_code == 0
    full = events(everything)
    assert kept[1:] == [e for e in full if e["event"] in ("console", "health_action")]


def test_trace_exclude_leaves_kinds_out(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    result = invoke("launch", ARINC, "--max-ticks", "300000", "--trace", path, "--trace-exclude", "hypercall",
                    "--trace-exclude", "window")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    kinds = {e["event"] for e in events(path)}
    assert "hypercall" not in kinds and "window" not in kinds and "console" in kinds


def test_an_unknown_event_name_is_a_usage_error() -> None:
    result = invoke("launch", ARINC, "--trace", "t.jsonl", "--trace-events", "console,hypercal")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --trace-events: unknown event 'hypercal' (known: system, ")
    assert result.stdout == ""


def test_every_event_a_run_reports_can_be_named(tmp_path: Path) -> None:
    """TRACE_EVENTS must list every kind of event: one missing could not be selected."""
    seen: set[str] = set()
    systems = [p for p in sorted((ROOT / "examples").glob("*.toml")) if "fleet" not in tomllib.loads(p.read_text())]
    for config in (EXAMPLE, ARINC, *systems):  # a fleet description is not a system's (docs/fleet.md)
        path = tmp_path / f"{config.stem}.jsonl"
        invoke("launch", config, "--max-ticks", "600000", "--trace", path)
        seen |= {e["event"] for e in events(path)}
    assert seen <= set(TRACE_EVENTS), seen - set(TRACE_EVENTS)
    assert {"system", "hypercall", "console", "window", "health_action", "management"} <= seen
