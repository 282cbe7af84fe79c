"""Debugging one partition: stop it, look at it, change it, let it go on.

Ring 0 offers the mechanisms a debugger needs and nothing else; what to do
with a stop (serve gdb, wait for a command) is decided above ring 1.

* **Stops.** Breakpoints are engine code hooks bounded to one virtual
  address (``begin == end``): they cost nothing while other code runs, and
  fire only while the debugged partition is on the CPU (all kernels share
  their link address, so the partition is checked, never the address
  alone). Single-step is one unbounded code hook, present only while a
  step is asked for. A stop happens *before* the instruction: it is
  neither executed nor counted, and :meth:`spk.Machine.run` returns with
  the reason ``debug_stop``, the partition saved exactly there.
* **Resuming** goes on with the very engine run the stop interrupted (the
  same budget end, no timer or trap delivery in between), so a debugged
  run executes the same instructions at the same virtual times as an
  undebugged one. The instruction a partition resumes at runs once
  without stopping, even when a breakpoint sits on it (as gdb expects).
* **Registers** are those of the partition's saved context: the general
  registers, rip, rflags, the segment selectors, fs/gs base and cr3. A
  debugger may change the general registers, rip, fs/gs base and the flags
  a program may change itself; selectors, privileged flags and cr3 stay
  (writing them could hand the partition a privilege it does not have).
* **Memory** is read and written through the page tables of the
  partition's current address space, as its kernel sees them: never
  another partition's frames (a partition maps only its own), never the
  SPK's slot (SPK_BASE and above is refused even where it is mapped).
  Writes need a writable mapping.

Errors: :class:`DebugError` (a :class:`spk.errors.SpkError`) for every
refused request: unknown or gone partition, partition on the CPU, unmapped
or foreign address, register that is unknown or may not be written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spk.abi import SPK_BASE, Status
from spk.errors import SpkError

if TYPE_CHECKING:
    from spk._machine import Machine
    from spk._partition import Partition

#: Register names a debugger may read, general registers in gdb's amd64 order.
REGISTERS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "rflags", "cs", "ss", "ds", "es", "fs", "gs", "fs_base", "gs_base", "cr3",
)  # fmt: skip
_SELECTORS = frozenset({"cs", "ss", "ds", "es", "fs", "gs"})
_CANONICAL_BASES = frozenset({"fs_base", "gs_base"})
#: RFLAGS bits a debugger may change: those a program changes itself (CF PF AF
#: ZF SF DF OF and AC); IF, IOPL, TF, NT, RF and the rest stay as they are.
WRITABLE_FLAGS = 0x4_0CD5
#: Largest memory access in one call (gdb asks for at most its packet size).
MEMORY_MAX = 0x1_0000
_MASK64 = (1 << 64) - 1


class DebugError(SpkError):
    """A debugging request ring 0 refuses; ``status`` says which rule."""


@dataclass(frozen=True)
class DebugStop:
    """Where and why the debugged partition stopped (before ``rip`` executed)."""

    pid: int
    kind: str  #: entry, breakpoint, step or interrupt
    rip: int
    time: int  #: virtual time of the stop: ticks (instruction bytes) retired before it


def _canonical(va: int) -> bool:
    top = va >> 47
    return top == 0 or top == 0x1FFFF


class DebugSession:
    """The debugging of one partition on one machine (see the module docstring).

    Created by :meth:`spk.Machine.debug_attach`, which arms a stop before
    the partition's next instruction (its first, for a partition that has
    not run yet). Every method but :meth:`resume` and :meth:`interrupt`
    needs the partition off the CPU, which is the case whenever
    :meth:`spk.Machine.run` is not running.
    """

    def __init__(self, machine: Machine, pid: int) -> None:
        self.pid = pid
        #: the last stop, None before the first
        self.stop: DebugStop | None = None
        self._machine = machine
        self._engine = machine.engine
        self._breakpoints: dict[int, int] = {}  # address -> engine hook handle
        self._step_hook: int | None = None
        self._step_kind = "entry"
        self._step_skip = False  # let the first instruction run (a resumed step)
        self._skip: int | None = None  # the breakpoint a resume executes once
        self.closed = False
        self._arm_step("entry", skip_first=False)

    # -- stops ------------------------------------------------------------------
    @property
    def breakpoints(self) -> frozenset[int]:
        return frozenset(self._breakpoints)

    def set_breakpoint(self, address: int) -> None:
        """Stop before the partition executes the instruction at virtual ``address``.

        Nothing is written into guest memory. Errors: DebugError for an
        address that is not canonical or in the SPK's slot.
        """
        self._check_open()
        address &= _MASK64
        if not _canonical(address) or address >= SPK_BASE:
            raise DebugError(Status.BAD_ADDRESS, f"no breakpoint at {address:#x}: not a partition address")
        if address not in self._breakpoints:
            self._breakpoints[address] = self._engine.add_code_hook(address, address, self._on_breakpoint)

    def clear_breakpoint(self, address: int) -> bool:
        """Remove a breakpoint; False when there was none at ``address``."""
        handle = self._breakpoints.pop(address & _MASK64, None)
        if handle is None:
            return False
        self._engine.remove_hook(handle)
        return True

    def resume(self, *, step: bool = False) -> None:
        """Let the partition go on from its stop; with ``step``, stop again before its next instruction.

        The instruction it resumes at is executed once, even under a breakpoint.
        """
        self._check_open()
        rip = self._context_rip()
        self._skip = rip if rip in self._breakpoints else None
        if step:
            self._arm_step("step", skip_first=True)
        else:
            self._disarm_step()

    def interrupt(self) -> None:
        """Stop before the partition's next instruction (gdb's Ctrl-C), whenever it next runs."""
        self._check_open()
        if self._step_hook is None:
            self._arm_step("interrupt", skip_first=False)

    def close(self) -> None:
        """Remove every hook: the partition runs on undisturbed (detach)."""
        for address in list(self._breakpoints):
            self.clear_breakpoint(address)
        self._disarm_step()
        self.closed = True

    def _arm_step(self, kind: str, *, skip_first: bool) -> None:
        self._step_kind, self._step_skip = kind, skip_first
        if self._step_hook is None:
            self._step_hook = self._engine.add_code_hook(1, 0, self._on_step)

    def _disarm_step(self) -> None:
        if self._step_hook is not None:
            self._engine.remove_hook(self._step_hook)
            self._step_hook = None

    # -- inside the engine (hooks) ------------------------------------------------
    def _on_breakpoint(self, address: int) -> None:
        try:
            if not self._machine.debug_may_stop(self.pid):
                return
            if self._skip == address:
                self._skip = None
                return
            self._stop_here("breakpoint", address)
        except Exception as exc:  # a hook must not raise: the partition faults, the others run on
            self._hook_failed(exc)

    def _on_step(self, address: int) -> None:
        try:
            if not self._machine.debug_may_stop(self.pid):
                return
            if self._step_skip:
                self._step_skip = False
                return
            self._stop_here(self._step_kind, address)
        except Exception as exc:
            self._hook_failed(exc)

    def _hook_failed(self, exc: Exception) -> None:
        p = self._machine.partitions.get(self.pid)
        if p is not None:
            self._machine._internal_error(p, exc)

    def _stop_here(self, kind: str, address: int) -> None:
        time = self._machine.debug_stop_before()
        self.stop = DebugStop(self.pid, kind, address, time)

    # -- registers ------------------------------------------------------------------
    def registers(self) -> dict[str, int]:
        """Every register of :data:`REGISTERS`, as the partition will resume with them."""
        p = self._stopped()
        return dict(zip(REGISTERS, self._engine.context_read(p.context, REGISTERS), strict=True))

    def write_register(self, name: str, value: int) -> None:
        """Change one saved register.

        Errors: DebugError for an unknown name, cr3, a selector or a
        privileged RFLAGS bit that would change, a non-canonical base.
        """
        p = self._stopped()
        if name not in REGISTERS:
            raise DebugError(Status.INVALID_ARGUMENT, f"no register {name!r}")
        value &= _MASK64
        (current,) = self._engine.context_read(p.context, (name,))
        if name == "cr3" or name in _SELECTORS:
            if value != current:
                raise DebugError(Status.DENIED, f"{name} is read-only to a debugger")
            return
        if name == "rflags" and (value ^ current) & ~WRITABLE_FLAGS & _MASK64:
            raise DebugError(Status.DENIED, f"rflags bits {(value ^ current) & ~WRITABLE_FLAGS:#x} may not change")
        if name in _CANONICAL_BASES and not _canonical(value):
            raise DebugError(Status.INVALID_ARGUMENT, f"{name} {value:#x} is not canonical")
        self._engine.context_write(p.context, name, value)

    # -- memory ----------------------------------------------------------------------
    def read_memory(self, address: int, length: int) -> bytes:
        """``length`` bytes at virtual ``address`` of the partition's current space.

        Errors: DebugError when any byte is unmapped, in the SPK's slot, or
        the range is longer than MEMORY_MAX.
        """
        p = self._stopped()
        pieces = self._pieces(p, address, length, write=False)
        return b"".join(self._machine.ram.read(pa, n) for pa, n in pieces)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write ``data`` at virtual ``address`` (writable mappings only; all or nothing).

        Errors: as :meth:`read_memory`, and for a read-only page.
        """
        p = self._stopped()
        pieces = self._pieces(p, address, len(data), write=True)
        offset = 0
        for pa, n in pieces:
            self._machine.ram.write(pa, data[offset : offset + n])
            offset += n
        if data:
            self._machine.code_changed()  # it may have been code the engine translated

    def _pieces(self, p: Partition, address: int, length: int, *, write: bool) -> list[tuple[int, int]]:
        if not 0 <= length <= MEMORY_MAX:
            raise DebugError(Status.INVALID_ARGUMENT, f"access of {length} bytes (at most {MEMORY_MAX})")
        if address < 0 or address + length > SPK_BASE:
            raise DebugError(Status.DENIED, f"{address:#x}+{length}: the SPK's memory is not the partition's")
        pieces = self._machine.walker.spans(p.context.cr3, address, length, write=write, user=False)
        if pieces is None:
            what = "writable" if write else "mapped"
            raise DebugError(Status.BAD_ADDRESS, f"{address:#x}+{length} is not {what} in {p.name}")
        return pieces

    # -- helpers -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise DebugError(Status.INVALID_ARGUMENT, "the debug session is closed")

    def _stopped(self) -> Partition:
        self._check_open()
        p = self._machine.partitions.get(self.pid)
        if p is None:
            raise DebugError(Status.NOT_FOUND, f"partition {self.pid} is gone")
        if self._machine.running:
            raise DebugError(Status.BUSY, f"{p.name} is not stopped")
        return p

    def _context_rip(self) -> int:
        p = self._machine.partitions.get(self.pid)
        return p.context.rip if p is not None else -1
