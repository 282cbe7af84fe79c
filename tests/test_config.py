"""Negative spec of ``partitions.toml`` (spgs.config.load): one test per rule.

Each rejected configuration must name the file, the exact line, the field
path and the rule, so a user can fix the file without reading code. Line
numbers are looked up in the test's own TOML text (``line_of``), never
computed by the code under test.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spgs.config import ConfigError, LoadedConfig, Problem, load

ROOT = Path(__file__).resolve().parent.parent

ONE_PARTITION = """
[[partition]]
name = "alpha"
image = "refkernel"
"""


def write(tmp_path: Path, text: str, name: str = "partitions.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, nth: int = 0) -> int:
    """1-based line of the ``nth`` line of ``path`` that contains ``needle``."""
    found = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if needle in line]
    assert len(found) > nth, f"{needle!r} not in the test config"
    return found[nth]


def loads(tmp_path: Path, text: str) -> LoadedConfig:
    return load(write(tmp_path, text))


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


def check(problem: Problem, path: Path, line: int | None, field: str, rule: str) -> None:
    assert (problem.file, problem.line, problem.field, problem.rule) == (str(path), line, field, rule), problem


# --- what loads ---------------------------------------------------------------------------------


def test_repo_partitions_toml_loads() -> None:
    desc = load(ROOT / "partitions.toml").description
    assert desc.system.name == "example"
    assert desc.system.memory == 32 << 20
    assert desc.system.seed == 2
    assert desc.system.max_ticks == 3_000_000
    assert [p.name for p in desc.partition] == ["alpha", "beta", "gamma"]
    assert {p.image for p in desc.partition} == {"refkernel"}
    assert [p.memory for p in desc.partition] == [1 << 20, 1 << 20, 2 << 20]
    assert [p.window for p in desc.partition] == [40_000] * 3
    assert desc.partition[0].apps == ["hello", "counter"]
    assert len(desc.partition[2].apps) == 8


def test_defaults_when_only_name_and_image_given(tmp_path: Path) -> None:
    desc = loads(tmp_path, ONE_PARTITION).description
    assert desc.system.model_dump() == {
        "name": "spk", "memory": 64 << 20, "cpus": 1, "seed": 0, "clock_rate": 100_000_000, "major_frame": None,
        "max_ticks": 20_000_000, "time": "exact",
    }  # fmt: skip
    part = desc.partition[0]
    assert (part.name, part.image, part.apps, part.memory, part.window) == ("alpha", "refkernel", [], 1 << 20, 50_000)
    assert (part.address, part.role, part.boot, part.windows, part.period, part.ports) == (
        None, "guest", True, [], None, [],
    )  # fmt: skip
    assert part.health.model_dump() == {
        "memory_violation": "halt", "illegal_instruction": "halt", "privileged_instruction": "halt",
        "unexpected_trap": "halt", "internal_error": "halt", "triple_fault": "halt", "kernel_panic": "halt",
        "cpl0_tripwire": "halt", "machine_check": "halt", "unsupported": "halt", "overrun": "ignore",
        "guest_error": "log", "restart_limit": 3,
    }  # fmt: skip
    assert (part.virtualization, part.mmu, part.stdin_file) == ("para", None, None)
    assert desc.channel == []
    assert desc.trust.model_dump() == {"secure_boot": "off", "keys": [], "reference_date": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"256KiB"', 256 << 10),
        ('"1MiB"', 1 << 20),
        ('"63MiB"', 63 << 20),
        ('"2048KiB"', 2 << 20),
        ('"1 MiB"', 1 << 20),
        ('"1048576"', 1 << 20),
        ('"1048576B"', 1 << 20),
        ("1048576", 1 << 20),
        ("1_048_576", 1 << 20),
    ],
)
def test_partition_size_forms_parse(tmp_path: Path, text: str, expected: int) -> None:
    desc = loads(tmp_path, ONE_PARTITION + f"memory = {text}\n").description
    assert desc.partition[0].memory == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [('"64MiB"', 64 << 20), ('"1GiB"', 1 << 30), ('"1280KiB"', 1280 << 10), (str(8 << 20), 8 << 20)],
)
def test_system_size_forms_parse(tmp_path: Path, text: str, expected: int) -> None:
    body = f"[system]\nmemory = {text}\n" + ONE_PARTITION + 'memory = "256KiB"\n'
    assert loads(tmp_path, body).description.system.memory == expected


def test_bounds_are_inclusive(tmp_path: Path) -> None:
    apps = ", ".join(['"hello"'] * 8)
    name = "a" + "b" * 30  # 31 characters
    desc = loads(
        tmp_path,
        f"""
        [system]
        memory = "1GiB"
        seed = {(1 << 63) - 1}
        max_ticks = 1

        [[partition]]
        name = "{name}"
        image = "refkernel"
        apps = [{apps}]
        memory = "256KiB"
        window = 1_000

        [[partition]]
        name = "x-1_y"
        image = "refkernel"
        window = 100_000_000
        """,
    ).description
    assert desc.partition[0].name == name
    assert len(desc.partition[0].apps) == 8
    assert [p.window for p in desc.partition] == [1_000, 100_000_000]


def test_upper_bounds_are_inclusive(tmp_path: Path) -> None:
    """Every integer field's upper bound, exactly: accepted (one above it: the negative tests)."""
    desc = loads(
        tmp_path,
        f"""
        [system]
        memory = "1GiB"
        max_ticks = 1_000_000_000_000_000
        clock_rate = 10_000_000_000
        major_frame = 10_000_000_000

        [[partition]]
        name = "a"
        image = "refkernel"
        memory = "{(1 << 30) - (1 << 20)}B"
        address = "1MiB"
        min_security_version = 4_294_967_295
        windows = [{{ start = 0, duration = 10_000, cpu = 0 }}]
        period = 10_000_000_000
        health.restart_limit = 1000
        """,
    ).description
    assert desc.system.max_ticks == 10**15
    assert desc.partition[0].min_security_version == (1 << 32) - 1
    assert desc.partition[0].memory == (1 << 30) - (1 << 20)


