"""App programs: random system calls and random instruction bytes at CPL 3, under the reference kernel.

The attacker is an app (``apps/fuzz_app.asm``, driven by
:mod:`fuzz.app_agent`) of a ``refkernel`` partition: system-call sequences
through ``int 0x80`` and ``syscall`` with random numbers (the kernel's five
and unknown ones) and hostile pointers and lengths (kernel addresses, other
partitions' and the other app's frames, ranges that wrap past 2^64 or leave
the user half), random bytes and privileged instructions run at CPL 3, and
``int 0x82`` from CPL 3. When the kernel kills the app (or the app exits, or
the kernel faults) the world restarts the partition inside the action,
deterministically, and the action's result says how it ended.

Beyond the base invariants (the partition is a writer: its own frames may
change; the victims' may not), three belong to this level:

* ``user_hypercall``: CPL 3 never gets a hypercall. Every hypercall ring 0
  ran was reported while the CPU was at CPL 2 (the IRET that enters an app
  excepted: it is reported from CPL 3 by design), ring 0's counter agrees
  with what it reported, and an app's ``int 0x82`` reached its kernel's trap
  entry as ``#GP((0x82 << 3) | 2)`` without coming back to the app.
* ``app_confinement``: the kernel keeps apps to their own memory. A
  ``write`` it accepted covers only bytes the app may read itself (the
  user view of its own space), and the bystander app's image and stack are
  byte for byte as loaded, in a space still its own.
* ``guest_kernel``: the reference guest never faults or gives up (exits)
  because of an app, and keeps its system-call ABI (docs/guest.md): the
  documented results, every register but rax (and rcx, r11 for
  ``syscall``) and the arithmetic flags and DF as the app left them.
  Reported as a finding, but one about ring 2, not an isolation breach:
  ring 0 contained it (the other invariants, checked first, held). It is
  checked last so that an isolation finding in the same step wins.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.app_agent import (
    CODE_VA,
    COMMAND_CODE,
    COMMAND_SYSCALL,
    DEFAULT_FLAGS,
    GATE_INT80,
    GATE_SYSCALL,
    MAILBOX_VA,
    R8,
    R10,
    R11,
    RAX,
    RCX,
    RDI,
    RDX,
    RSI,
    RSP,
    STACK_TOP,
    WINDOW,
    AppAgent,
    AppOutcome,
    Layout,
    Observer,
    registers_for,
)
from fuzz.campaigns.base import ARGUMENT, EDGES, U64, CampaignMachine, register
from fuzz.campaigns.code import BLOBS
from fuzz.world import Violation, World
from spk.abi import (
    APP_IMAGE_VADDR,
    GDT_VADDR,
    GPR_ORDER,
    HYPERCALL_VECTOR,
    KERNEL_DATA_VADDR,
    KERNEL_IMAGE_VADDR,
    KERNEL_STACK_TOP,
    PAGE_SHIFT,
    PAGE_SIZE,
    RFLAGS_FIXED,
    RFLAGS_USER_MASK,
    START_INFO_VADDR,
    TRAP_FRAME_SIZE,
    USER_END,
    Hypercall,
    Vector,
)

#: The reference kernel's system calls (docs/guest.md).
SYS_WRITE, SYS_EXIT, SYS_YIELD, SYS_GETPID, SYS_SLEEP = range(5)
SYS_WRITE_MAX = 4096
FUZZ_PID = 1
#: The kernel's data area: its app records start here (slot 1, the bystander, 256 bytes on).
D_APPS = 0x400
TF, NT, AC = 0x100, 0x4000, 0x40000
INT82 = bytes([0xCD, HYPERCALL_VECTOR])
_MASK64 = (1 << 64) - 1
_ZERO_PAGE = bytes(PAGE_SIZE)


class AppWorld(World):
    """A refkernel partition with the fuzz app and the bystander, and two idle victims."""

    kind = "apps"

    def __init__(self, victims: int = 2) -> None:
        # This world judges ring 0 by its events (every hypercall, every app trap).
        self.observer = Observer()
        super().__init__(on_event=self.observer, trace_hypercalls=True)
        self.observer.bind(self.machine)
        self._pending: dict[str, str] = {}
        self.add_victims(victims)
        self.apps = AppAgent(self.machine, self.observer)
        if not self.apps.boot():
            raise RuntimeError("the reference kernel did not boot the fuzz app")
        self._pointers = self._hostile_pointers()
        self.seal()

    def writers(self) -> set[int]:
        return {self.apps.pid}

    def on_reset(self) -> None:
        self.apps.forget_layout()
        self.apps.overrun = None
        self.observer.clear()
        self._pending.clear()

    def hostile_pointers(self) -> list[int]:
        """Pointers an app must not reach through its kernel, and a few of its own for contrast."""
        return self._pointers

    def _hostile_pointers(self) -> list[int]:
        layout = self.apps.layout()
        assert layout is not None, "called after a successful boot"
        kernel = [KERNEL_IMAGE_VADDR, KERNEL_DATA_VADDR, KERNEL_DATA_VADDR + D_APPS, KERNEL_DATA_VADDR + D_APPS + 256,
                  START_INFO_VADDR, KERNEL_STACK_TOP - TRAP_FRAME_SIZE, GDT_VADDR]  # fmt: skip
        own = [APP_IMAGE_VADDR, MAILBOX_VA, CODE_VA, STACK_TOP - 16, MAILBOX_VA - 8, APP_IMAGE_VADDR + PAGE_SIZE - 8]
        # Other apps' and partitions' memory has no address in this app's
        # space: their physical addresses are what a confused kernel would use.
        firsts = {pid: self.machine.frames.owned(pid)[0] for pid in self.victims}
        others = [layout.bystander_image, layout.bystander_stack, *(mfn << PAGE_SHIFT for mfn in firsts.values())]
        return kernel + own + others

    # -- actions ----------------------------------------------------------------------
    def do_syscall(self, gate: int, flags: int, number: int, rdi: int = 0, rsi: int = 0, rdx: int = 0) -> int | str:
        """One system call (gate 0 ``int 0x80``, any other ``syscall``, as the app reads it); its
        result, or how the app ended."""
        gate = GATE_INT80 if gate == GATE_INT80 else GATE_SYSCALL  # a mutated gate word means what the app does
        registers = registers_for({RAX: number, RDI: rdi, RSI: rsi, RDX: rdx})
        outcome = self._perform(COMMAND_SYSCALL, gate, flags, registers)
        if outcome.done:
            self._check_syscall(gate, flags, registers, outcome)
            return outcome.result
        return ending(outcome)

    def do_code(self, blob_hex: str, flags: int = DEFAULT_FLAGS, *values: int) -> str:
        """Call the bytes at CPL 3, with rax, rdi, rsi, rdx, r10, r8 set from ``values``."""
        registers = registers_for(dict(zip((RAX, RDI, RSI, RDX, R10, R8), values, strict=False)))
        return ending(self._perform(COMMAND_CODE, GATE_INT80, flags, registers, bytes.fromhex(blob_hex)))

    def do_int82(self, number: int, *args: int) -> str:
        """``int 0x82`` at CPL 3 with a hypercall's registers: it must reach the kernel as #GP."""
        registers = registers_for(dict(zip((RAX, RDI, RSI, RDX, R10, R8), (number, *args), strict=False)))
        outcome = self._perform(COMMAND_CODE, GATE_INT80, DEFAULT_FLAGS, registers, INT82)
        trap = (self.apps.name, int(Vector.GP), (HYPERCALL_VECTOR << 3) | 2, CODE_VA)
        if outcome.done:
            self._pending.setdefault("user_hypercall", f"int 0x82 at CPL 3 (rax {number:#x}) came back to the app")
        elif trap not in self.observer.app_faults:
            self._pending.setdefault(
                "user_hypercall",
                f"int 0x82 at CPL 3 (rax {number:#x}) did not reach the kernel as #GP(0x412) at {CODE_VA:#x}: "
                f"app traps {self.observer.app_faults}, ending {outcome.ending}",
            )
        return ending(outcome)

    def do_victims_run(self) -> None:
        self.observer.clear()
        self.run_victims()
        self._note_events()

    # -- one action, observed -----------------------------------------------------------
    def _perform(self, command: int, gate: int, flags: int, registers: list[int], code: bytes = b"") -> AppOutcome:
        self.observer.clear()
        before = self.machine.partitions[self.apps.pid].counters.hypercalls
        outcome = self.apps.perform(command, gate, flags, registers, code)
        if self.apps.overrun is not None:
            self._budget_broken, self.apps.overrun = self.apps.overrun, None
        if outcome.fault is not None and outcome.fault.kind == "internal_error":
            raise Violation("no_host_exception", f"ring 0 raised inside the app's action: {outcome.fault.detail}")
        if not outcome.booted:
            raise Violation("guest_kernel", f"the partition did not boot its apps after a restart ({ending(outcome)})")
        self._note_events()
        counted = self.machine.partitions[self.apps.pid].counters.hypercalls - before
        reported = self.observer.hypercalls[self.apps.name]
        if counted != reported:
            self._pending.setdefault("user_hypercall", f"ring 0 counted {counted} hypercalls, reported {reported}")
        if outcome.fault is not None:
            fault = outcome.fault
            where = f"{fault.kind} vector {fault.vector} at {fault.rip:#x}"
            self._pending.setdefault("guest_kernel", f"the kernel faulted: {where} ({fault.detail})")
        elif outcome.ending == "partition_exit":
            self._pending.setdefault("guest_kernel", f"the kernel ended the partition (exit {outcome.exit_code})")
        return outcome

    def _note_events(self) -> None:
        """Every hypercall result for ``closed_statuses``; any hypercall run at CPL 3."""
        for number, result in self.observer.results:
            self.note_result(number, result)
        if self.observer.user_hypercalls:
            self._pending.setdefault("user_hypercall", f"hypercalls ran at CPL 3: {self.observer.user_hypercalls}")

    def _check_syscall(self, gate: int, flags: int, registers: list[int], outcome: AppOutcome) -> None:
        """The kernel's answer against docs/guest.md; an accepted write against the app's own view."""
        number, buf, length = registers[RAX], registers[RDI], registers[RSI]
        result = outcome.result
        if number == SYS_WRITE:
            refused = length > SYS_WRITE_MAX or buf + length > USER_END
            allowed = {-1} if refused else {-1, length}
        else:
            allowed = {SYS_EXIT: set(), SYS_YIELD: {0}, SYS_GETPID: {FUZZ_PID}, SYS_SLEEP: {0}}.get(number, {-1})
        problems = [] if result in allowed else [f"returned {result}"]
        clobbered = (RAX, RSP, RCX, R11) if gate == GATE_SYSCALL else (RAX, RSP)
        for index, (before, after) in enumerate(zip(registers, outcome.registers, strict=True)):
            if index not in clobbered and before != after:
                problems.append(f"{GPR_ORDER[index]} {before:#x} -> {after:#x}")
        if outcome.registers[RSP] != STACK_TOP:
            problems.append(f"rsp {STACK_TOP:#x} -> {outcome.registers[RSP]:#x}")
        if (outcome.rflags ^ flags) & RFLAGS_USER_MASK:
            problems.append(f"rflags {flags:#x} -> {outcome.rflags:#x}")
        if problems:
            via = "syscall" if gate == GATE_SYSCALL else "int 0x80"
            self._pending.setdefault("guest_kernel", f"system call {number:#x} via {via} broke the ABI: {problems}")
        layout = self.apps.layout()
        if (
            number == SYS_WRITE
            and result == length > 0
            and layout is not None
            and not self._readable(layout, buf, length)
        ):
            self._pending.setdefault("app_confinement", f"write({buf:#x}, {length}) printed bytes the app may not read")

    def _readable(self, layout: Layout, va: int, length: int) -> bool:
        """The app itself may read ``[va, va+length)``: user pages of its own space."""
        return self.machine.walker.spans(layout.fuzz_cr3, va, length, write=False, user=True) is not None

    # -- invariants ---------------------------------------------------------------------
    def invariants(self) -> list[Callable[[], None]]:
        return [*super().invariants(), self.user_hypercall, self.app_confinement, self.guest_kernel]

    def _raise_pending(self, invariant: str) -> None:
        message = self._pending.pop(invariant, None)
        if message is not None:
            raise Violation(invariant, message)

    def user_hypercall(self) -> None:
        self._raise_pending("user_hypercall")

    def app_confinement(self) -> None:
        self._raise_pending("app_confinement")
        layout = self.apps.layout()
        if layout is None or layout.bystander_handle not in self.machine.partitions[self.apps.pid].spaces:
            raise Violation("app_confinement", "the bystander app's address space is gone")
        pages = self.apps.bystander_pages()
        ram = self.machine.ram
        if ram.read(layout.bystander_image, len(pages)) != pages:
            raise Violation("app_confinement", f"the bystander's image at {layout.bystander_image:#x} changed")
        if ram.read(layout.bystander_stack, PAGE_SIZE) != _ZERO_PAGE:
            raise Violation("app_confinement", f"the bystander's stack page at {layout.bystander_stack:#x} changed")

    def guest_kernel(self) -> None:
        self._raise_pending("guest_kernel")


