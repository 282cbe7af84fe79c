"""The cross-field rules of ``partitions.toml`` (spgs.rules), and the field rules of the SPGS policy layer.

One negative test per rule, named ``test_<rule>_rejected`` (a meta-test
holds every rule of ``spgs.rules.RULES`` to it): each asserts the file, the
exact line, the field path and the rule's name, and for a conflict that
both sides appear in the message. Line numbers are looked up in the test's
own TOML text (``line_of``), never computed by the code under test.

Positive tests: a description using every feature loads, the windows of a
major frame (``effective_windows``), every error reported together, and
the line index on every TOML form the schema can be written in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from spgs.config import ConfigError, _LineIndex, load
from spgs.images import ImageNotFound, build
from spgs.rules import MAX_WINDOWS, RULES, Window, effective_windows, major_frame
from spk_tools.cli import app
from tests.test_config import check, line_of, only_problem, problems_of, write

ROOT = Path(__file__).resolve().parent.parent

ONE = """
[[partition]]
name = "alpha"
image = "refkernel"
"""

#: Two partitions with one port each, joined by one channel: the base of the channel tests.
LINKED = """
[[partition]]
name = "alpha"
image = "refkernel"
ports = [{ name = "out", direction = "source" }]

[[partition]]
name = "beta"
image = "refkernel"
ports = [{ name = "in", direction = "destination" }]
"""


def channel(source: str = "alpha.out", destinations: str = '["beta.in"]', extra: str = "", name: str = "c") -> str:
    """A ``[[channel]]``: queuing when ``extra`` gives a depth, else sampling."""
    kind = "queuing" if "depth" in extra else "sampling"
    return (
        f'\n[[channel]]\nname = "{name}"\nkind = "{kind}"\nsource = "{source}"\n'
        f"destinations = {destinations}\nmessage_size = 64\n{extra}"
    )


# --- every rule is tested and documented ---------------------------------------------------------

FIELD_RULES = [
    "message_size_range", "depth_range", "port_name", "channel_name",
    "max_ticks_range", "address_range", "security_version_range", "integer_64bit",
]  # fmt: skip


def test_every_rule_has_a_negative_test() -> None:
    import tests.test_fullvirt_config  # the full partition's rules have their negative tests there
    import tests.test_linux_config  # the Linux partition's rules have their negative tests there

    tests = set(globals()) | set(vars(tests.test_linux_config)) | set(vars(tests.test_fullvirt_config))
    missing = [f.__name__ for f in RULES if f"test_{f.__name__}_rejected" not in tests]
    missing += [name for name in FIELD_RULES if f"test_{name}_rejected" not in tests]
    assert not missing


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9_]+)`", doc, flags=re.MULTILINE))
    assert {f.__name__ for f in RULES} | set(FIELD_RULES) <= rows


# --- a full description ----------------------------------------------------------------------------

FULL = """
[system]
name = "full"
memory = "16MiB"
cpus = 1
clock_rate = 50_000_000
major_frame = 100_000
seed = 1
max_ticks = 1_000_000

[[partition]]
name = "monitor"                       # the system partition: starts logger
image = "refkernel"
role = "system"
address = "2MiB"
windows = [{ start = 0, duration = 10_000 }]
ports = [
  { name = "status", direction = "destination" },
]

[partition.health]
memory_violation = "cold_restart"
overrun = "log"
guest_error = "propagate"
restart_limit = 5

[[partition]]
name = "sensor"
image = "refkernel"
apps = ["hello"]
memory = "512KiB"
period = 50_000                         # its window runs twice a major frame
ports = [
  { name = "reading", direction = "source" },
  { name = "alarm", direction = "source" },
]

[[partition.windows]]
start = 10_000
duration = 15_000
cpu = 0

[[partition]]
name = "logger"
image = "refkernel"
boot = false
health.guest_error = "ignore"
windows = [{ start = 30_000, duration = 15_000 }, { start = 80_000, duration = 10_000 }]
ports = [
  { name = "reading", direction = "destination" },
  { name = "alarm", direction = "destination" },
]

[[channel]]
name = "readings"
kind = "sampling"
source = "sensor.reading"
destinations = ["logger.reading", "monitor.status"]
message_size = 64
refresh = 200_000

