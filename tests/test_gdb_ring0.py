"""Ring 0's debugging mechanisms (spk._debug through the public Machine API), and the engine facts they rest on.

The gdb stub's promises start here: a stop happens before the instruction
(not executed, not counted), a resume goes on exactly where the run was
cut, registers and memory are the partition's own and nothing else.
"""

from __future__ import annotations

import random

import pytest

from spk import DEBUG_REGISTERS, DebugError, DebugSession, Machine, MachineEvent
from spk.abi import KERNEL_DATA_VADDR, KERNEL_IMAGE_VADDR, SPK_BASE, START_INFO_VADDR, Status
from tests.guests import Recorder, kernel, machine

#: mov eax,1 (5 bytes); mov ebx,2 (5); inc ebx (2); jmp back to inc ebx (2)
SPIN = kernel("""
start:
    mov eax, 1
    mov ebx, 2
again:
    inc ebx
    jmp again
""")
INC_EBX = KERNEL_IMAGE_VADDR + 10

#: Console writes, timers, blocks and yields, then port I/O at CPL 2 (a kernel fault).
BUSY = kernel("""
start:
    mov r12d, 6
again:
    lea rdi, [rip + msg]
    mov esi, 3
    mov eax, HC_CONSOLE_WRITE
    int 0x82
    mov eax, HC_TIME_NOW
    int 0x82
    lea rdi, [rax + 700]
    mov eax, HC_TIMER_SET
    int 0x82
    mov eax, HC_BLOCK
    int 0x82
    mov eax, HC_YIELD
    int 0x82
    dec r12d
    jnz again
    mov dx, 0x80
    out dx, al
    nop
msg: .ascii "hi\\n"
""")


def _stopped(m: Machine, pid: int, until: int) -> DebugSession:
    outcome = m.run(pid, until)
    assert outcome.reason == "debug_stop", outcome
    session = m.debug_session
    assert session is not None and session.stop is not None
    return session


def test_the_partition_stops_before_its_first_instruction() -> None:
    m = machine()
    pid = m.create_partition("k", SPIN, [], 64)
    m.debug_attach(pid)
    outcome = m.run(pid, 1000)
    assert (outcome.reason, outcome.executed, m.now) == ("debug_stop", 0, 0)
    session = m.debug_session
    assert session is not None and session.stop is not None
    assert (session.stop.kind, session.stop.rip, session.stop.time) == ("entry", KERNEL_IMAGE_VADDR, 0)
    assert session.registers()["rip"] == KERNEL_IMAGE_VADDR
    assert m.info(pid).counters.instructions == 0


def test_a_breakpoint_stops_before_the_instruction_and_a_resume_runs_it_once() -> None:
    m = machine()
    pid = m.create_partition("k", SPIN, [], 64)
    session = m.debug_attach(pid)
    _stopped(m, pid, 1000)
    session.set_breakpoint(INC_EBX)
    session.resume()
    _stopped(m, pid, 1000)
    assert session.stop is not None and (session.stop.kind, session.stop.rip) == ("breakpoint", INC_EBX)
    assert m.now == 10 and session.stop.time == 10  # two movs (5 bytes each) ran; inc ebx did not
    assert session.registers()["rbx"] == 2
    for loop in range(1, 4):  # each resume runs inc and jmp (2 bytes each), then stops at inc again
        session.resume()
        _stopped(m, pid, 1000)
        assert (m.now, session.registers()["rbx"]) == (10 + 4 * loop, 2 + loop)
    assert m.info(pid).counters.windows == 1  # one window, however many stops
    session.clear_breakpoint(INC_EBX)
    session.resume()
    outcome = m.run(pid, 1000)
    assert (outcome.reason, m.now) == ("window_end", 1000)