def test_min_security_version_defaults_to_zero(tmp_path: Path) -> None:
    assert loads(tmp_path, ONE_PARTITION).description.partition[0].min_security_version == 0


@pytest.mark.parametrize("size", ['"2GiB"', str(1 << 31), '"1025MiB"'])
def test_memory_above_maximum_rejected(tmp_path: Path, size: str) -> None:
    """A quota is at most 1 GiB, the most RAM a system has (before the rules compare it with RAM)."""
    path = write(tmp_path, ONE_PARTITION + f"memory = {size}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "memory ="), "partition.0.memory", "quota_size")
    assert "at most 1 GiB" in problem.message


def test_out_of_64_bit_integer_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    """TOML 1.0 makes 2**64 an error; tomllib returns it. The loader says so with file, line and field."""
    path = write(tmp_path, "[system]\nmax_ticks = 18446744073709551616\n" + ONE_PARTITION)
    problem = only_problem(path)
    check(problem, path, 2, "system.max_ticks", "integer_64bit")
    assert problem.message == (
        "18446744073709551616 does not fit in 64 bits (TOML integers are from -2**63 to 2**63-1)"
    )


def test_integer_too_long_for_python_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    """tomllib raises a bare ValueError (int()'s 4300-digit limit), not a TOMLDecodeError, for this one."""
    path = write(tmp_path, ONE_PARTITION + "window = " + "9" * 5000 + "\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "window ="), "partition.0.window", "integer_64bit")
    assert problem.message.startswith("an integer of 5000 digits does not fit in 64 bits")


def test_quota_exactly_fills_ram_accepted(tmp_path: Path) -> None:
    desc = loads(
        tmp_path,
        """
        [system]
        memory = "4MiB"

        [[partition]]
        name = "a"
        image = "refkernel"
        memory = "1MiB"

        [[partition]]
        name = "b"
        image = "refkernel"
        memory = "2MiB"
        """,
    ).description
    assert sum(p.memory for p in desc.partition) == desc.system.memory - (1 << 20)


def test_sixty_four_partitions_accepted(tmp_path: Path) -> None:
    body = "".join(f'[[partition]]\nname = "p{i}"\nimage = "refkernel"\nmemory = "256KiB"\n' for i in range(64))
    assert len(loads(tmp_path, body).description.partition) == 64


def test_images_are_resolved_but_not_built_by_load(tmp_path: Path) -> None:
    """load() checks that every image exists (rules unknown_image, unknown_app: tests/test_rules.py);
    assembling them is spgs.images' job, so a source that does not assemble still loads."""
    (tmp_path / "broken.asm").write_text("this is not an instruction\n")
    desc = loads(tmp_path, '[[partition]]\nname = "a"\nimage = "broken.asm"\napps = ["broken.asm"]\n').description
    assert desc.partition[0].image == "broken.asm"


# --- file and TOML ------------------------------------------------------------------------------


def test_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    problem = only_problem(path)
    check(problem, path, None, "-", "readable_file")
    assert "No such file" in problem.message


def test_directory_rejected(tmp_path: Path) -> None:
    check(only_problem(tmp_path), tmp_path, None, "-", "readable_file")


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [system]
        name = "x"

        [[partition]]
        name = "alpha"
        image = refkernel
        """,
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, "image ="), "-", "toml_syntax")
    assert "line 6" in problem.message


def test_toml_table_declared_twice_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[system]\nname = "a"\n\n[system]\nseed = 1\n' + ONE_PARTITION)
    check(only_problem(path), path, line_of(path, "[system]", nth=1), "-", "toml_syntax")


def test_toml_key_repeated_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + 'name = "beta"\n')
    check(only_problem(path), path, line_of(path, 'name = "beta"'), "-", "toml_syntax")


def test_toml_error_at_end_of_document_has_no_line(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + "apps = [\n")
    check(only_problem(path), path, None, "-", "toml_syntax")


# --- [system] -----------------------------------------------------------------------------------


def test_unknown_field_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + "windw = 40_000\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "windw ="), "partition.0.windw", "extra_forbidden")


def test_unknown_system_field_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[system]\ncores = 2\n" + ONE_PARTITION)
    check(only_problem(path), path, line_of(path, "cores ="), "system.cores", "extra_forbidden")


def test_unknown_table_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + '\n[health]\nfault = "halt"\n')
    check(only_problem(path), path, line_of(path, "[health]"), "health", "extra_forbidden")


def test_unknown_array_of_tables_rejected(tmp_path: Path) -> None:
    """Only [[partition]] and [[channel]] are arrays of tables."""
    path = write(tmp_path, ONE_PARTITION + '\n[[link]]\nname = "c"\n')
    check(only_problem(path), path, line_of(path, "[[link]]"), "link", "extra_forbidden")


def test_unknown_subtable_of_partition_rejected(tmp_path: Path) -> None:
    """A sub-table is resolved as TOML does: [partition.x] belongs to the last [[partition]]."""
    path = write(tmp_path, ONE_PARTITION + ONE_PARTITION.replace("alpha", "beta") + "\n[partition.scheduler]\nx = 1\n")
    check(only_problem(path), path, line_of(path, "[partition.scheduler]"), "partition.1.scheduler", "extra_forbidden")


def test_unknown_key_of_known_subtable_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + "\n[partition.health]\noverrun = 'log'\nfault = 'halt'\n")
    check(only_problem(path), path, line_of(path, "fault ="), "partition.0.health.fault", "extra_forbidden")


def test_system_memory_not_page_multiple_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[system]\nmemory = "1000000"\n' + ONE_PARTITION)
    problem = only_problem(path)
    check(problem, path, line_of(path, "memory ="), "system.memory", "ram_size")
    assert "multiple of 4 KiB" in problem.message


@pytest.mark.parametrize("size", ['"1020KiB"', '"2GiB"', "0", "-4096"])
def test_system_memory_out_of_range_rejected(tmp_path: Path, size: str) -> None:
    path = write(tmp_path, f"[system]\nmemory = {size}\n" + ONE_PARTITION)
    problem = only_problem(path)
    check(problem, path, line_of(path, "memory ="), "system.memory", "ram_size")
    assert "between 1 MiB and 1 GiB" in problem.message


def test_system_name_not_string_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[system]\nname = 5\n" + ONE_PARTITION)
    check(only_problem(path), path, line_of(path, "name = 5"), "system.name", "string_type")


def test_seed_negative_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[system]\nseed = -1\n" + ONE_PARTITION)
    check(only_problem(path), path, line_of(path, "seed ="), "system.seed", "greater_than_equal")


def test_seed_too_large_rejected(tmp_path: Path) -> None:
    """2**63 is no TOML integer at all: the 64-bit rule catches it before the seed's own bound."""
    path = write(tmp_path, f"[system]\nseed = {1 << 63}\n" + ONE_PARTITION)
    check(only_problem(path), path, line_of(path, "seed ="), "system.seed", "integer_64bit")


def test_max_ticks_zero_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[system]\nmax_ticks = 0\n" + ONE_PARTITION)
    problem = only_problem(path)
    check(problem, path, line_of(path, "max_ticks ="), "system.max_ticks", "max_ticks_range")
    assert problem.message == "0: must be from 1 to 1,000,000,000,000,000 instructions inclusive"


# --- [[partition]] ------------------------------------------------------------------------------


def test_missing_partition_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[system]\nname = "empty"\n')
    # No [[partition]] header exists, so there is no line to point at.
    check(only_problem(path), path, None, "partition", "missing")


def test_empty_partition_array_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "partition = []\n")
    check(only_problem(path), path, line_of(path, "partition = []"), "partition", "too_short")


def test_too_many_partitions_rejected(tmp_path: Path) -> None:
    body = "".join(f'[[partition]]\nname = "p{i}"\nimage = "refkernel"\nmemory = "256KiB"\n' for i in range(65))
    path = write(tmp_path, body)
    # An error on the whole array points at its first [[partition]].
    check(only_problem(path), path, 1, "partition", "too_long")


def test_missing_image_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[[partition]]\nname = "alpha"\nmemory = "1MiB"\n')
    check(only_problem(path), path, line_of(path, "[[partition]]"), "partition.0.image", "missing")


def test_missing_name_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + '\n[[partition]]\nimage = "refkernel"\n')
    check(only_problem(path), path, line_of(path, "[[partition]]", nth=1), "partition.1.name", "missing")


