"""examples/busybox.toml as `spk launch` runs it: busybox in a Linux partition beside two reference partitions.

Each partition has its own window; the shell's pipeline prints what the same
busybox prints natively; the others finish as they do alone; the rootfs,
cmdline and stdin modules are measured at boot and appear in the quote's
event log with the digests ring 1 packed; ``spk validate`` and ``spk launch``
accepts the example (docs/linux.md's transcript launches it).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from spgs.config import load
from spgs.system import System, plan
from spk_tools.cli import app
from tests.guests import Recorder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "busybox.toml"


def launched() -> tuple[System, Recorder]:
    rec = Recorder()
    config = load(EXAMPLE)
    system = System(config, plan(config), rec)
    system.run(config.description.system.max_ticks)
    return system, rec


def test_busybox_runs_beside_two_partitions_each_in_its_window_measured(tmp_path: Path) -> None:
    system, rec = launched()
    states = {p.name: (p.state, p.exit_code) for p in system.report(0).partitions}
    assert states == {"shell": ("exited", 0), "alpha": ("exited", 0), "beta": ("exited", 0)}
    # The shell's output is the same busybox's, natively, on a copy of the rootfs (stdin given as in the file).
    shell = load(EXAMPLE).description.partition[0]
    copy = tmp_path / "root"
    shutil.copytree(ROOT / "examples" / "busybox" / "rootfs", copy)
    script = shell.command[3].replace("/etc/", "etc/").replace("/usr/", "usr/").replace("ls /etc", "ls etc")
    native = subprocess.run(["/bin/busybox", "sh", "-c", script], cwd=copy, input=(shell.stdin or "").encode(),
                            capture_output=True, check=True, env={"PATH": "/nonexistent"}).stdout.decode()  # fmt: skip
    assert "".join(f"{line}\n" for line in rec.lines("shell")) == native
    assert "stdin said: hello from the configuration" in rec.lines("shell")
    assert rec.lines("alpha")[-1] == "refkernel: all apps done" and "counter: 5" in rec.lines("alpha")
    # Windows: each partition's, in configuration order, every major frame; the shell's never lent to the others.
    windows = [(e.partition, e.time) for e in rec.of("window")]
    assert [name for name, _ in windows[:3]] == ["shell", "alpha", "beta"]
    assert {name for name, _ in windows} == {"shell", "alpha", "beta"}
    frame = 2_000_000 + 40_000 + 40_000
    assert all((time % frame) in (0, 2_000_000, 2_040_000) for _name, time in windows)


    # Measured boot: the kernel measured its three modules, as ring 1 packed them, into the event log.
    modules = dict(next(p for p in system.plans if p.name == "shell").apps)
    pid = system.pid_of("shell")
    assert pid is not None
    _registers, events = system.machine.measurements(pid)
    logged = {(e.type, e.description): e.digest for e in events}
    for name in ("rootfs", "cmdline", "stdin"):
        assert logged[("app", name)] == hashlib.sha256(modules[name]).digest(), name
    assert [e.description for e in events if e.type == "app"] == ["rootfs", "cmdline", "stdin"]


def test_spk_validate_accepts_the_example() -> None:
    """(docs/linux.md runs `spk launch examples/busybox.toml` from a copy of the repository.)"""
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{EXAMPLE}: valid\n"
