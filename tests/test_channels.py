"""Channels and ports (PORT_OPEN .. PORT_STATUS): each rule of the ABI, negative spec.

Ring 0 directly: small CPL 2 test kernels make the calls on ports that
``Machine.attach_port`` gave them; one test goes through ring 1 (``System``)
with a channel declared in a TOML description.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spgs.config import load
from spgs.system import System, plan
from spk import Machine
from spk.abi import KERNEL_BASE, KERNEL_DATA_SIZE, KERNEL_DATA_VADDR, PORT_NAME_MAX, START_INFO_VADDR, MapFlags, Status
from spk.abi import Hypercall as H
from tests.guests import Recorder, kernel, machine, results

#: Guest-kernel scratch layout inside the data area (results use the first 0x1000 bytes).
NAMES = KERNEL_DATA_VADDR + 0x1000  #: port names, one per 64-byte slot
MSG = KERNEL_DATA_VADDR + 0x2000  #: messages to send, one per 0x40-byte slot
BUF = KERNEL_DATA_VADDR + 0x3000  #: receive buffers, one per 0x40-byte slot
NAME_SLOTS = ("src", "d1", "d2", "nope", "x" * PORT_NAME_MAX, "y" * (PORT_NAME_MAX + 1))

Step = tuple[int, tuple[int, ...]] | str


def poke(address: int, data: bytes) -> str:
    """Assembly that writes ``data`` at ``address`` (clobbers rax, rcx; pads to 8 bytes with NULs)."""
    lines = [f"mov rax, {address:#x}"]
    for off in range(0, len(data), 8):
        word = int.from_bytes(data[off : off + 8].ljust(8, b"\0"), "little")
        lines += [f"mov rcx, {word:#x}", f"mov [rax + {off:#x}], rcx"]
    return "\n".join(lines)


def script(steps: list[Step], prologue: str = "") -> str:
    """Like tests.guests.program, with raw assembly allowed between the calls.

    Every call's rax goes to KERNEL_DATA_VADDR + 8*i (i counts calls only).
    Between two calls with nothing in between, a call with k arguments is
    k + 3 instructions after the previous ``int 0x82`` (store rax, k moves,
    mov rax, int), which lets a test compute virtual times exactly.
    """
    regs = ("rdi", "rsi", "rdx", "r10", "r8")
    names = "\n".join(poke(NAMES + 64 * i, n.encode()) for i, n in enumerate(NAME_SLOTS))
    lines = [names, prologue, "mov rbx, KERNEL_DATA_VADDR"]
    slot = 0
    for step in steps:
        if isinstance(step, str):
            lines.append(step)
            continue
        number, args = step
        for reg, value in zip(regs, args, strict=False):
            lines.append(f"mov {reg}, {value % (1 << 64):#x}")
        lines += [f"mov rax, {int(number)}", "int 0x82", f"mov [rbx + {8 * slot:#x}], rax"]
        slot += 1
    lines += ["mov rdi, 0", "mov rax, HC_EXIT", "int 0x82", "hang: jmp hang"]
    return "\n".join(lines) + "\n"


def calls_in(steps: list[Step]) -> int:
    return sum(1 for s in steps if not isinstance(s, str))


def name(port: str) -> tuple[int, int]:
    """(ptr, len) of a port name in the kernel's name table."""
    return NAMES + 64 * NAME_SLOTS.index(port), len(port)


def open_(port: str) -> Step:
    return (H.PORT_OPEN, name(port))


def send(handle: int, slot: int, length: int) -> Step:
    return (H.PORT_SEND, (handle, MSG + 0x40 * slot, length))


def receive(handle: int, slot: int, length: int = 0x40) -> Step:
    return (H.PORT_RECEIVE, (handle, BUF + 0x40 * slot, length))


def status(handle: int) -> Step:
    return (H.PORT_STATUS, (handle,))


def messages(*texts: bytes) -> str:
    """Prologue storing message i in MSG slot i."""
    return "\n".join(poke(MSG + 0x40 * i, t) for i, t in enumerate(texts))


def read(m: Machine, pid: int, va: int, length: int) -> bytes:
    space = m.partitions[pid].spaces[0]
    pieces = m.walker.spans(space.cr3, va, length, write=False, user=False)
    assert pieces is not None
    return b"".join(m.ram.read(pa, n) for pa, n in pieces)


def received(m: Machine, pid: int, slot: int, length: int) -> bytes:
    return read(m, pid, BUF + 0x40 * slot, length)


