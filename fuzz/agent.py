"""The host side of the fuzz agent: drive a real CPL 2 guest, one action at a time.

The agent (``partitions/fuzz_agent.asm``) reads a mailbox in its own data
area, performs the action at CPL 2 (a hypercall, or a buffer of instruction
bytes) and yields. The campaign writes the mailbox through the machine's
RAM, as a test harness would, runs the agent for one window and reads the
result back. Every hypercall therefore goes through the real trap path:
the engine, the SPK's decode and invoke, the guest's registers.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

from spgs.images import build
from spk import Machine
from spk.abi import KERNEL_DATA_SIZE, KERNEL_DATA_VADDR, KERNEL_IMAGE_VADDR, PAGE_SIZE

MB_COMMAND, MB_NUMBER, MB_ARGS, MB_RESULT, MB_DONE, MB_REGS, MB_ACK = 0, 8, 16, 56, 64, 72, 136
HYPERCALL_COMMAND, CODE_COMMAND = 1, 2
#: Scratch bytes the campaigns may fill (port names, message buffers): after the registers.
MB_SCRATCH = 0x200
CODE_MAX = 2048
#: Instructions per action: the agent needs a few dozen; random code that loops ends here.
WINDOW = 2_000
_MASK64 = (1 << 64) - 1


@functools.cache
def image(name: str, kind: str = "kernel") -> bytes:
    """A bundled guest kernel (or app, with ``kind="app"``), built once per process."""
    return build([(kind, name)], Path.cwd())[(kind, name)]


def data_address(offset: int) -> int:
    """The guest-virtual address of byte ``offset`` of a guest kernel's data area."""
    return KERNEL_DATA_VADDR + offset


def signed(value: int) -> int:
    """A u64 register value as the signed result the ABI means."""
    return value - (1 << 64) if value >> 63 else value


@dataclass(frozen=True)
class Outcome:
    """What one action did: the hypercall's rax (signed), or how the code ended."""

    result: int | None
    fault: str | None
    reason: str
    executed: int = 0


class Agent:
    """One fuzz-agent partition on a machine."""

    def __init__(self, machine: Machine, quota: int = 96, name: str = "agent") -> None:
        self.machine = machine
        self.quota = quota
        self.name = name
        self.pid = machine.create_partition(name, image("fuzz_agent"), [], quota)
        self.resets = 0
        self._pages: dict[int, int] = {}
        self._code = -1  #: physical address of the code area, once known
        self._sequence = 0

    def forget_layout(self) -> None:
        """Drop cached translations and restart the command sequence (after a restart or a restore)."""
        self._pages.clear()
        self._code = -1
        self._sequence = 0

    def address(self, offset: int) -> int:
        """Physical address of byte ``offset`` of the agent's data area (boot space)."""
        page = offset & ~(PAGE_SIZE - 1)
        if page not in self._pages:
            space = self.machine.partitions[self.pid].spaces[0]
            translation = self.machine.walker.translate(space.cr3, KERNEL_DATA_VADDR + page)
            assert translation is not None, "the agent's data area is always mapped"
            self._pages[page] = translation.paddr
        return self._pages[page] + (offset - page)

    def code_address(self) -> int:
        """Physical address of the agent's code area: its image's last page (executable, writable)."""
        if self._code < 0:
            space = self.machine.partitions[self.pid].spaces[0]
            va = KERNEL_IMAGE_VADDR + len(image("fuzz_agent")) - PAGE_SIZE
            translation = self.machine.walker.translate(space.cr3, va)
            assert translation is not None, "the agent's image is always mapped"
            self._code = translation.paddr
        return self._code

    def write(self, offset: int, data: bytes) -> None:
        """Host write into the agent's data area (``data`` must not cross a page)."""
        assert (offset & (PAGE_SIZE - 1)) + len(data) <= PAGE_SIZE and offset + len(data) <= KERNEL_DATA_SIZE
        self.machine.ram.write(self.address(offset), data)

    def read(self, offset: int, length: int) -> bytes:
        return self.machine.ram.read(self.address(offset), length)

    def run_window(self) -> tuple[str, int]:
        """Give the agent one window; (why it ended, instructions executed)."""
        end = self.machine.now + WINDOW
        outcome = self.machine.run(self.pid, end)
        self.machine.advance(end)
        return outcome.reason, outcome.executed

    def hypercall(self, number: int, args: tuple[int, ...]) -> Outcome:
        """Make the agent issue one hypercall; its signed result."""
        ram = self.machine.ram
        words = (tuple(args) + (0,) * 5)[:5]
        ram.write(self.address(MB_NUMBER), struct.pack("<6Q", number & _MASK64, *(a & _MASK64 for a in words)))
        self._sequence += 1
        command = HYPERCALL_COMMAND | self._sequence << 8
        ram.write_u64(self.address(MB_COMMAND), command)
        reason, executed = self.run_window()
        if self.machine.state(self.pid) == "faulted":
            fault = self.machine.fault_of(self.pid)
            return Outcome(None, fault.kind if fault else "fault", reason, executed)
        if ram.read_u64(self.address(MB_ACK)) != command:
            return Outcome(None, None, reason, executed)  # e.g. EXIT, YIELD, or BLOCK with no wake-up
        return Outcome(signed(ram.read_u64(self.address(MB_RESULT))), None, reason, executed)

    def registers(self) -> tuple[int, ...]:
        """rcx, rdx, rsi, rdi, r8..r11 as the last hypercall left them."""
        return struct.unpack("<8Q", self.read(MB_REGS, 64))

    def code(self, blob: bytes) -> Outcome:
        """Make the agent call ``blob`` at CPL 2 (it may fault, loop, or return)."""
        ram = self.machine.ram
        ram.write(self.code_address(), blob[:CODE_MAX] + b"\xc3")  # ret, if it falls through
        self.machine.code_changed()  # the host wrote code the engine may have translated
        ram.write_u64(self.address(MB_COMMAND), CODE_COMMAND)
        reason, executed = self.run_window()
        fault = self.machine.fault_of(self.pid)
        return Outcome(None, fault.kind if fault else None, reason, executed)

    def healthy(self) -> bool:
        return self.machine.state(self.pid) == "ready"

    def reset(self) -> None:
        """Cold-restart the agent on its own quota (after a fault, an exit, or a runaway)."""
        self.machine.reset_partition(self.pid, image("fuzz_agent"), [])
        self.forget_layout()
        self.resets += 1