@pytest.mark.parametrize("name", ["Alpha", "1st", "", "a" * 32, "a b", "a.b", "_a", "-a", "é"])
def test_bad_partition_name_rejected(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[[partition]]\nname = "{name}"\nimage = "refkernel"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "name ="), "partition.0.name", "partition_name")
    assert "lowercase letters" in problem.message


def test_duplicate_name_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + '\n[[partition]]\nname = "beta"\nimage = "refkernel"\n' + ONE_PARTITION)
    problem = only_problem(path)
    check(problem, path, line_of(path, 'name = "alpha"', nth=1), "partition.2.name", "duplicate_name")
    # Both sides of the conflict are named.
    first = line_of(path, 'name = "alpha"')
    assert f"'alpha' already names partition 0 (line {first})" in problem.message


def test_every_duplicate_reported(tmp_path: Path) -> None:
    body = "".join(f'[[partition]]\nname = "{n}"\nimage = "refkernel"\n' for n in ["a", "b", "a", "b", "a"])
    path = write(tmp_path, body)
    problems = problems_of(path)
    assert [(p.field, p.rule, p.line) for p in problems] == [
        ("partition.2.name", "duplicate_name", line_of(path, 'name = "a"', nth=1)),
        ("partition.3.name", "duplicate_name", line_of(path, 'name = "b"', nth=1)),
        ("partition.4.name", "duplicate_name", line_of(path, 'name = "a"', nth=2)),
    ]
    assert all("already names partition" in p.message for p in problems)


