"""Management hypercalls (PART_LIST, PART_QUERY, PART_CONTROL) and ring 1 carrying them out.

A system-role test kernel (tests.guests.program, written as a .asm file next
to a TOML description) issues the calls; the outcome is checked through
``System``. Partition ids follow the file order: "target" is 1, "manager" 2.
"""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path

import pytest

from spgs.config import load
from spgs.system import System, SystemReport, plan
from spk import Machine
from spk.abi import KERNEL_DATA_VADDR, PART_ENTRY_SIZE, PART_QUERY_WORDS, PartOp, PartState, Status
from spk.abi import Hypercall as H
from tests.guests import Recorder, program

TARGET, MANAGER = 1, 2
LIST = KERNEL_DATA_VADDR + 0x1000  #: PART_LIST entries
QUERY = KERNEL_DATA_VADDR + 0x2000  #: PART_QUERY record
#: The target prints "up" at every boot, then spins.
SPINNER = 'lea rdi, [rip + up]\nmov esi, 3\nmov eax, HC_CONSOLE_WRITE\nint 0x82\nspin: jmp spin\nup: .ascii "up\\n"\n'


def control(pid: int, op: int) -> tuple[int, tuple[int, ...]]:
    return (H.PART_CONTROL, (pid, int(op)))


YIELD = (H.YIELD, ())


def launch(
    tmp_path: Path,
    calls: list[tuple[int, tuple[int, ...]]],
    *,
    target_boot: bool = True,
    manager_role: str = "system",
    target_name: str = "target",
    target_extra: str = "",
    target_src: str = SPINNER,
    extra: str = "",
) -> tuple[System, Recorder]:
    """target (window 5 000) then manager (window 5 000): a major frame of 10 000."""
    (tmp_path / "target.asm").write_text(target_src)
    (tmp_path / "manager.asm").write_text(program(calls))
    cfg = tmp_path / "mgmt.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [system]
        memory = "8MiB"
        [[partition]]
        name = "{target_name}"
        image = "target.asm"
        memory = "256KiB"
        window = 5_000
        boot = {"true" if target_boot else "false"}
        {target_extra}
        [[partition]]
        name = "manager"
        image = "manager.asm"
        memory = "256KiB"
        window = 5_000
        role = "{manager_role}"
        """)
        + textwrap.dedent(extra)
    )
    rec = Recorder()
    config = load(cfg)
    system = System(config, plan(config), rec)
    assert system.pids[target_name] == TARGET and system.pids["manager"] == MANAGER
    return system, rec


def results(system: System, count: int) -> list[int]:
    """The manager's stored results (signed)."""
    raw = read(system.machine, MANAGER, KERNEL_DATA_VADDR, 8 * count)
    return [v - (1 << 64) if v >> 63 else v for v in struct.unpack(f"<{count}Q", raw)]


def read(m: Machine, pid: int, va: int, length: int) -> bytes:
    space = m.partitions[pid].spaces[0]
    pieces = m.walker.spans(space.cr3, va, length, write=False, user=False)
    assert pieces is not None
    return b"".join(m.ram.read(pa, n) for pa, n in pieces)


def entries(system: System, at: int, count: int) -> list[tuple[int, int, str]]:
    """PART_LIST entries the manager received: (id, state, name)."""
    raw = read(system.machine, MANAGER, at, count * PART_ENTRY_SIZE)
    out = []
    for i in range(count):
        pid, state = struct.unpack_from("<QQ", raw, i * PART_ENTRY_SIZE)
        name = raw[i * PART_ENTRY_SIZE + 16 : (i + 1) * PART_ENTRY_SIZE]
        assert len(name) == 32 and b"\0" in name  # NUL padded
        out.append((pid, state, name.rstrip(b"\0").decode()))
    return out


def management(rec: Recorder) -> list[tuple[str, str, str]]:
    return [(e.partition, e.args["op"], e.args["outcome"]) for e in rec.of("management")]


def run_frames(system: System, frames: int) -> list[int]:
    """Run whole major frames; the target's instruction count after each."""
    seen: list[int] = []

    def on_frame(_report: SystemReport) -> None:
        pid = system.pid_of("target")
        seen.append(system.machine.info(pid).counters.instructions if pid is not None else -1)

    system.run(frames * 10_000, on_frame)
    return seen


def target(system: System) -> object:
    return system.machine.info(TARGET)


