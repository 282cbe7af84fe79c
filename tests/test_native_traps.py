"""The native trap paths (spk/_clock.c) against ring 0's Python paths they shortcut.

The app system call bounce (``int 0x80`` and the ``syscall`` instruction at
CPL 3) runs in C when ring 0 arms it; ring 0's own ``_enter_kernel`` does the
same steps in Python and handles every other case. Both must leave the very
same machine: registers, RAM, counters, virtual time. The page walk ring 0's
copies use is native too, and must agree with the Python walker everywhere;
so must the YIELD hypercall answered in C and the run done in one native
call (a window's most common shape).
"""

from __future__ import annotations

import random

import pytest

import spk._engine
from spk import Machine
from spk._paging import Walker
from spk._pv_traps import PvTraps
from tests.guests import Recorder, app, bundled, machine, refsystem

#: getpid through both gates, with the arithmetic flags live across each call
#: (the bounce must read RFLAGS as the app left it) and a counter in rbx.
_BOTH_GATES = """
    xor ebx, ebx
loop:
    inc rbx
    cmp rbx, 7
    mov rax, 3
    int 0x80
    mov rax, 3
    stc
    syscall
    jmp loop
"""


def _run(native: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Machine, int]:
    with monkeypatch.context() as patch:
        if not native:  # never armed: every bounce goes through ring 0's Python path
            patch.setattr(Machine, "kernel_entry_changed", lambda self, p: None)
        m = machine()
        pid = m.create_partition("p", bundled("kernel", "refkernel"), [("gates", app(_BOTH_GATES))], 256)
        for _ in range(6):  # several windows: the bounce is armed again at every run
            end = m.now + 40_000
            m.run(pid, end)
            m.advance(end)
    return m, pid


def test_native_bounce_leaves_the_machine_the_python_bounce_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_pid = _run(True, monkeypatch)
    slow, slow_pid = _run(False, monkeypatch)
    counters = fast.info(fast_pid).counters
    assert counters.syscalls > 100, "the app did not loop on system calls"
    assert fast.info(fast_pid).fault is None and fast.info(fast_pid).state == "ready"
    assert vars(counters) == vars(slow.info(slow_pid).counters)
    assert fast.now == slow.now
    f, s = fast.partitions[fast_pid].context, slow.partitions[slow_pid].context
    base = f.layout.gpr0
    assert list(f.words[base : base + 16]) == list(s.words[base : base + 16])
    assert (f.rip, f.cr3) == (s.rip, s.cr3)
    assert fast.ram.read(0, fast.ram.size) == slow.ram.read(0, slow.ram.size)


def test_native_page_walk_agrees_with_the_python_walker() -> None:
    m = machine()
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("gates", app(_BOTH_GATES))], 256)
    m.run(pid, 50_000)
    cr3 = m.partitions[pid].context.cr3
    python = Walker(m.ram)
    rnd = random.Random(7)
    around = (0, 0x40_0000, 0x7F_F000, 0x7FFF_FFFF_FFF8)
    around += (0xFFFF_8000_0000_0000, 0xFFFF_8000_001F_F000, 0xFFFF_FF00_0000_0000)
    present = 0
    for _ in range(4000):
        va = max(0, rnd.choice(around) + rnd.randrange(-0x3000, 0x3000))
        length = rnd.choice((1, 8, 100, 5000))
        for write in (False, True):
            for user in (False, True):
                expected = python.spans(cr3, va, length, write=write, user=user)
                assert m.walker.spans(cr3, va, length, write=write, user=user) == expected, (hex(va), length)
                present += expected is not None
    assert present > 1000, "the addresses tried missed the mapped pages"


def test_native_copies_agree_with_the_python_walker() -> None:
    """Ring 0's copies in C (spk_copy_in/out) read and write what the Python walk's pieces say, or refuse."""
    m = machine()
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("gates", app(_BOTH_GATES))], 256)
    m.run(pid, 50_000)
    cr3 = m.partitions[pid].context.cr3
    python = Walker(m.ram)
    rnd = random.Random(11)
    around = (0, 0x40_0000, 0x7F_F000, 0x7FFF_FFFF_F000, 0xFFFF_8000_0000_0000)
    around += (0xFFFF_8000_001F_F000, 0xFFFF_FFFF_FFFF_F000)  # the last one wraps past 2**64
    copied = refused = 0
    for _ in range(1500):
        va = max(0, rnd.choice(around) + rnd.randrange(-0x3000, 0x3000))
        length = rnd.choice((1, 8, 100, 5000))
        for user in (False, True):
            pieces = python.spans(cr3, va, length, write=False, user=user)
            expected = None if pieces is None else b"".join(m.ram.read(pa, n) for pa, n in pieces)
            assert m.engine.copy_in(cr3, va, length, 4 if user else 0) == expected, (hex(va), length, user)
        pieces = python.spans(cr3, va, length, write=True, user=False)
        data = rnd.randbytes(length)
        mapped = [python.translate(cr3, page) for page in range(va & ~0xFFF, min(va + length, 1 << 64), 0x1000)]
        frames = [tr.paddr for tr in mapped if tr is not None]  # every frame the range reaches
        before = [m.ram.read(pa, 0x1000) for pa in frames]
        done = m.engine.copy_out(cr3, va, data, 0, drop_code=False)
        if pieces is None:
            assert done == -1 and [m.ram.read(pa, 0x1000) for pa in frames] == before, (hex(va), length)
            refused += 1
        else:
            assert done == 0 and b"".join(m.ram.read(pa, n) for pa, n in pieces) == data, (hex(va), length)
            copied += 1
    assert copied > 100 and refused > 100, (copied, refused)



