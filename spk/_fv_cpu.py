"""The full vCPU: an unmodified x86-64 kernel trapped and emulated at real CPL 1.

One :class:`FullVcpu` per full partition, over the partition's own engine.
It is the engine's trap sink (:class:`spk._engine.FullTrapSink`): every
exception, ``int n``, port access, ``cpuid``, ``syscall`` and sensitive
instruction of the guest arrives here. Privileged instructions (#GP at CPL
1) are decoded and emulated by :mod:`spk._fv_emulate`; interrupts and
exceptions are delivered through the guest's own IDT, as the CPU would
(:meth:`deliver`); page faults go to the partition's MMU first (a shadow
MMU hides its own faults).

The holes of x86 closed by layout (see :mod:`spk._fv_state`) need nothing
here; ``pushf`` at the guest's ring 0 (real CPL 1, IOPL 1) is found by the
engine's block scan (:meth:`on_scan`) and emulated (:meth:`on_sensitive`) so
that it shows IOPL 0; at ring 3 the real IOPL is 0 (the block hook clears it)
and ``pushf`` runs natively.

Everything a hook cannot finish (a stepped write for the shadow MMU, ``hlt``,
the guest's exit, a fault) stops the engine and is left in :attr:`stop`
for the partition's run loop (:mod:`spk._fv_partition`).

Errors: none escape to the engine. A guest's misbehaviour is delivered to
the guest as its CPU would; what the virtual hardware cannot do ends the
partition with a typed fault (:class:`FullStop`); a bug in ring 0 becomes
an "internal_error" fault of this partition only.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import capstone

from spk._engine import Engine, LiveRegisters
from spk._fv_cpuid import cpuid
from spk._fv_emulate import Emulator
from spk._fv_faults import (
    ERROR_VECTORS,
    VECTOR_DF,
    VECTOR_GP,
    VECTOR_NP,
    VECTOR_PF,
    VECTOR_SS,
    VECTOR_UD,
    DeliveryFault,
    FullStop,
)
from spk._fv_mmu import ACCESS_FETCH, ACCESS_USER, ACCESS_WRITE, GuestPhysical, Mmu, walk_guest
from spk._fv_state import (
    CR0_WP,
    HF_CPL,
    HF_INHIBIT_IRQ,
    HF_SEGMENT_MODE,
    REAL_IOPL,
    RFLAGS_IF,
    RFLAGS_IOPL,
    RFLAGS_NT,
    RFLAGS_RF,
    RFLAGS_TF,
    RFLAGS_VM,
    RSP,
    W_CR2,
    W_HFLAGS,
    W_IDT,
    W_RIP,
    W_SEG,
    W_TR,
    VirtualRegisters,
)
from spk._x86 import EFER_NXE

#: what the vCPU counts besides the emulated instructions (spk.full_trapped_operations)
HOOK_OPERATIONS = {
    "cpuid": "the engine's CPUID hook; answered as QEMU's qemu64",
    "port_in": "the engine's IN hook at the guest's ring 0; a device model answers",
    "port_out": "the engine's OUT hook at the guest's ring 0; a device model takes it",
    "port_refused": "IN/OUT from the guest's ring 3: #GP delivered (IOPL 0, no I/O bitmap)",
    "syscall": "the engine's SYSCALL hook; emulated from the virtual STAR/LSTAR/SFMASK",
    "pushf": "at the guest's ring 0: found by the native block scan, emulated to show IOPL 0 (ring 3 runs at IOPL 0)",
    "page_fault": "#PF: the MMU's (a shadow fill or a protected table write) or delivered to the guest",
    "irq": "an external interrupt (PIC) delivered through the guest's IDT when its IF allows",
    "int_n": "int n / int3 / into: delivered through the guest's IDT (gate DPL checked)",
    "delivered": "every event delivered through the guest's IDT (frame pushed, TSS.RSP0 or IST on a ring change)",
    "double_fault": "a fault while delivering a fault: #DF (a fault delivering #DF ends the partition)",
    "exception_N": "any other exception N: delivered to the guest",
}

#: Virtual time one exit to ring 0 costs a full partition (a trap, a port access, a cpuid,
#: an emulated instruction): about a microsecond of its devices' time, as a VM exit costs on
#: hardware. It keeps a guest's virtual time moving while ring 0 works for it, so a guest in
#: a trap loop ends its windows (it cannot buy unbounded host time with no virtual time).
EXIT_TICKS = 1000
#: Decoded instructions a vCPU keeps (a kernel traps at a few hundred addresses; each with its details takes
#: about 3 KB of host memory; a cleared cache only costs decodes).
DECODED_MAX = 1024


class Board(Protocol):
    """What the vCPU needs of its partition: time, devices and the end of the run."""

    def now(self) -> int:
        """Virtual time now (ticks), inside a hook too."""
        ...

    def port_in(self, port: int, size: int) -> int: ...

    def port_out(self, port: int, size: int, value: int) -> None: ...


@dataclass
class PendingPageFault:
    """A #PF left to the run loop (the shadow MMU may need to step the instruction)."""

    va: int
    access: int
    rip: int


