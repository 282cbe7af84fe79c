"""The paravirtual trap paths: every trap of a paravirtualized partition.

The engine calls :class:`PvTraps` (its :class:`spk._engine.TrapSink`) from
inside a run: a hypercall (``int 0x82`` at CPL 2) is decoded and invoked
through :data:`spk._hypercalls.TABLE`; an app's system call, exception or
refused instruction is bounced into its guest kernel's entry as an
interrupt gate would (the world switch: iret frame on the kernel stack,
the CPL 2 template restored); a kernel's own exception becomes a kernel
fault for ring 1. The FSGSBASE instructions a guest kernel uses are
emulated here.

What these paths depend on is named, not reached for: the run state
(:class:`RunState`, the world switch's: who is on the vCPU, which CR3 the
TLB holds), the live registers and templates, guest-memory reads, and the
fault and event reports, all given to :meth:`PvTraps.bind`; the hypercall
handlers get the machine (their services are its public methods).

These are the hot paths: every live-register slot, engine accessor and
machine service they use is bound once, in :meth:`PvTraps.bind`, so a trap
costs no extra Python call. Errors: none escape to the engine (a host-side
exception becomes the partition's ``internal_error`` fault).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import capstone

from spk import abi
from spk._engine import SYSCALL_INSN_LEN
from spk._frames import guest_frame
from spk._hypercalls import NO_RESULT, TABLE
from spk._partition import Partition, State
from spk._reports import Emit
from spk.abi import (
    HYPERCALL_VECTOR,
    IRET_FRAME_SIZE,
    PAGE_SHIFT,
    PAGE_SIZE,
    SEL_USER_CODE,
    SEL_USER_DATA,
    SYSCALL_VECTOR,
    TRAP_FRAME_SIZE,
    EntryKind,
    Status,
    Vector,
)
from spk.errors import InternalError, SpkError

if TYPE_CHECKING:
    from spk._cpu import Templates
    from spk._engine import Engine, LiveRegisters
    from spk._frames import PhysicalMemory
    from spk._machine import Machine
    from spk._paging import Walker

_RCX, _RSP, _R11 = 1, 4, 11
#: RFLAGS on every entry into a guest kernel: only the reserved bit 1.
KERNEL_ENTRY_RFLAGS = 0x2
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_NOT_SUPPORTED = int(Status.NOT_SUPPORTED)
_TABLE_GET = TABLE.get
_TRAP_VECTORS = frozenset({int(Vector.BP), int(Vector.OF)})
#: Software-interrupt vectors below 32 an app may raise itself (int3, into),
#: as their gates have DPL 3 on common systems; any other ``int n`` is #GP.
_USER_GATES = _TRAP_VECTORS
_PRIVILEGED = frozenset({
    "hlt", "cli", "sti", "lgdt", "lidt", "lldt", "ltr", "invlpg", "wrmsr", "rdmsr",
    "in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd", "clts", "wbinvd", "invd",
    "rdtsc", "rdtscp", "rdpmc", "swapgs", "lmsw", "xsetbv",
})  # fmt: skip


class RunState(Protocol):
    """The run loop's state the trap paths read and write (:class:`spk._world.PvWorldSwitch` has it)."""

    #: the partition on the vCPU; None between runs and during CPU bring-up
    current: Partition | None
    #: the CR3 whose translations the engine's TLB holds (-1: none known)
    loaded_cr3: int


class MemRead(Protocol):
    """Guest bytes through ``cr3`` (supervisor or user view), or None if any is unreadable."""

    def __call__(self, cr3: int, va: int, length: int, *, user: bool) -> bytes | None: ...


#: Stop a partition's kernel for good: (partition, kind, vector, rip, address, detail).
KernelFaultSink = Callable[[Partition, str, int, int, int, str], None]


class _NotRunning:
    """The run state before :meth:`PvTraps.bind`: nothing on the vCPU (CPU bring-up traps then)."""

    current: Partition | None = None
    loaded_cr3 = -1