def boot(
    steps: list[Step],
    ports: list[tuple[str, str]],
    *,
    kind: str = "queuing",
    size: int = 8,
    depth: int = 2,
    prologue: str = "",
) -> tuple[list[int], Machine, int]:
    """One partition with ``ports`` on one channel; run its script to the end."""
    m = machine()
    pid = m.create_partition("t", kernel(script(steps, prologue)), [], 64)
    cid = m.create_channel(kind, size, depth=depth, refresh=1000)
    for port, direction in ports:
        m.attach_port(pid, port, cid, direction)
    m.run(pid, 500_000)
    assert m.info(pid).state == "exited", m.info(pid)
    m.check_invariants()
    return results(m, pid, calls_in(steps)), m, pid


SRC, D1, D2 = ("src", "source"), ("d1", "destination"), ("d2", "destination")
OK = 0


# ---------------------------------------------------------------------------
# PORT_OPEN
# ---------------------------------------------------------------------------
def test_open_unknown_port_is_not_found_and_opening_twice_gives_the_same_handle() -> None:
    got, _, _ = boot([open_("nope"), open_("d1"), open_("src"), open_("d1")], [SRC, D1])
    assert got == [-Status.NOT_FOUND, 0, 1, 0]


def test_open_port_of_another_partition_is_not_found() -> None:
    m = machine()
    owner = m.create_partition("owner", kernel("l: jmp l\n"), [], 64)
    other = m.create_partition("other", kernel(script([open_("src")])), [], 64)
    cid = m.create_channel("queuing", 8, depth=2)
    m.attach_port(owner, "src", cid, "source")
    m.run(other, 100_000)
    assert results(m, other, 1) == [-Status.NOT_FOUND]


def test_open_name_empty_or_too_long_is_invalid_argument() -> None:
    long_ptr, long_len = name("y" * (PORT_NAME_MAX + 1))
    steps = [
        (H.PORT_OPEN, (name("src")[0], 0)),
        (H.PORT_OPEN, (long_ptr, long_len)),
        (H.PORT_OPEN, (long_ptr, 1 << 63)),
        open_("x" * PORT_NAME_MAX),  # the longest name is fine
    ]
    got, _, _ = boot(steps, [SRC, ("x" * PORT_NAME_MAX, "destination")])
    assert got == [-Status.INVALID_ARGUMENT] * 3 + [0]


def test_open_unreadable_name_is_bad_address() -> None:
    got, _, _ = boot([(H.PORT_OPEN, (0x1000, 3)), (H.PORT_OPEN, ((1 << 64) - 1, 3))], [SRC])
    assert got == [-Status.BAD_ADDRESS] * 2


# ---------------------------------------------------------------------------
# Direction, size and handle rules
# ---------------------------------------------------------------------------
def test_send_on_a_destination_port_is_denied_and_enqueues_nothing() -> None:
    got, _, _ = boot([open_("d1"), send(0, 0, 4), status(0)], [SRC, D1], prologue=messages(b"ping"))
    assert got == [0, -Status.DENIED, 0]


def test_receive_on_a_source_port_is_denied() -> None:
    steps = [open_("src"), open_("d1"), send(0, 0, 4), receive(0, 0)]
    got, _, _ = boot(steps, [SRC, D1], prologue=messages(b"ping"))
    assert got == [0, 1, OK, -Status.DENIED]


def test_receive_on_a_sampling_source_port_is_denied() -> None:
    steps = [open_("src"), send(0, 0, 4), receive(0, 0)]
    got, _, _ = boot(steps, [SRC, D1], kind="sampling", prologue=messages(b"ping"))
    assert got == [0, OK, -Status.DENIED]


@pytest.mark.parametrize("kind", ["queuing", "sampling"])
def test_oversize_and_zero_length_messages_are_invalid_argument(kind: str) -> None:
    steps = [open_("src"), open_("d1"), send(0, 0, 9), send(0, 0, 0), send(0, 0, 1 << 63), status(1), send(0, 0, 8)]
    got, _, _ = boot(steps, [SRC, D1], kind=kind, size=8, prologue=messages(b"12345678"))
    assert got[:6] == [0, 1] + [-Status.INVALID_ARGUMENT] * 3 + [-Status.NOT_FOUND if kind == "sampling" else 0]
    assert got[6] == OK  # exactly message_size bytes is fine


