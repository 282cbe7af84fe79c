"""Full and paravirtual partitions side by side, launched as a user launches them (``spk launch``).

examples/pcref.toml: the reference PC kernel alone; its console is the
golden transcript QEMU prints for the same ELF (tests/golden/pcref.serial),
line for line, each line prefixed as the console prefixes every partition's.

examples/mixed.toml: pcref (full, nested), fvecho (full, shadow) wired by
serial cables between two paravirtual partitions, and paravirtual partitions
from the other examples. Checked from what ``spk launch`` prints: lines went
from a paravirtual kernel through a channel into fvecho's COM2, and back out
of its COM3 through a channel to another paravirtual kernel, transformed as
fvecho transforms them; the health monitor applied each kind's policy to a
fault of each kind: a paravirtual kernel's memory violation (in the example
itself), and, injected by changing the description as a user could, a full
kernel's triple fault, panic, escape to CPL 0 and access beyond its memory.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import tomli_w
from click.testing import Result
from typer.testing import CliRunner

from spk_tools.cli import app
from tests.test_cli import _ENV_OVERRIDES, SPK, _subprocess_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = (ROOT / "tests" / "golden" / "pcref.serial").read_text().splitlines()
#: What examples/mixed/sender.c sends, in order; fvecho serves every line but "quit".
SENT = ["hello from a paravirtual kernel", "channels cross to a full partition", "through a serial cable"]


def launch(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``spk launch CONFIG`` in a shell's way: the installed script, output to a pipe."""
    return subprocess.run(
        [str(SPK), "launch", str(config), *extra], cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def console(stdout: str, partition: str) -> list[str]:
    """A partition's console lines (and the monitor's lines about it), prefix removed."""
    prefix = f"[{partition}] "
    return [line[len(prefix) :] for line in stdout.splitlines() if line.startswith(prefix)]


def summary_row(stdout: str, partition: str) -> list[str]:
    """The summary table's cells for one partition (a cell rich wrapped onto the next lines joined again)."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(rf"^│ {re.escape(partition)}\s+│", line))
    rows = [[cell.strip() for cell in lines[at].strip("│").split("│")]]
    for line in lines[at + 1 :]:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if not line.startswith("│") or cells[0]:
            break
        rows.append(cells)
    return [" ".join(part for part in column if part) for column in zip(*rows, strict=True)]


def test_pcref_example_prints_the_golden_transcript() -> None:
    result = CliRunner(env=_ENV_OVERRIDES).invoke(app, ["launch", str(EXAMPLES / "pcref.toml")])
    assert result.exit_code == 0, result.output
    assert console(result.stdout, "pcref") == GOLDEN
    row = summary_row(result.stdout, "pcref")
    assert row[1:3] == ["full (nested)", "exited (0)"] and row[4:6] == ["-", "-"]  # no hypercalls, no PV syscalls


def test_mixed_example_channels_cross_both_ways_and_each_kind_has_its_policy() -> None:
    result = launch(EXAMPLES / "mixed.toml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # pcref, beside the others, prints exactly what it prints alone (and in QEMU).
    assert console(out, "pcref") == GOLDEN
    # paravirtual -> full: sender's lines reached fvecho's COM2 (its COM1 log counts them, bytes and all).
    assert [f"sender: sent {line}" for line in SENT] == console(out, "sender")[: len(SENT)]
    served = [line for line in console(out, "fvecho") if line.startswith("fvecho: line ")]
    assert served == [f"fvecho: line {n}, {len(text) + 1} bytes" for n, text in enumerate(SENT, 1)]
    assert console(out, "fvecho")[-1].startswith(f"fvecho: quit: {len(SENT)} lines served")
    # full -> paravirtual: what fvecho wrote on COM3, one message per line, arrived at printer.
    got = [line for line in console(out, "printer") if line.startswith("printer: got ")]
    assert got == [f"printer: got {n}: {text.upper()}" for n, text in enumerate(SENT, 1)]
    # The paravirtual kind's policy: faulty's memory violations cold-restarted twice, then it is halted.
    actions = [line for line in console(out, "faulty") if line.startswith("!! health monitor")]
    assert actions == ["!! health monitor: cold_restart after memory_violation"] * 2 + [
        "!! health monitor: halt after memory_violation"
    ]
    rows = {name: summary_row(out, name) for name in ("pcref", "fvecho", "sender", "printer", "alpha", "faulty")}
    assert {name: row[1] for name, row in rows.items()} == {
        "pcref": "full (nested)", "fvecho": "full (shadow)", "sender": "para", "printer": "para", "alpha": "para",
        "faulty": "para",
    }  # fmt: skip
    assert {name: row[2] for name, row in rows.items()} == {
        "pcref": "exited (0)", "fvecho": "exited (0)", "sender": "exited (0)", "printer": "exited (0)",
        "alpha": "exited (0)", "faulty": "stopped: memory_violation",
    }  # fmt: skip


def test_mixed_example_health_policy_acts_on_a_fault_of_each_kind(tmp_path: Path) -> None:
    """The example's health tables, with faults injected the way a user could: change the description.

    pcref replaced by the bundled hostile PC kernel told (its first COM1
    byte, from ``stdin``) to triple-fault: its policy, one cold restart,
    then halt; fvecho launched without its serial cables (it panics:
    status 1 at port 0xF4; two cold restarts, then halt); the hostile
    kernel again, reaching CPL 0 through a call gate, and reading beyond
    its memory (a machine check), each halted at once; faulty's memory
    violations (two cold restarts, then halt); alpha runs on.
    """
    raw = tomllib.loads((EXAMPLES / "mixed.toml").read_text())
    raw["channel"] = []
    parts = {p["name"]: p for p in raw["partition"]}
    parts["fvecho"].pop("ports")
    parts["pcref"].update(image="pc_hostile", stdin="4")
    gate = dict(parts["pcref"], name="gate", stdin="1", health={"cpl0_tripwire": "halt"})
    beyond = dict(parts["pcref"], name="beyond", stdin="2", health={"machine_check": "halt"})
    raw["partition"] = [parts["pcref"], parts["fvecho"], gate, beyond, parts["alpha"], parts["faulty"]]
    config = tmp_path / "mixed-faults.toml"
    config.write_text(tomli_w.dumps(raw))
    result = launch(config)
    assert result.returncode == 0, result.stderr
    out = result.stdout

    def actions(name: str) -> list[str]:
        return [line.removeprefix("!! health monitor: ") for line in console(out, name) if "health monitor" in line]

    assert actions("pcref") == ["cold_restart after triple_fault", "halt after triple_fault"]
    assert actions("fvecho") == ["cold_restart after kernel_panic"] * 2 + ["halt after kernel_panic"]
    assert console(out, "fvecho").count("fvecho: no serial line to serve (COM2 in, COM3 out); stopping") == 3
    assert actions("gate") == ["halt after cpl0_tripwire"]
    assert actions("beyond") == ["halt after machine_check"]
    assert actions("faulty") == ["cold_restart after memory_violation"] * 2 + ["halt after memory_violation"]
    rows = {name: summary_row(out, name) for name in ("pcref", "fvecho", "gate", "beyond", "alpha", "faulty")}
    assert {name: (row[2], row[-2]) for name, row in rows.items()} == {
        "pcref": ("stopped: triple_fault", "1"), "fvecho": ("stopped: kernel_panic", "2"),
        "gate": ("stopped: cpl0_tripwire", "0"), "beyond": ("stopped: machine_check", "0"),
        "alpha": ("exited (0)", "0"),
        "faulty": ("stopped: memory_violation", "2"),
    }  # fmt: skip


def test_pcref_signed_boots_measured_and_its_quote_matches_the_golden_values(tmp_path: Path) -> None:
    """Measured boot of a full partition: ring 0 measures the kernel ELF that ``spk sign`` signed and recorded."""
    keys, out = tmp_path / "keys", tmp_path / "signed"

    def spk(*args: str | Path) -> Result:  # the command in-process: four commands, no four interpreters
        return CliRunner(env=_ENV_OVERRIDES).invoke(app, [str(a) for a in args])

    for name in ("vendor", "platform"):
        assert spk("keygen", name, "--out", keys).exit_code == 0
    signed = spk("sign", EXAMPLES / "pcref.toml", "--key", keys / "vendor.key", "--out", out)
    assert signed.exit_code == 0, signed.output
    quote = tmp_path / "quote.json"
    attest = spk("attest", out / "pcref.toml", "--nonce", "n-1", "--partition", "pcref", "--platform-key",
                 keys / "platform.key", "--max-ticks", "100000", "--out", quote)  # fmt: skip
    assert attest.exit_code == 0, attest.output
    assert "[pcref] pcref: an unmodified x86-64 PC kernel" in attest.output  # it booted: secure boot verified it
    verified = spk("verify-quote", quote, "--nonce", "n-1", "--partition", "pcref", "--platform-key",
                   keys / "platform.pub", "--golden", out / "golden.json")  # fmt: skip
    assert verified.exit_code == 0, verified.output
    assert "golden values" in verified.output
