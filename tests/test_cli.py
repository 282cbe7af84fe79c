"""The ``spk`` command as a user meets it.

A few key tests run the installed ``spk`` script as a subprocess (the truest
to users); the rest run in-process through typer's CliRunner, which is
faster. The launches of the example share one module fixture that starts
them in parallel.

Expected errors (bad configuration, missing file or image, bad assembly)
must exit with code 2 and one clear message, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from spgs.images import build
from spk_tools.cli import app

ROOT = Path(__file__).resolve().parent.parent
SPK = Path(sys.executable).with_name("spk")
TRACE_KEYS = {"t", "partition", "event", "args", "result"}
MAX_TICKS = "400000"

# What a user gets when output goes to a pipe or a file: no terminal width
# forced by the environment, no colour.
_ENV_OVERRIDES: dict[str, str | None] = {
    "COLUMNS": None,
    "LINES": None,
    "FORCE_COLOR": None,
    "TTY_COMPATIBLE": None,
    "TTY_INTERACTIVE": None,
    "NO_COLOR": "1",
}


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in _ENV_OVERRIDES.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def spk(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the installed ``spk`` script."""
    return subprocess.run(
        [str(SPK), *map(str, args)], cwd=cwd, env=_subprocess_env(), capture_output=True, text=True, timeout=120
    )


def invoke(*args: str | Path) -> Result:
    """Run the command in-process."""
    return CliRunner(env=_ENV_OVERRIDES).invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory and names files relative to it.

    Short relative names keep every message word shorter than rich's
    80-column fold (see test_long_problem_line_is_not_wrapped).
    """
    monkeypatch.chdir(tmp_path)


def write(name: str, text: str) -> Path:
    """Write a file relative to the test's directory; returns the relative path."""
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def console_lines(stdout: str) -> list[str]:
    """The partitions' console lines (``[name] text``), without the summary table."""
    return [line for line in stdout.splitlines() if re.match(r"^\[[a-z][a-z0-9_-]*\] ", line)]


def flat(text: str) -> str:
    """Text with every run of whitespace as one space: tolerant of rich's line wrapping."""
    return " ".join(text.split())


