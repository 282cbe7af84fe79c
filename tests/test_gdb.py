"""The gdb stub end to end: ``spk launch --gdb`` driven by Debian's real gdb in batch mode.

The session documented in docs/debugging.md is run from the document itself
(its launch command, its gdb command and its expected output), so the
document cannot go stale; the debugged launch's trace and console must be
byte-identical to an undebugged launch's. Other tests write registers, kill,
detach, disconnect, and send malformed packets over a raw socket.

No test sleeps: each waits for the stub's "listening" line on standard error.
``make test`` installs gdb (the Makefile's ``gdb`` target).
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from spk_tools.gdbstub import HOST, TARGET_XML, GdbStub, parse_target

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "debugging.md"
EXAMPLE = "examples/producer_consumer.toml"
TIMEOUT = 120
GDB = shutil.which("gdb") or "/usr/bin/gdb"
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+);")


def _gdb_present() -> None:
    assert Path(GDB).exists(), "gdb missing: `make gdb` installs Debian's package"


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


class Launch:
    """A running ``spk launch ... --gdb``: its port, and at the end its output."""

    def __init__(self, process: subprocess.Popen[str], port: int, head: str) -> None:
        self.process, self.port, self._head = process, port, head
        self.result: Finished | None = None

    def finish(self) -> Finished:
        out, err = self.process.communicate(timeout=TIMEOUT)
        self.result = Finished(self.process.returncode, out, self._head + err)
        return self.result


@contextmanager
def launched(*args: str, target: str = "producer:0") -> Iterator[Launch]:
    """Start a launch with ``--gdb target`` and wait for the stub's listening line."""
    command = [sys.executable, "-m", "spk_tools", "launch", *args, "--gdb", target]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert process.stderr is not None
    head = ""
    try:
        while True:
            line = process.stderr.readline()
            head += line
            if not line:
                out, err = process.communicate(timeout=TIMEOUT)
                pytest.fail(f"spk launch ended before listening:\n{head}{err}\n{out}")
            found = _LISTENING.search(line)
            if found:
                break
        launch = Launch(process, int(found.group(1)), head)
        yield launch
        if launch.result is None:
            launch.finish()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["COLUMNS"] = "150"
    return env


def _gdb(port: int, *commands: str, prefix: tuple[str, ...] = ("set architecture i386:x86-64",)) -> str:
    _gdb_present()
    args = [GDB, "-batch", "-nx"]
    for command in (*prefix, f"target remote localhost:{port}", *commands):
        args += ["-ex", command]
    return _run_gdb(args)


def _run_gdb(args: list[str]) -> str:
    """gdb's output, standard error merged in as gdb writes it (a transcript's order)."""
    done = subprocess.run(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
    )
    return done.stdout


