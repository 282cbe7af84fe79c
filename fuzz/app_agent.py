"""The host side of the ring-3 fuzz app: drive a real CPL 3 app under the reference kernel.

``apps/fuzz_app.asm`` runs as app 1 of a ``refkernel`` partition (app 2 is
the same image as a bystander that sleeps forever). It reads a mailbox in its
own stack page, performs the action at CPL 3 (a system call through
``int 0x80`` or ``syscall``, or a call into instruction bytes the host
placed in that page), records its registers and naps (the ``sleep`` system
call). With both apps asleep the kernel blocks the partition, so one action
costs one short window; the host wakes the partition by letting virtual time
reach the nap's deadline.

Everything goes through the real paths: the SPK's bounce into the kernel's
syscall and trap entries, the kernel's dispatch and ``HC_IRET`` or native
``iretq`` back. The host finds the mailbox by walking the app's address
space (the one that maps module 0 at ``APP_IMAGE_VADDR``) and caches the
translation until the partition restarts or the machine is restored.

:class:`Observer` is the machine's event sink: it sees every hypercall ring
0 runs (with the CPU's privilege level at that moment) and every app trap,
which is what the app world's invariants need.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fuzz.agent import image, signed
from spk import KernelFault, Machine, MachineEvent
from spk.abi import APP_IMAGE_VADDR, PAGE_SHIFT, PAGE_SIZE, RFLAGS_FIXED, Hypercall

#: The app's only writable page (the kernel's APP_STACK_PAGE, no-execute): mailbox and stack.
MAILBOX_VA = 0x7FF000
STACK_TOP = 0x800000
MB_COMMAND, MB_GATE, MB_STARTED, MB_DONE, MB_FLAGS_IN, MB_FLAGS_OUT, MB_IN, MB_OUT = 0, 8, 16, 24, 32, 40, 48, 176
#: Code bytes at most (a ret follows), in the image's second page (executable, read-only to the app).
CODE_MAX = 2048
CODE_VA = APP_IMAGE_VADDR + PAGE_SIZE
COMMAND_SYSCALL, COMMAND_CODE = 1, 2
GATE_INT80, GATE_SYSCALL = 0, 1
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11 = range(12)
#: What each GPR holds before an action unless the action sets it: distinct, easy to spot.
PATTERNS = tuple(0x5AFE_0000_0000_0000 | (i << 40) | (0xA5A5 << 8) | i for i in range(16))
#: Ticks (instruction bytes) per window: an action needs a few thousand; runaway code ends here.
WINDOW = 20_000
#: The boot window after a restart (the kernel boots both apps in a few thousand ticks).
BOOT_WINDOW = 80_000
#: Windows per action: the action's own ``sleep`` may need the partition woken again.
MAX_WINDOWS = 3
#: A sleeping partition is woken (virtual time moved to its deadline) only this close.
WAKE_HORIZON = 1 << 32
QUOTA = 64
#: The apps the partition boots: the fuzz app (pid 1) and the bystander (pid 2).
FUZZ_APP, BYSTANDER = "fuzz_app", "bystander"
_NUMBERS = {h.name.lower(): int(h) for h in Hypercall}
_MASK64 = (1 << 64) - 1


def hypercall_number(name: str) -> int:
    """The number behind a hypercall event's name (``map``, ``unknown_77``)."""
    if name in _NUMBERS:
        return _NUMBERS[name]
    return int(name.removeprefix("unknown_")) if name.startswith("unknown_") else -1


@dataclass
class Observer:
    """Ring 0's events, as the app world judges them (the machine's ``on_event``).

    Per action (:meth:`clear` starts one): hypercalls seen per partition,
    those that ran with the CPU at CPL 3, every hypercall's (number, result),
    and every app trap (partition, vector, error code, rip). The CPL is read
    from CS when ring 0 reports the call, that is after its handler: a
    successful IRET has already entered CPL 3 then, so it is the one call
    whose caller's CPL this cannot tell (the ``int82`` action checks that
    gate directly).
    """

    hypercalls: Counter[str] = field(default_factory=Counter)
    user_hypercalls: list[str] = field(default_factory=list)
    results: list[tuple[int, int]] = field(default_factory=list)
    app_faults: list[tuple[str, int, int, int]] = field(default_factory=list)
    _cs: Callable[[], int] = lambda: 0

    def bind(self, machine: Machine) -> None:
        """Read CS from this machine's vCPU (one raw register read per hypercall)."""
        self._cs = machine.engine.reader("cs")

    def clear(self) -> None:
        self.hypercalls.clear()
        self.user_hypercalls.clear()
        self.results.clear()
        self.app_faults.clear()

    def __call__(self, event: MachineEvent) -> None:
        if event.event == "hypercall":
            name = str(event.args.get("name", ""))
            self.hypercalls[event.partition] += 1
            if isinstance(event.result, int):
                self.results.append((hypercall_number(name), event.result))
            entered_app = name == "iret" and event.result is None
            if self._cs() & 3 == 3 and not entered_app:
                self.user_hypercalls.append(f"{event.partition}: {name}{tuple(event.args.get('args', ()))}")
        elif event.event == "app_fault":
            args = event.args
            self.app_faults.append((event.partition, int(args["vector"]), int(args["error"]), int(args["rip"])))