def test_too_many_apps_rejected(tmp_path: Path) -> None:
    apps = ", ".join(['"hello"'] * 9)
    path = write(tmp_path, ONE_PARTITION + f"apps = [{apps}]\n")
    check(only_problem(path), path, line_of(path, "apps ="), "partition.0.apps", "too_long")


def test_app_not_a_string_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + 'apps = ["hello", 3]\n')
    check(only_problem(path), path, line_of(path, "apps ="), "partition.0.apps.1", "string_type")


def test_apps_not_a_list_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + 'apps = "hello"\n')
    check(only_problem(path), path, line_of(path, "apps ="), "partition.0.apps", "list_type")


@pytest.mark.parametrize("size", ['"64MB"', '"64 mib"', '"1.5MiB"', '"MiB"', '""', '"-1MiB"', '"0x100000"'])
def test_bad_size_string_rejected(tmp_path: Path, size: str) -> None:
    path = write(tmp_path, ONE_PARTITION + f"memory = {size}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "memory ="), "partition.0.memory", "size_syntax")
    assert "is not a size" in problem.message


def test_memory_not_page_multiple_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + "memory = 300_000\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "memory ="), "partition.0.memory", "quota_size")
    assert "multiple of 4 KiB" in problem.message


@pytest.mark.parametrize("size", ['"252KiB"', "0", "-262144"])
def test_memory_below_minimum_rejected(tmp_path: Path, size: str) -> None:
    path = write(tmp_path, ONE_PARTITION + f"memory = {size}\n")
    problem = only_problem(path)
    check(problem, path, line_of(path, "memory ="), "partition.0.memory", "quota_size")
    assert "at least 256 KiB" in problem.message


def test_window_too_small_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + "window = 999\n")
    check(only_problem(path), path, line_of(path, "window ="), "partition.0.window", "greater_than_equal")