def test_unreadable_message_is_bad_address_and_sends_nothing() -> None:
    steps = [open_("src"), open_("d1"), (H.PORT_SEND, (0, 0x1000, 4)), (H.PORT_SEND, (0, (1 << 64) - 2, 4)), status(1)]
    got, _, _ = boot(steps, [SRC, D1])
    assert got == [0, 1, -Status.BAD_ADDRESS, -Status.BAD_ADDRESS, 0]


@pytest.mark.parametrize("call", [H.PORT_SEND, H.PORT_RECEIVE, H.PORT_STATUS])
def test_handle_not_opened_is_bad_handle(call: H) -> None:
    # No port opened yet; then one opened (handle 0): 1 and 2^64-1 are still bad.
    args = (MSG, 4)
    steps = [(call, (0, *args)), open_("src"), (call, (1, *args)), (call, ((1 << 64) - 1, *args))]
    got, _, _ = boot(steps, [SRC, D1], prologue=messages(b"ping"))
    assert got == [-Status.BAD_HANDLE, 0, -Status.BAD_HANDLE, -Status.BAD_HANDLE]


# ---------------------------------------------------------------------------
# Queuing
# ---------------------------------------------------------------------------
def test_empty_queue_is_not_found() -> None:
    got, _, _ = boot([open_("d1"), receive(0, 0), status(0)], [SRC, D1])
    assert got == [0, -Status.NOT_FOUND, 0]


def test_queue_full_is_busy_and_nothing_is_enqueued_for_any_destination() -> None:
    # depth 2, two destinations: d1 drains one message, d2 stays full.
    steps = [
        open_("src"), open_("d1"), open_("d2"),
        send(0, 0, 2), send(0, 1, 2), receive(1, 0),
        send(0, 2, 2),  # d2 is full: refused for d1 too
        status(1), status(2), status(0),
        receive(1, 1), receive(1, 2),  # d1 holds m2 only: m3 never reached it
        receive(2, 3), receive(2, 4), receive(2, 5),  # d2: m1, m2, then nothing
        status(0), send(0, 2, 2), status(1), status(2),
    ]  # fmt: skip
    got, m, pid = boot(steps, [SRC, D1, D2], depth=2, prologue=messages(b"m1", b"m2", b"m3"))
    assert got == [
        0, 1, 2,
        OK, OK, 2,
        -Status.BUSY,
        1, 2, 0,
        2, -Status.NOT_FOUND,
        2, 2, -Status.NOT_FOUND,
        2, OK, 1, 1,
    ]  # fmt: skip
    assert [received(m, pid, s, 2) for s in (0, 1, 3, 4)] == [b"m1", b"m2", b"m1", b"m2"]
    assert received(m, pid, 2, 2) == bytes(2)  # the refused receive wrote nothing


def test_queue_is_fifo() -> None:
    steps = [open_("src"), open_("d1"), send(0, 2, 3), send(0, 0, 3), send(0, 1, 3)]
    steps += [receive(1, i) for i in range(3)]
    got, m, pid = boot(steps, [SRC, D1], depth=4, prologue=messages(b"one", b"two", b"six"))
    assert got[2:] == [OK, OK, OK, 3, 3, 3]
    assert [received(m, pid, i, 3) for i in range(3)] == [b"six", b"one", b"two"]


def test_queuing_status_counts_waiting_messages_and_free_slots() -> None:
    steps = [
        open_("src"), open_("d1"), open_("d2"),
        status(0), status(1), status(2),
        send(0, 0, 1), send(0, 0, 1), status(0), status(1), status(2),
        receive(1, 0), receive(1, 0), status(0), status(1), status(2),
        receive(2, 0), status(0),
    ]  # fmt: skip
    got, _, _ = boot(steps, [SRC, D1, D2], depth=3, prologue=messages(b"x"))
    assert got[3:] == [
        3, 0, 0,
        OK, OK, 1, 2, 2,  # free slots: the smallest over the destinations
        1, 1, 1, 0, 2,  # d2 still holds two: one free slot
        1, 2,
    ]  # fmt: skip


def test_buffer_too_small_is_no_memory_and_the_message_stays() -> None:
    steps = [open_("src"), open_("d1"), send(0, 0, 5), receive(1, 0, 4), status(1), receive(1, 1, 5), status(1)]
    got, m, pid = boot(steps, [SRC, D1], prologue=messages(b"hello"))
    assert got == [0, 1, OK, -Status.NO_MEMORY, 1, 5, 0]
    assert received(m, pid, 0, 8) == bytes(8)  # nothing written by the refused call
    assert received(m, pid, 1, 5) == b"hello"