def test_a_step_runs_exactly_one_instruction() -> None:
    m = machine()
    pid = m.create_partition("k", SPIN, [], 64)
    session = m.debug_attach(pid)
    _stopped(m, pid, 1000)
    rips = []
    for _ in range(5):
        session.resume(step=True)
        _stopped(m, pid, 1000)
        assert session.stop is not None and session.stop.kind == "step"
        rips.append(session.stop.rip - KERNEL_IMAGE_VADDR)
    assert rips == [5, 10, 12, 10, 12]
    assert m.now == 5 + 5 + 2 + 2 + 2 and session.registers()["rbx"] == 4  # one tick per instruction byte


def test_a_step_onto_a_breakpoint_stops_once_and_steps_over_it() -> None:
    m = machine()
    pid = m.create_partition("k", SPIN, [], 64)
    session = m.debug_attach(pid)
    _stopped(m, pid, 1000)
    session.set_breakpoint(INC_EBX)
    session.resume(step=True)
    _stopped(m, pid, 1000)
    session.resume(step=True)
    _stopped(m, pid, 1000)
    assert session.stop is not None and session.stop.rip == INC_EBX and m.now == 10
    session.resume(step=True)  # stepping from the breakpoint executes it
    _stopped(m, pid, 1000)
    assert session.stop is not None and session.stop.rip == INC_EBX + 2 and m.now == 12


def _run_all(m: Machine, pids: list[int], rng: random.Random | None, debug: int | None) -> None:
    """The scheduler of the tests: fixed windows; a debugger that steps, continues, sets breakpoints at random."""
    session = m.debug_attach(debug) if debug is not None else None
    while m.now < 40_000 and any(m.info(p).state in ("ready", "blocked") for p in pids):
        for pid in pids:
            end = m.now + 1000
            outcome = m.run(pid, end)
            while outcome.reason == "debug_stop":
                assert session is not None and session.stop is not None and rng is not None
                assert session.registers()["rip"] == session.stop.rip
                session.read_memory(session.stop.rip, 1)
                if rng.random() < 0.1:
                    session.set_breakpoint(KERNEL_IMAGE_VADDR + rng.randrange(0, 0x40))
                if rng.random() < 0.05 and session.breakpoints:
                    session.clear_breakpoint(min(session.breakpoints))
                session.resume(step=rng.random() < 0.6)
                outcome = m.run(pid, end)
            m.advance(end)


def _events(debug: int | None, seed: int = 0) -> tuple[list[MachineEvent], int, list[object]]:
    rec = Recorder()
    m = Machine(16 << 20, on_event=rec, trace_hypercalls=True)
    pids = [m.create_partition("a", BUSY, [], 64), m.create_partition("b", BUSY, [], 64)]
    _run_all(m, pids, random.Random(seed), pids[debug] if debug is not None else None)
    return rec.events, m.now, [m.info(p).counters for p in pids]


@pytest.mark.parametrize("debugged", [0, 1])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_debugged_run_is_the_undebugged_run(debugged: int, seed: int) -> None:
    """Same events at the same virtual times, same counters: stops, steps and breakpoints change nothing.

    The kernels block on timers, yield and end with port I/O at CPL 2, whose
    instruction count depends on whether code hooks exist (see the fact below).
    """
    plain = _events(None)
    assert any(e.event == "kernel_fault" for e in plain[0])
    assert _events(debugged, seed) == plain


