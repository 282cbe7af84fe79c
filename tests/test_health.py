"""The health monitor (ring 1): each action of a partition's health table, negative spec.

Small guest kernels are written as .asm files next to a TOML description in
a temporary directory and booted through ``System``, as ``spk launch`` does.
Each system has the partition under test ("victim") and a well-behaved
"bystander" that gives up its window at once.
"""

from __future__ import annotations

import re
import struct
import textwrap
from pathlib import Path

import pytest

from spgs.config import load
from spgs.system import System, plan
from spk.abi import (
    APP_IMAGE_VADDR,
    HEALTH_EVENT_CODES,
    HEALTH_VECTOR,
    KERNEL_DATA_VADDR,
    SEL_USER_CODE,
    SEL_USER_DATA,
    Register,
)
from tests.guests import Recorder

#: Every boot: count boots in the data area (word 0), print "boot <n>", and
#: extend the APPS register once (MEASURE of the kernel's first 16 bytes).
BOOT = """
start:
    mov rbx, KERNEL_DATA_VADDR
    inc qword ptr [rbx]
    mov rax, [rbx]
    add al, 0x30
    mov dword ptr [rbx + 0x100], 0x746f6f62
    mov byte ptr [rbx + 0x104], 0x20
    mov [rbx + 0x105], al
    mov byte ptr [rbx + 0x106], 10
    lea rdi, [rbx + 0x100]
    mov esi, 7
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    lea rdi, [rip + start]
    mov esi, 16
    lea rdx, [rip + start]
    mov r10d, 4
    mov eax, HC_MEASURE
    int 0x82
"""

PRINT = """
say:                                    # print the 6 bytes at rsi as a line
    mov rdi, rsi
    mov esi, 6
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    ret
after: .ascii "after\\n"
later: .ascii "later\\n"
"""

FAULT = BOOT + "    xor eax, eax\n    mov [rax], rax\n"
SPIN = BOOT + "spin: jmp spin\n"
RAISE = (
    BOOT
    + """
    mov edi, 7
    mov eax, HC_RAISE_ERROR
    int 0x82
    lea rsi, [rip + after]
    call say
    mov eax, HC_YIELD
    int 0x82
    lea rsi, [rip + later]
    call say
    xor edi, edi
    mov eax, HC_EXIT
    int 0x82
"""
    + PRINT
)
YIELDER = "again:\n    mov eax, HC_YIELD\n    int 0x82\n    jmp again\n"

#: RAISE_ERROR, then enter an app that spins ("jmp $" in a page of its own).
#: The trap entry copies its frame to KERNEL_DATA_VADDR + 0x400 and exits
#: with (vector << 8) | error code.
TRAPPER = """
    mov eax, HC_SET_ENTRY
    mov edi, ENTRY_TRAP
    lea rsi, [rip + trap]
    int 0x82
    mov eax, HC_SET_KERNEL_STACK
    mov rdi, KERNEL_STACK_TOP
    int 0x82
    mov eax, HC_FRAME_ALLOC
    int 0x82
    mov r12, rax
    xor edi, edi                        # the frame in the kernel half, to write the code
    mov rsi, KERNEL_BASE + 0x300000
    mov rdx, r12
    mov r10d, MAP_WRITE
    mov eax, HC_MAP
    int 0x82
    mov rax, KERNEL_BASE + 0x300000
    mov word ptr [rax], 0xfeeb
    xor edi, edi                        # and at APP_IMAGE_VADDR for the app
    mov esi, APP_IMAGE_VADDR
    mov rdx, r12
    mov r10d, MAP_USER
    mov eax, HC_MAP
    int 0x82
    mov edi, 9
    mov eax, HC_RAISE_ERROR
    int 0x82
    mov rbx, KERNEL_DATA_VADDR + 0x200  # IRET frame: zero but rip
    mov qword ptr [rbx + 128], APP_IMAGE_VADDR
    xor edi, edi
    mov rsi, rbx
    mov eax, HC_IRET
    int 0x82
    mov edi, 1                          # IRET failed
    mov eax, HC_EXIT
    int 0x82
trap:                                   # copy the 8-word trap frame to the data area
    mov rbx, KERNEL_DATA_VADDR + 0x400
    xor ecx, ecx
copy:
    mov rax, [rsp + rcx * 8]
    mov [rbx + rcx * 8], rax
    inc ecx
    cmp ecx, 8
    jb copy
    mov rdi, [rsp]
    shl rdi, 8
    or rdi, [rsp + 8]
    mov eax, HC_EXIT
    int 0x82
"""


