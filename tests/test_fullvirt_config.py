"""A full partition in ``partitions.toml``: its fields, their rules, and what ring 1 plans from them.

One negative test per rule (``test_<rule>_rejected``; tests/test_rules.py
holds every rule of ``spgs.rules.RULES`` to it, these included), each
asserting the file, the line (looked up in the test's own TOML), the field
and the rule. Then the plan: a full partition's kernel is built as a bare PC
kernel (kind ``pc``), checked against its quota before anything runs
(``full_kernel_elf``, ``full_quota_below_image``), its COM1 input read, and
``spk sign`` signs it in the kernel slot with its ``stdin_file`` inlined.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spgs.cbuild import BuildError
from spgs.config import ConfigError, load
from spgs.images import build
from spgs.rules import FULL_MIN_QUOTA
from spgs.system import System, SystemReport, plan, virtualization_label
from spk_tools.cli import _summary, app
from tests.guests import Recorder
from tests.test_config import check, line_of, only_problem, problems_of, write

ROOT = Path(__file__).resolve().parent.parent

#: One full partition running the reference PC kernel.
FULL = """
[system]
memory = "32MiB"

[[partition]]
name = "pc"
image = "pcref"
virtualization = "full"
memory = "8MiB"
"""

#: A paravirtual partition beside it (the base of the channel tests).
PARA = """
[[partition]]
name = "para"
image = "refkernel"
"""


def plan_problem(path: Path) -> tuple[str, int | None, str, str, str]:
    """The one problem planning ``path`` reports (what ``spk validate`` and ``spk launch`` plan)."""
    with pytest.raises(ConfigError) as info:
        plan(load(path))
    assert len(info.value.problems) == 1, info.value.problems
    p = info.value.problems[0]
    return p.file, p.line, p.field, p.rule, p.message


# --- what loads -------------------------------------------------------------------------------------


def test_full_partition_loads_with_its_defaults(tmp_path: Path) -> None:
    p = load(write(tmp_path, FULL + PARA)).description.partition
    assert (p[0].virtualization, p[0].mmu, p[0].effective_mmu) == ("full", None, "nested")
    assert (p[1].virtualization, p[1].effective_mmu) == ("para", "")
    assert [virtualization_label(x) for x in p] == ["full (nested)", "para"]
    shadow = load(write(tmp_path, FULL + 'mmu = "shadow"\n')).description.partition[0]
    assert virtualization_label(shadow) == "full (shadow)"


def test_unknown_virtualization_and_mmu_are_literal_errors(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace('"full"', '"hvm"') + 'mmu = "ept"\n')
    found = problems_of(path)
    check(found[0], path, line_of(path, "virtualization"), "partition.0.virtualization", "literal_error")
    check(found[1], path, line_of(path, "mmu"), "partition.0.mmu", "literal_error")


def test_serial_names_com2_to_com4_only(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + 'ports = [{ name = "out", direction = "source", serial = "com1" }]\n')
    check(only_problem(path), path, line_of(path, "ports"), "partition.0.ports.0.serial", "literal_error")


def test_a_full_partition_may_take_stdin_without_a_command(tmp_path: Path) -> None:
    """stdin feeds COM1 of a full partition: not a Linux partition's field there (no linux_command_required)."""
    desc = load(write(tmp_path, FULL + 'stdin = "typed\\n"\n')).description
    assert desc.partition[0].stdin == "typed\n"


# --- the rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["mmu", "stdin_file", "serial"])
def test_full_field_on_para_rejected(tmp_path: Path, field: str) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    extra = {
        "mmu": 'mmu = "shadow"\n',
        "stdin_file": 'stdin_file = "in.txt"\n',
        "serial": 'ports = [{ name = "out", direction = "source", serial = "com2" }]\n',
    }[field]
    path = write(tmp_path, PARA + extra)
    problem = only_problem(path)
    where = "partition.0.ports.0.serial" if field == "serial" else f"partition.0.{field}"
    check(problem, path, line_of(path, extra.split(" ")[0]), where, "full_field_on_para")
    assert "para:" in problem.message and "full partitions only" in problem.message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('apps = ["hello"]\n', "apps"),
        ('rootfs = "root"\n', "rootfs"),
        ('files = { "/x" = "in.txt" }\n', "files"),
        ('command = ["/bin/sh"]\n', "command"),
        ('env = ["A=1"]\n', "env"),
        ('role = "system"\n', "role"),
    ],
)
def test_full_para_field_rejected(tmp_path: Path, extra: str, field: str) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "in.txt").write_text("x\n")
    path = write(tmp_path, FULL + extra)
    problem = only_problem(path)
    check(problem, path, line_of(path, f"{field} ="), f"partition.0.{field}", "full_para_field")
    assert problem.message.startswith(f"pc: a full partition has no {field}")


