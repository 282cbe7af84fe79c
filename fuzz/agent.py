"""The host side of the fuzz agent: drive a real CPL 2 guest, one action at a time.

The agent (``partitions/fuzz_agent.asm``) reads a mailbox in its own data
area, performs the action at CPL 2 (a hypercall, or a buffer of instruction
bytes) and yields. The campaign writes the mailbox through the machine's
RAM, as a test harness would, runs the agent for one window and reads the
result back. Every hypercall therefore goes through the real trap path:
the engine, the SPK's decode and invoke, the guest's registers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from spgs.images import build
from spk import Machine
from spk.abi import KERNEL_DATA_VADDR

MB_COMMAND, MB_NUMBER, MB_ARGS, MB_RESULT, MB_DONE, MB_CODE = 0, 8, 16, 56, 64, 0x1000
WINDOW = 20_000
_IMAGES: dict[str, bytes] = {}


def image(name: str) -> bytes:
    """A bundled guest kernel, built once per process."""
    if name not in _IMAGES:
        _IMAGES[name] = build([("kernel", name)], Path.cwd())[("kernel", name)]
    return _IMAGES[name]


@dataclass(frozen=True)
class Outcome:
    """What one action did: the hypercall's rax (signed), or how the code ended."""

    result: int | None
    fault: str | None
    reason: str


class Agent:
    """One fuzz-agent partition on a machine."""

    def __init__(self, machine: Machine, quota: int = 96) -> None:
        self.machine = machine
        self.quota = quota
        self.pid = machine.create_partition("agent", image("fuzz_agent"), [], quota)
        self.resets = 0

    def _mailbox(self, offset: int) -> int:
        """Physical address of a mailbox word (the agent's boot space)."""
        space = self.machine.partitions[self.pid].spaces[0]
        translation = self.machine.walker.translate(space.cr3, KERNEL_DATA_VADDR + offset)
        assert translation is not None, "the agent's data area is always mapped"
        return translation.paddr

    def _run_window(self) -> str:
        end = self.machine.now + WINDOW
        outcome = self.machine.run(self.pid, end)
        self.machine.advance(end)
        return outcome.reason

    def hypercall(self, number: int, args: tuple[int, ...]) -> Outcome:
        """Make the agent issue one hypercall; its signed result."""
        ram = self.machine.ram
        words = (args + (0,) * 5)[:5]
        ram.write(self._mailbox(MB_NUMBER), struct.pack("<6Q", number & (2**64 - 1), *(a & (2**64 - 1) for a in words)))
        ram.write_u64(self._mailbox(MB_COMMAND), 1)
        done = ram.read_u64(self._mailbox(MB_DONE))
        reason = self._run_window()
        info = self.machine.info(self.pid)
        if info.state == "faulted":
            return Outcome(None, info.fault.kind if info.fault else "fault", reason)
        if ram.read_u64(self._mailbox(MB_DONE)) != done + 1:
            return Outcome(None, None, reason)  # e.g. EXIT, or BLOCK with no wake-up
        value = ram.read_u64(self._mailbox(MB_RESULT))
        return Outcome(value - (1 << 64) if value >> 63 else value, None, reason)

    def code(self, blob: bytes) -> Outcome:
        """Make the agent call ``blob`` at CPL 2 (it may fault, loop, or return)."""
        ram = self.machine.ram
        ram.write(self._mailbox(MB_CODE), blob[:2048] + b"\xc3")  # ret, if it falls through
        self.machine.engine.flush_code()  # the host wrote code the engine may have translated
        ram.write_u64(self._mailbox(MB_COMMAND), 2)
        reason = self._run_window()
        info = self.machine.info(self.pid)
        return Outcome(None, info.fault.kind if info.fault else None, reason)

    def healthy(self) -> bool:
        return self.machine.info(self.pid).state == "ready"

    def reset(self) -> None:
        """Cold-restart the agent on its own quota (after a fault, an exit, or a runaway)."""
        self.machine.reset_partition(self.pid, image("fuzz_agent"), [])
        self.resets += 1