def test_window_too_large_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + "window = 100_000_001\n")
    check(only_problem(path), path, line_of(path, "window ="), "partition.0.window", "less_than_equal")


def test_window_not_integer_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + 'window = "fast"\n')
    check(only_problem(path), path, line_of(path, "window ="), "partition.0.window", "int_type")


def test_window_size_string_not_accepted(tmp_path: Path) -> None:
    """Only memory fields take size strings; a window is a count of instructions."""
    path = write(tmp_path, ONE_PARTITION + 'window = "40KiB"\n')
    check(only_problem(path), path, line_of(path, "window ="), "partition.0.window", "int_type")


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ('window = "40000"', "partition.0.window", "int_type"),
        ("window = 40000.0", "partition.0.window", "int_type"),
        ("window = true", "partition.0.window", "int_type"),
        ('boot = "no"', "partition.0.boot", "bool_type"),
        ("boot = 0", "partition.0.boot", "bool_type"),
        ("image = 5", "partition.0.image", "string_type"),
    ],
)
def test_values_must_have_their_toml_type(tmp_path: Path, text: str, field: str, rule: str) -> None:
    """No lax coercion: a string is not a number, 0 is not false (pydantic's strict mode)."""
    body = ONE_PARTITION.replace('image = "refkernel"\n', "") if text.startswith("image") else ONE_PARTITION
    path = write(tmp_path, body + text + "\n")
    check(only_problem(path), path, line_of(path, text), field, rule)


# --- rules across fields ------------------------------------------------------------------------