def launch(
    tmp_path: Path,
    victim: str,
    health: str,
    ticks: int,
    *,
    image: str = "victim.asm",
    extra: str = "",
) -> tuple[System, Recorder]:
    """Boot victim (window 5 000) and bystander (window 5 000): a major frame of 10 000."""
    (tmp_path / "victim.asm").write_text(victim)
    (tmp_path / "bystander.asm").write_text(YIELDER)
    cfg = tmp_path / "health.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [system]
        memory = "8MiB"
        max_ticks = {ticks}
        [[partition]]
        name = "victim"
        image = "{image}"
        memory = "1MiB"
        window = 5_000
        {extra}
        [partition.health]
        """)
        + textwrap.dedent(health)
        + textwrap.dedent("""
        [[partition]]
        name = "bystander"
        image = "bystander.asm"
        memory = "256KiB"
        window = 5_000
        """)
    )
    rec = Recorder()
    config = load(cfg)
    system = System(config, plan(config), rec)
    return system, rec


def actions(rec: Recorder, name: str = "victim") -> list[tuple[str, str]]:
    return [(e.args["event"], e.args["action"]) for e in rec.of("health_action") if e.partition == name]


def windows(rec: Recorder, name: str) -> list[int]:
    return [e.time for e in rec.of("window") if e.partition == name]


def boot_count(system: System) -> int:
    """Word 0 of the victim's data area: the boots its kernel counted."""
    m = system.machine
    pid = system.pid_of("victim")
    assert pid is not None
    tr = m.walker.translate(m.partitions[pid].spaces[0].cr3, KERNEL_DATA_VADDR)
    assert tr is not None
    return m.ram.read_u64(tr.paddr)


def victim(system: System) -> object:
    return next(p for p in system.report(0).partitions if p.name == "victim")


# ---------------------------------------------------------------------------
# Fatal events: halt, cold_restart, warm_restart, restart_limit
# ---------------------------------------------------------------------------
def test_halt_stops_the_partition_and_the_other_runs_on(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, FAULT, 'memory_violation = "halt"', 50_000)
    system.run(50_000)
    assert actions(rec) == [("memory_violation", "halt")]
    info = victim(system)
    assert info.state == "stopped" and info.restarts == 0  # type: ignore[attr-defined]
    assert rec.lines("victim") == ["boot 1"]
    assert info.counters.windows == 1  # type: ignore[attr-defined]  # its later windows pass idle
    assert windows(rec, "bystander") == [5_000, 15_000, 25_000, 35_000, 45_000]
    assert system.usage["victim"].windows == 5  # still scheduled, idle
    system.machine.check_invariants()


def test_cold_restart_zeroes_memory_and_measures_afresh(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, FAULT, 'memory_violation = "cold_restart"\nrestart_limit = 10', 30_000)
    pid = system.pid_of("victim")
    assert pid is not None
    fresh_registers, fresh_events = system.machine.measurements(pid)
    system.run(30_000)
    assert actions(rec) == [("memory_violation", "cold_restart")] * 3
    assert rec.lines("victim") == ["boot 1"] * 3  # the counter starts from a zeroed data area each time
    assert victim(system).restarts == 3  # type: ignore[attr-defined]
    assert victim(system).state == "ready"  # type: ignore[attr-defined]
    assert boot_count(system) == 0  # restarted after its last fault, not run yet: zeroed
    registers, events = system.machine.measurements(pid)
    # Reset and taken again: config and kernel image only (the kernel's MEASURE is gone).
    assert [e.type for e in events] == ["config", "kernel_image"] == [e.type for e in fresh_events]
    assert registers == fresh_registers
    system.machine.check_invariants()