def _plain_launch(tmp_path: Path, *args: str) -> Finished:
    command = [sys.executable, "-m", "spk_tools", "launch", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    return Finished(done.returncode, done.stdout, done.stderr)


# -- the documented session -------------------------------------------------------------------------
@dataclass
class Session:
    config: str
    partition: str
    gdb: list[str]  #: the gdb command's arguments, as documented
    expected: list[str]


def documented_session(text: str) -> Session:
    """The launch command, the gdb command and gdb's expected output, from docs/debugging.md."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    launch = next(body for kind, body in blocks if kind == "sh" and "--gdb" in body and "spk launch" in body)
    words = shlex.split(launch)
    config = words[words.index("launch") + 1]
    partition, _port = parse_target(words[words.index("--gdb") + 1])
    index = next(i for i, (kind, body) in enumerate(blocks) if kind == "sh" and body.startswith("gdb -batch"))
    gdb = shlex.split(blocks[index][1].replace("\\\n", " "))
    kind, expected = blocks[index + 1]
    assert kind == "text", "the gdb command's expected output must follow it in a ```text block"
    return Session(config, partition, gdb, expected.rstrip("\n").split("\n"))


def matches(expected: list[str], got: list[str]) -> bool:
    """The docs' transcript rule: a line ``...`` matches any lines, ``...`` inside a line any text."""
    if not expected:
        return not got
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(matches(rest, got[i:]) for i in range(len(got) + 1))
    if not got:
        return False
    pattern = ".*".join(re.escape(part) for part in head.rstrip().split("..."))
    return re.fullmatch(pattern, got[0].rstrip()) is not None and matches(rest, got[1:])


def test_the_documented_session_runs_and_leaves_the_run_unchanged(tmp_path: Path) -> None:
    session = documented_session(DOC.read_text(encoding="utf-8"))
    assert session.gdb[0] == "gdb"
    plain = _plain_launch(tmp_path, session.config, "--trace", str(tmp_path / "plain.jsonl"))
    with launched(session.config, "--trace", str(tmp_path / "debugged.jsonl"), target=f"{session.partition}:0") as run:
        args = [GDB if a == "gdb" else re.sub(r"localhost:\d+$", f"localhost:{run.port}", a) for a in session.gdb]
        _gdb_present()
        output = _run_gdb(args)
        finished = run.finish()
    got = output.rstrip("\n").split("\n")
    assert matches(session.expected, got), "gdb's output:\n" + "\n".join(got)
    assert finished.returncode == plain.returncode == 0, finished.stderr
    assert (tmp_path / "debugged.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert finished.stdout == plain.stdout
    assert "Traceback" not in finished.stderr


def test_the_session_matcher_can_fail() -> None:
    assert matches(["a", "...", "c ... d"], ["a", "x", "y", "c 1 2 d"])
    assert not matches(["a", "c"], ["a", "b"])
    assert not matches(["a"], ["a", "b"])


# -- writing, stopping, ending --------------------------------------------------------------------------
NEXT_MESSAGE = "0xffff800000000036"  # producer.asm's next_message: rbx is the message number


def test_register_writes_change_the_partition_and_privileged_ones_are_refused() -> None:
    with launched(EXAMPLE) as run:
        out = _gdb(
            run.port, f"break *{NEXT_MESSAGE}", "continue", "set $rbx = 4", "set $cs = 0x08",
            "set $eflags = $eflags | 0x3000", "print $rbx", "delete", "continue",
        )  # fmt: skip
        finished = run.finish()
    assert "$1 = 4" in out
    assert out.count("remote failure reply 'E02'") == 2, out
    sent = [line for line in finished.stdout.splitlines() if "sent msg" in line]
    assert sent == ["[producer] producer: sent msg 4", "[producer] producer: sent msg 5"]


def test_kill_ends_the_run_where_it_stands() -> None:
    with launched(EXAMPLE) as run:
        out = _gdb(run.port, f"break *{NEXT_MESSAGE}", "continue", "kill")
        finished = run.finish()
    assert "[Inferior 1 (Remote target) killed]" in out
    assert "gdb killed the run" in finished.stderr
    assert "producer: sent msg" not in finished.stdout  # stopped before its first message
    assert "virtual time" in finished.stdout and "Traceback" not in finished.stderr


def test_the_end_of_the_run_reaches_gdb() -> None:
    with launched(EXAMPLE, "--max-ticks", "10") as run:
        out = _gdb(run.port, "continue")
        finished = run.finish()
    assert "spk: the run is over" in out
    assert "Program terminated with signal SIGKILL" in out
    assert "Traceback" not in finished.stderr


def test_detach_lets_the_run_finish_undebugged(tmp_path: Path) -> None:
    plain = _plain_launch(tmp_path, EXAMPLE)
    with launched(EXAMPLE) as run:
        out = _gdb(run.port, f"break *{NEXT_MESSAGE}", "continue", "detach")
        finished = run.finish()
    assert "Detaching from program" in out or "detached" in out
    assert finished.stdout == plain.stdout
    assert "gdb detached" in finished.stderr


# -- the wire: malformed packets, disconnects, the address ------------------------------------------------
class Wire:
    """A raw RSP client: one packet out, one reply in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the stub closed the connection"
        self.buffer += data

    def raw(self, frame: bytes) -> bytes:
        """Send bytes; return the acknowledgement byte."""
        self.sock.sendall(frame)
        while not self.buffer:
            self._more()
        ack, self.buffer = self.buffer[:1], self.buffer[1:]
        return ack

    def ask(self, payload: bytes) -> bytes:
        assert self.raw(b"$%s#%02x" % (payload, sum(payload) & 0xFF)) == b"+"
        while b"#" not in self.buffer or len(self.buffer) < self.buffer.index(b"#") + 3:
            self._more()
        start, end = self.buffer.index(b"$"), self.buffer.index(b"#")
        reply, self.buffer = self.buffer[start + 1 : end], self.buffer[end + 3 :]
        self.sock.sendall(b"+")
        return reply


def test_bad_packets_get_error_replies_and_no_traceback() -> None:
    with launched(EXAMPLE) as run:
        wire = Wire(run.port)
        assert wire.ask(b"?") == b"T05thread:1;"
        assert wire.raw(b"$?#00") == b"-"  # bad checksum: gdb would resend
        assert wire.raw(b"$?#zz") == b"-"
        assert wire.ask(b"qSupported:multiprocess+;swbreak+").startswith(b"PacketSize=4000;")
        assert wire.ask(b"qXfer:features:read:target.xml:0,20") == b"m" + TARGET_XML[:0x20]
        assert wire.ask(b"qXfer:features:read:other.xml:0,20") == b"E00"
        registers = wire.ask(b"g")
        assert len(registers) == 2 * (16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 3 * 8)
        assert registers[16 * 16 : 17 * 16] == (0xFFFF_8000_0000_0000).to_bytes(8, "little").hex().encode()
        bad = [
            b"mzz,8", b"m10", b"Mffff800000080000,2:zz", b"Mffff800000080000,4:00", b"Z0,zz,1", b"Z0,1",
            b"pzz", b"P10", b"P10=zz", b"X10,1:}", b"vCont;x", b"G0", b"qXfer:features:read:target.xml:zz",
        ]  # fmt: skip
        for packet in bad:
            assert wire.ask(packet) == b"E01", packet
        assert wire.ask(b"mffffff8000000000,8") == b"E02"  # ring 0's GDT
        assert wire.ask(b"Mffffff8000000000,1:00") == b"E02"
        assert wire.ask(b"m0,8") == b"E07"  # unmapped
        assert wire.ask(b"pff") == b"E00"
        assert wire.ask(b"P13=08000000") == b"E02"  # ss
        assert wire.ask(b"p18") == b"xx" * 10  # st0: unavailable
        assert wire.ask(b"Z2,ffff800000000000,1") == b""  # watchpoints: not supported
        assert wire.ask(b"qNoSuchThing") == b"" and wire.ask(b"!") == b""
        short = wire.ask(b"mffff800000000ffc,8")  # the image's one page ends after 4 bytes: a shorter reply
        assert len(short) == 8 and short == wire.ask(b"mffff800000000ffc,4")
        assert wire.ask(b"D") == b"OK"
        finished = run.finish()
    assert finished.returncode == 0
    assert "Traceback" not in finished.stderr and "gdb detached" in finished.stderr


def test_a_disconnect_lets_the_run_finish(tmp_path: Path) -> None:
    plain = _plain_launch(tmp_path, EXAMPLE)
    with launched(EXAMPLE) as run:
        wire = Wire(run.port)
        assert wire.ask(b"?") == b"T05thread:1;"
        assert wire.ask(b"Z0,ffff800000000036,1") == b"OK"
        wire.sock.close()
        finished = run.finish()
    assert finished.stdout == plain.stdout
    assert "gdb disconnected" in finished.stderr and "Traceback" not in finished.stderr


def test_the_stub_listens_on_localhost_only() -> None:
    stub = GdbStub("p", 0)
    try:
        port = stub.listen()
        assert HOST == "127.0.0.1"
        assert stub._server is not None and stub._server.getsockname() == ("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
            pass
        # Bound to the wildcard address, the stub would also answer on 127.0.0.2 (and on the network).
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=TIMEOUT).close()
    finally:
        stub.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nosuch", "--gdb nosuch: no running partition 'nosuch' (partitions: producer, consumer, sensor, monitor)"),
        ("producer:99999", "--gdb producer:99999: port '99999' is not a number from 0 to 65535"),
        (":1234", "--gdb :1234: a partition name is needed (PARTITION[:PORT])"),
    ],
)
def test_a_bad_target_is_a_usage_error(tmp_path: Path, target: str, message: str) -> None:
    done = _plain_launch(tmp_path, EXAMPLE, "--gdb", target)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {message}"


def test_a_taken_port_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _plain_launch(tmp_path, EXAMPLE, "--gdb", f"producer:{port}")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: --gdb producer:{port}: cannot listen on 127.0.0.1:{port}")


# -- C guests: symbols by name -----------------------------------------------------------------------
def test_breakpoints_on_c_functions_by_name(tmp_path: Path) -> None:
    """gdb given the kernel's ELF breaks on its functions and steps by source line; the run is unchanged."""
    from spgs.images import build

    elf = tmp_path / "refkernel.elf"
    elf.write_bytes(build([("kernel", "refkernel")], ROOT)[("kernel", "refkernel")])
    plain = _plain_launch(tmp_path, "partitions.toml", "--trace", str(tmp_path / "plain.jsonl"))
    with launched("partitions.toml", "--trace", str(tmp_path / "debugged.jsonl"), target="beta:0") as run:
        out = _run_gdb([
            GDB, "-batch", "-nx", str(elf), "-ex", f"target remote localhost:{run.port}",
            "-ex", "break kmain", "-ex", "break spk_on_syscall", "-ex", "continue", "-ex", "next",
            "-ex", "continue", "-ex", "bt 1", "-ex", "print/x f->rip", "-ex", "delete", "-ex", "continue",
        ])  # fmt: skip
        finished = run.finish()
    assert re.search(r"Breakpoint 1, kmain \(si=0xffff800000100000\) at refkernel/refkernel\.c:\d+", out), out
    assert re.search(r"Breakpoint 2, spk_on_syscall \(f=0x[0-9a-f]+\) at refkernel/refkernel\.c:\d+", out), out
    assert re.search(r"#0  spk_on_syscall \(f=", out) and re.search(r"\$1 = 0x4[0-9a-f]{5}\n", out), out
    assert "[Inferior 1 (Remote target) exited normally]" in out
    assert (tmp_path / "debugged.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert finished.stdout == plain.stdout


def test_ctrl_c_stops_a_running_partition(tmp_path: Path) -> None:
    """gdb's interrupt byte, sent while the partition runs, stops it (checked between windows)."""
    (tmp_path / "spin.asm").write_text("start:\n    inc rbx\n    jmp start\n", encoding="utf-8")
    (tmp_path / "spin.toml").write_text(
        '[system]\nname = "spin"\nmemory = "16MiB"\nmax_ticks = 1_000_000_000_000\n\n'
        '[[partition]]\nname = "spinner"\nimage = "spin.asm"\nmemory = "256KiB"\nwindow = 10_000\n',
        encoding="utf-8",
    )
    with launched(str(tmp_path / "spin.toml"), target="spinner:0") as run:
        wire = Wire(run.port)
        assert wire.ask(b"?") == b"T05thread:1;"
        assert wire.raw(b"$vCont;c#a8") == b"+"
        wire.sock.sendall(b"\x03")
        while b"#" not in wire.buffer or len(wire.buffer) < wire.buffer.index(b"#") + 3:
            wire._more()
        assert wire.buffer.startswith(b"$T05thread:1;#"), wire.buffer
        wire.buffer = b""
        wire.sock.sendall(b"+")
        rbx = int.from_bytes(bytes.fromhex(wire.ask(b"p1").decode()), "little")
        assert rbx > 0  # it ran
        wire.sock.sendall(b"$k#6b")
        finished = run.finish()
    assert "gdb killed the run" in finished.stderr and "Traceback" not in finished.stderr


def test_random_packets_never_raise() -> None:
    """Every packet, however malformed, gets a reply or an action: no exception reaches the user."""
    import random

    from tests.guests import kernel, machine

    m = machine()
    pid = m.create_partition("k", kernel("start:\n    inc rbx\n    jmp start\n"), [], 64)
    session = m.debug_attach(pid)
    assert m.run(pid, 100).reason == "debug_stop"
    stub = GdbStub("k", 0)
    stub._session, stub._stop = session, session.stop
    stub._send = lambda payload: None  # type: ignore[method-assign]  # D and vKill answer before closing
    rng = random.Random(7)
    alphabet = b"0123456789abcdefxXmMgGpPzZcsCSvDqQT?H:;,=}$#-k!"
    heads = [b"m", b"M", b"X", b"g", b"G", b"p", b"P", b"Z0,", b"z1,", b"c", b"s", b"C", b"vCont;", b"qXfer:", b"H"]
    for _ in range(3000):
        packet = rng.choice(heads) + bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        reply = stub._dispatch(packet)
        assert isinstance(reply, bytes) or reply in ("continue", "step", "detach", "kill"), packet