# ---------------------------------------------------------------------------
# PART_CONTROL, carried out by ring 1
# ---------------------------------------------------------------------------
def test_pause_idles_the_windows_and_resume_runs_again(tmp_path: Path) -> None:
    calls = [control(TARGET, PartOp.PAUSE), YIELD, YIELD, control(TARGET, PartOp.RESUME)]
    system, rec = launch(tmp_path, calls)
    assert run_frames(system, 5) == [5_000, 5_000, 5_000, 10_000, 15_000]
    assert [e.time for e in rec.of("window") if e.partition == "target"] == [0, 30_000, 40_000]
    assert management(rec) == [("target", "pause", "done"), ("target", "resume", "done")]
    assert results(system, 4) == [0, 0, 0, 0]
    assert system.usage["target"].windows == 5  # the paused windows passed, idle
    system.machine.check_invariants()


def test_halt_stops_the_partition(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, [control(TARGET, PartOp.HALT)])
    assert run_frames(system, 3) == [5_000]  # nothing left to run after the first frame
    assert target(system).state == "stopped"  # type: ignore[attr-defined]
    assert management(rec) == [("target", "halt", "done")]
    event = rec.of("management")[0]
    assert 5_000 <= event.time < 10_000  # when the manager's run ended, in its own window


def test_resume_does_not_undo_a_halt(tmp_path: Path) -> None:
    system, _ = launch(tmp_path, [control(TARGET, PartOp.HALT), YIELD, control(TARGET, PartOp.RESUME)])
    assert run_frames(system, 3) == [5_000] * 2
    assert target(system).state == "stopped"  # type: ignore[attr-defined]


def test_restart_is_a_cold_restart(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, [control(TARGET, PartOp.RESTART)])
    run_frames(system, 2)
    assert target(system).restarts == 1  # type: ignore[attr-defined]
    assert rec.lines("target") == ["up", "up"]  # booted again from its image
    assert management(rec) == [("target", "restart", "done")]
    assert [e.args for e in rec.of("restarted")] == [{"warm": False, "restarts": 1}]


def test_destroy_returns_the_frames_and_lists_the_partition_as_declared(tmp_path: Path) -> None:
    calls = [control(TARGET, PartOp.DESTROY), YIELD, (H.PART_LIST, (LIST, 8)), (H.PART_QUERY, (TARGET, QUERY))]
    system, rec = launch(tmp_path, calls)
    report = system.run(30_000)
    assert results(system, 4) == [0, 0, 2, -Status.BAD_HANDLE]
    assert entries(system, LIST, 2) == [(TARGET, PartState.DECLARED, "target"), (MANAGER, PartState.READY, "manager")]
    m = system.machine
    assert not any(f.owner == TARGET for f in m.frames.entries)
    assert TARGET not in m.partitions and system.pid_of("target") is None
    assert report.declared == ["target"]
    assert management(rec) == [("target", "destroy", "done")]
    m.check_invariants()


def test_destroyed_partition_may_be_started_again(tmp_path: Path) -> None:
    calls = [control(TARGET, PartOp.DESTROY), YIELD, control(TARGET, PartOp.START), YIELD, (H.PART_LIST, (LIST, 8))]
    system, rec = launch(tmp_path, calls)
    system.run(40_000)
    assert entries(system, LIST, 2)[0] == (TARGET, PartState.READY, "target")
    assert rec.lines("target") == ["up", "up"]
    assert management(rec) == [("target", "destroy", "done"), ("target", "start", "done")]
    system.machine.check_invariants()


def test_start_of_a_declared_partition(tmp_path: Path) -> None:
    calls = [(H.PART_LIST, (LIST, 8)), control(TARGET, PartOp.START), YIELD, (H.PART_LIST, (LIST + 0x200, 8))]
    system, rec = launch(tmp_path, calls, target_boot=False)
    assert system.pid_of("target") is None
    assert run_frames(system, 3) == [0, 5_000, 10_000]  # started after frame 1's window; runs from frame 2
    assert results(system, 4) == [2, 0, 0, 2]
    assert entries(system, LIST, 1) == [(TARGET, PartState.DECLARED, "target")]
    assert entries(system, LIST + 0x200, 1) == [(TARGET, PartState.READY, "target")]
    assert rec.lines("target") == ["up"]
    assert management(rec) == [("target", "start", "done")]


def test_start_of_a_running_partition_is_ignored(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, [control(TARGET, PartOp.START)])
    run_frames(system, 2)
    assert management(rec) == [("target", "start", "ignored: already running")]
    assert rec.lines("target") == ["up"] and target(system).restarts == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("op", [PartOp.PAUSE, PartOp.RESUME, PartOp.HALT, PartOp.RESTART, PartOp.DESTROY])