def test_warm_restart_keeps_the_data_area_and_the_measurements(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, FAULT, 'memory_violation = "warm_restart"\nrestart_limit = 10', 30_000)
    pid = system.pid_of("victim")
    assert pid is not None
    fresh_registers, _ = system.machine.measurements(pid)
    system.run(30_000)
    assert actions(rec) == [("memory_violation", "warm_restart")] * 3
    assert rec.lines("victim") == ["boot 1", "boot 2", "boot 3"]
    assert boot_count(system) == 3
    assert victim(system).restarts == 3  # type: ignore[attr-defined]
    registers, events = system.machine.measurements(pid)
    # Kept, not reset: one MEASURE per boot; the kernel image is not measured again.
    assert [e.type for e in events] == ["config", "kernel_image", "app", "app", "app"]
    assert registers[Register.KERNEL] == fresh_registers[Register.KERNEL]
    assert registers[Register.APPS] != fresh_registers[Register.APPS]
    system.machine.check_invariants()


@pytest.mark.parametrize("action", ["cold_restart", "warm_restart"])
def test_restart_limit_reached_halts(tmp_path: Path, action: str) -> None:
    system, rec = launch(tmp_path, FAULT, f'memory_violation = "{action}"\nrestart_limit = 2', 50_000)
    system.run(50_000)
    assert actions(rec) == [("memory_violation", action)] * 2 + [("memory_violation", "halt")]
    last = [e for e in rec.of("health_action") if e.partition == "victim"][-1]
    assert "restart limit 2 reached" in last.args["detail"]
    info = victim(system)
    assert (info.state, info.restarts) == ("stopped", 2)  # type: ignore[attr-defined]
    assert len(rec.lines("victim")) == 3
    assert len(windows(rec, "bystander")) == 5


def test_restart_limit_zero_halts_at_the_first_event(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, FAULT, 'memory_violation = "cold_restart"\nrestart_limit = 0', 30_000)
    system.run(30_000)
    assert actions(rec) == [("memory_violation", "halt")]
    assert (victim(system).state, victim(system).restarts) == ("stopped", 0)  # type: ignore[attr-defined]


def test_default_table_halts_on_a_kernel_fault(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, FAULT, "", 20_000)
    system.run(20_000)
    assert actions(rec) == [("memory_violation", "halt")]
    assert [e.args["kind"] for e in rec.of("kernel_fault")] == ["memory_violation"]


# ---------------------------------------------------------------------------
# Non-fatal events: log, ignore, halt and restarts on guest_error
# ---------------------------------------------------------------------------
def test_log_traces_the_action_and_the_partition_continues(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, RAISE, 'guest_error = "log"', 30_000)
    system.run(30_000)
    assert [(e.partition, e.args["event"], e.args["detail"]) for e in rec.of("health_event")] == [
        ("victim", "guest_error", "code 7")
    ]
    assert actions(rec) == [("guest_error", "log")]
    assert rec.lines("victim") == ["boot 1", "after", "later"]
    assert (victim(system).state, victim(system).exit_code) == ("exited", 0)  # type: ignore[attr-defined]
    assert system.usage["victim"].health_events == 1


def test_ignore_traces_no_action_but_usage_counts_the_event(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, RAISE, 'guest_error = "ignore"', 30_000)
    system.run(30_000)
    assert [e.args["event"] for e in rec.of("health_event")] == ["guest_error"]  # ring 0 reports it
    assert rec.of("health_action") == []
    assert rec.lines("victim") == ["boot 1", "after", "later"]
    assert system.usage["victim"].health_events == 1


def test_halt_on_guest_error_takes_effect_when_the_run_ends(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, RAISE, 'guest_error = "halt"', 30_000)
    system.run(30_000)
    assert actions(rec) == [("guest_error", "halt")]
    assert rec.lines("victim") == ["boot 1", "after"]  # RAISE_ERROR returned; no next window
    assert victim(system).state == "stopped"  # type: ignore[attr-defined]