[[channel]]
name = "alarms"
kind = "queuing"
source = "sensor.alarm"
destinations = ["logger.alarm"]
message_size = 16
depth = 4
"""


def test_full_description_loads(tmp_path: Path) -> None:
    desc = load(write(tmp_path, FULL)).description
    assert (desc.system.cpus, desc.system.clock_rate, desc.system.major_frame) == (1, 50_000_000, 100_000)
    monitor, sensor, logger = desc.partition
    assert (monitor.role, monitor.address, monitor.boot) == ("system", 2 << 20, True)
    assert (monitor.health.memory_violation, monitor.health.overrun, monitor.health.restart_limit) == (
        "cold_restart", "log", 5,
    )  # fmt: skip
    assert monitor.health.action("guest_error") == "propagate"
    assert monitor.health.action("internal_error") == "halt"  # the default
    assert (sensor.period, sensor.memory, [(w.start, w.duration) for w in sensor.windows]) == (
        50_000, 512 << 10, [(10_000, 15_000)],
    )  # fmt: skip
    assert [(p.name, p.direction) for p in sensor.ports] == [("reading", "source"), ("alarm", "source")]
    assert (logger.boot, logger.role, logger.health.guest_error) == (False, "guest", "ignore")
    readings, alarms = desc.channel
    assert (readings.kind, readings.destinations, readings.refresh) == (
        "sampling", ["logger.reading", "monitor.status"], 200_000,
    )  # fmt: skip
    assert (alarms.kind, alarms.message_size, alarms.depth) == ("queuing", 16, 4)


def test_full_description_windows(tmp_path: Path) -> None:
    windows, frame = effective_windows(load(write(tmp_path, FULL)).description)
    assert frame == 100_000
    assert [(w.partition, w.index, w.repeat, w.start, w.end) for w in windows] == [
        (0, 0, 0, 0, 10_000),
        (1, 0, 0, 10_000, 25_000),
        (2, 0, 0, 30_000, 45_000),
        (1, 0, 1, 60_000, 75_000),
        (2, 1, 0, 80_000, 90_000),
    ]


def test_full_description_validates_with_exit_0(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_repo_partitions_toml_passes_every_rule() -> None:
    load(ROOT / "partitions.toml")


# --- effective_windows ------------------------------------------------------------------------------


def test_effective_windows_auto_layout(tmp_path: Path) -> None:
    sizes = [10_000, 20_000, 30_000]
    body = "".join(f'[[partition]]\nname = "p{i}"\nimage = "refkernel"\nwindow = {w}\n' for i, w in enumerate(sizes))
    desc = load(write(tmp_path, body)).description
    windows, frame = effective_windows(desc)
    assert windows == [
        Window(0, None, 0, 0, 10_000, 0),
        Window(1, None, 0, 10_000, 20_000, 0),
        Window(2, None, 0, 30_000, 30_000, 0),
    ]
    assert frame == 60_000


def test_effective_windows_auto_layout_in_a_longer_major_frame(tmp_path: Path) -> None:
    """A major frame longer than the windows: the rest of it stays idle."""
    desc = load(write(tmp_path, "[system]\nmajor_frame = 100_000\n" + ONE + "window = 40_000\n")).description
    assert effective_windows(desc) == ([Window(0, None, 0, 0, 40_000, 0)], 100_000)


def test_effective_windows_explicit_with_periods(tmp_path: Path) -> None:
    desc = load(
        write(
            tmp_path,
            """
            [system]
            major_frame = 100_000

            [[partition]]
            name = "fast"
            image = "refkernel"
            period = 25_000
            windows = [{ start = 0, duration = 5_000 }, { start = 15_000, duration = 2_000 }]

            [[partition]]
            name = "slow"
            image = "refkernel"
            windows = [{ start = 5_000, duration = 10_000 }, { start = 30_000, duration = 10_000 }]
            """,
        )
    ).description
    windows, frame = effective_windows(desc)
    assert frame == 100_000
    assert [(w.partition, w.index, w.repeat, w.start, w.duration) for w in windows] == [
        (0, 0, 0, 0, 5_000),
        (1, 0, 0, 5_000, 10_000),
        (0, 1, 0, 15_000, 2_000),
        (0, 0, 1, 25_000, 5_000),
        (1, 1, 0, 30_000, 10_000),
        (0, 1, 1, 40_000, 2_000),
        (0, 0, 2, 50_000, 5_000),
        (0, 1, 2, 65_000, 2_000),
        (0, 0, 3, 75_000, 5_000),
        (0, 1, 3, 90_000, 2_000),
    ]


@pytest.mark.parametrize(
    ("periods", "last_end", "frame"),
    [
        ([20_000, 30_000], 0, 60_000),  # the least common multiple of the periods
        ([20_000, 30_000], 75_000, 120_000),  # raised to hold a window without a period
        ([], 70_000, 70_000),  # no period: the end of the last window
    ],
)
def test_major_frame_derived_without_system_major_frame(
    tmp_path: Path, periods: list[int], last_end: int, frame: int
) -> None:
    body = "".join(
        f'[[partition]]\nname = "p{i}"\nimage = "refkernel"\nmemory = "256KiB"\nperiod = {period}\n'
        f"windows = [{{ start = {i * 5_000}, duration = 5_000 }}]\n"
        for i, period in enumerate(periods)
    )
    if last_end:
        body += '[[partition]]\nname = "last"\nimage = "refkernel"\nmemory = "256KiB"\n'
        body += f"windows = [{{ start = {last_end - 5_000}, duration = 5_000 }}]\n"
    desc = load(write(tmp_path, body)).description
    assert major_frame(desc) == frame
    assert effective_windows(desc)[1] == frame


# --- names ------------------------------------------------------------------------------------------


def test_duplicate_name_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel() + channel(source="alpha.out", destinations='["beta.in"]'))
    problems = problems_of(path)
    dup = [p for p in problems if p.rule == "duplicate_name"]
    assert len(dup) == 1, problems
    check(dup[0], path, line_of(path, 'name = "c"', nth=1), "channel.1.name", "duplicate_name")
    first = line_of(path, 'name = "c"')
    assert f"'c' already names channel 0 (line {first})" in dup[0].message


def test_duplicate_port_name_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ONE + 'ports = [\n  { name = "p", direction = "source" },\n  { name = "p", direction = "destination" },\n]\n',
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, '"destination"'), "partition.0.ports.1.name", "duplicate_name")
    first = line_of(path, '"source"')
    assert f"alpha: port 'p' already declared as port 0 (line {first})" in problem.message


# --- memory -----------------------------------------------------------------------------------------


def test_quota_exceeds_ram_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[system]\nmemory = "3MiB"\n' + ONE + 'memory = "1MiB"\n' + ONE.replace("alpha", "beta") + 'memory = "2MiB"\n',
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, 'memory = "3MiB"'), "system.memory", "quota_exceeds_ram")
    assert "3072 KiB > 2048 KiB" in problem.message
    assert "alpha 1024 KiB, beta 2048 KiB" in problem.message  # every side of the conflict


@pytest.mark.parametrize(("address", "shown"), [("2_097_153", "0x200001"), ('"2049KiB"', "0x200400")])
def test_region_alignment_rejected(tmp_path: Path, address: str, shown: str) -> None:
    path = write(tmp_path, ONE + f"address = {address}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "address ="), "partition.0.address", "region_alignment")
    assert problem.message == f"alpha: address {shown} is not 4 KiB aligned"


@pytest.mark.parametrize(
    ("address", "shown"),
    [('"512KiB"', "[0x80000, 0x180000)"), ('"63MiB"', "[0x3f00000, 0x4000000)"), ("0", "[0x0, 0x100000)")],
)
def test_region_outside_ram_rejected(tmp_path: Path, address: str, shown: str) -> None:
    path = write(tmp_path, '[system]\nmemory = "63MiB"\n' + ONE + f"address = {address}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "address ="), "partition.0.address", "region_outside_ram")
    assert f"alpha: {shown} is not inside [0x100000, 0x3f00000)" in problem.message


def test_memory_overlap_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ONE + 'address = "2MiB"\nmemory = "2MiB"\n' + ONE.replace("alpha", "beta") + 'address = "3MiB"\n',
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, 'address = "3MiB"'), "partition.1.address", "memory_overlap")
    first = line_of(path, 'address = "2MiB"')
    assert f"beta [0x300000, 0x400000) overlaps alpha [0x200000, 0x400000) (line {first})" in problem.message


def test_adjacent_regions_accepted(tmp_path: Path) -> None:
    body = ONE + 'address = "2MiB"\n' + ONE.replace("alpha", "beta") + 'address = "3MiB"\n'
    assert [p.address for p in load(write(tmp_path, body)).description.partition] == [2 << 20, 3 << 20]


# --- images -----------------------------------------------------------------------------------------


def test_unknown_image_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE.replace("refkernel", "nokernel") + ONE.replace("alpha", "beta").replace(
        "refkernel", "sub/mine.asm"))  # fmt: skip
    first, second = problems_of(path)
    check(first, path, line_of(path, '"nokernel"'), "partition.0.image", "unknown_image")
    assert first.message.startswith("alpha: no bundled kernel named 'nokernel' (bundled: ")
    assert "refkernel" in first.message  # the names that exist
    check(second, path, line_of(path, '"sub/mine.asm"'), "partition.1.image", "unknown_image")
    assert second.message == f"beta: kernel image file 'sub/mine.asm' not found (relative to {tmp_path.name})"


def test_unknown_app_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + 'apps = [\n  "hello",\n  "nope",\n  "gone.bin",\n]\n')
    first, second = problems_of(path)
    check(first, path, line_of(path, '"nope"'), "partition.0.apps.1", "unknown_app")
    assert first.message.startswith("alpha: no bundled app named 'nope' (bundled: ")
    check(second, path, line_of(path, '"gone.bin"'), "partition.0.apps.2", "unknown_app")
    assert "app image file 'gone.bin' not found" in second.message


def test_image_paths_are_relative_to_the_description(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.asm").write_text("hlt\n")
    path = write(tmp_path, ONE.replace("refkernel", "sub/mine.asm") + 'apps = ["sub/mine.asm"]\n')
    monkeypatch.chdir(ROOT)
    assert load(path).description.partition[0].image == "sub/mine.asm"


def test_image_not_found_still_raised_to_direct_callers(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound, match=r"no bundled kernel named 'nokernel'"):
        build([("kernel", "nokernel")], tmp_path)
    with pytest.raises(ImageNotFound, match=r"app image file 'x\.asm' not found"):
        build([("app", "x.asm")], tmp_path)


# --- time -------------------------------------------------------------------------------------------

TWO_WINDOWED = """
[system]
major_frame = 100_000