def test_unwritable_buffer_is_bad_address_and_the_message_stays() -> None:
    steps = [
        open_("src"), open_("d1"), send(0, 0, 5),
        (H.PORT_RECEIVE, (1, START_INFO_VADDR, 64)),  # read-only page
        (H.PORT_RECEIVE, (1, 0x1000, 64)),  # unmapped
        (H.PORT_RECEIVE, (1, (1 << 64) - 2, 64)),  # wraps
        status(1), receive(1, 0), status(1),
    ]  # fmt: skip
    got, m, pid = boot(steps, [SRC, D1], prologue=messages(b"hello"))
    assert got == [0, 1, OK] + [-Status.BAD_ADDRESS] * 3 + [1, 5, 0]
    assert received(m, pid, 0, 5) == b"hello"


def test_receive_writes_only_the_message_length_of_the_buffer() -> None:
    # docs/abi.md: only [ptr, ptr+message length) must be writable; the rest of
    # the buffer is not touched. The buffer's last 8 bytes end the data area and
    # the page after it is unmapped; a second buffer shows the bytes past the message stay.
    tail = KERNEL_DATA_VADDR + KERNEL_DATA_SIZE - 8
    steps = [
        open_("src"), open_("d1"), send(0, 0, 5), send(0, 0, 5),
        (H.PORT_RECEIVE, (1, tail, 64)), receive(1, 0, 64), status(1),
    ]  # fmt: skip
    got, m, pid = boot(steps, [SRC, D1], depth=4, prologue=messages(b"hello") + "\n" + poke(BUF, b"\xaa" * 16))
    assert got == [0, 1, OK, OK, 5, 5, 0]
    assert read(m, pid, tail, 8) == b"hello\0\0\0"
    assert received(m, pid, 0, 16) == b"hello" + b"\xaa" * 11


def test_message_sent_is_a_copy() -> None:
    # The sender overwrites its buffer after sending; a receiver overwrites its
    # copy: the other destination still gets the original bytes.
    steps = [
        open_("src"), open_("d1"), open_("d2"),
        send(0, 0, 4), poke(MSG, b"BBBB"),
        receive(1, 0), poke(BUF, b"CCCC"),
        receive(2, 1),
    ]  # fmt: skip
    got, m, pid = boot(steps, [SRC, D1, D2], prologue=messages(b"AAAA"))
    assert got == [0, 1, 2, OK, 4, 4]
    assert read(m, pid, MSG, 4) == b"BBBB"
    assert received(m, pid, 1, 4) == b"AAAA"


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------
def test_sampling_before_the_first_write_is_not_found() -> None:
    steps = [open_("src"), open_("d1"), receive(1, 0), status(1), status(0)]
    got, _, _ = boot(steps, [SRC, D1], kind="sampling")
    assert got == [0, 1, -Status.NOT_FOUND, -Status.NOT_FOUND, -Status.NOT_FOUND]


def test_sampling_latest_wins_and_is_not_consumed() -> None:
    steps = [open_("src"), open_("d1"), send(0, 0, 3), send(0, 1, 5), receive(1, 0), receive(1, 1), receive(1, 2)]
    got, m, pid = boot(steps, [SRC, D1], kind="sampling", prologue=messages(b"old", b"newer"))
    assert got == [0, 1, OK, OK, 5, 5, 5]
    assert [received(m, pid, i, 5) for i in range(3)] == [b"newer"] * 3


def test_sampling_send_never_busy() -> None:
    steps = [open_("src"), open_("d1")] + [send(0, 0, 1)] * 5
    got, _, _ = boot(steps, [SRC, D1], kind="sampling", depth=1, prologue=messages(b"x"))
    assert got == [0, 1] + [OK] * 5


def ticks(*lines: str) -> int:
    """Virtual time these instructions take: one tick per byte of instruction."""
    return len(kernel("\n".join(lines) + "\n"))


def _store(slot: int) -> str:
    return f"mov [rbx + {8 * slot:#x}], rax"


def _call(number: int, *args: int) -> list[str]:
    """The lines ``script`` writes for one call (its argument moves, mov rax, int 0x82)."""
    regs = ("rdi", "rsi", "rdx", "r10", "r8")
    return [*(f"mov {r}, {v:#x}" for r, v in zip(regs, args, strict=False)), f"mov rax, {number}", "int 0x82"]