def test_other_ops_on_a_declared_partition_are_ignored(tmp_path: Path, op: PartOp) -> None:
    system, rec = launch(tmp_path, [control(TARGET, op)], target_boot=False)
    system.run(20_000)
    assert results(system, 1) == [0]  # accepted by ring 0 ...
    assert management(rec) == [("target", op.name.lower(), "ignored: not running")]  # ... refused by ring 1
    assert system.pid_of("target") is None and system.report(0).declared == ["target"]


# ---------------------------------------------------------------------------
# Rules of the three calls
# ---------------------------------------------------------------------------
def test_guest_role_is_denied_every_management_call(tmp_path: Path) -> None:
    calls = [(H.PART_LIST, (LIST, 8)), (H.PART_QUERY, (TARGET, QUERY)), control(TARGET, PartOp.HALT)]
    system, rec = launch(tmp_path, calls, manager_role="guest")
    run_frames(system, 2)
    assert results(system, 3) == [-Status.DENIED] * 3
    assert read(system.machine, MANAGER, LIST, 2 * PART_ENTRY_SIZE) == bytes(2 * PART_ENTRY_SIZE)
    assert rec.of("management") == [] and rec.of("management_request") == []
    assert target(system).state == "ready"  # type: ignore[attr-defined]


def test_part_control_bad_op_is_invalid_argument_and_unknown_id_bad_handle(tmp_path: Path) -> None:
    calls = [
        control(TARGET, len(PartOp)), control(TARGET, (1 << 64) - 1),
        control(0, PartOp.HALT), control(99, PartOp.HALT), control((1 << 64) - 1, PartOp.HALT),
    ]  # fmt: skip
    system, rec = launch(tmp_path, calls)
    run_frames(system, 2)
    assert results(system, 5) == [-Status.INVALID_ARGUMENT] * 2 + [-Status.BAD_HANDLE] * 3
    assert rec.of("management") == []
    assert target(system).state == "ready"  # type: ignore[attr-defined]


def test_part_query_needs_a_running_partition_and_writable_memory(tmp_path: Path) -> None:
    calls = [(H.PART_QUERY, (TARGET, QUERY)), (H.PART_QUERY, (99, QUERY)), (H.PART_QUERY, (MANAGER, 0x1000))]
    system, _ = launch(tmp_path, calls, target_boot=False)  # target only declared
    system.run(10_000)
    assert results(system, 3) == [-Status.BAD_HANDLE, -Status.BAD_HANDLE, -Status.BAD_ADDRESS]


def test_part_query_record(tmp_path: Path) -> None:
    system, _ = launch(tmp_path, [(H.PART_QUERY, (TARGET, QUERY))])
    system.run(10_000)  # the target's window, then the manager's
    assert results(system, 1) == [0]
    record = struct.unpack(f"<{PART_QUERY_WORDS}Q", read(system.machine, MANAGER, QUERY, 8 * PART_QUERY_WORDS))
    info = system.machine.info(TARGET)
    c = info.counters
    assert record == (5_000, 1, 0, 0, 1, 1, info.frames_in_use, 64, 0)
    assert (c.instructions, c.hypercalls, c.syscalls, c.faults, c.windows, c.preemptions) == record[:6]


def test_part_list_entry_layout(tmp_path: Path) -> None:
    long_name = "t" + "x" * 30  # 31 bytes: the longest name, still NUL terminated
    calls = [(H.PART_LIST, (LIST, 8))]
    extra = """
        [[partition]]
        name = "later"
        image = "target.asm"
        memory = "256KiB"
        window = 5_000
        boot = false
    """
    system, _ = launch(tmp_path, calls, target_name=long_name, extra=extra)
    system.run(15_000)
    assert results(system, 1) == [3]
    raw = read(system.machine, MANAGER, LIST, 4 * PART_ENTRY_SIZE)
    assert PART_ENTRY_SIZE == 48
    assert raw[0:8] == (1).to_bytes(8, "little") and raw[8:16] == bytes(8)  # target: ready (0)
    assert raw[16:48] == long_name.encode() + b"\0"
    assert entries(system, LIST, 3) == [
        (TARGET, PartState.READY, long_name),
        (MANAGER, PartState.READY, "manager"),
        (3, PartState.DECLARED, "later"),
    ]
    assert raw[3 * PART_ENTRY_SIZE :] == bytes(PART_ENTRY_SIZE)  # nothing past the last entry