def _reference_run(one_call: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Machine, int, list[dict[str, object]]]:
    """The reference kernel's timer-driven apps in windows of odd lengths (tails, timer upcalls, bounces)."""
    with monkeypatch.context() as patch:
        if not one_call:  # every run through ring 0's loop of engine starts (spk_run_step), as before spk_run
            patch.setattr(spk._engine, "_RUN_ONCE_BUDGET", 0)
        m, pid = refsystem(["bench_getpid", "sleeper", "counter"], Recorder())
        outcomes = []
        for length in (7_777, 20_011, 3_001, 50_000) * 6:
            end = m.now + length
            outcomes.append(vars(m.run(pid, end)))
            m.advance(end)
    return m, pid, outcomes


def test_one_call_runs_leave_the_machine_the_run_loop_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """spk_run (begin, start and end in one native call) against the loop of single engine starts."""
    fast, pid, fast_outcomes = _reference_run(True, monkeypatch)
    slow, slow_pid, slow_outcomes = _reference_run(False, monkeypatch)
    assert fast_outcomes == slow_outcomes
    counters = fast.info(pid).counters
    assert counters.preemptions > 5 and counters.syscalls > 100 and counters.timer_upcalls > 5, vars(counters)
    assert vars(counters) == vars(slow.info(slow_pid).counters)
    assert fast.now == slow.now
    f, s = fast.partitions[pid].context, slow.partitions[slow_pid].context
    base = f.layout.gpr0
    assert list(f.words[base : base + 16]) == list(s.words[base : base + 16])
    assert fast.ram.read(0, fast.ram.size) == slow.ram.read(0, slow.ram.size)


def _ping_pong(native: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Machine, list[str], int]:
    """The bench's queuing-port ping-pong for 40 windows: (machine, window ends, Python hypercall callbacks)."""
    calls = [0]
    original = PvTraps.on_interrupt

    def counted(self: PvTraps, vector: int) -> None:
        calls[0] += 1
        original(self, vector)

    with monkeypatch.context() as patch:
        patch.setattr(PvTraps, "on_interrupt", counted)
        if not native:  # as with a hypercall trace: every yield comes through ring 0's Python
            patch.setattr(PvTraps, "tracing", property(lambda self: True))
        m = machine()
        ping = m.create_partition("ping", bundled("kernel", "bench_ping"), [], 64)
        pong = m.create_partition("pong", bundled("kernel", "bench_pong"), [], 64)
        there, back = m.create_channel("queuing", 8, depth=1), m.create_channel("queuing", 8, depth=1)
        m.attach_port(ping, "out", there, "source")
        m.attach_port(pong, "in", there, "destination")
        m.attach_port(pong, "out", back, "source")
        m.attach_port(ping, "in", back, "destination")
        reasons = []
        for _ in range(20):
            for pid in (ping, pong):
                end = m.now + 2_000
                reasons.append(m.run(pid, end).reason)
                m.advance(end)
    return m, reasons, calls[0]


def test_native_yield_leaves_the_machine_the_python_yield_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_reasons, fast_calls = _ping_pong(True, monkeypatch)
    slow, slow_reasons, slow_calls = _ping_pong(False, monkeypatch)
    yields = fast_reasons.count("yield")
    assert yields > 30 and fast_reasons == slow_reasons
    assert fast_calls == slow_calls - yields, "the yields did not skip ring 0's Python"
    assert fast.channels[2].received > 15
    assert fast.now == slow.now
    for pid in fast.partitions:
        assert vars(fast.info(pid).counters) == vars(slow.info(pid).counters)
        f, s = fast.partitions[pid].context, slow.partitions[pid].context
        base = f.layout.gpr0
        assert list(f.words[base : base + 16]) == list(s.words[base : base + 16])
        assert (f.rip, f.cr3) == (s.rip, s.cr3)
    assert fast.ram.read(0, fast.ram.size) == slow.ram.read(0, slow.ram.size)