def test_sampling_status_is_the_age_in_ticks() -> None:
    delay = "mov ecx, 50\ndelay: dec ecx\njnz delay"  # 5 + 50 * (2 + 2) bytes
    steps = [open_("src"), open_("d1"), (H.TIME_NOW, ()), send(0, 0, 3), delay, status(1), (H.TIME_NOW, ())]
    got, _, _ = boot(steps, [SRC, D1], kind="sampling", prologue=messages(b"val"))
    before, age, after = got[2], got[4], got[5]
    sent_at = before + ticks(_store(2), *_call(H.PORT_SEND, 0, MSG, 3))
    asked_at = after - ticks(_store(4), *_call(H.TIME_NOW))
    assert age == asked_at - sent_at
    assert age == ticks(_store(3), *_call(H.PORT_STATUS, 1)) + 5 + 50 * (2 + 2)  # the loop runs 50 times


def test_sampling_age_counts_idle_time_and_other_partitions() -> None:
    m = machine()
    writer = m.create_partition("w", kernel(script([open_("src"), (H.TIME_NOW, ()), send(0, 0, 3)],
                                                   messages(b"val"))), [], 64)  # fmt: skip
    reader = m.create_partition("r", kernel(script([open_("d1"), (H.TIME_NOW, ()), status(0)])), [], 64)
    cid = m.create_channel("sampling", 8, refresh=1000)
    m.attach_port(writer, "src", cid, "source")
    m.attach_port(reader, "d1", cid, "destination")
    m.run(writer, 100_000)
    m.advance(250_000)  # idle
    m.run(reader, 400_000)
    sent_at = results(m, writer, 3)[1] + ticks(_store(1), *_call(H.PORT_SEND, 0, MSG, 3))
    now, age = results(m, reader, 3)[1:]
    assert age == now + ticks(_store(1), *_call(H.PORT_STATUS, 0)) - sent_at and age > 250_000 - 100_000


# ---------------------------------------------------------------------------
# Between partitions, and across restarts
# ---------------------------------------------------------------------------
def two_partitions(rx_steps: list[Step]) -> tuple[Machine, int, int]:
    """A sender that queues two messages for "rx", then exits; rx not run yet."""
    m = machine()
    tx_steps = [open_("src"), send(0, 0, 2), send(0, 1, 2)]
    tx = m.create_partition("tx", kernel(script(tx_steps, messages(b"m1", b"m2"))), [], 64)
    rx = m.create_partition("rx", kernel(script(rx_steps)), [], 64)
    cid = m.create_channel("queuing", 8, depth=4)
    m.attach_port(tx, "src", cid, "source")
    m.attach_port(rx, "d1", cid, "destination")
    m.run(tx, 100_000)
    assert results(m, tx, 3) == [0, OK, OK]
    return m, tx, rx


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_reset_empties_the_partitions_queue_and_closes_its_ports(warm: bool) -> None:
    m, _tx, rx = two_partitions([open_("d1"), status(0)])
    m.run(rx, 200_000)
    assert results(m, rx, 2) == [0, 2]
    after = [status(0), receive(0, 0), open_("d1"), status(0), receive(0, 0)]
    m.reset_partition(rx, kernel(script(after)), [], warm=warm)
    m.run(rx, 300_000)
    assert m.info(rx).state == "exited"
    assert results(m, rx, 5) == [-Status.BAD_HANDLE, -Status.BAD_HANDLE, 0, 0, -Status.NOT_FOUND]
    m.check_invariants()


def test_reset_of_the_sender_keeps_messages_waiting_for_others() -> None:
    m, tx, rx = two_partitions([open_("d1"), status(0), receive(0, 0), receive(0, 1)])
    m.reset_partition(tx, kernel("l: jmp l\n"), [])
    m.run(rx, 200_000)
    assert results(m, rx, 4) == [0, 2, 2, 2]
    assert [received(m, rx, i, 2) for i in (0, 1)] == [b"m1", b"m2"]
    m.check_invariants()


TX = """
    lea rdi, [rip + port]
    mov esi, 3
    mov eax, HC_PORT_OPEN
    int 0x82
    mov r12, rax
    lea rsi, [rip + first]
    mov edx, 7
    call send
    mov eax, HC_YIELD
    int 0x82
    lea rsi, [rip + second]
    mov edx, 7
    call send
    xor edi, edi
    mov eax, HC_EXIT
    int 0x82
send:
    mov rdi, r12
    mov eax, HC_PORT_SEND
    int 0x82
    ret
port: .asciz "out"
first: .ascii "ping 1\\n"
second: .ascii "ping 2\\n"
"""