class FullVcpu:
    """A full partition's vCPU: its engine's trap sink, its virtual registers, event delivery."""

    engine: Engine
    w: memoryview
    regs: LiveRegisters
    mmu: Mmu

    def __init__(self, mem: GuestPhysical, board: Board) -> None:
        self.mem = mem
        self.board = board
        self._int_word = 0
        self.v = VirtualRegisters()
        #: trapped and emulated operations by name (review, bench, tests)
        self.counts: Counter[str] = Counter()
        #: why the engine was stopped from a hook: ("halt",), ("exit", status), ("fault", FullStop)
        self.stop: tuple[object, ...] | None = None
        self.pending_fault: PendingPageFault | None = None
        #: CS/SS cache words (limit | flags << 32) of real CPL 1 and CPL 3 (bring-up)
        self.cs_cache = {1: 0, 3: 0}
        self.ss_cache = {1: 0, 3: 0}
        self.hflags_cpl = {1: 0, 3: 0}
        #: the HF_SEGMENT_MODE bits of a 64-bit code segment (bring-up): every ring change lands in one
        self.hflags_mode = 0
        self.bringup: Callable[[int], None] | None = None
        self._disasm = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._disasm.detail = True
        #: decoded trapped instructions by (address, the bytes fetched there): see _decode
        self._decoded: dict[tuple[int, bytes], capstone.CsInsn] = {}
        self.emulator = Emulator(self)

    def bind(self, engine: Engine, mmu: Mmu) -> None:
        """Attach the engine this vCPU is the trap sink of (created with it) and the MMU."""
        self.engine = engine
        self.mmu = mmu
        self.w = engine.live
        self.regs = engine.live_registers()
        self._int_word = self.regs.int_word

    # -- registers ---------------------------------------------------------
    @property
    def cpl(self) -> int:
        return int(self.w[W_HFLAGS]) & HF_CPL

    def gpr(self, index: int) -> int:
        return int(self.w[index])

    def set_gpr(self, index: int, value: int) -> None:
        self.w[index] = value & 0xFFFF_FFFF_FFFF_FFFF

    @property
    def rip(self) -> int:
        return int(self.w[W_RIP])

    @rip.setter
    def rip(self, value: int) -> None:
        self.w[W_RIP] = value & 0xFFFF_FFFF_FFFF_FFFF

    def rflags(self) -> int:
        return self.engine.read("rflags")

    def set_rflags(self, value: int) -> None:
        """Load RFLAGS as the guest's ring 0 would; the real IOPL stays 1 (see _fv_state)."""
        self.engine.write("rflags", (value & ~(RFLAGS_IOPL | RFLAGS_VM)) | REAL_IOPL | 2)

    def guest_rflags(self) -> int:
        """RFLAGS as the guest sees them (IOPL 0)."""
        return self.rflags() & ~RFLAGS_IOPL & ~RFLAGS_RF

    def selector(self, seg: str) -> int:
        return int(self.w[W_SEG[seg]]) & 0xFFFF

    def set_selector(self, seg: str, value: int) -> None:
        word = W_SEG[seg]
        self.w[word] = (int(self.w[word]) & ~0xFFFF_FFFF) | (value & 0xFFFF)

    def enter_cpl(self, cpl: int, cs: int, ss: int) -> None:
        """Switch the real CPL (1 or 3) with the CS and SS selectors the guest must see.

        Every caller lands in a 64-bit code segment (a gate's, checked L; a
        return to the guest's ring 0, checked L; sysretq; the boot), so the
        engine's segment-mode flags are a 64-bit CS's too, whatever mode the
        vCPU left (a guest's ring 3 may run in a compatibility-mode segment).
        """
        w = self.w
        hflags = int(w[W_HFLAGS]) & ~(HF_CPL | HF_SEGMENT_MODE)
        w[W_HFLAGS] = hflags | self.hflags_cpl[cpl] | self.hflags_mode
        cs_word, ss_word = W_SEG["cs"], W_SEG["ss"]
        w[cs_word] = cs & 0xFFFF
        w[cs_word + 1] = 0
        w[cs_word + 2] = self.cs_cache[cpl]
        w[ss_word] = ss & 0xFFFF
        w[ss_word + 1] = 0
        w[ss_word + 2] = self.ss_cache[cpl]

    def segment_base(self, seg: str) -> int:
        return int(self.w[W_SEG[seg] + 1])

    # -- guest virtual memory (ring 0's own walk of the guest's tables) ------
    def translate(self, va: int, access: int) -> int:
        """Guest-physical address of ``va`` for ``access``; raises DeliveryFault(#PF) as the CPU would."""
        walk = walk_guest(
            self.mem, self.v.cr3, va & 0xFFFF_FFFF_FFFF_FFFF, access,
            wp=bool(self.v.cr0 & CR0_WP), nxe=bool(self.v.efer & EFER_NXE), set_ad=True,
        )  # fmt: skip
        if walk.gpa is None:
            self.v.cr2 = va & 0xFFFF_FFFF_FFFF_FFFF
            raise DeliveryFault(VECTOR_PF, walk.error)
        return walk.gpa

    def read_virtual(self, va: int, length: int, access: int = 0) -> bytes:
        out = b""
        while length > 0:
            chunk = min(length, 0x1000 - (va & 0xFFF))
            out += self.mem.read(self.translate(va, access), chunk)
            va += chunk
            length -= chunk
        return out

    def write_virtual(self, va: int, data: bytes, access: int = 0) -> None:
        # translate every page first: a write that faults changes nothing
        spans = []
        offset = 0
        while offset < len(data):
            chunk = min(len(data) - offset, 0x1000 - ((va + offset) & 0xFFF))
            spans.append((self.translate(va + offset, access | ACCESS_WRITE), offset, chunk))
            offset += chunk
        for gpa, start, chunk in spans:
            self.mem.write(gpa, data[start : start + chunk])
            self.mmu.guest_written(gpa, chunk)

    def user_access(self) -> int:
        return ACCESS_USER if self.cpl == 3 else 0

    def instruction(self, rip: int) -> capstone.CsInsn | None:
        """The instruction at ``rip`` as the vCPU fetches it, decoded; None when it cannot be fetched.

        First through the engine's own fetch path (its TLB, or its walk of the
        tables it runs on, at the current CPL): the instruction that trapped was
        fetched that way a moment ago, so its pages are there, with their A bits
        set by that fetch. Only when that fails (an instruction that ends before
        an unmapped page) ring 0 walks the guest's tables itself.
        """
        code = self.engine.read_code(rip & 0xFFFF_FFFF_FFFF_FFFF, 15)
        if code is not None:
            return self._decode(code, rip)
        try:
            code = self.read_virtual(rip, 15, ACCESS_FETCH | self.user_access())
        except DeliveryFault:
            try:  # the instruction may end before the next, unmapped page
                code = self.read_virtual(rip, 0x1000 - (rip & 0xFFF), ACCESS_FETCH | self.user_access())
            except DeliveryFault:
                return None
        return self._decode(code, rip)

    def _decode(self, code: bytes, rip: int) -> capstone.CsInsn | None:
        """The first instruction of ``code`` at ``rip``, decoded once per (address, bytes).

        The key is the bytes themselves: whatever the guest rewrites or remaps,
        the same bytes at the same address decode the same (capstone's result
        depends on nothing else), so the cache can never be stale. Emulation
        only reads the decoded instruction. Bounded: cleared when full.
        """
        key = (rip, code)
        insn = self._decoded.get(key)
        if insn is None:
            insn = next(self._disasm.disasm(code, rip, 1), None)
            if insn is None:
                return None
            if len(self._decoded) >= DECODED_MAX:
                self._decoded.clear()
            self._decoded[key] = insn
        return insn

    # -- trap sink -----------------------------------------------------------
    def on_interrupt(self, vector: int) -> None:
        self.engine.retire(EXIT_TICKS)
        try:
            if self.bringup is not None:
                self.bringup(vector)
                return
            self._interrupt(vector)
        except FullStop as stop:
            self._stop(("fault", stop))
        except Exception as exc:  # a ring-0 bug: this partition ends, every other runs on
            self._stop(("fault", FullStop("internal_error", f"{type(exc).__name__}: {exc}")))

    def _interrupt(self, vector: int) -> None:
        info = int(self.w[self._int_word])
        software = bool((info >> 32) & 1)
        error = info & 0xFFFF_FFFF
        rip = self.rip
        self.regs.clear_exception_state()
        if self.stop is not None:
            self.engine.stop()
            return
        if software:
            self.counts["int_n"] += 1
            self.deliver(vector, None, rip, software=True)
            return
        if vector == VECTOR_PF:
            self.counts["page_fault"] += 1
            access = error & (ACCESS_WRITE | ACCESS_USER | ACCESS_FETCH)
            self.pending_fault = PendingPageFault(int(self.w[W_CR2]), access, rip)
            self.engine.stop()
            return
        if vector == VECTOR_GP and self.cpl == 1 and self.emulator.emulate(rip):
            return
        self.counts[f"exception_{vector}"] += 1
        self.deliver(vector, error if vector in ERROR_VECTORS else None, rip)

    def on_port_io(self, port: int, is_write: bool, rip: int) -> bool:  # pragma: no cover - PV engines only
        return True

    def on_fv_port(self, port: int, size: int, value: int, is_write: int) -> int:
        self.engine.retire(EXIT_TICKS)
        try:
            if self.cpl == 3:  # IOPL 0 and no I/O bitmap for the guest's apps
                self.counts["port_refused"] += 1
                return 1 << 32
            self.counts["port_out" if is_write else "port_in"] += 1
            if is_write:
                self.board.port_out(port, size, value)
                return 0
            return self.board.port_in(port, size) & ((1 << (8 * size)) - 1)
        except FullStop as stop:
            self._stop(("fault", stop))
        except Exception as exc:
            self._stop(("fault", FullStop("internal_error", f"{type(exc).__name__}: {exc}")))
        return 0

    def on_cpuid(self) -> None:
        self.engine.retire(EXIT_TICKS)
        self.counts["cpuid"] += 1
        eax, ebx, ecx, edx = cpuid(self.gpr(0) & 0xFFFF_FFFF, self.gpr(1) & 0xFFFF_FFFF)
        for index, value in ((0, eax), (3, ebx), (1, ecx), (2, edx)):
            self.set_gpr(index, value)

    def on_syscall_insn(self, rip: int, plain: bool) -> None:
        """``syscall``: the engine's hook, never executed natively; emulated from STAR/LSTAR/SFMASK."""
        self.engine.retire(EXIT_TICKS)
        try:
            self.counts["syscall"] += 1
            length = 2 if plain else 0
            if not plain:
                insn = self.instruction(rip)
                length = insn.size if insn is not None else 2
            v = self.v
            if not v.efer & 1 or v.lstar >> 47 not in (0, 0x1FFFF):
                self.engine.settle()
                self.deliver(VECTOR_UD, None, rip)
                self.rip = self.rip - length  # the engine adds the length after the hook
                return
            flags = self.rflags()
            self.set_gpr(1, rip + length)  # rcx
            self.set_gpr(11, flags & ~RFLAGS_IOPL & ~RFLAGS_RF)  # r11: as the guest sees them
            kernel_cs = (v.star >> 32) & 0xFFFC
            self.enter_cpl(1, kernel_cs, kernel_cs + 8)
            self.set_rflags(flags & ~v.sfmask & ~RFLAGS_RF)
            self.rip = v.lstar - length
        except FullStop as stop:
            self._stop(("fault", stop))
        except Exception as exc:
            self._stop(("fault", FullStop("internal_error", f"{type(exc).__name__}: {exc}")))

    def on_refused_insn(self, rip: int, vector: int) -> None:
        """``sysenter``: not in long mode on this CPU (#UD)."""
        self.counts["exception_6"] += 1
        try:
            self.engine.settle()
            self.deliver(vector, None, rip)
        except FullStop as stop:
            self._stop(("fault", stop))

    def on_invalid_insn(self) -> bool:
        """#UD (the engine's invalid-instruction hook): delivered to the guest."""
        self.counts["exception_6"] += 1
        try:
            self.regs.clear_exception_state()
            self.deliver(VECTOR_UD, None, self.rip)
        except FullStop as stop:
            self._stop(("fault", stop))
        except Exception as exc:
            self._stop(("fault", FullStop("internal_error", f"{type(exc).__name__}: {exc}")))
        return True

    def on_bad_memory(self, address: int) -> None:
        """An access the engine's memory map does not cover: the guest reached past its memory."""
        detail = f"access to engine-physical {address:#x} outside the guest's memory"
        self._stop(("fault", FullStop("machine_check", detail)))

    def on_scan(self, address: int, size: int) -> int:
        """The offset of the first ``pushf`` in a block, or -1 (called once per block by the engine)."""
        try:
            code = self.engine.read_code(address, size)
            if code is None:
                return -1
            for insn_address, _size, mnemonic, _ops in self._disasm.disasm_lite(code, address):
                if mnemonic in ("pushfq", "pushf", "pushfw", "pushfd"):
                    return int(insn_address) - address
        except Exception:  # a decoder failure must not stop the engine: the block runs natively
            return -1
        return -1

    def on_sensitive(self, address: int) -> None:
        """Emulate the ``pushf`` at ``address``: the flags as the guest sees them (IOPL 0)."""
        self.engine.retire(EXIT_TICKS)
        try:
            self.regs.clear_exception_state()
            insn = self.instruction(address)
            if insn is None or insn.mnemonic not in ("pushfq", "pushf", "pushfw", "pushfd"):
                self.engine.forget_scans()  # the code changed under the cache: decode again
                return
            self.counts["pushf"] += 1
            width = 8 if insn.mnemonic == "pushfq" else 2  # capstone: "pushf" is the 66-prefixed form
            value = self.guest_rflags() & ~RFLAGS_VM
            rsp = self.gpr(RSP) - width
            try:
                self.write_virtual(rsp, value.to_bytes(8, "little")[:width], self.user_access())
            except DeliveryFault as fault:
                self.deliver(fault.vector, fault.error, address)
                return
            self.set_gpr(RSP, rsp)
            self.rip = address + insn.size
            self.engine.retire(insn.size)
        except FullStop as stop:
            self._stop(("fault", stop))
        except Exception as exc:
            self._stop(("fault", FullStop("internal_error", f"{type(exc).__name__}: {exc}")))

    def _stop(self, reason: tuple[object, ...]) -> None:
        if self.stop is None or reason[0] == "fault":
            self.stop = reason
        self.engine.stop()

    def request_stop(self, reason: tuple[object, ...]) -> None:
        """For the partition's devices: end the run (the guest's exit), from inside a hook."""
        self._stop(reason)

    # -- event delivery ------------------------------------------------------
    def deliver(self, vector: int, error: int | None, return_rip: int, *, software: bool = False) -> None:
        """Deliver an interrupt or exception through the guest's IDT, as the CPU does.

        A fault while delivering becomes #DF, and a fault delivering #DF is a
        triple fault: the partition ends (FullStop "triple_fault"), as a PC
        resets.
        """
        try:
            self._deliver(vector, error, return_rip, software)
        except DeliveryFault as fault:
            if software:  # an `int n` whose delivery faults: that fault is delivered, as on a PC
                self.deliver(fault.vector, fault.error, return_rip)
                return
            if vector == VECTOR_DF:
                raise FullStop("triple_fault", f"fault {fault.vector} while delivering a double fault") from None
            if vector in (VECTOR_PF, VECTOR_GP, VECTOR_NP, VECTOR_SS, 0, 10) and fault.vector in (
                VECTOR_PF, VECTOR_GP, VECTOR_NP, VECTOR_SS, 10,
            ):  # fmt: skip
                self.counts["double_fault"] += 1
                self.deliver(VECTOR_DF, 0, return_rip)
                return
            self.deliver(fault.vector, fault.error, return_rip)

    def _deliver(self, vector: int, error: int | None, return_rip: int, software: bool) -> None:
        idt_base = int(self.w[W_IDT + 1])
        idt_limit = int(self.w[W_IDT + 2]) & 0xFFFF_FFFF
        if vector * 16 + 15 > idt_limit:
            raise DeliveryFault(VECTOR_GP, vector * 8 + 2)
        low, high = struct.unpack("<QQ", self.read_virtual(idt_base + vector * 16, 16))
        gate_type = (low >> 40) & 0xF
        gate_dpl = (low >> 45) & 3
        if not (low >> 47) & 1:
            raise DeliveryFault(VECTOR_NP, vector * 8 + 2)
        if gate_type not in (0xE, 0xF):
            raise DeliveryFault(VECTOR_GP, vector * 8 + 2)
        cpl = self.cpl
        if software and gate_dpl < (3 if cpl == 3 else 0):  # the guest's own ring: 0 at real CPL 1
            raise DeliveryFault(VECTOR_GP, vector * 8 + 2)
        target = (low & 0xFFFF) | ((low >> 32) & 0xFFFF_0000) | ((high & 0xFFFF_FFFF) << 32)
        selector = (low >> 16) & 0xFFFF
        ist = (low >> 32) & 7
        self._check_kernel_code(selector)
        old_rsp = self.gpr(RSP)
        if ist:
            rsp = self._tss_read(36 + (ist - 1) * 8)
        elif cpl == 3:
            rsp = self._tss_read(4)
        else:
            rsp = old_rsp
        rsp &= ~0xF
        old_flags = self.guest_rflags()
        frame = [return_rip, self.selector("cs"), old_flags, old_rsp, self.selector("ss")]
        words = ([error] if error is not None else []) + frame
        rsp -= 8 * len(words)
        self.write_virtual(rsp, struct.pack(f"<{len(words)}Q", *words))
        if cpl == 3:
            self.enter_cpl(1, selector, 0)  # a ring change loads a null SS
        else:
            self.enter_cpl(1, selector, self.selector("ss"))
        self.set_gpr(RSP, rsp)
        flags = old_flags & ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
        if gate_type == 0xE:
            flags &= ~RFLAGS_IF
        self.set_rflags(flags)
        self.rip = target
        if vector == VECTOR_PF:
            self.w[W_CR2] = self.v.cr2
        self.counts["delivered"] += 1

    def _check_kernel_code(self, selector: int) -> None:
        """The gate's selector must name a present 64-bit code segment of the guest's ring 0."""
        low = self.gdt_descriptor(selector)
        access = (low >> 40) & 0xFF
        if not access & 0x80 or access & 0x18 != 0x18 or not (low >> 53) & 1:
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)
        if (access >> 5) & 3 != 0:  # a handler at the guest's ring 3: not supported by this virtual CPU
            raise FullStop("unsupported", f"interrupt gate to a DPL {(access >> 5) & 3} code segment {selector:#x}")

    def gdt_descriptor(self, selector: int) -> int:
        """The 8-byte descriptor ``selector`` names in the guest's GDT (#GP(selector) when beyond it)."""
        from spk._fv_state import W_GDT

        index = selector & 0xFFF8
        base = int(self.w[W_GDT + 1])
        limit = int(self.w[W_GDT + 2]) & 0xFFFF_FFFF
        if selector & 4 or index == 0 or index + 7 > limit:
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)
        value: int = struct.unpack("<Q", self.read_virtual(base + index, 8))[0]
        return value

    def _tss_read(self, offset: int) -> int:
        base = int(self.w[W_TR + 1])
        limit = int(self.w[W_TR + 2]) & 0xFFFF_FFFF
        if not self.w[W_TR] & 0xFFF8 or offset + 7 > limit:
            raise DeliveryFault(10, int(self.w[W_TR]) & 0xFFFC)  # #TS
        value: int = struct.unpack("<Q", self.read_virtual(base + offset, 8))[0]
        return value

    def repair_null_ss(self) -> bool:
        """The tripwire fired: was it the engine's null-SS quirk? Then undo it; True when repaired.

        On a PC the guest's ring 0 may load a null SS in 64-bit mode. The
        engine (QEMU 5's helper_load_seg) lets it run at real CPL 1 too and
        then takes the CPL from the null descriptor: 0. No instruction ran
        at CPL 0 (the block hook refused the next block), CS is still the
        guest kernel's (the cache ring 0 gave it at CPL 1), so the CPL is
        set back to 1 with the guest's null SS. Anything else at CPL 0 (a
        call gate loads a DPL 0 code segment) is not repaired.
        """
        w = self.w
        cs_word, ss_word = W_SEG["cs"], W_SEG["ss"]
        cs_dpl = (int(w[cs_word + 2]) >> 45) & 3  # the flags word: DPL in bits 13-14 of the high half
        if int(w[W_HFLAGS]) & HF_CPL or int(w[ss_word]) & 0xFFFC or cs_dpl != 1:
            return False
        w[W_HFLAGS] = (int(w[W_HFLAGS]) & ~HF_CPL) | self.hflags_cpl[1]
        w[ss_word + 1] = 0
        w[ss_word + 2] = self.ss_cache[1]
        self.counts["mov_seg"] += 1
        return True

    def interruptible(self) -> bool:
        """Can an external interrupt be taken now (IF set, no interrupt shadow)?"""
        return bool(self.rflags() & RFLAGS_IF) and not int(self.w[W_HFLAGS]) & HF_INHIBIT_IRQ