def test_cold_restart_on_guest_error(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, RAISE, 'guest_error = "cold_restart"\nrestart_limit = 1', 40_000)
    system.run(40_000)
    assert actions(rec) == [("guest_error", "cold_restart"), ("guest_error", "halt")]
    assert rec.lines("victim") == ["boot 1", "after", "boot 1", "after"]
    assert (victim(system).state, victim(system).restarts) == ("stopped", 1)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# propagate
# ---------------------------------------------------------------------------
def test_propagate_guest_error_reaches_the_trap_entry_with_vector_32_code_2(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, TRAPPER, 'guest_error = "propagate"', 30_000)
    system.run(30_000)
    assert actions(rec) == [("guest_error", "propagate")]
    info = victim(system)
    assert info.state == "exited"  # type: ignore[attr-defined]
    assert info.exit_code == (HEALTH_VECTOR << 8) | HEALTH_EVENT_CODES["guest_error"]  # type: ignore[attr-defined]
    assert (HEALTH_VECTOR, HEALTH_EVENT_CODES["guest_error"]) == (32, 2)
    m = system.machine
    pid = system.pid_of("victim")
    assert pid is not None
    tr = m.walker.translate(m.partitions[pid].spaces[0].cr3, KERNEL_DATA_VADDR + 0x400)
    assert tr is not None
    vector, error, address, rip, cs, _rflags, rsp, ss = struct.unpack("<8Q", m.ram.read(tr.paddr, 64))
    # Fault address 0 and the interrupted app's iret frame, as for any app trap.
    assert (vector, error, address) == (32, 2, 0)
    assert (rip, cs, rsp, ss) == (APP_IMAGE_VADDR, SEL_USER_CODE, 0, SEL_USER_DATA)


def test_propagate_overrun_makes_the_refkernel_kill_the_spinning_app(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, "", 'overrun = "propagate"', 60_000, image="refkernel", extra='apps = ["bad_spin"]')
    system.run(60_000)
    killed = [line for line in rec.lines("victim") if "killed" in line]
    assert len(killed) == 1 and re.match(r"refkernel: app 1 killed: vector 32 at rip 0x", killed[0]), killed
    assert actions(rec)[0] == ("overrun", "propagate")
    assert victim(system).state == "exited"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# overrun, and the trace of every decision
# ---------------------------------------------------------------------------
def test_overrun_is_detected_and_counted_in_usage(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, SPIN, "", 40_000)  # overrun: ignore by default
    system.run(40_000)
    usage = system.usage["victim"]
    assert (usage.windows, usage.overruns, usage.health_events) == (4, 4, 4)
    assert usage.used == 4 * 5_000 and usage.use == 1.0
    assert rec.of("health_action") == []
    assert system.usage["bystander"].overruns == 0
    assert victim(system).state == "ready"  # type: ignore[attr-defined]


def test_overrun_log_traces_each_window(tmp_path: Path) -> None:
    system, rec = launch(tmp_path, SPIN, 'overrun = "log"', 30_000)
    system.run(30_000)
    assert actions(rec) == [("overrun", "log")] * 3
    assert [e.time for e in rec.of("health_action")] == [5_000, 15_000, 25_000]  # at each window's end
    assert system.usage["victim"].overruns == 3


def test_every_health_decision_is_traced(tmp_path: Path) -> None:
    # Each boot: guest_error (log) then, in its next window, a kernel fault (cold restart).
    victim_src = RAISE.replace("    lea rsi, [rip + later]\n", "    xor eax, eax\n    mov [rax], rax\n", 1)
    system, rec = launch(tmp_path, victim_src, 'guest_error = "log"\nmemory_violation = "cold_restart"', 40_000)
    system.run(40_000)
    assert actions(rec) == [("guest_error", "log"), ("memory_violation", "cold_restart")] * 2
    # Ring 1 traces every event it decides about, kernel faults included.
    assert len(rec.of("health_event")) == 4 and len(rec.of("kernel_fault")) == 2
    assert system.usage["victim"].health_events == len(rec.of("health_action")) == 4
    # The action is traced at the end of the run that caused it, before the next window.
    times = [e.time for e in rec.of("health_action")]
    assert times == sorted(times) and all(t % 10_000 <= 5_000 for t in times)