RX = """
    lea rdi, [rip + port]
    mov esi, 2
    mov eax, HC_PORT_OPEN
    int 0x82
    mov r12, rax
    xor ebx, ebx
again:
    mov rdi, r12
    mov rsi, KERNEL_DATA_VADDR
    mov edx, 64
    mov eax, HC_PORT_RECEIVE
    int 0x82
    cmp rax, E_NOT_FOUND
    jne got
    mov eax, HC_YIELD
    int 0x82
    jmp again
got:
    mov rsi, rax
    mov rdi, KERNEL_DATA_VADDR
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    inc ebx
    cmp ebx, 2
    jb again
    xor edi, edi
    mov eax, HC_EXIT
    int 0x82
port: .asciz "in"
"""


def test_messages_cross_partitions_through_a_configured_channel(tmp_path: Path) -> None:
    (tmp_path / "tx.asm").write_text(TX)
    (tmp_path / "rx.asm").write_text(RX)
    cfg = tmp_path / "link.toml"
    cfg.write_text(
        textwrap.dedent("""
        [system]
        memory = "8MiB"
        max_ticks = 200_000
        [[partition]]
        name = "rx"
        image = "rx.asm"
        memory = "256KiB"
        window = 5_000
        ports = [{ name = "in", direction = "destination" }]
        [[partition]]
        name = "tx"
        image = "tx.asm"
        memory = "256KiB"
        window = 5_000
        ports = [{ name = "out", direction = "source" }]
        [[channel]]
        name = "link"
        kind = "queuing"
        source = "tx.out"
        destinations = ["rx.in"]
        message_size = 16
        depth = 2
    """)
    )
    rec = Recorder()
    config = load(cfg)
    system = System(config, plan(config), rec)
    report = system.run(config.description.system.max_ticks)
    assert rec.lines("rx") == ["ping 1", "ping 2"]
    assert {p.name: (p.state, p.exit_code) for p in report.partitions} == {"rx": ("exited", 0), "tx": ("exited", 0)}
    # rx ran first and found nothing, so each message waited for rx's next window.
    windows = [e.partition for e in rec.of("window")]
    assert windows[:4] == ["rx", "tx", "rx", "tx"]
    system.machine.check_invariants()


def test_receive_into_translated_code_runs_the_new_code() -> None:
    """A message received over code the engine has translated replaces it at once.

    The kernel calls a function in a page (translating it), receives a
    message over it (into a buffer that straddles two pages, the function in
    the second), and calls it again in the same window: the new code runs,
    not the stale translation. Both receives are checked (one within a page,
    one across a page boundary). The two pages are frames the kernel maps
    writable and executable itself (its data area is no-execute).
    """
    old = bytes.fromhex("b801000000c3")  # mov eax, 1; ret
    new_a = bytes.fromhex("b807000000c3")  # mov eax, 7; ret
    new_b = b"\x90\x90\x90" + bytes.fromhex("b809000000c3")  # 3 bytes before the page end, then mov eax, 9; ret
    code = KERNEL_BASE + 0x4000_0000
    page_a, page_b = code + 0x800, code + 0x1000  # two pages the kernel maps writable and executable
    call = "mov rcx, {target:#x}\ncall rcx\nmov [rbx + {slot:#x}], rax"
    steps: list[Step] = [
        open_("src"), open_("d1"),
        call.format(target=page_a, slot=0x800), call.format(target=page_b, slot=0x808),
        (H.PORT_SEND, (0, MSG, len(new_a))), (H.PORT_RECEIVE, (1, page_a, 16)),
        (H.PORT_SEND, (0, MSG + 0x40, len(new_b))), (H.PORT_RECEIVE, (1, page_b - 3, 16)),
        call.format(target=page_a, slot=0x810), call.format(target=page_b, slot=0x818),
    ]  # fmt: skip
    mapping = [
        f"mov rax, {int(H.FRAME_ALLOC)}\nint 0x82\nmov rdx, rax\nmov rdi, 0\nmov rsi, {va:#x}\n"
        f"mov r10, {int(MapFlags.WRITE)}\nmov rax, {int(H.MAP)}\nint 0x82"
        for va in (code, code + 0x1000)
    ]
    prologue = "\n".join([*mapping, messages(new_a, new_b), poke(page_a, old), poke(page_b, old)])
    got, m, pid = boot(steps, [SRC, D1], size=16, prologue=prologue)
    assert got == [0, 1, OK, len(new_a), OK, len(new_b)]
    values = [int.from_bytes(read(m, pid, KERNEL_DATA_VADDR + 0x800 + 8 * i, 8), "little") for i in range(4)]
    assert values == [1, 1, 7, 9]