def assert_clean_failure(code: int, stderr: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.strip(), "no message on stderr"


def one_partition(image: str = "refkernel", apps: str = '["hello"]') -> str:
    return f'[[partition]]\nname = "a"\nimage = "{image}"\napps = {apps}\n'


def test_spk_script_installed() -> None:
    assert SPK.is_file(), f"{SPK} missing: install the project into this interpreter's environment"


# --- the example system, launched as a user would -----------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    trace: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Four launches of partitions.toml, started together: --seed 7 (twice), the file's seed (2), 123456789.

    Seed 7 lays the partitions out in file order (as seeds 0, 1 and 3 do);
    seeds 2 and 123456789 give two other orders.
    """
    out = tmp_path_factory.mktemp("launch")
    seeds = {"seed7": "7", "seed7_again": "7", "seed2": None, "seed_big": "123456789"}
    procs = {}
    for key, seed in seeds.items():
        args = [str(SPK), "launch", "partitions.toml", "--max-ticks", MAX_TICKS, "--trace", str(out / f"{key}.jsonl")]
        if seed is not None:
            args += ["--seed", seed]
        procs[key] = subprocess.Popen(
            args, cwd=ROOT, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[key] = Run(proc.returncode, stdout, stderr, out / f"{key}.jsonl")
    yield results


def trace_events(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.trace.read_text(encoding="utf-8").splitlines()]


def test_validate_repo_config_exits_0() -> None:
    result = spk("validate", "partitions.toml")
    assert (result.returncode, result.stdout, result.stderr) == (0, "partitions.toml: valid\n", "")


def test_launch_example_prints_console_and_summary(runs: dict[str, Run]) -> None:
    run = runs["seed7"]
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    lines = console_lines(run.stdout)
    assert "[alpha] hello from ring 3" in lines
    assert "[beta] hello from ring 3" in lines
    assert "[gamma] bad_spin: spinning" in lines
    assert any(line.startswith("[gamma] refkernel: app 1 killed: vector 14 (#PF)") for line in lines)
    # Every line before the table is a partition's console line.
    head, _, table = run.stdout.partition("example: virtual time 400,000 ticks")
    assert table, run.stdout
    assert head.splitlines()[:-1] == lines
    rows = {}
    for line in table.splitlines():
        cells = [c for c in re.split(r"\s*[│┃|]\s*", line.strip()) if c]
        if cells and cells[0] in ("alpha", "beta", "gamma"):
            rows[cells[0]] = cells
    assert set(rows) == {"alpha", "beta", "gamma"}, table
    assert rows["alpha"][1] == "exited (0)"
    assert rows["beta"][1] == "exited (0)"
    assert rows["gamma"][1] == "ready"  # bad_spin still spinning when the bound is reached
    assert rows["gamma"][5] == "7"  # faults: the seven killed apps
    assert rows["gamma"][-1].endswith("/512")  # frames used / quota (2 MiB)


def test_trace_is_json_lines(runs: dict[str, Run]) -> None:
    run = runs["seed7"]
    events = trace_events(run)
    assert events, "empty trace"
    for event in events:
        assert set(event) == TRACE_KEYS, event
    assert events[0] == {
        "t": 0, "partition": "-", "event": "system", "result": None,
        "args": {"name": "example", "seed": 7, "max_ticks": 400_000},
    }  # fmt: skip
    assert [e["partition"] for e in events if e["event"] == "created"] == ["alpha", "beta", "gamma"]
    times = [e["t"] for e in events]
    assert times == sorted(times), "virtual time goes backwards in the trace"
    assert all(isinstance(t, int) and 0 <= t <= 400_000 for t in times)
    kinds = {e["event"] for e in events}
    assert {"window", "console", "hypercall", "app_fault"} <= kinds
    # The console lines on stdout are exactly the console events of the trace (ring 1's own
    # "!!" lines about faults aside).
    traced = [f"[{e['partition']}] {e['args']['text']}" for e in events if e["event"] == "console"]
    assert traced == [line for line in console_lines(run.stdout) if "] !! " not in line]


def test_same_seed_gives_byte_identical_trace(runs: dict[str, Run]) -> None:
    first, again = runs["seed7"], runs["seed7_again"]
    assert first.code == again.code == 0
    assert first.trace.read_bytes() == again.trace.read_bytes()
    assert first.stdout == again.stdout


def test_seed_does_not_change_what_partitions_observe(runs: dict[str, Run]) -> None:
    base = console_lines(runs["seed7"].stdout)
    for key in ("seed2", "seed_big"):
        assert runs[key].code == 0, runs[key].stderr
        assert console_lines(runs[key].stdout) == base, key
        # The placement did move: frame numbers returned by hypercalls differ.
        assert trace_events(runs[key])[1:] != trace_events(runs["seed7"])[1:], key


def test_seed_does_not_change_virtual_times(runs: dict[str, Run]) -> None:
    """Same events at the same virtual times; only frame numbers in hypercalls may differ."""

    def shape(run: Run) -> list[tuple[object, ...]]:
        events = trace_events(run)[1:]  # the first records the seed itself
        return [
            (e["t"], e["partition"], e["event"], *(() if e["event"] == "hypercall" else (json.dumps(e["args"]),)))
            for e in events
        ]

    base = shape(runs["seed7"])
    assert shape(runs["seed2"]) == base
    assert shape(runs["seed_big"]) == base


def test_seed_option_overrides_config(runs: dict[str, Run]) -> None:
    assert trace_events(runs["seed2"])[0]["args"] == {"name": "example", "seed": 2, "max_ticks": 400_000}


# --- expected errors: exit 2, one clear message, no traceback -----------------------------------


def test_bad_config_exits_2_with_one_line_per_problem() -> None:
    write("bad.toml", '[system]\nx = 1\n[[partition]]\nname = "a"\n')
    result = spk("validate", "bad.toml", cwd=Path.cwd())
    assert_clean_failure(result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bad.toml:2: system.x: Extra inputs are not permitted [extra_forbidden]",
        "bad.toml:3: partition.0.image: Field required [missing]",
    ]


def test_problem_lines_match_file_line_field_message_rule() -> None:
    write("c.toml", "[system]\nseed = -1\n" + one_partition())
    result = invoke("validate", "c.toml")
    assert_clean_failure(result.exit_code, result.stderr)
    text = flat(result.stderr)  # tolerant of line wrapping (see test_long_problem_line_is_not_wrapped)
    assert re.fullmatch(r"c\.toml:2: system\.seed: .+ \[greater_than_equal\]", text), result.stderr


def test_toml_syntax_error_exits_2() -> None:
    write("s.toml", '[[partition]]\nname = "a"\nimage = \n')
    result = invoke("validate", "s.toml")
    assert_clean_failure(result.exit_code, result.stderr)
    assert result.stderr.startswith("s.toml:3: -: ")
    assert "[toml_syntax]" in result.stderr


def test_missing_config_file_exits_2() -> None:
    result = spk("launch", "no-such-file.toml")
    assert_clean_failure(result.returncode, result.stderr)
    assert result.stdout == ""
    assert "no-such-file.toml" in result.stderr
    assert "No such file or directory" in result.stderr


def test_validate_missing_config_file_exits_2() -> None:
    result = invoke("validate", "gone.toml")
    assert_clean_failure(result.exit_code, result.stderr)
    assert flat(result.stderr) == "gone.toml: -: No such file or directory [readable_file]"


def test_launch_bad_config_exits_2() -> None:
    path = write("w.toml", one_partition() + "window = 10\n")
    result = invoke("launch", path)
    assert_clean_failure(result.exit_code, result.stderr)
    assert result.stdout == ""
    assert "error:" in result.stderr
    assert "partition.0.window" in result.stderr


def test_unknown_kernel_image_exits_2() -> None:
    path = write("k.toml", one_partition(image="no-such-kernel"))
    for command in ("validate", "launch"):
        result = invoke(command, path)
        assert_clean_failure(result.exit_code, result.stderr)
        assert result.stdout == ""
        message = flat(result.stderr)
        assert "[unknown_image]" in message and "'no-such-kernel'" in message, command
        assert "refkernel" in message  # the names that do exist


def test_unknown_image_exits_2_as_a_subprocess() -> None:
    write("k.toml", one_partition(apps='["hello", "no_such_app"]'))
    result = spk("validate", "k.toml", cwd=Path.cwd())
    assert_clean_failure(result.returncode, result.stderr)
    message = flat(result.stderr)
    assert "partition.0.apps.1" in message and "'no_such_app'" in message and "[unknown_app]" in message
    assert "hello" in message  # the names that do exist


def test_missing_image_file_exits_2() -> None:
    path = write("m.toml", one_partition(apps='["missing.asm"]'))
    result = invoke("validate", path)
    assert_clean_failure(result.exit_code, result.stderr)
    assert "'missing.asm'" in flat(result.stderr) and "[unknown_app]" in flat(result.stderr)


def test_assembly_error_exits_2() -> None:
    Path("broken.asm").write_text("this is not an instruction\n")
    path = write("b.toml", one_partition(apps='["broken.asm"]'))
    for command in ("validate", "launch"):
        result = invoke(command, path)
        assert_clean_failure(result.exit_code, result.stderr)
        assert "broken.asm" in "".join(result.stderr.split()), command  # the path may be folded


def test_quota_too_small_for_images_exits_2_at_launch() -> None:
    Path("big.bin").write_bytes(bytes(300_000))
    path = write("q.toml", one_partition(apps='["big.bin"]') + 'memory = "256KiB"\n')
    result = invoke("launch", path)
    assert_clean_failure(result.exit_code, result.stderr)
    expected = "q.toml:5: partition.0.memory: a: quota of 256 KiB < 388 KiB its images need to boot"
    assert f"{expected} [quota_below_boot_size]" in flat(result.stderr)


def test_max_ticks_must_be_positive() -> None:
    result = invoke("launch", ROOT / "partitions.toml", "--max-ticks", "0")
    assert_clean_failure(result.exit_code, result.stderr)
    assert "--max-ticks must be positive" in result.stderr
    assert result.stdout == ""


# --- images named by path -----------------------------------------------------------------------


def test_asm_image_path_is_relative_to_the_config() -> None:
    # The config lives in sub/; the command runs one directory above it.
    config = write("sub/p.toml", one_partition(apps='["mine.asm"]'))
    Path("sub/mine.asm").write_text(
        "lea rdi, [rip + msg]\nmov esi, 18\nmov eax, 0\nint 0x80\nmov eax, 1\nxor edi, edi\nint 0x80\n"
        'l: jmp l\nmsg: .ascii "hello from ring 3\\n"\n'
    )
    assert invoke("validate", config).exit_code == 0
    result = invoke("launch", config, "--max-ticks", "100000")
    assert result.exit_code == 0, result.stderr
    assert console_lines(result.stdout)[:2] == ["[a] refkernel: booting 1 apps", "[a] hello from ring 3"]


def test_bin_image_is_loaded_as_is() -> None:
    code = build([("app", "hello")], ROOT)[("app", "hello")]
    Path("hello.bin").write_bytes(code)
    config = write("p.toml", one_partition(apps='["hello.bin"]'))
    result = invoke("launch", config, "--max-ticks", "100000")
    assert result.exit_code == 0, result.stderr
    assert "[a] hello from ring 3" in console_lines(result.stdout)


# --- regressions: defects found in review, now fixed ---


def test_validate_catches_quota_too_small_for_images() -> None:
    Path("big.bin").write_bytes(bytes(300_000))
    path = write("q.toml", one_partition(apps='["big.bin"]') + 'memory = "256KiB"\n')
    result = invoke("validate", path)
    assert_clean_failure(result.exit_code, result.stderr)


def test_launch_config_error_keeps_rule() -> None:
    path = write("w.toml", one_partition() + "window = 10\n")
    result = invoke("launch", path)
    assert_clean_failure(result.exit_code, result.stderr)
    assert "[greater_than_equal]" in result.stderr


def test_long_problem_line_is_not_wrapped() -> None:
    write("w.toml", one_partition() + "window = 10\n")
    result = spk("validate", "w.toml", cwd=Path.cwd())
    assert_clean_failure(result.returncode, result.stderr)
    assert result.stderr.splitlines() == [
        "w.toml:5: partition.0.window: Input should be greater than or equal to 1000 [greater_than_equal]"
    ]


def test_markup_like_image_name_is_a_clean_error() -> None:
    path = write("k.toml", one_partition(image="[/x]"))
    result = invoke("validate", path)
    assert_clean_failure(result.exit_code, result.stderr)
    assert "[/x]" in result.stderr


def test_markup_like_system_name_launches() -> None:
    path = write("n.toml", '[system]\nname = "[/x]"\n' + one_partition())
    result = invoke("launch", path, "--max-ticks", "100000")
    assert result.exit_code == 0, result.exception
    assert "[/x]: virtual time" in result.stdout


def test_non_utf8_config_is_a_clean_error() -> None:
    path = Path("latin1.toml")
    path.write_bytes(b'[system]\nname = "caf\xe9"\n' + one_partition().encode())
    result = invoke("validate", path)
    assert_clean_failure(result.exit_code, result.stderr)


def test_unwritable_trace_path_is_a_clean_error() -> None:
    result = invoke("launch", ROOT / "partitions.toml", "--max-ticks", "1000", "--trace", "no/t.jsonl")
    assert_clean_failure(result.exit_code, result.stderr)


def test_launch_monitor_shows_the_live_table_and_the_summary() -> None:
    from typer.testing import CliRunner

    from spk_tools.cli import app

    args = ["launch", str(ROOT / "examples/arinc.toml"), "--monitor", "--max-ticks", "400000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[faulty] !! health monitor: cold_restart after memory_violation" in result.stdout
    assert "window use" in result.stdout and "faulty" in result.stdout


# --- the command line itself: version, help, one error style ---------------------------------------


def test_version() -> None:
    result = spk("--version")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"spk \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def _commands() -> dict[str, Any]:
    import typer

    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(_commands()))
def test_help_fits_80_columns_and_names_every_option_whole(command: str) -> None:
    result = CliRunner(env={**_ENV_OVERRIDES, "COLUMNS": "80"}).invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "<bool>" not in text and "…" not in text and "\\[" not in text, text
    for param in _commands()[command].params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert re.search(rf"(^|[\s,/]){re.escape(name)}($|[\s,=])", text, re.M), (name, text)


def test_spk_alone_prints_the_help_and_exits_2() -> None:
    result = spk()
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: spk [OPTIONS] COMMAND")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "error: Invalid value for '--seed': Input should be greater than or equal to 0"),
        (["--max-ticks", "-5"], "error: --max-ticks must be positive"),
        (["--max-ticks", "abc"], "error: Invalid value for '--max-ticks'"),
        (["--secure-boot", "maybe"], "error: Invalid value for '--secure-boot'"),
        (["--bogus"], "error: No such option: --bogus (see '"),
        (["--date", "soon"], "error: --date 'soon' is not a date (YYYY-MM-DD)"),
    ],
)
def test_every_bad_launch_option_is_one_plain_error_line(args: list[str], message: str) -> None:
    result = invoke("launch", ROOT / "partitions.toml", *args)
    assert_clean_failure(result.exit_code, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["launch"], "error: Missing argument 'config' (see 'spk launch --help')"),
        (["no-such-command"], "error: No such command 'no-such-command' (see 'spk --help')"),
        (["fuzz", "--workers", "two"], "error: Invalid value for '--workers'"),
    ],
)
def test_usage_errors_of_every_command_share_the_style(args: list[str], message: str) -> None:
    result = spk(*args)
    assert_clean_failure(result.returncode, result.stderr)
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message), result.stderr