@dataclass(frozen=True)
class Layout:
    """Where the two apps are, found by walking their spaces (valid until a restart or restore)."""

    fuzz_handle: int
    fuzz_cr3: int
    mailbox: int  #: physical address of the mailbox
    code: int  #: physical address of the code area (CODE_VA)
    bystander_handle: int
    bystander_image: int  #: physical address of the bystander's first image frame
    bystander_stack: int  #: physical address of its stack page


@dataclass(frozen=True)
class AppOutcome:
    """How one action ended and what the app saw.

    ``ending``: ``done`` (the app recorded its registers and naps again),
    ``killed`` (the kernel reaped it after a trap), ``exited`` (its space
    went without a trap: the exit call), ``asleep`` (it sleeps past the
    action's windows), ``runaway`` (still running at the window's end),
    ``not_started`` (it never took the command), ``kernel_fault`` (the
    guest kernel faulted), ``partition_exit`` (the kernel ended the
    partition). Anything but ``done`` restarts the partition.
    """

    ending: str
    registers: tuple[int, ...] = (0,) * 16
    rflags: int = 0
    fault: KernelFault | None = None
    exit_code: int | None = None
    restarted: bool = False
    booted: bool = True

    @property
    def done(self) -> bool:
        return self.ending == "done"

    @property
    def result(self) -> int:
        """rax after the action, signed as the kernel's ABI means it."""
        return signed(self.registers[RAX])


