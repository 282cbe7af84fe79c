"""Migration as a management operation: PART_CONTROL migrate, the host pair, ``spk migrate``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from spgs.config import load
from spgs.hostpair import HostPair
from spgs.system import System, plan
from spk import MachineEvent
from spk.abi import Hypercall as H
from spk.abi import PartOp
from spk_tools.cli import app
from tests.guests import program

CONFIG = """
[system]
name = "ops"
memory = "8MiB"
max_ticks = 400_000

[[partition]]
name = "target"
image = "target.asm"
memory = "256KiB"
window = 5_000

[[partition]]
name = "manager"
image = "manager.asm"
role = "system"
memory = "256KiB"
window = 5_000
"""


#: The target prints "tick" in each of its windows, forever.
TICKER = """
    mov rbx, 0
again:
    inc rbx
    mov rcx, KERNEL_DATA_VADDR
    mov [rcx], rbx
    lea rdi, [rip + tick]
    mov esi, 5
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    mov eax, HC_YIELD
    int 0x82
    jmp again
tick: .ascii "tick\\n"
"""


def _files(tmp_path: Path) -> Path:
    """target is partition 1; the manager asks to migrate it in its first window, then idles."""
    (tmp_path / "target.asm").write_text(TICKER)
    calls = [(H.PART_CONTROL, (1, int(PartOp.MIGRATE)))] + [(H.YIELD, ())] * 200
    (tmp_path / "manager.asm").write_text(program(calls))
    path = tmp_path / "ops.toml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def test_a_system_partition_asks_and_the_pair_moves_it(tmp_path: Path) -> None:
    events: list[tuple[str, MachineEvent]] = []
    pair = HostPair(_files(tmp_path), lambda host, e: events.append((host, e)))
    pair.run(400_000)
    outcomes = [(h, e.args["outcome"]) for h, e in events if e.event == "management"]
    assert outcomes == [("host0", "accepted: moves at the end of the major frame")]
    assert [m.partition for m in pair.moves] == ["target"] and pair.moves[0].stats is not None
    assert pair.where("target") == 1
    moved_at = pair.moves[0].time
    lines_after = [e.args["text"] for h, e in events if e.event == "console" and e.time > moved_at]
    hosts_after = {h for h, e in events if e.event == "console" and e.time > moved_at and e.partition == "target"}
    assert lines_after and set(lines_after) == {"tick"} and hosts_after == {"host1"}
    ticks = [e for h, e in events if e.event == "console" and e.partition == "target"]
    # One per window, but for the windows that began while the final copy was under way (the
    # target's window opens each frame): its downtime, in whole windows, and nothing else.
    downtime = pair.moves[0].stats.downtime_ticks
    assert 0 < downtime < pair.major_frame
    assert len(ticks) == 400_000 // pair.major_frame - 1
    for host in pair.hosts:
        host.machine.check_invariants()


def test_a_host_alone_ignores_migrate(tmp_path: Path) -> None:
    config = load(_files(tmp_path))
    events: list[MachineEvent] = []
    system = System(config, plan(config), events.append)
    system.run(50_000)
    assert [e.args["outcome"] for e in events if e.event == "management"] == ["ignored: no other host"]
    assert system.pid_of("target") is not None


def test_spk_migrate_moves_a_partition_and_reports_it(tmp_path: Path) -> None:
    path = _files(tmp_path)
    result = CliRunner().invoke(app, ["migrate", str(path), "--move", "target@20000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    moves = [(m["partition"], m["from"], m["to"]) for m in report["moves"]]
    # Moved by the command line first; the manager's request finds it moving (or moved) and is traced.
    assert moves[0] == ("target", "host0", "host1")
    assert report["moves"][0]["downtime_ticks"] < report["moves"][0]["full_copy_ticks"]
    bad = CliRunner().invoke(app, ["migrate", str(path), "--move", "nobody@5"])
    assert bad.exit_code == 2 and "no partition 'nobody'" in bad.output
    bad = CliRunner().invoke(app, ["migrate", str(path), "--move", "target"])
    assert bad.exit_code == 2 and "PARTITION@TICKS" in bad.output