def test_full_para_field_reports_every_field(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + 'apps = ["hello"]\nenv = ["A=1"]\n')
    assert [(p.field, p.rule) for p in problems_of(path)] == [
        ("partition.0.apps", "full_para_field"), ("partition.0.env", "full_para_field"),
    ]  # fmt: skip


def test_full_para_field_accepts_role_guest(tmp_path: Path) -> None:
    load(write(tmp_path, FULL + 'role = "guest"\n'))


@pytest.mark.parametrize("image", ["linux", "producer", "mine.asm"])
def test_full_image_rejected(tmp_path: Path, image: str) -> None:
    (tmp_path / "mine.asm").write_text("hlt\n")
    path = write(tmp_path, FULL.replace('"pcref"', f'"{image}"'))
    problem = only_problem(path)
    check(problem, path, line_of(path, "image ="), "partition.0.image", "full_image")
    assert "PC kernel" in problem.message


def test_full_quota_too_small_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace('"8MiB"', '"4MiB"'))
    problem = only_problem(path)
    check(problem, path, line_of(path, 'memory = "4MiB"'), "partition.0.memory", "full_quota_too_small")
    assert f"{FULL_MIN_QUOTA >> 10} KiB" in problem.message and "4 MiB" in problem.message
    load(write(tmp_path, FULL.replace('"8MiB"', f"{FULL_MIN_QUOTA}")))  # exactly the minimum loads


def test_full_port_serial_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + 'ports = [{ name = "out", direction = "source" }]\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "ports"), "partition.0.ports.0", "full_port_serial")
    assert "com2" in problem.message


def test_serial_port_shared_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        FULL + "ports = [\n"
        '  { name = "a", direction = "source", serial = "com2" },\n'
        '  { name = "b", direction = "destination", serial = "com3" },\n'
        '  { name = "c", direction = "destination", serial = "com2" },\n'
        "]\n",
    )
    problem = only_problem(path)  # a and b have a UART each; c would share a's
    check(problem, path, line_of(path, '"c"'), "partition.0.ports.2.serial", "serial_port_shared")
    first = line_of(path, '"a"')
    assert f"(line {first})" in problem.message and "port a" in problem.message