def test_part_list_writes_at_most_max_entries_and_returns_the_count(tmp_path: Path) -> None:
    calls = [(H.PART_LIST, (LIST, 1)), (H.PART_LIST, (0x1000, 0)), (H.PART_LIST, (0x1000, 1))]
    system, _ = launch(tmp_path, calls)
    system.run(10_000)
    assert results(system, 3) == [2, 2, -Status.BAD_ADDRESS]
    raw = read(system.machine, MANAGER, LIST, 2 * PART_ENTRY_SIZE)
    assert raw[PART_ENTRY_SIZE:] == bytes(PART_ENTRY_SIZE)
    assert entries(system, LIST, 1) == [(TARGET, PartState.READY, "target")]


def test_part_list_states_of_stopped_exited_and_faulted_partitions(tmp_path: Path) -> None:
    extra = """
        [[partition]]
        name = "quitter"
        image = "quitter.asm"
        memory = "256KiB"
        window = 5_000
        [[partition]]
        name = "crasher"
        image = "crasher.asm"
        memory = "256KiB"
        window = 5_000
        [partition.health]
        memory_violation = "cold_restart"
        restart_limit = 0
    """
    (tmp_path / "quitter.asm").write_text("mov edi, 0\nmov eax, HC_EXIT\nint 0x82\n")
    (tmp_path / "crasher.asm").write_text("xor eax, eax\nmov [rax], rax\n")
    # The manager halts the target in frame 1 and lists everyone in frame 2.
    calls = [control(TARGET, PartOp.HALT), YIELD, (H.PART_LIST, (LIST, 8))]
    system, _ = launch(tmp_path, calls, extra=extra)
    system.run(40_000)
    states = [(pid, state) for pid, state, _name in entries(system, LIST, 4)]
    # crasher: restart limit 0 -> halted by the health monitor: stopped, like target.
    assert states == [(1, PartState.STOPPED), (2, PartState.READY), (3, PartState.EXITED), (4, PartState.STOPPED)]


# ---------------------------------------------------------------------------
# Channels across destroy and start
# ---------------------------------------------------------------------------
RX = """
again:
    mov edi, 0
    mov rsi, KERNEL_DATA_VADDR
    mov edx, 16
    mov eax, HC_PORT_RECEIVE
    int 0x82
    test rax, rax
    js empty
    mov rsi, rax
    mov rdi, KERNEL_DATA_VADDR
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    jmp again
empty:
    mov eax, HC_YIELD
    int 0x82
    jmp again
"""


def test_destroyed_and_restarted_destination_does_not_block_the_channel(tmp_path: Path) -> None:
    # Windows: target (rx), manager, tx; 5 000 each.
    rx_open = "lea rdi, [rip + port]\nmov esi, 2\nmov eax, HC_PORT_OPEN\nint 0x82\n"
    prologue = "\n".join([
        "mov rax, KERNEL_DATA_VADDR + 0x800", "mov dword ptr [rax], 0x0a316d", "mov dword ptr [rax + 8], 0x0a326d",
        "mov dword ptr [rax + 16], 0x0a336d", "mov dword ptr [rax + 24], 0x74756f",
    ])  # fmt: skip
    msg = KERNEL_DATA_VADDR + 0x800
    tx_calls = [
        YIELD, YIELD, (H.PORT_OPEN, (msg + 24, 3)),
        (H.PORT_SEND, (0, msg, 3)), (H.PORT_SEND, (0, msg + 8, 3)), YIELD,  # rx drains both
        (H.PORT_STATUS, (0,)), (H.PORT_SEND, (0, msg + 16, 3)),
    ]  # fmt: skip
    (tmp_path / "tx.asm").write_text(program(tx_calls, prologue))
    extra = """
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
        destinations = ["target.in"]
        message_size = 8
        depth = 2
    """
    cfg_calls = [control(TARGET, PartOp.DESTROY), YIELD, control(TARGET, PartOp.START)]
    port = 'ports = [{ name = "in", direction = "destination" }]'
    rx = rx_open + RX + 'port: .asciz "in"\n'
    system, rec = launch(tmp_path, cfg_calls, target_extra=port, target_src=rx, extra=extra)
    system.run(90_000)
    tx = system.pid_of("tx")
    assert tx is not None
    raw = read(system.machine, tx, KERNEL_DATA_VADDR, 8 * len(tx_calls))
    got = [v - (1 << 64) if v >> 63 else v for v in struct.unpack(f"<{len(tx_calls)}Q", raw)]
    assert management(rec) == [("target", "destroy", "done"), ("target", "start", "done")]
    assert got == [0, 0, 0, 0, 0, 0, 2, 0]  # two free slots, and the third message is sent
    assert rec.lines("target") == ["m1", "m2", "m3"]