[[partition]]
name = "alpha"
image = "refkernel"
windows = [{ start = 0, duration = 20_000 }]

[[partition]]
name = "beta"
image = "refkernel"
"""


def test_window_and_windows_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_WINDOWED + "window = 30_000\nwindows = [{ start = 20_000, duration = 30_000 }]\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "window = 30_000"), "partition.1.window", "window_and_windows")
    assert f"beta: window = 30000 is ignored when windows are listed (line {line_of(path, 'windows =', nth=1)})" in (
        problem.message
    )


def test_window_missing_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_WINDOWED)
    problem = only_problem(path)
    check(problem, path, line_of(path, "[[partition]]", nth=1), "partition.1.windows", "window_missing")
    assert f"beta: no windows, while alpha lists its own (line {line_of(path, 'windows =')})" in problem.message


def test_period_without_windows_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + "period = 10_000\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "period ="), "partition.0.period", "period_without_windows")
    assert "alpha: period = 10000 but no windows to repeat" in problem.message


def test_window_cpu_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, ONE + "windows = [{ start = 0, duration = 1_000 }, { start = 0, duration = 1_000, cpu = 1 }]\n"
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, "windows ="), "partition.0.windows.1.cpu", "window_cpu")
    assert "alpha: window 1 on vCPU 1, the system has 1 (vCPUs 0 to 0)" in problem.message


def test_window_cpu_of_a_window_table_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + "[[partition.windows]]\nstart = 0\nduration = 1_000\ncpu = 3\n")
    check(only_problem(path), path, line_of(path, "cpu = 3"), "partition.0.windows.0.cpu", "window_cpu")


def test_too_many_windows_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[system]\nmajor_frame = 10_000_000\n" + ONE + "period = 2_000\nwindows = [{ start = 0, duration = 1_000 }]\n",
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, "period ="), "partition.0.period", "too_many_windows")
    frame_line = line_of(path, "major_frame =")
    assert f"alpha: 5000 windows in the major frame 10000000 (line {frame_line}), 1 every period 2000" in (
        problem.message
    )
    assert f"5000 in all > {MAX_WINDOWS}" in problem.message


def test_major_frame_too_long_rejected(tmp_path: Path) -> None:
    """Without [system].major_frame, periods whose least common multiple is too long."""
    body = ONE + "period = 9_999_999_967\nwindows = [{ start = 0, duration = 1_000 }]\n"
    body += ONE.replace("alpha", "beta") + "period = 9_999_999_971\nwindows = [{ start = 1_000, duration = 1_000 }]\n"
    path = write(tmp_path, body)
    problem = only_problem(path)  # and no window rule drowns it
    check(problem, path, line_of(path, "period =", nth=1), "partition.1.period", "major_frame_too_long")
    assert "beta: the least common multiple of the periods (alpha 9999999967, beta 9999999971) is longer than " \
        "10000000000" in problem.message  # fmt: skip


def test_major_frame_too_long_by_a_late_window_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + "windows = [{ start = 10_000_000_000, duration = 1_000 }]\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "windows ="), "partition.0.windows.0", "major_frame_too_long")
    assert "alpha window 0 [10000000000, 10000001000) makes the derived major frame 10000001000 longer" in (
        problem.message
    )


def test_major_frame_not_multiple_of_period_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[system]\nmajor_frame = 100_000\n" + ONE + "period = 30_000\nwindows = [{ start = 0, duration = 1_000 }]\n",
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, "period ="), "partition.0.period", "major_frame_not_multiple_of_period")
    frame_line = line_of(path, "major_frame =")
    assert f"alpha: major frame 100000 (line {frame_line}) is not a multiple of period 30000" in problem.message


def test_window_outside_major_frame_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_WINDOWED
        + "windows = [\n  { start = 20_000, duration = 10_000 },\n  { start = 95_000, duration = 10_000 },\n]\n",
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, "start = 95_000"), "partition.1.windows.1", "window_outside_major_frame")
    frame_line = line_of(path, "major_frame =")
    assert f"beta window 1 [95000, 105000) ends after the major frame 100000 (line {frame_line})" in problem.message


def test_window_outside_its_period_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + "period = 10_000\nwindows = [{ start = 5_000, duration = 6_000 }]\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "windows ="), "partition.0.windows.0", "window_outside_major_frame")
    assert "alpha window 0 [5000, 11000) ends after its period 10000" in problem.message


def test_auto_layout_outside_major_frame_rejected(tmp_path: Path) -> None:
    body = (
        "[system]\nmajor_frame = 100_000\n"
        + ONE
        + "window = 60_000\n"
        + ONE.replace("alpha", "beta")
        + "window = 50_000\n"
    )
    path = write(tmp_path, body)
    problem = only_problem(path)
    check(problem, path, line_of(path, "window = 50_000"), "partition.1.window", "window_outside_major_frame")
    frame_line = line_of(path, "major_frame =")
    assert (
        f"beta window [60000, 110000), laid out in file order, ends after the major frame 100000 (line {frame_line})"
        in (problem.message)
    )


def test_window_overlap_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_WINDOWED + "windows = [{ start = 15_000, duration = 10_000 }]\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "windows =", nth=1), "partition.1.windows.0", "window_overlap")
    first = line_of(path, "windows =")
    assert f"beta window 0 [15000, 25000) overlaps alpha window 0 [0, 20000) (line {first}) on vCPU 0" in (
        problem.message
    )


def test_window_overlap_with_an_earlier_long_window_rejected(tmp_path: Path) -> None:
    """Not only neighbours: a long window overlaps every window that starts inside it."""
    path = write(
        tmp_path,
        TWO_WINDOWED.replace("duration = 20_000", "duration = 50_000")
        + "windows = [\n  { start = 10_000, duration = 5_000 },\n  { start = 30_000, duration = 5_000 },\n]\n",
    )
    problems = problems_of(path)
    assert [(p.field, p.line, p.rule) for p in problems] == [
        ("partition.1.windows.0", line_of(path, "start = 10_000"), "window_overlap"),
        ("partition.1.windows.1", line_of(path, "start = 30_000"), "window_overlap"),
    ]
    assert all("overlaps alpha window 0 [0, 50000)" in p.message for p in problems)


def test_window_overlap_by_a_repetition_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_WINDOWED.replace("windows = [{", "period = 50_000\nwindows = [{")
        + "[[partition.windows]]\nstart = 60_000\nduration = 5_000\n",
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, "[[partition.windows]]"), "partition.1.windows.0", "window_overlap")
    assert "beta window 0 [60000, 65000) overlaps alpha window 0 (repeat 1, period 50000) [50000, 70000)" in (
        problem.message
    )
    assert f"(line {line_of(path, 'windows = [{')})" in problem.message


def test_windows_that_touch_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_WINDOWED + "windows = [{ start = 20_000, duration = 80_000 }]\n")
    assert [w.end for w in effective_windows(load(path).description)[0]] == [20_000, 100_000]


# --- channels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "source", "destinations", "needle", "words"),
    [
        ("source", "alpha", '["beta.in"]', 'source = "alpha"', "'alpha' is not 'partition.port'"),
        ("source", "alpha.", '["beta.in"]', 'source = "alpha."', "'alpha.' is not 'partition.port'"),
        (
            "source",
            "gamma.out",
            '["beta.in"]',
            "source =",
            "'gamma.out' names no partition 'gamma' (partitions: alpha, beta)",
        ),
        (
            "destinations.1",
            "alpha.out",
            '[\n  "beta.in",\n  "beta.inn",\n]',
            '"beta.inn"',
            "has no port 'inn' (its ports: in)",
        ),
    ],
)
def test_unknown_channel_endpoint_rejected(
    tmp_path: Path, field: str, source: str, destinations: str, needle: str, words: str
) -> None:
    path = write(tmp_path, LINKED + channel(source, destinations))
    problem = [p for p in problems_of(path) if p.rule == "unknown_channel_endpoint"]
    assert len(problem) == 1, problem
    check(problem[0], path, line_of(path, needle), f"channel.0.{field}", "unknown_channel_endpoint")
    assert problem[0].message.startswith("channel c: ")
    assert words in problem[0].message


def test_unknown_port_names_the_partition_line(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel("alpha.nope"))
    problem = only_problem(path)
    assert f"'alpha.nope': partition alpha (line {line_of(path, '[[partition]]')}) has no port 'nope'" in (
        problem.message
    )


def test_port_direction_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel("beta.in", '["alpha.out"]'))
    source, destination = problems_of(path)
    check(source, path, line_of(path, "source ="), "channel.0.source", "port_direction")
    port_line = line_of(path, '{ name = "in"')
    assert f"channel c: beta.in is declared a destination port (partition.1.ports.0, line {port_line}), " \
        "used as the source" in source.message  # fmt: skip
    check(destination, path, line_of(path, "destinations ="), "channel.0.destinations.0", "port_direction")
    port_line = line_of(path, '{ name = "out"')
    assert f"alpha.out is declared a source port (partition.0.ports.0, line {port_line})" in destination.message


def test_port_in_two_channels_rejected(tmp_path: Path) -> None:
    body = LINKED.replace(
        'ports = [{ name = "in"', 'ports = [{ name = "in2", direction = "destination" }, { name = "in"'
    )
    path = write(tmp_path, body + channel() + channel(destinations='["beta.in2"]', name="d"))
    problem = only_problem(path)
    check(problem, path, line_of(path, "source =", nth=1), "channel.1.source", "port_in_two_channels")
    first = line_of(path, "source =")
    assert f"channel d: alpha.out is already an end of channel c (channel.0.source, line {first})" in problem.message


def test_port_listed_twice_in_one_channel_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel(destinations='[\n  "beta.in",\n  "beta.in",\n]'))
    problem = only_problem(path)
    check(problem, path, line_of(path, '"beta.in"', nth=1), "channel.0.destinations.1", "port_in_two_channels")
    first = line_of(path, '"beta.in"')
    assert f"beta.in is listed twice in channel c (channel.0.destinations.0, line {first})" in problem.message


def test_depth_on_sampling_channel_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel().replace('kind = "sampling"', 'kind = "sampling"\ndepth = 4'))
    problem = only_problem(path)
    check(problem, path, line_of(path, "depth ="), "channel.0.depth", "depth_on_sampling_channel")
    assert problem.message.startswith("channel c: depth applies to queuing channels only")


def test_refresh_on_queuing_channel_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel().replace('kind = "sampling"', 'kind = "queuing"\nrefresh = 5_000'))
    problem = only_problem(path)
    check(problem, path, line_of(path, "refresh ="), "channel.0.refresh", "refresh_on_queuing_channel")
    assert problem.message.startswith("channel c: refresh applies to sampling channels only")


@pytest.mark.parametrize("size", [0, 4097, -1])
def test_message_size_range_rejected(tmp_path: Path, size: int) -> None:
    path = write(tmp_path, LINKED + channel().replace("message_size = 64", f"message_size = {size}"))
    problem = only_problem(path)
    check(problem, path, line_of(path, "message_size ="), "channel.0.message_size", "message_size_range")
    assert f"{size} bytes: must be from 1 to 4096 bytes" == problem.message


@pytest.mark.parametrize("depth", [0, 257])
def test_depth_range_rejected(tmp_path: Path, depth: int) -> None:
    path = write(tmp_path, LINKED + channel(extra=f"depth = {depth}\n"))
    problem = only_problem(path)
    check(problem, path, line_of(path, "depth ="), "channel.0.depth", "depth_range")
    assert f"{depth} messages: must be from 1 to 256 messages" == problem.message


# --- the upper bound of every integer (issue 12) ------------------------------------------------


@pytest.mark.parametrize(("ticks", "shown"), [("1_000_000_000_000_001", "1000000000000001"), ("-5", "-5")])
def test_max_ticks_range_rejected(tmp_path: Path, ticks: str, shown: str) -> None:
    path = write(tmp_path, f"[system]\nmax_ticks = {ticks}\n" + ONE)
    problem = only_problem(path)
    check(problem, path, line_of(path, "max_ticks ="), "system.max_ticks", "max_ticks_range")
    assert problem.message == f"{shown}: must be from 1 to 1,000,000,000,000,000 instructions inclusive"


@pytest.mark.parametrize(("address", "shown"), [('"2GiB"', "2147483648"), ("-4096", "-4096")])
def test_address_range_rejected(tmp_path: Path, address: str, shown: str) -> None:
    path = write(tmp_path, ONE + f"address = {address}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "address ="), "partition.0.address", "address_range")
    assert problem.message == f"{shown}: must be from 0 to 1,073,741,824 bytes inclusive"


@pytest.mark.parametrize("version", ["4_294_967_296", "-1"])
def test_security_version_range_rejected(tmp_path: Path, version: str) -> None:
    path = write(tmp_path, ONE + f"min_security_version = {version}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "min_security_version ="), "partition.0.min_security_version",
          "security_version_range")  # fmt: skip
    assert problem.message.endswith(": must be from 0 to 4,294,967,295 inclusive")


@pytest.mark.parametrize(
    ("text", "needle", "field"),
    [
        ("[system]\nmax_ticks = 18446744073709551616\n" + ONE, "max_ticks =", "system.max_ticks"),
        ("[system]\nseed = -9223372036854775809\n" + ONE, "seed =", "system.seed"),
        ("[system]\nclock_rate = 0x1_0000_0000_0000_0000\n" + ONE, "clock_rate =", "system.clock_rate"),
        (ONE + "windows = [{ start = 0, duration = 0o7777777777777777777777 }]\n", "windows =",
         "partition.0.windows.0.duration"),
        (ONE + 'apps = ["hello",\n  99999999999999999999]\n', "9999", "partition.0.apps.1"),
        (ONE + "[partition.health]\nrestart_limit = 1" + "0" * 30 + "\n", "restart_limit",
         "partition.0.health.restart_limit"),
        (ONE + "min_security_version = " + "1" * 4400 + "\n", "min_security_version",
         "partition.0.min_security_version"),
        (ONE + 'memory = "' + "4" * 25 + 'KiB"\n', "memory =", "partition.0.memory"),
        (ONE + "unknown = 9223372036854775808\n", "unknown =", "partition.0.unknown"),
    ],
)  # fmt: skip
def test_integer_64bit_rejected(tmp_path: Path, text: str, needle: str, field: str) -> None:
    """TOML 1.0: an integer is signed 64-bit; tomllib accepts any size, the loader does not (file, line, field)."""
    path = write(tmp_path, text)
    problem = only_problem(path)
    check(problem, path, line_of(path, needle), field, "integer_64bit")
    assert "does not fit in 64 bits" in problem.message
    assert len(str(problem)) < 300  # a long literal is shortened, never printed whole


def test_channel_bounds_are_inclusive(tmp_path: Path) -> None:
    text = LINKED + channel(extra="depth = 256\n").replace("message_size = 64", "message_size = 4096")
    text += channel("alpha.out2", '["beta.in2"]', name="d").replace("message_size = 64", "message_size = 1")
    text = text.replace('ports = [{ name = "out"', 'ports = [{ name = "out2", direction = "source" }, { name = "out"')
    text = text.replace('ports = [{ name = "in"', 'ports = [{ name = "in2", direction = "destination" }, { name = "in"')
    c, d = load(write(tmp_path, text)).description.channel
    assert (c.kind, c.message_size, c.depth, d.kind, d.message_size) == ("queuing", 4096, 256, "sampling", 1)


def test_port_name_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + 'ports = [{ name = "Out", direction = "source" }]\n')
    check(only_problem(path), path, line_of(path, "ports ="), "partition.0.ports.0.name", "port_name")


def test_channel_name_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel(name="a.b"))
    check(only_problem(path), path, line_of(path, 'name = "a.b"'), "channel.0.name", "channel_name")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('kind = "fifo"', "channel.0.kind"),
        ('direction = "both"', "partition.0.ports.0.direction"),
    ],
)
def test_unknown_choice_rejected(tmp_path: Path, text: str, field: str) -> None:
    body = LINKED + channel()
    key = text.split(" = ")[0]
    body = re.sub(rf'{key} = "[a-z]+"', text, body, count=1)
    path = write(tmp_path, body)
    check(only_problem(path), path, line_of(path, text), field, "literal_error")


def test_channel_without_destinations_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LINKED + channel(destinations="[]"))
    check(only_problem(path), path, line_of(path, "destinations ="), "channel.0.destinations", "too_short")


# --- health and boot --------------------------------------------------------------------------------


def test_health_action_fatal_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + '\n[partition.health]\noverrun = "log"\ninternal_error = "propagate"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "internal_error ="), "partition.0.health.internal_error", "health_action_fatal")
    assert "alpha: internal_error is fatal to the guest kernel; 'propagate' cannot apply" in problem.message


def test_health_action_fatal_in_a_dotted_key_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + 'health.memory_violation = "ignore"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "health."), "partition.0.health.memory_violation", "health_action_fatal")


def test_health_action_fatal_in_an_inline_table_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + 'health = { overrun = "halt", unexpected_trap = "log" }\n')
    check(
        only_problem(path), path, line_of(path, "health ="), "partition.0.health.unexpected_trap", "health_action_fatal"
    )


def test_unknown_health_action_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + '\n[partition.health]\noverrun = "reboot"\n')
    check(only_problem(path), path, line_of(path, "overrun ="), "partition.0.health.overrun", "literal_error")


def test_restart_limit_out_of_range_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + "\n[partition.health]\nrestart_limit = -1\n")
    check(
        only_problem(path),
        path,
        line_of(path, "restart_limit ="),
        "partition.0.health.restart_limit",
        "greater_than_equal",
    )


def test_no_boot_partition_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE.replace("\n[[", "\n# the first\n[[") + "boot = false\nrole = 'system'\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "[[partition]]"), "partition", "no_boot_partition")


def test_no_system_partition_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + ONE.replace("alpha", "beta") + "boot = false\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "boot = false"), "partition.1.boot", "no_system_partition")
    assert "beta: boot = false, but no partition with role = 'system' boots to start it" in problem.message


def test_system_partition_that_does_not_boot_starts_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + ONE.replace("alpha", "beta") + "boot = false\nrole = 'system'\n")
    check(only_problem(path), path, line_of(path, "boot = false"), "partition.1.boot", "no_system_partition")


def test_bad_role_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + 'role = "root"\n')
    check(only_problem(path), path, line_of(path, "role ="), "partition.0.role", "literal_error")


# --- reporting ------------------------------------------------------------------------------------


def test_all_rule_errors_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [system]
        memory = "3MiB"

        [[partition]]
        name = "alpha"
        image = "refkernel"
        memory = "2MiB"
        address = "1MiB"
        windows = [{ start = 0, duration = 10_000 }]
        ports = [{ name = "out", direction = "source" }]
        health.illegal_instruction = "log"

        [[partition]]
        name = "alpha"
        image = "nokernel"
        address = "1536KiB"
        windows = [{ start = 5_000, duration = 10_000 }]

        [[channel]]
        name = "c"
        kind = "sampling"
        source = "alpha.out"
        destinations = ["beta.in"]
        message_size = 8
        depth = 2
        """,
    )
    got = [(p.rule, p.field, p.line) for p in problems_of(path)]
    assert got == [
        ("duplicate_name", "partition.1.name", line_of(path, 'name = "alpha"', nth=1)),
        ("quota_exceeds_ram", "system.memory", line_of(path, 'memory = "3MiB"')),
        ("memory_overlap", "partition.1.address", line_of(path, 'address = "1536KiB"')),
        ("unknown_image", "partition.1.image", line_of(path, "nokernel")),
        ("window_overlap", "partition.1.windows.0", line_of(path, "start = 5_000")),
        ("unknown_channel_endpoint", "channel.0.destinations.0", line_of(path, "destinations =")),
        ("depth_on_sampling_channel", "channel.0.depth", line_of(path, "depth =")),
        ("health_action_fatal", "partition.0.health.illegal_instruction", line_of(path, "health.")),
    ]