class AppAgent:
    """One refkernel partition running the fuzz app and the bystander."""

    def __init__(self, machine: Machine, observer: Observer, quota: int = QUOTA, name: str = "apps") -> None:
        self.machine = machine
        self.observer = observer
        self.name = name
        self.kernel = image("refkernel")
        self.modules = [(FUZZ_APP, image("fuzz_app", "app")), (BYSTANDER, image("fuzz_app", "app"))]
        # The code area is the image's second page (fuzz_app.asm keeps its code under one page).
        assert len(self.modules[0][1]) == 2 * PAGE_SIZE, "fuzz_app.asm's code outgrew its first page"
        self.pid = machine.create_partition(name, self.kernel, self.modules, quota)
        self.restarts = 0
        #: a window that ran past its end (for the world's budget invariant)
        self.overrun: str | None = None
        self._layout: Layout | None = None

    # -- where things are ------------------------------------------------------------
    def forget_layout(self) -> None:
        """Drop cached translations (after a restart or a machine restore)."""
        self._layout = None

    def layout(self) -> Layout | None:
        """Both apps' spaces and pages; None when either app is not there."""
        if self._layout is None:
            self._layout = self._find_layout()
        return self._layout

    def _find_layout(self) -> Layout | None:
        p = self.machine.partitions[self.pid]
        walker = self.machine.walker
        handles: dict[int, tuple[int, int]] = {}  # module index -> (handle, cr3)
        firsts = [m.first_mfn for m in p.modules]
        for handle, space in p.spaces.items():
            tr = walker.translate(space.cr3, APP_IMAGE_VADDR) if handle else None
            if tr is not None and tr.paddr >> PAGE_SHIFT in firsts:
                handles[firsts.index(tr.paddr >> PAGE_SHIFT)] = (handle, space.cr3)
        if 0 not in handles or 1 not in handles:
            return None
        mailbox = walker.translate(handles[0][1], MAILBOX_VA)
        code = walker.translate(handles[0][1], CODE_VA)
        stack = walker.translate(handles[1][1], MAILBOX_VA)
        if mailbox is None or code is None or stack is None:
            return None
        return Layout(handles[0][0], handles[0][1], mailbox.paddr, code.paddr, handles[1][0], firsts[1] << PAGE_SHIFT,
                      stack.paddr)  # fmt: skip

    def alive(self, layout: Layout) -> bool:
        """The fuzz app's space is still there (the kernel reaps a dead app's space)."""
        return layout.fuzz_handle in self.machine.partitions[self.pid].spaces

    def bystander_pages(self) -> bytes:
        """What the bystander's image frames must hold: its module, zero-padded to whole pages."""
        blob = self.modules[1][1]
        return blob + bytes(-len(blob) % PAGE_SIZE)

    # -- running -------------------------------------------------------------------
    def run_window(self, window: int) -> None:
        """One window; a partition napping (blocked on its timer) is woken at its deadline first."""
        machine = self.machine
        p = machine.partitions[self.pid]
        if machine.state(self.pid) == "blocked" and machine.now < p.timer_deadline <= machine.now + WAKE_HORIZON:
            machine.advance(p.timer_deadline)
        end = machine.now + window
        outcome = machine.run(self.pid, end)
        if outcome.end_time > end or outcome.executed > window:
            self.overrun = f"{self.name} ran to {outcome.end_time} ({outcome.executed}) in a window ending at {end}"
        machine.advance(end)

    def _wakeable(self) -> bool:
        deadline = self.machine.partitions[self.pid].timer_deadline
        return self.machine.state(self.pid) == "blocked" and 0 < deadline <= self.machine.now + WAKE_HORIZON

    def boot(self) -> bool:
        """Run the kernel until both apps nap; False if it did not get there."""
        self.forget_layout()
        self.run_window(BOOT_WINDOW)
        return self.machine.state(self.pid) == "blocked" and self.layout() is not None

    def restart(self) -> bool:
        """Cold-restart the partition on its own quota and boot it again (deterministic)."""
        self.machine.reset_partition(self.pid, self.kernel, self.modules)
        self.restarts += 1
        return self.boot()

    def perform(self, command: int, gate: int, flags: int, registers: list[int], code: bytes = b"") -> AppOutcome:
        """One action: mailbox written, the partition woken and run, the outcome read back.

        The partition is restarted (and booted) before returning whenever the
        action did not end with the app napping again.
        """
        layout = self.layout()
        if layout is None:  # cannot happen after a successful boot; recover anyway
            return self._lost(AppOutcome("not_started"))
        ram = self.machine.ram
        words = [gate, 0, 0, flags & _MASK64, 0, *(r & _MASK64 for r in registers)]
        ram.write(layout.mailbox + MB_GATE, struct.pack("<21Q", *words))
        if command == COMMAND_CODE:
            ram.write(layout.code, code[:CODE_MAX] + b"\xc3")
            self.machine.code_changed()  # the engine may hold the last action's code translated
        ram.write_u64(layout.mailbox + MB_COMMAND, command)
        for _ in range(MAX_WINDOWS):
            self.run_window(WINDOW)
            if not self.alive(layout) or ram.read_u64(layout.mailbox + MB_DONE) or not self._wakeable():
                break
        return self._lost(self._outcome(layout))

    def _outcome(self, layout: Layout) -> AppOutcome:
        machine, ram = self.machine, self.machine.ram
        state = machine.state(self.pid)
        if state == "faulted":
            return AppOutcome("kernel_fault", fault=machine.fault_of(self.pid))
        if state == "exited":
            return AppOutcome("partition_exit", exit_code=machine.partitions[self.pid].exit_code)
        if not self.alive(layout):
            trapped = any(fault[0] == self.name for fault in self.observer.app_faults)
            return AppOutcome("killed" if trapped else "exited")
        started, done = struct.unpack("<2Q", ram.read(layout.mailbox + MB_STARTED, 16))
        registers = struct.unpack("<16Q", ram.read(layout.mailbox + MB_OUT, 128))
        rflags = ram.read_u64(layout.mailbox + MB_FLAGS_OUT)
        if not started:
            return AppOutcome("not_started")
        if state != "blocked":
            return AppOutcome("runaway")
        if not done:
            return AppOutcome("asleep")
        return AppOutcome("done", registers, rflags)

    def _lost(self, outcome: AppOutcome) -> AppOutcome:
        """Restart the partition unless the app is napping, ready for the next action."""
        if outcome.done or (outcome.fault is not None and outcome.fault.kind == "internal_error"):
            return outcome
        return dataclasses.replace(outcome, restarted=True, booted=self.restart())


def registers_for(values: dict[int, int]) -> list[int]:
    """The 16 GPRs an action loads: the patterns, with ``values`` (GPR index -> value) set."""
    regs = list(PATTERNS)
    for index, value in values.items():
        regs[index] = value & _MASK64
    return regs


#: The flags an action loads unless it says otherwise.
DEFAULT_FLAGS = RFLAGS_FIXED