def test_quota_exceeds_ram_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [system]
        memory = "4MiB"

        [[partition]]
        name = "a"
        image = "refkernel"
        memory = "2MiB"

        [[partition]]
        name = "b"
        image = "refkernel"
        memory = "2MiB"
        """,
    )
    problem = only_problem(path)
    check(problem, path, line_of(path, 'memory = "4MiB"'), "system.memory", "quota_exceeds_ram")
    assert "4096 KiB > 3072 KiB" in problem.message


def test_quota_exceeds_default_ram_rejected(tmp_path: Path) -> None:
    """Without [system].memory the default 64 MiB applies; the error has no line to point at."""
    path = write(tmp_path, ONE_PARTITION + 'memory = "64MiB"\n')
    problem = only_problem(path)
    check(problem, path, None, "system.memory", "quota_exceeds_ram")
    assert "65536 KiB > 64512 KiB" in problem.message


def test_quota_exceeds_ram_points_at_system_header_without_memory_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[system]\nname = "x"\n' + ONE_PARTITION + 'memory = "64MiB"\n')
    check(only_problem(path), path, line_of(path, "[system]"), "system.memory", "quota_exceeds_ram")


# --- reporting ----------------------------------------------------------------------------------


def test_all_errors_reported_not_only_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [system]
        memory = "3MB"
        seed = -2

        [[partition]]
        name = "Alpha"
        image = "refkernel"
        window = 10

        [[partition]]
        name = "beta"
        memory = 1000
        colour = "blue"
        """,
    )
    got = {(p.field, p.rule, p.line) for p in problems_of(path)}
    assert got == {
        ("system.memory", "size_syntax", line_of(path, 'memory = "3MB"')),
        ("system.seed", "greater_than_equal", line_of(path, "seed =")),
        ("partition.0.name", "partition_name", line_of(path, 'name = "Alpha"')),
        ("partition.0.window", "greater_than_equal", line_of(path, "window =")),
        ("partition.1.image", "missing", line_of(path, "[[partition]]", nth=1)),
        ("partition.1.memory", "quota_size", line_of(path, "memory = 1000")),
        ("partition.1.colour", "extra_forbidden", line_of(path, "colour =")),
    }


def test_cross_field_rules_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [system]
        memory = "2MiB"

        [[partition]]
        name = "a"
        image = "refkernel"

        [[partition]]
        name = "a"
        image = "refkernel"
        """,
    )
    got = [(p.field, p.rule, p.line) for p in problems_of(path)]
    assert got == [
        ("partition.1.name", "duplicate_name", line_of(path, 'name = "a"', nth=1)),
        ("system.memory", "quota_exceeds_ram", line_of(path, "memory =")),
    ]


def test_line_follows_the_right_partition(tmp_path: Path) -> None:
    body = "".join(
        f'[[partition]]\nname = "p{i}"\nimage = "refkernel"\nwindow = {w}\n' for i, w in enumerate([5000, 6000, 7])
    )
    path = write(tmp_path, body)
    check(only_problem(path), path, line_of(path, "window = 7"), "partition.2.window", "greater_than_equal")


def test_line_found_with_indentation_comments_and_system_last(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        # a comment mentioning window = 1
        [[partition]]   # first
          name = "alpha"
          image = "refkernel"
          window   =   12   # too short

        [ system ]
          seed = -1
        """,
    )
    got = {(p.field, p.line) for p in problems_of(path)}
    assert got == {("partition.0.window", line_of(path, "window   =")), ("system.seed", line_of(path, "seed ="))}


def test_inline_array_of_tables_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'partition = [{ name = "a", image = "refkernel", window = 1 }]\n[system]\nseed = 1\n')
    check(only_problem(path), path, line_of(path, "partition = ["), "partition.0.window", "greater_than_equal")


def test_problem_str_format() -> None:
    with_line = Problem("p.toml", 12, "partition.0.window", "greater_than_equal", "Input should be >= 1000")
    assert str(with_line) == "p.toml:12: partition.0.window: Input should be >= 1000 [greater_than_equal]"
    without = Problem("p.toml", None, "partition", "missing", "Field required")
    assert str(without) == "p.toml: partition: Field required [missing]"


def test_config_error_message_has_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "[system]\nseed = -1\nmax_ticks = 0\n" + ONE_PARTITION)  # two problems
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert len(info.value.problems) == 2


# --- regressions: defects found in review, now fixed ---


def test_utf8_bom_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + ONE_PARTITION.encode())
    assert load(path).description.partition[0].name == "alpha"


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[system]\nname = "caf\xe9"\n' + ONE_PARTITION.encode())
    with pytest.raises(ConfigError):
        load(path)


def test_quoted_key_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_PARTITION + '"window" = 1\n')
    check(only_problem(path), path, line_of(path, '"window"'), "partition.0.window", "greater_than_equal")


def test_multiline_string_does_not_shift_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[system]\nname = """\n[[partition]]\nwindow = 1\n"""\n' + ONE_PARTITION + "window = 2\n",
    )
    check(only_problem(path), path, line_of(path, "window = 2"), "partition.0.window", "greater_than_equal")
