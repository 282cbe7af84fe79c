"""The native trap paths (spk/_clock.c) against ring 0's Python paths they shortcut.

The app system call bounce (``int 0x80`` and the ``syscall`` instruction at
CPL 3) runs in C when ring 0 arms it; ring 0's own ``_enter_kernel`` does the
same steps in Python and handles every other case. Both must leave the very
same machine: registers, RAM, counters, virtual time. The page walk ring 0's
copies use is native too, and must agree with the Python walker everywhere.
"""

from __future__ import annotations

import random

import pytest

from spk import Machine
from spk._paging import Walker
from tests.guests import app, bundled, machine

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