def ending(outcome: AppOutcome) -> str:
    """How an action ended, for its result: every ending but ``done`` restarted the partition."""
    return outcome.ending + (" (restarted)" if outcome.restarted else "")


GATES = st.sampled_from([GATE_INT80, GATE_SYSCALL])
#: rflags an app loads: any arithmetic flags and DF, sometimes with TF, NT or AC (TF and
#: NT once reached the guest kernel: tests/regressions/kernel-entry-keeps-app-*.json).
FLAGS = st.tuples(
    st.integers(0, RFLAGS_USER_MASK), st.sampled_from([0, 0, 0, TF, NT, AC, NT | AC, TF | NT])
).map(lambda t: (t[0] & RFLAGS_USER_MASK) | t[1] | RFLAGS_FIXED)
#: The kernel's system calls, small unknown numbers, and any word.
NUMBERS = st.one_of(st.integers(0, 4), st.integers(5, 64), U64)
LENGTHS = st.one_of(st.sampled_from([0, 1, 16, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, 2**63, _MASK64]), ARGUMENT)


@register("apps", "system calls, random bytes and int 0x82 from a CPL 3 app under the reference kernel", AppWorld)
class AppCampaign(CampaignMachine):
    world: AppWorld

    def pointer(self, data: st.DataObject) -> int:
        return data.draw(st.one_of(st.sampled_from(self.world.hostile_pointers()), EDGES, ARGUMENT))

    @rule(gate=GATES, flags=FLAGS, number=NUMBERS, args=st.tuples(ARGUMENT, ARGUMENT, ARGUMENT))
    def syscall(self, gate: int, flags: int, number: int, args: tuple[int, int, int]) -> None:
        self.act("syscall", gate, flags, number, *args)

    @rule(gate=GATES, flags=FLAGS, data=st.data(), length=LENGTHS)
    def write(self, gate: int, flags: int, data: st.DataObject, length: int) -> None:
        self.act("syscall", gate, flags, SYS_WRITE, self.pointer(data), length, 0)

    @rule(gate=GATES, data=st.data(), over=st.integers(1, 2 * PAGE_SIZE))
    def write_wrapping(self, gate: int, data: st.DataObject, over: int) -> None:
        """A range that runs past 2^64 by ``over`` bytes."""
        buf = self.pointer(data)
        self.act("syscall", gate, DEFAULT_FLAGS, SYS_WRITE, buf, (2**64 - buf + over) & _MASK64, 0)

    @rule(gate=GATES, flags=FLAGS, ticks=st.one_of(st.integers(0, 3 * WINDOW), EDGES))
    def sleep(self, gate: int, flags: int, ticks: int) -> None:
        self.act("syscall", gate, flags, SYS_SLEEP, ticks, 0, 0)

    @rule(blob=BLOBS, flags=FLAGS, values=st.tuples(*[ARGUMENT] * 6))
    def code(self, blob: bytes, flags: int, values: tuple[int, ...]) -> None:
        self.act("code", blob.hex(), flags, *values)

    @rule(number=st.one_of(st.sampled_from([int(h) for h in Hypercall]), U64), args=st.tuples(*[ARGUMENT] * 5))
    def hypercall_from_app(self, number: int, args: tuple[int, ...]) -> None:
        self.act("int82", number, *args)

    @rule()
    def victims_run(self) -> None:
        self.act("victims_run")