class PvTraps:
    """The trap sink of one machine's engine: hypercalls, bounces, faults.

    Built before the engine (which binds these methods as its callbacks)
    and bound to the run state, live registers, templates and services by
    :meth:`bind` once the engine is up; before that only CPU bring-up
    traps (:attr:`bringup_capture`), with nothing on the vCPU.
    """

    def __init__(self, machine: Machine, *, trace_hypercalls: bool) -> None:
        #: what the hypercall handlers are given (their services are its public methods)
        self._m = machine
        self._trace = trace_hypercalls
        self._world: RunState = _NotRunning()
        #: a refused instruction seen inside a block, resolved after the run returns: (vector, error, address, rip)
        self.pending: tuple[int, int, int, int] | None = None
        #: set by :func:`spk._cpu.bring_up` while it captures the templates (no partition runs then)
        self.bringup_capture: object = None
        self._disasm = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._disasm.detail = True

    def bind(
        self,
        *,
        world: RunState,
        engine: Engine,
        walker: Walker,
        ram: PhysicalMemory,
        templates: Templates,
        regs: LiveRegisters,
        read_rflags: Callable[[], int],
        write_rflags: Callable[[int], None],
        mem_read: MemRead,
        kernel_fault: KernelFaultSink,
        internal_error: Callable[[Partition, Exception], None],
        emit: Emit,
    ) -> None:
        """Bind everything the trap paths use (the machine calls this once, after bring-up).

        ``world`` is the run state (who is on the vCPU, the loaded CR3);
        ``regs`` the live registers; ``mem_read`` reads guest memory
        through a CR3; ``kernel_fault``, ``internal_error`` and ``emit``
        report to ring 1. The hypercall handlers get the machine itself.
        """
        self._world = world
        self._engine = engine
        self._walker = walker
        self._ram = ram
        self._templates = templates
        self._regs = regs
        self._live = regs.words
        self._rip_slot, self._cr3_slot = regs.rip_slot, regs.cr3_slot
        self._cs_word, self._cs_shift = regs.cs_word, regs.cs_shift
        self._read_rflags = read_rflags
        self._write_rflags = write_rflags
        self._mem_read = mem_read
        self._kernel_fault = kernel_fault
        self._internal_error = internal_error
        self._emit = emit

    def on_interrupt(self, vector: int) -> None:
        p = self._world.current
        if p is None:
            capture = self.bringup_capture
            if capture is not None:
                capture(vector)  # type: ignore[operator]
            else:
                self._engine.stop()
            return
        w = self._live
        cpl = (w[self._cs_word] >> self._cs_shift) & 3
        try:
            if cpl == 2 and vector == HYPERCALL_VECTOR:
                self._hypercall(p, w)
            elif cpl == 2:
                self._kernel_exception(p, vector)
            elif vector == SYSCALL_VECTOR:
                p.counters.syscalls += 1
                self._enter_kernel(p, EntryKind.SYSCALL, int(w[self._rip_slot]))
            elif vector < 32 and not (self._regs.software_interrupt and vector not in _USER_GATES):
                rip, error, address = self._exception_details(vector, cpl)
                self._app_trap(p, vector, error, address, rip)
            else:
                # int n from CPL 3 through a gate it may not use: #GP(n*8 + 2),
                # reported at the int instruction (2 bytes: CD ib).
                self._app_trap(p, int(Vector.GP), (vector << 3) | 2, 0, self._regs.rip - 2)
        except Exception as exc:
            self._internal_error(p, exc)

    @property
    def tracing(self) -> bool:
        """Hypercalls are traced: every one must come through :meth:`on_interrupt`."""
        return self._trace

    def on_port_io(self, port: int, is_write: bool, rip: int) -> bool:
        # The engine does not fault port I/O; with IOPL 0 every CPL > 0 must:
        # refused, it arrives as #GP at the instruction (on_interrupt).
        return self._world.current is not None

    def on_refused_insn(self, rip: int, vector: int) -> None:
        """Fault an instruction the engine let through: stop after it, raise ``vector`` at ``rip``.

        Handled by :meth:`resolve_pending_trap` once the run has returned
        (these hooks run inside a translated block, where no world switch may).
        """
        if self._world.current is None:
            return
        self.pending = (vector, 0, 0, rip)
        self._engine.stop()

    def on_syscall_insn(self, rip: int, plain: bool) -> None:
        p = self._world.current
        if p is None:
            return
        try:
            if self._regs.cpl != 3:
                self._kernel_fault(p, "illegal_instruction", int(Vector.UD), rip, 0, "syscall at CPL 2")
                return
            # The engine will add the *decoded* length to RIP after this hook;
            # the bounce is only exact for the plain 2-byte form. A prefixed
            # syscall would let the app choose where its kernel starts: refuse
            # it. ``plain`` comes from the native hook, which read the two
            # bytes through the app's live page tables (user view).
            if not plain:
                self.on_refused_insn(rip, int(Vector.UD))
                return
            p.counters.syscalls += 1
            self._enter_kernel(p, EntryKind.SYSCALL, rip + SYSCALL_INSN_LEN, from_syscall_insn=True)
        except Exception as exc:
            self._internal_error(p, exc)

    def on_invalid_insn(self) -> bool:
        p = self._world.current
        if p is None:
            return False
        try:
            regs = self._regs
            if regs.cpl == 3:
                self._app_trap(p, int(Vector.UD), 0, 0, regs.rip)
            elif self._emulate_fsbase(regs.cr3, regs.rip):
                pass
            else:
                self._kernel_fault(p, "illegal_instruction", int(Vector.UD), regs.rip, 0, "invalid opcode")
        except Exception as exc:
            self._internal_error(p, exc)
        return True

    def _emulate_fsbase(self, cr3: int, rip: int) -> bool:
        """``rdfsbase``/``wrfsbase`` of a guest kernel (CPL 2), emulated: True when done.

        The CPU model (QEMU64) lacks FSGSBASE, so these are #UD; a kernel that
        runs programs with thread-local storage (the Linux personality) must
        still set each process's FS base. Only the register forms
        ``F3 [REX] 0F AE /0`` (rdfsbase) and ``/2`` (wrfsbase) are accepted;
        a 32-bit form zero-extends, as the hardware does. The FS base is
        per-vCPU state, saved and restored with the partition's context.
        """
        code = self._mem_read(cr3, rip, 4, user=False) or b""
        rex = code[1] if len(code) == 4 and 0x40 <= code[1] <= 0x4F else 0
        if rex:  # the 5-byte form: its last byte may be on the next page
            code = self._mem_read(cr3, rip, 5, user=False) or b""
        body = code[2:5] if rex else code[1:4]
        if len(code) < 4 or code[0] != 0xF3 or len(body) < 3 or body[0:2] != b"\x0f\xae":
            return False
        modrm = body[2]
        op = (modrm >> 3) & 7
        if modrm >> 6 != 3 or op not in (0, 2):
            return False
        reg = (modrm & 7) | (8 if rex & 1 else 0)
        mask = (1 << 64) - 1 if rex & 8 else (1 << 32) - 1
        live = self._live
        if op == 2:
            value = int(live[reg]) & mask
            if (value >> 47) not in (0, (1 << 17) - 1):
                return False  # non-canonical: #GP on hardware; refused here as the invalid instruction it is
            self._engine.write("fs_base", value)
        else:
            live[reg] = self._engine.read("fs_base") & mask
        live[self._rip_slot] = rip + (5 if rex else 4)
        self._regs.clear_exception_state()
        return True

    def on_bad_memory(self, address: int) -> None:
        p = self._world.current
        if p is not None:
            self._internal_error(p, InternalError(f"physical access outside RAM at {address:#x}"))

    # -- trap helpers ------------------------------------------------------
    def _hypercall(self, p: Partition, w: memoryview) -> None:
        """Decode and invoke one hypercall; the hot path, kept flat on purpose."""
        p.counters.hypercalls += 1
        number = w[0]
        spec = _TABLE_GET(number)
        args = (w[7], w[6], w[2], w[10], w[8])  # rdi, rsi, rdx, r10, r8
        if spec is None:
            result: object = -_NOT_SUPPORTED
        else:
            try:
                result = spec.handler(self._m, p, self._regs, args)
            except SpkError as err:
                result = -int(err.status)
        if self._trace:
            name = spec.number.name.lower() if spec else f"unknown_{number}"
            shown = list(args[: len(spec.args)]) if spec else list(args)
            self._emit(p, "hypercall", {"name": name, "args": shown}, None if result is NO_RESULT else result)
        if result is not NO_RESULT:
            w[0] = result & _MASK64  # type: ignore[operator]
            cr3 = w[self._cr3_slot]
            world = self._world
            if cr3 != world.loaded_cr3:
                self._engine.flush_tlb()
                world.loaded_cr3 = cr3

    def _exception_details(self, vector: int, cpl: int) -> tuple[int, int, int]:
        """(rip of the faulting instruction, error code, fault address)."""
        ctx = self._regs
        rip = ctx.rip
        if vector in _TRAP_VECTORS:
            return rip, 0, 0
        if vector != Vector.PF:
            return rip, 0, 0
        address = self._engine.read("cr2")
        error = abi.PF_USER if cpl == 3 else 0
        tr = self._walker.translate(ctx.cr3, address)
        if tr is not None:
            error |= abi.PF_PRESENT
        if rip <= address < rip + 16:
            error |= abi.PF_FETCH
        elif self._writes_memory(ctx.cr3, rip):
            error |= abi.PF_WRITE
        return rip, error, address

    def _instruction(self, cr3: int, rip: int) -> capstone.CsInsn | None:
        code = self._mem_read(cr3, rip, 16, user=False)
        if code is None:  # the instruction may end the last mapped page
            code = self._mem_read(cr3, rip, PAGE_SIZE - (rip & (PAGE_SIZE - 1)), user=False)
        return next(self._disasm.disasm(code, rip, 1), None) if code else None

    def _writes_memory(self, cr3: int, rip: int) -> bool:
        insn = self._instruction(cr3, rip)
        if insn is None:
            return False
        for op in insn.operands:
            if op.type == capstone.x86.X86_OP_MEM and op.access & capstone.CS_AC_WRITE:
                return True
        return bool(insn.mnemonic.startswith(("push", "call", "stos", "movs")))

    def _app_trap(self, p: Partition, vector: int, error: int, address: int, rip: int) -> None:
        p.counters.faults += 1
        args: dict[str, object] = {"vector": vector, "error": error, "address": address, "rip": rip}
        module = self._module_at(p, rip)
        if module is not None:
            args["module"] = module
        self._emit(p, "app_fault", args)
        self._enter_kernel(p, EntryKind.TRAP, rip, trap=(vector, error, address))

    def _module_at(self, p: Partition, va: int) -> str | None:
        """The boot module whose frames back ``va`` in the current space, by name (or None).

        Why: which app faulted is the guest kernel's business, but which
        image the code came from is a fact of ring 0's memory, and it lets
        ring 1 name the faulting function from that image's symbols.
        """
        found = self._walker.translate(self._regs.cr3, va)
        if found is None:
            return None
        mfn = guest_frame(p.guest_frames, found.paddr >> PAGE_SHIFT)
        return next((m.name for m in p.modules if m.first_mfn <= mfn < m.first_mfn + m.pages), None)

    def _kernel_exception(self, p: Partition, vector: int) -> None:
        ctx = self._regs
        rip, error, address = self._exception_details(vector, 2)
        if vector == Vector.PF:
            kind = "memory_violation"
        elif vector == Vector.GP:
            insn = self._instruction(ctx.cr3, rip)
            privileged = insn is not None and (
                insn.mnemonic in _PRIVILEGED or (insn.mnemonic.startswith("mov") and "cr" in insn.op_str)
            )
            kind = "privileged_instruction" if privileged else "memory_violation"
        elif vector == Vector.UD:
            kind = "illegal_instruction"
        else:
            kind = "unexpected_trap"
        self._kernel_fault(p, kind, vector, rip, address, f"vector {vector} error {error:#x}")

    def resolve_pending_trap(self, p: Partition) -> None:
        vector, error, address, rip = self.pending or (0, 0, 0, 0)
        self.pending = None
        if self._regs.cpl == 3:
            self._app_trap(p, vector, error, address, rip)
        elif vector == Vector.UD:
            self._kernel_fault(p, "illegal_instruction", vector, rip, 0, "refused instruction at CPL 2")
        else:
            self._kernel_fault(p, "privileged_instruction", vector, rip, 0, "port I/O at CPL 2")

    def _enter_kernel(
        self,
        p: Partition,
        kind: EntryKind,
        app_rip: int,
        *,
        trap: tuple[int, int, int] | None = None,
        from_syscall_insn: bool = False,
    ) -> None:
        """Deliver an app event to the guest kernel, as an interrupt gate would."""
        entry = p.entries.get(kind, 0)
        if not entry or not p.kernel_stack:
            detail = f"no {kind.name.lower()} entry registered"
            self._kernel_fault(p, "unexpected_trap", trap[0] if trap else 0, app_rip, 0, detail)
            return
        live = self._live
        cr3 = live[self._cr3_slot]
        rflags = self._read_rflags()
        rsp = live[_RSP]
        size = IRET_FRAME_SIZE if trap is None else TRAP_FRAME_SIZE
        sp = p.kernel_stack - size
        pa = self._kernel_stack_address(p, cr3, sp, size)
        if pa < 0:
            self._kernel_fault(p, "memory_violation", int(Vector.DF), app_rip, sp, "kernel stack not writable")
            return
        if trap is None:
            struct.pack_into("<5Q", self._ram.view, pa, app_rip, SEL_USER_CODE, rflags, rsp, SEL_USER_DATA)
        else:
            struct.pack_into("<8Q", self._ram.view, pa, *trap, app_rip, SEL_USER_CODE, rflags, rsp, SEL_USER_DATA)
        # The world switch: the CPL 2 template becomes the live state (a
        # context restore), keeping the app's GPRs, as an interrupt gate would.
        self._regs.load_privilege(self._templates.cpl2)
        self._regs.clear_exception_state()  # the trap is handled: nothing is in flight
        # The kernel starts with RFLAGS = 0x2, as the ABI says: the privilege
        # words above do not include RFLAGS (the templates' are equal), and an
        # app's TF, NT, DF, AC or IF must not reach its kernel (TF single-stepped
        # the kernel into #DB, NT broke its iretq: found by the apps campaign).
        self._write_rflags(KERNEL_ENTRY_RFLAGS)
        live[_RSP] = sp
        live[self._cr3_slot] = cr3
        live[self._rip_slot] = entry - SYSCALL_INSN_LEN if from_syscall_insn else entry
        if from_syscall_insn:
            live[_RCX] = app_rip
            live[_R11] = rflags

    def _kernel_stack_address(self, p: Partition, cr3: int, sp: int, size: int) -> int:
        """Physical address of ``[sp, sp+size)`` on the kernel stack, or -1.

        The frame must lie in one writable supervisor page (the SPK pushes at
        most 64 bytes below an 8-aligned top). The translation of the top page
        is cached per partition and dropped whenever the kernel half loses a
        mapping (its generation changes) or the stack moves.
        """
        top = p.kernel_stack
        if (top - 1) >> 12 != sp >> 12:
            pieces = self._walker.spans(cr3, sp, size, write=True, user=False)
            if pieces is None or len(pieces) != 1:
                return -1
            return pieces[0][0]
        cache = p.stack_cache
        if cache is None or cache[0] != top or cache[1] != p.kernel.generation:
            pieces = self._walker.spans(cr3, top - 8, 8, write=True, user=False)
            if pieces is None:
                return -1
            cache = p.stack_cache = (top, p.kernel.generation, pieces[0][0] + 8)
        return cache[2] - (top - sp)

    def deliver_pending_trap(self, p: Partition) -> None:
        if self._regs.cpl != 3 or p.state is not State.READY:
            return
        vector, error, address = p.pending_traps.pop(0)
        self._enter_kernel(p, EntryKind.TRAP, self._regs.rip, trap=(vector, error, address))

    def deliver_timer(self, p: Partition) -> None:
        regs = self._regs
        if regs.cpl != 3:
            return
        p.timer_pending = False
        p.counters.timer_upcalls += 1
        self._enter_kernel(p, EntryKind.TIMER, regs.rip)
