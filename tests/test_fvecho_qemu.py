"""partitions/fvecho, an unmodified PC kernel serving a serial line, on QEMU and under the SPK.

COM2's receiver gets the input lines (QEMU's pipe backend on a plain file,
or a named pipe fed line by line; under the SPK ring 0's serial input);
COM3's output must be each line upper-cased and numbered, as the kernel's
README specifies, computed here from the input by the independent model
:func:`served`; COM1 carries its log and summary. Under the SPK (a full
partition, its COM3 a serial cable to a channel) both must be what QEMU
gave, byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spk import Machine
from spk._channels import Direction, attach_relay
from spk_tools.qemu import QemuRun, boot, converse, pc_kernel_elf
from tests.guests import Recorder

LINES = 10  # partitions/fvecho/kernel.c FVECHO_LINES
FRAMES = 1040  # the kernel's 4 MiB identity map and ring 0's boot tables
COM2, COM3 = 0x2F8, 0x3E8
MMUS = ["nested", "shadow"]
CONVERSATION = [b"one\n", b"Two, 2\n", b"three four\n", b"quit\n"]
PIECE = 127  # LINE_MAX - 1: a longer line is served in pieces


def served(data: bytes, limit: int = LINES) -> tuple[list[bytes], list[bytes], str]:
    """What fvecho answers to ``data``: (the input pieces, the COM3 messages, how it stopped)."""
    pieces, answers, rest = [], [], data
    while rest:
        cut = rest.find(b"\n")
        end = cut + 1 if 0 <= cut < PIECE else min(PIECE, len(rest))
        piece, rest = rest[:end], rest[end:]
        if not piece.endswith(b"\n") and len(piece) < PIECE:
            break  # an unfinished last line waits for ever
        if piece in (b"quit\n", b"quit\r\n"):
            return pieces, answers, "quit"
        pieces.append(piece)
        text = piece[:-2] + b"\n" if piece.endswith(b"\r\n") else piece
        answers.append(b"%d: " % (len(answers) + 1) + text.upper())
        if len(answers) == limit:
            return pieces, answers, "done"
    return pieces, answers, "input ended"


def summary(data: bytes) -> bytes:
    pieces, answers, how = served(data)
    return b"fvecho: %s: %d lines served, %d bytes in, %d bytes out; powering off\n" % (
        how.encode(), len(answers), sum(map(len, pieces)), sum(map(len, answers)))  # fmt: skip


QUIT_INPUT = (
    b"hello, world\n"
    b"Mixed Case 123 \xc3\xa9t\xc3\xa9\r\n"  # bytes above 0x7F pass unchanged; \r\n becomes \n
    b"\n"
    + b"long line " * 20 + b"\n"  # 201 bytes: served as 127 + 74
    + b"last one\n"
    b"quit\n"
    b"after quit: never served\n"
)  # fmt: skip


@pytest.fixture(scope="module")
def quit_run() -> QemuRun:
    return boot(pc_kernel_elf("fvecho"), timeout=60, ports=3, inputs={1: QUIT_INPUT})


@pytest.fixture(scope="module")
def conversation() -> QemuRun:
    return converse(pc_kernel_elf("fvecho"), CONVERSATION, timeout=60, trace=("pic_interrupt",))


def test_each_line_comes_back_upper_cased_and_numbered_on_com3(quit_run: QemuRun) -> None:
    assert quit_run.status == 0, quit_run.serial.decode(errors="replace")
    _pieces, answers, how = served(QUIT_INPUT)
    assert how == "quit" and len(answers) == 6  # the model's own reading of the input
    assert quit_run.ports[1] == b"".join(answers)
    assert b"2: MIXED CASE 123 \xc3\xa9T\xc3\xa9\n" in answers and answers[2] == b"3: \n"
    assert quit_run.ports[0] == b""  # nothing goes back on COM2


def test_com1_logs_every_line_and_the_summary(quit_run: QemuRun) -> None:
    log = quit_run.serial.splitlines(keepends=True)
    assert log[:3] == [
        b"fvecho: an unmodified x86-64 PC kernel serving a serial line\n",
        b"uart: com1 ok, com2 ok, com3 ok\n",
        b'fvecho: reading lines on com2 (irq 3), answering on com3; 10 lines or "quit"\n',
    ]
    pieces, _answers, _how = served(QUIT_INPUT)
    lengths = [len(p) - p.endswith(b"\r\n") for p in pieces]
    assert [line.split(b",")[1] for line in log[3:-1]] == [
        b" %d byte%s%s\n" % (n, b"" if n == 1 else b"s", b"" if p.endswith(b"\n") else b" (no newline yet)")
        for n, p in zip(lengths, pieces, strict=True)
    ]
    assert log[-1] == summary(QUIT_INPUT)


def test_it_stops_by_itself_after_ten_lines_and_runs_the_same_twice() -> None:
    data = b"".join(b"line %d\n" % i for i in range(1, 13))
    runs = [boot(pc_kernel_elf("fvecho"), timeout=60, ports=3, inputs={1: data}) for _ in range(2)]
    assert runs[0] == runs[1]  # one byte arriving at a time or in bursts: the same answers
    assert runs[0].status == 0
    assert runs[0].ports[1] == b"".join(served(data)[1]) and runs[0].ports[1].endswith(b"10: LINE 10\n")
    assert runs[0].serial.endswith(summary(data)) and b": done: 10 lines" in runs[0].serial


def test_without_a_serial_line_it_says_so_and_stops_with_status_1() -> None:
    run = boot(pc_kernel_elf("fvecho"), timeout=60)  # COM1 only
    assert run.status == 1
    assert run.serial.splitlines()[-2:] == [
        b"uart: com1 ok, com2 missing, com3 missing",
        b"fvecho: no serial line to serve (COM2 in, COM3 out); stopping",
    ]


def test_the_port_options_are_checked() -> None:
    with pytest.raises(ValueError, match="1 to 4 COM ports"):
        boot(b"", ports=5)
    with pytest.raises(ValueError, match="only 2 port"):
        boot(b"", ports=2, inputs={2: b"x"})


def test_no_pc_kernel_repeats_a_helper_of_the_pc_library() -> None:
    """The house rule for C guests, for the bare PC kernels: what spk_sdk/pc provides, no kernel defines again."""
    root = Path(__file__).parents[1]
    definition = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;{]*\)\s*\{", re.MULTILINE)
    library = [*(root / "spk_sdk" / "pc").glob("*.c"), root / "spk_sdk" / "pc" / "pc.h"]
    provided = {name for path in library for name in definition.findall(path.read_text())}
    assert {"outb", "rdmsr", "pc_uart_init", "pc_gdt_init", "pc_pic_init", "pc_pit_init", "pc_map"} <= provided
    folders = {p.parent for p in (root / "partitions").glob("*/*.[ch]") if '#include "pc.h"' in p.read_text()}
    kernels = [source for folder in folders for source in folder.glob("*.c")]
    assert {p.parent.name for p in kernels} >= {"pcref", "fvecho"}
    for source in kernels:
        again = provided & set(definition.findall(source.read_text()))
        assert not again, f"{source.parent.name}/{source.name} defines {sorted(again)}: use spk_sdk/pc"


def test_lines_sent_one_at_a_time_wake_the_idle_kernel_by_irq_3(conversation: QemuRun) -> None:
    """A conversation, as over a cable: each line reaches a kernel halted in its idle loop; IRQ 3 wakes it."""
    lines, run = CONVERSATION, conversation
    data = b"".join(lines)
    assert run.status == 0 and run.ports[1] == b"".join(served(data)[1])
    assert run.serial.endswith(summary(data))
    # QEMU's log of the interrupts the 8259 pair delivered: COM2's receiver (IRQ 3, vector 35) among them
    assert run.trace.count("pic_interrupt irq 3 intno 35") >= len(lines) - 1


def spk_run(lines: list[bytes], mmu: str, *, one_at_a_time: bool) -> tuple[bytes, bytes, dict[str, object]]:
    """fvecho as a full partition: (its console, the messages its COM3 cable sent, its full_state).

    The input goes to COM2 all at once before it boots (ring 0's serial
    input), or one line at a time through a serial cable from a channel,
    each once the answer to the one before has come out of COM3 and the
    kernel is idle again (as :func:`converse` does under QEMU).
    """
    recorder = Recorder()
    m = Machine(32 << 20, on_event=recorder)
    pid = m.create_full_partition("fvecho", pc_kernel_elf("fvecho"), FRAMES, mmu=mmu)
    cid = m.create_channel("queuing", 256, depth=64)
    m.attach_serial(pid, COM3, cid, "source")
    answers = attach_relay(m.channels[cid], Direction.DESTINATION).queue
    pending = list(lines)
    if one_at_a_time:
        cin = m.create_channel("queuing", 256, depth=4)
        m.attach_serial(pid, COM2, cin, "destination")
        source = attach_relay(m.channels[cin], Direction.SOURCE)
    else:
        m.serial_input(pid, COM2, b"".join(pending))
        pending = []
    sent = 0
    while m.now < 2_000_000_000 and m.info(pid).state in ("ready", "blocked"):
        if pending and m.info(pid).state == "blocked" and len(answers) == sent:
            m.channels[cin].send(source, pending.pop(0), m.now)
            sent += 1
        end = m.now + 2_000_000
        m.run(pid, end)
        m.advance(end)
        m.check_invariants()
    assert (m.info(pid).state, m.info(pid).exit_code) == ("exited", 0)
    console = "".join(line + "\n" for line in recorder.lines("fvecho")).encode()
    return console, b"".join(answers), m.full_state(pid)


@pytest.mark.parametrize("mmu", MMUS)
def test_under_the_spk_it_answers_as_under_qemu(quit_run: QemuRun, mmu: str) -> None:
    lines = QUIT_INPUT.splitlines(keepends=True)
    console, answers, state = spk_run(lines, mmu, one_at_a_time=False)
    assert (console, answers) == (quit_run.serial, quit_run.ports[1])
    cables = state["serial_cables"]
    assert isinstance(cables, list) and cables[0]["port_base"] == COM3 and cables[0]["dropped"] == 0


@pytest.mark.parametrize("mmu", MMUS)
def test_under_the_spk_lines_one_at_a_time_come_in_by_irq_3_as_under_qemu(conversation: QemuRun, mmu: str) -> None:
    lines = CONVERSATION
    console, answers, state = spk_run(lines, mmu, one_at_a_time=True)
    qemu = conversation
    assert (console, answers) == (qemu.serial, qemu.ports[1])
    traps = state["traps"]
    assert isinstance(traps, dict) and traps["irq"] >= len(lines) - 1 and traps["hlt"] >= len(lines) - 1