# -- the engine facts the mechanisms rest on (unicorn 2.1.4, measured) ---------------------------------
def _engine_run(code: bytes, *, block_hook: bool, stop_in: str, trace: bool = True) -> tuple[int, int, list[int]]:
    """(instructions a code hook saw run, rip, block sizes seen) after a run of ``code`` at 0x1000 one hook stops."""
    import unicorn
    from unicorn import x86_const

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code)
    seen: list[int] = []
    blocks: list[int] = []
    if trace:  # a code hook everywhere: the engine then checks for a stop after every instruction
        uc.hook_add(unicorn.UC_HOOK_CODE, lambda _u, address, *_a: seen.append(address))
    if block_hook:
        uc.hook_add(unicorn.UC_HOOK_BLOCK, lambda _u, _address, size, *_a: blocks.append(size))
    if stop_in == "out":
        uc.hook_add(unicorn.UC_HOOK_INSN, lambda u, *_a: u.emu_stop(), None, 1, 0, x86_const.UC_X86_INS_OUT)
    elif stop_in == "block":
        uc.hook_add(unicorn.UC_HOOK_BLOCK, lambda u, *_a: u.emu_stop())
    else:
        uc.hook_add(unicorn.UC_HOOK_CODE, lambda u, *_a: u.emu_stop(), None, 0x1002, 0x1002)
    uc.emu_start(0x1000, 0xFFFF)
    return len(seen), int(uc.reg_read(x86_const.UC_X86_REG_RIP)), blocks


def test_engine_fact_a_code_hook_stop_leaves_the_instruction_unexecuted() -> None:
    # nop; nop; inc rax (stopped before: rax stays 0) ...
    count, rip, _ = _engine_run(b"\x90\x90\x48\xff\xc0\xf4", block_hook=False, stop_in="code")
    assert (count, rip) == (3, 0x1002)


def test_engine_fact_a_block_hook_stop_runs_nothing_of_the_block() -> None:
    """The native clock refuses a block that would cross the limit by stopping in its block hook."""
    count, rip, _ = _engine_run(b"\x90\x90\x48\xff\xc0\xf4", block_hook=False, stop_in="block")
    assert (count, rip) == (0, 0x1000)


def test_engine_fact_a_stop_in_a_port_hook_lets_the_block_run_on() -> None:
    """Why refused port I/O raises #GP in the native hook instead of stopping: a stop lands at the block's end."""
    code = b"\x90\x90\xee\x90\x90\xf4"  # nop; nop; out dx, al; nop; nop; hlt
    _count, rip, blocks = _engine_run(code, block_hook=True, stop_in="out", trace=False)
    assert blocks == [len(code)] and rip == 0x1006  # the nops and the hlt after the out ran
    _count, rip, _blocks = _engine_run(code, block_hook=True, stop_in="out", trace=True)
    assert rip == 0x1003  # with a code hook everywhere (the old instruction budget's) it stopped after the out


# -- registers -----------------------------------------------------------------------------------
def _at_entry() -> tuple[Machine, int, DebugSession]:
    m = machine()
    pid = m.create_partition("k", SPIN, [], 64)
    session = m.debug_attach(pid)
    _stopped(m, pid, 1000)
    return m, pid, session


def test_registers_read_and_the_writable_ones_write() -> None:
    m, pid, session = _at_entry()
    regs = session.registers()
    assert tuple(regs) == DEBUG_REGISTERS
    assert regs["rsp"] != 0 and regs["cs"] & 3 == 2 and regs["cr3"] != 0
    session.write_register("rbx", 40)
    session.write_register("rflags", regs["rflags"] | 0x1)  # CF: a program may set it itself
    session.write_register("fs_base", 0x7000)
    session.set_breakpoint(INC_EBX)
    session.resume()
    _stopped(m, pid, 1000)
    after = session.registers()
    assert (after["rbx"], after["fs_base"], after["rax"]) == (2, 0x7000, 1)  # mov ebx, 2 ran after the write
    session.write_register("rbx", 40)
    session.resume(step=True)
    _stopped(m, pid, 1000)
    assert session.registers()["rbx"] == 41