def test_a_serial_port_may_end_a_sampling_channel(tmp_path: Path) -> None:
    """Ring 0 feeds a sampling channel's latest message to the UART once per new message: no rule against it."""
    load(write(
        tmp_path,
        FULL + 'ports = [{ name = "out", direction = "source", serial = "com3" }]\n' + PARA
        + 'ports = [{ name = "in", direction = "destination" }]\n'
        + '[[channel]]\nname = "c"\nkind = "sampling"\nsource = "pc.out"\ndestinations = ["para.in"]\n'
        + "message_size = 64\n",
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("base", "event", "owner"),
    [(FULL, "memory_violation", "pc"), (FULL, "guest_error", "pc"), (PARA, "triple_fault", "para"),
     (PARA, "cpl0_tripwire", "para")],
)  # fmt: skip
def test_health_event_kind_rejected(tmp_path: Path, base: str, event: str, owner: str) -> None:
    action = "log" if event == "guest_error" else "halt"
    path = write(tmp_path, base + f'health.{event} = "{action}"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, f"health.{event}"), f"partition.0.health.{event}", "health_event_kind")
    assert problem.message.startswith(f"{owner}: ") and event in problem.message


@pytest.mark.parametrize(("event", "action"), [("triple_fault", "warm_restart"), ("overrun", "propagate")])
def test_full_health_action_rejected(tmp_path: Path, event: str, action: str) -> None:
    path = write(tmp_path, FULL + f'health.{event} = "{action}"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, f"health.{event}"), f"partition.0.health.{event}", "full_health_action")
    assert "cold_restart" in problem.message


def test_full_fatal_events_take_fatal_actions(tmp_path: Path) -> None:
    """The events of a full partition are fatal: the existing rule health_action_fatal covers them too."""
    path = write(tmp_path, FULL + 'health.kernel_panic = "log"\n')
    check(only_problem(path), path, line_of(path, "kernel_panic"), "partition.0.health.kernel_panic",
          "health_action_fatal")  # fmt: skip
    load(write(tmp_path, FULL + 'health = { kernel_panic = "cold_restart", cpl0_tripwire = "halt" }\n'))


def test_stdin_and_stdin_file_rejected(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    path = write(tmp_path, FULL + 'stdin = "a"\nstdin_file = "in.txt"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "stdin_file"), "partition.0.stdin_file", "stdin_and_stdin_file")
    assert f"(line {line_of(path, 'stdin =')})" in problem.message


@pytest.mark.parametrize("content", [None, b"x" * (64 * 1024 + 1)])
def test_stdin_file_missing_rejected(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / "in.txt").write_bytes(content)
    path = write(tmp_path, FULL + 'stdin_file = "in.txt"\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "stdin_file"), "partition.0.stdin_file", "stdin_file_missing")
    assert ("65537 bytes" if content else "not a readable regular file") in problem.message


# --- the plan ---------------------------------------------------------------------------------------


def test_plan_builds_a_pc_kernel_and_reads_stdin_file(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"line one\nline two\n")
    plans = plan(load(write(tmp_path, FULL + 'stdin_file = "in.txt"\n' + PARA)))
    full, para = plans
    assert full.full and not para.full
    assert full.kernel[:4] == b"\x7fELF" and full.apps == [] and full.kernel_label == "pcref"
    assert full.stdin == b"line one\nline two\n" and para.stdin is None
    assert full.quota_frames == (8 << 20) // 4096


def test_full_kernel_elf_rejected(tmp_path: Path) -> None:
    (tmp_path / "k.elf").write_bytes(b"\x7fELF" + bytes(60))
    path = write(tmp_path, FULL.replace('"pcref"', '"k.elf"'))
    file, line, field, rule, message = plan_problem(path)
    assert (file, line, field, rule) == (str(path), line_of(path, "image ="), "partition.0.image", "full_kernel_elf")
    assert message.startswith("pc: kernel 'k.elf': ")


def test_full_quota_below_image_rejects_a_paravirtual_kernel_elf(tmp_path: Path) -> None:
    """refkernel's ELF is an x86-64 executable too, but linked for the SPK's kernel region: far above any quota."""
    (tmp_path / "k.elf").write_bytes(build([("kernel", "refkernel")], tmp_path)[("kernel", "refkernel")])
    path = write(tmp_path, FULL.replace('"pcref"', '"k.elf"'))
    _file, line, field, rule, message = plan_problem(path)
    assert (line, field, rule) == (line_of(path, "memory =", 1), "partition.0.memory", "full_quota_below_image")
    assert "boot page tables" in message


def test_a_paravirtual_c_kernel_as_full_is_a_build_error_naming_the_partition(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        plan(load(write(tmp_path, FULL.replace('"pcref"', '"refkernel"'))))
    assert "partition pc is virtualization = \"full\"" in str(info.value) and "kind pc" in str(info.value)


def test_full_quota_below_image_rejected(tmp_path: Path) -> None:
    """pcref's segments end above 1 MiB: an ELF whose segments reach the boot tables of the quota is refused."""
    elf = bytearray(plan(load(write(tmp_path, FULL)))[0].kernel)
    (tmp_path / "k.elf").write_bytes(bytes(elf))
    path = write(tmp_path, FULL.replace('"pcref"', '"k.elf"').replace('"8MiB"', f"{FULL_MIN_QUOTA}"))
    plan(load(path))  # 4 MiB and the boot tables: pcref fits
    # The same ELF's first PT_LOAD moved (p_paddr) to just below the quota's top: it reaches the boot tables.
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    paddr_at = phoff + 0x18
    elf[paddr_at : paddr_at + 8] = (FULL_MIN_QUOTA - 0x1000).to_bytes(8, "little")
    (tmp_path / "k.elf").write_bytes(bytes(elf))
    _file, line, field, rule, message = plan_problem(path)
    assert (line, field, rule) == (line_of(path, "memory =", 1), "partition.0.memory", "full_quota_below_image")
    assert "boot page tables" in message


def test_summary_shows_virtualization_only_with_a_full_partition(tmp_path: Path) -> None:
    from rich.console import Console

    def text(report: SystemReport) -> str:
        console = Console(width=200, record=True)
        console.print(_summary(report, "s"))
        return console.export_text()

    mixed = text(SystemReport(0, 0, declared=["pc", "para"],
                              virtualization={"pc": "full (shadow)", "para": "para"}))  # fmt: skip
    assert "virtualization" in mixed and "full (shadow)" in mixed
    plain = text(SystemReport(0, 0, declared=["para"], virtualization={"para": "para"}))
    assert "virtualization" not in plain


def test_spk_validate_accepts_the_full_examples() -> None:
    for name in ("pcref.toml", "mixed.toml"):
        result = CliRunner().invoke(app, ["validate", str(ROOT / "examples" / name)])
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith(": valid")


def test_spk_sign_signs_the_pc_kernel_in_its_kernel_slot_and_inlines_stdin_file(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "in.txt").write_text("typed\n")
    config = write(tmp_path, FULL + 'stdin_file = "in.txt"\n')
    assert runner.invoke(app, ["keygen", "vendor", "--out", str(tmp_path)]).exit_code == 0
    out = tmp_path / "signed"
    result = runner.invoke(app, ["sign", str(config), "--key", str(tmp_path / "vendor.key"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    signed = tomllib.loads((out / config.name).read_text())
    part = signed["partition"][0]
    assert part["image"] == "images/pc/kernel/pcref.bin" and part["stdin"] == "typed\n"
    assert "stdin_file" not in part and part["virtualization"] == "full"
    public = ["--key", str(tmp_path / "vendor.pub")]
    for target in (out / config.name, out / part["image"]):
        verified = runner.invoke(app, ["verify", str(target), *public, *(["--slot", "pc/kernel/pcref"]
                                       if target.suffix == ".bin" else [])])  # fmt: skip
        assert verified.exit_code == 0, verified.output
    replanned = plan(load(out / config.name))  # secure boot enforce: the signed ELF verifies in slot pc/kernel
    assert [v.ok for v in replanned[0].verdicts] == [True]
    assert replanned[0].kernel == plan(load(config))[0].kernel


def test_ring1_quota_check_agrees_with_ring0(tmp_path: Path) -> None:
    """spk validate refuses what ring 0 would: the smallest quota ring 1 accepts boots, one frame less does not."""
    from spgs.fullvirt import kernel_problem
    from spk import ImageError, Machine

    elf = plan(load(write(tmp_path, FULL)))[0].kernel
    smallest = next(q for q in range(1, 2048) if kernel_problem(elf, q * 4096) is None)
    assert kernel_problem(elf, (smallest - 1) * 4096) is not None
    machine = Machine(16 << 20)
    with pytest.raises(ImageError) as info:
        machine.create_full_partition("small", elf, smallest - 1)
    assert info.value.rule == "quota"
    pid = machine.create_full_partition("fits", elf, smallest)
    assert machine.info(pid).virtualization == "full" and machine.info(pid).mmu == "nested"


def test_debugging_a_full_partition_is_refused_by_name(tmp_path: Path) -> None:
    """Ring 0 debugs paravirtual partitions only: spk launch --gdb says so, naming the partition (no traceback)."""
    result = CliRunner().invoke(app, ["launch", str(write(tmp_path, FULL)), "--gdb", "pc:0"])
    assert result.exit_code == 2
    assert "--gdb pc:0: pc: it is a full-virtualization partition" in result.output


#: A PC kernel (the SDK's PC library) that reads lines from COM1 and prints each; "end" ends it
#: cleanly, "panic" with status 3 (a kernel panic). What ``stdin`` feeds is what it reads.
READER = b"""#include "pc.h"
void kernel_main(void);
void kernel_main(void) {
    char line[128];
    pc_uart_open(PC_COM1, 0);
    for (;;) {
        size_t n = pc_uart_read_line(PC_COM1, line, sizeof line);
        if (n && line[n - 1] == '\\n') line[--n] = 0;
        if (strcmp(line, "end") == 0) pc_exit(0);
        if (strcmp(line, "panic") == 0) pc_exit(3);
        pc_printf("read: %s\\n", line);
    }
}
"""


def reader_system(tmp_path: Path, extra: str) -> tuple[System, Recorder]:
    (tmp_path / "reader.c").write_bytes(READER)
    config = load(write(tmp_path, FULL.replace('"pcref"', '"reader.c"') + extra))
    recorder = Recorder()
    system = System(config, plan(config), recorder)
    system.run(5_000_000)
    return system, recorder


def test_stdin_file_feeds_com1(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"first line\nsecond\nend\n")
    system, recorder = reader_system(tmp_path, 'stdin_file = "in.txt"\n')
    assert recorder.lines("pc") == ["read: first line", "read: second"]
    assert system.report(0).partitions[0].state == "exited"


def test_stdin_is_fed_again_after_a_restart(tmp_path: Path) -> None:
    """A cold restart re-creates the full partition: its COM1 holds the configured input again."""
    system, recorder = reader_system(
        tmp_path, 'stdin = "one\\npanic\\n"\nhealth = { kernel_panic = "cold_restart", restart_limit = 1 }\n'
    )
    assert recorder.lines("pc") == ["read: one", "read: one"]
    actions = [(e.args["event"], e.args["action"]) for e in recorder.of("health_action")]
    assert actions == [("kernel_panic", "cold_restart"), ("kernel_panic", "halt")]
    info = system.report(0).partitions[0]
    assert (info.state, info.restarts, info.virtualization) == ("stopped", 1, "full")


def test_the_management_api_creates_paravirtual_partitions_only() -> None:
    from spgs.control_changes import check_fragment
    from spgs.control_errors import ControlError

    with pytest.raises(ControlError) as info:
        check_fragment({"name": "pc", "image": "pcref", "virtualization": "full", "memory": "8MiB"})
    assert info.value.field == "virtualization" and "describe a full partition" in str(info.value)