def test_all_field_errors_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        LINKED.replace('"out"', '"Out"')
        + channel(extra="depth = 0\n").replace("message_size = 64", "message_size = 5000")
        + '\n[partition.health]\noverrun = "explode"\n',
    )
    got = {(p.rule, p.field, p.line) for p in problems_of(path)}
    assert got == {
        ("port_name", "partition.0.ports.0.name", line_of(path, '"Out"')),
        ("literal_error", "partition.1.health.overrun", line_of(path, "overrun =")),
        ("message_size_range", "channel.0.message_size", line_of(path, "message_size =")),
        ("depth_range", "channel.0.depth", line_of(path, "depth =")),
    }


def test_validate_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_WINDOWED.replace("refkernel", "nokernel") + "period = 10_000\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert [re.sub(r".*\[(\w+)\]$", r"\1", line) for line in lines] == [
        "unknown_image", "unknown_image", "window_missing", "period_without_windows",
    ]  # fmt: skip
    assert lines[0].startswith(f"{path}:{line_of(path, 'nokernel')}: partition.0.image: alpha: no bundled kernel")


def test_config_error_lists_every_rule_problem(tmp_path: Path) -> None:
    path = write(tmp_path, ONE + "period = 10_000\n" + ONE.replace("alpha", "beta") + "period = 10_000\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert [p.field for p in info.value.problems] == ["partition.0.period", "partition.1.period"]


# --- the line index on every form of TOML -----------------------------------------------------------


def test_lines_of_arrays_of_tables_and_sub_tables(tmp_path: Path) -> None:
    lines = load(write(tmp_path, FULL)).lines
    text = FULL.lstrip("\n").splitlines()

    def at(needle: str, nth: int = 0) -> int:
        return [n for n, line in enumerate(text, start=1) if needle in line][nth]

    assert lines.find(("partition", 0, "health", "overrun")) == at('overrun = "log"')
    assert lines.find(("partition", 0, "health")) == at("[partition.health]")
    assert lines.find(("partition", 0, "ports", 0)) == at('{ name = "status"')
    assert lines.find(("partition", 1, "windows", 0)) == at("[[partition.windows]]")
    assert lines.find(("partition", 1, "windows", 0, "cpu")) == at("cpu = 0")
    assert lines.find(("partition", 1, "ports", 1, "direction")) == at('{ name = "alarm", direction = "source"')
    assert lines.find(("partition", 2, "health", "guest_error")) == at("health.guest_error")
    assert lines.find(("partition", 2, "windows", 1)) == at("start = 80_000")  # one line: the key's
    assert lines.find(("channel", 0, "destinations", 1)) == at('"monitor.status"')
    assert lines.find(("channel", 1, "depth")) == at("depth = 4")
    assert lines.find(("channel", 1, "refresh")) == at('name = "alarms"') - 1  # missing key: its [[channel]]


def test_lines_of_nested_windows_restart_per_partition(tmp_path: Path) -> None:
    text = (
        '[[partition]]\nname = "a"\nimage = "refkernel"\n[[partition.windows]]\nstart = 0\nduration = 1000\n'
        '[[partition]]\nname = "b"\nimage = "refkernel"\n[[partition.windows]]\nstart = 1000\nduration = 1000\n'
        "[[partition.windows]]\nstart = 2000\nduration = 1000\n"
    )
    lines = load(write(tmp_path, text)).lines
    assert lines.find(("partition", 0, "windows", 0, "start")) == 5
    assert lines.find(("partition", 1, "windows", 0, "start")) == 11
    assert lines.find(("partition", 1, "windows", 1, "start")) == 14
    assert lines.find(("partition", 1, "windows", 2)) == 10  # no such window: the array's first


def test_lines_ignore_brackets_and_quotes_in_strings_and_comments(tmp_path: Path) -> None:
    text = (
        '[system]\nname = "a [[partition]] # \\" x"\n'
        "# [[partition]]\n"
        "[[partition]]  # [system]\n"
        "name = 'b'\n"
        'image = """refkernel"""\n'
        'apps = [ # "\n  "hello", # ]\n  """counter""",\n  \'sleeper\',\n]\n'
        '"window" = 50_000\n'
    )
    lines = load(write(tmp_path, text)).lines
    assert lines.find(("partition", 0)) == 4
    assert [lines.find(("partition", 0, "apps", k)) for k in range(3)] == [8, 9, 10]
    assert lines.find(("partition", 0, "window")) == 12


def test_lines_of_quoted_dotted_header(tmp_path: Path) -> None:
    text = ONE + '\n[ partition . "health" ]\noverrun = "log"\nmemory_violation = "log"\n'
    path = write(tmp_path, text)
    check(only_problem(path), path, line_of(path, "memory_violation"), "partition.0.health.memory_violation",
          "health_action_fatal")  # fmt: skip


# --- docs/config.md stays true ----------------------------------------------------------------------

DOC = ROOT / "docs" / "config.md"


def test_docs_example_of_every_feature_loads(tmp_path: Path) -> None:
    section = DOC.read_text().split("## Annotated example: every feature", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    desc = load(write(tmp_path, block.group(1))).description
    assert {ch.kind for ch in desc.channel} == {"sampling", "queuing"}
    assert [(p.role, p.boot) for p in desc.partition] == [("system", True), ("guest", True), ("guest", False)]
    windows, frame = effective_windows(desc)
    names = [p.name for p in desc.partition]
    assert frame == 100_000
    assert [(names[w.partition], w.start, w.end) for w in windows] == [
        ("monitor", 0, 10_000),
        ("sensor", 10_000, 25_000),
        ("logger", 30_000, 45_000),
        ("sensor", 60_000, 75_000),
        ("logger", 80_000, 90_000),
    ]


def test_docs_error_examples_are_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `$ spk validate NAME` output in the docs is what load() reports for the TOML block before it."""
    examples = re.findall(
        r"```toml\n((?:(?!```).)*)```\n\n```\n\$ spk validate (\S+)\n(.*?)(?:\$ echo|```)", DOC.read_text(), re.DOTALL
    )
    assert len(examples) == 2
    monkeypatch.chdir(tmp_path)
    for text, name, output in examples:
        Path(name).write_text(text)
        with pytest.raises(ConfigError) as info:
            load(Path(name))
        assert [str(p) for p in info.value.problems] == output.strip().splitlines(), name


# --- the line index against any TOML tomli_w writes (what `spk sign` rewrites descriptions with) ----

_KEYS = st.text(alphabet="ab_-.x [\"'\\#", min_size=1, max_size=4)
_SCALARS = st.one_of(st.integers(-5, 10**6), st.booleans(), st.text(alphabet="a[]\"'#\n\\{},= .", max_size=8))
_TREES = st.recursive(
    _SCALARS | st.lists(st.integers(0, 99), max_size=12),
    lambda children: (
        st.dictionaries(_KEYS, children, max_size=4)
        | st.lists(st.dictionaries(_KEYS, children, min_size=1, max_size=3), min_size=1, max_size=3)
    ),
    max_leaves=16,
)


def _paths(node: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], object]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_KEYS, _TREES, max_size=5))
def test_line_index_finds_every_key_tomli_w_writes(document: dict[str, object]) -> None:
    text = tomli_w.dumps(document, multiline_strings=True)
    assert tomllib.loads(text) == document
    lines = _LineIndex(text)
    source = text.split("\n")
    for path, value in _paths(document):
        if not path:
            continue
        number = lines.find(path)
        assert number is not None, (path, text)
        line = source[number - 1]
        if isinstance(path[-1], str):
            key = tomli_w.dumps({path[-1]: 0}).split(" = ")[0]  # the key as tomli_w writes it
            if isinstance(value, dict):  # a table: defined by its header, or a header below it, or inline
                assert key in line, (path, line)
            else:
                header = line.startswith("[") and line.rstrip().endswith((f"{key}]", f"{key}]]"))
                assert f"{key} = " in line or header, (path, line)
        elif isinstance(value, dict | list):
            assert line.startswith("[[") or "{" in line, (path, line)  # an array of tables, or of inline tables
        else:
            assert str(value) in line, (path, line)  # an element of an array of integers