@pytest.mark.parametrize(
    ("name", "change", "status"),
    [
        ("cr3", lambda v: v + 0x1000, Status.DENIED),
        ("cs", lambda v: 0x08, Status.DENIED),  # ring 0's selector
        ("ss", lambda v: v ^ 1, Status.DENIED),
        ("rflags", lambda v: v | 0x3000, Status.DENIED),  # IOPL 3
        ("rflags", lambda v: v ^ 0x200, Status.DENIED),  # IF
        ("rflags", lambda v: v | 0x100, Status.DENIED),  # TF
        ("gs_base", lambda v: 0x8000_0000_0000, Status.INVALID_ARGUMENT),
        ("xmm0", lambda v: 1, Status.INVALID_ARGUMENT),
    ],
)
def test_privileged_state_is_read_only(name: str, change: object, status: Status) -> None:
    _m, _pid, session = _at_entry()
    before = session.registers()
    with pytest.raises(DebugError) as err:
        session.write_register(name, change(before.get(name, 0)))  # type: ignore[operator]
    assert err.value.status == status
    assert session.registers() == before
    if name in before:
        session.write_register(name, before[name])  # writing the same value is no change: allowed


# -- memory --------------------------------------------------------------------------------------
def test_memory_is_read_through_the_partitions_own_tables() -> None:
    m = machine()
    big = kernel('start:\n    jmp start\n.align 4096\n.ascii "second page of b"\n')
    a = m.create_partition("a", SPIN, [], 64)
    b = m.create_partition("b", big, [], 64)
    session = m.debug_attach(a)
    _stopped(m, a, 1000)
    assert session.read_memory(KERNEL_IMAGE_VADDR, len(SPIN)) == SPIN  # a's kernel, not b's at the same address
    assert session.read_memory(START_INFO_VADDR, 8) == (0x5452_4154_534B_5053).to_bytes(8, "little")
    refused = [
        (KERNEL_IMAGE_VADDR + 0x1000, 16, Status.BAD_ADDRESS),  # mapped in b only
        (0, 8, Status.BAD_ADDRESS),
        (KERNEL_IMAGE_VADDR + 0xFFC, 8, Status.BAD_ADDRESS),  # runs off a's last page
        (SPK_BASE, 8, Status.DENIED),  # the GDT is mapped there, read-only: still ring 0's
        (SPK_BASE - 4, 8, Status.DENIED),
        ((1 << 64) - 8, 8, Status.DENIED),
        (0x0000_8000_0000_0000, 8, Status.BAD_ADDRESS),  # not canonical
    ]
    for address, length, status in refused:
        with pytest.raises(DebugError) as err:
            session.read_memory(address, length)
        assert err.value.status == status, hex(address)
    m.debug_detach()
    assert m.debug_attach(b).read_memory(KERNEL_IMAGE_VADDR + 0x1000, 16) == b"second page of b"


def test_memory_writes_need_a_writable_mapping_and_reach_the_guest() -> None:
    m, pid, session = _at_entry()
    with pytest.raises(DebugError) as err:
        session.write_memory(START_INFO_VADDR, b"\0")  # read-only: ring 0 wrote it for the kernel
    assert err.value.status == Status.BAD_ADDRESS
    with pytest.raises(DebugError):
        session.write_memory(SPK_BASE, b"\0")
    session.write_memory(KERNEL_DATA_VADDR, b"abc")
    assert session.read_memory(KERNEL_DATA_VADDR, 3) == b"abc"
    # Code changed while stopped: the engine must not run its old translation.
    session.write_memory(KERNEL_IMAGE_VADDR + 5, b"\xbb\x64\x00\x00\x00")  # mov ebx, 100
    session.set_breakpoint(INC_EBX)
    session.resume()
    _stopped(m, pid, 1000)
    assert session.registers()["rbx"] == 100


def test_one_session_at_a_time_and_detach_lets_the_partition_run_on() -> None:
    m, pid, session = _at_entry()
    with pytest.raises(DebugError) as err:
        m.debug_attach(pid)
    assert err.value.status == Status.BUSY
    with pytest.raises(DebugError):
        m.debug_attach(99)
    session.set_breakpoint(INC_EBX)
    m.debug_detach()
    assert session.closed
    with pytest.raises(DebugError):
        session.registers()
    outcome = m.run(pid, 1000)
    assert (outcome.reason, m.now) == ("window_end", 1000)
