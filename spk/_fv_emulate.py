"""Privileged instructions of a full partition's kernel, decoded and emulated (#GP at CPL 1).

The guest kernel runs at real CPL 1, so every privileged instruction it
executes faults (#GP with RIP at the instruction, docs/fullvirt.md's
engine table). :meth:`Emulator.emulate` decodes it (capstone) and does what
the CPU would have done at ring 0, on the vCPU's real or virtual state
(:mod:`spk._fv_state`), then moves RIP past it and counts its bytes as
retired. What is not a privileged instruction (a genuine #GP) is left to
the caller, which delivers it to the guest.

Errors: a fault the instruction itself raises on hardware (a bad operand,
an unknown MSR, a non-canonical address) is delivered to the guest as that
fault; what this virtual CPU cannot do (leaving long mode, turning paging
off) ends the partition with :class:`spk._fv_cpu.FullStop` "unsupported".
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from capstone import x86 as cs_x86

from spk._fv_faults import VECTOR_GP, VECTOR_UD, DeliveryFault, FullStop
from spk._fv_mmu import GuestFault
from spk._fv_state import (
    APIC_BASE_VALUE,
    CR0_FROM_GUEST,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
    CR4_FROM_GUEST,
    CR4_PAE,
    CR4_TSD,
    EFER_LMA,
    EFER_LME,
    EFER_SCE,
    GPR_INDEX,
    HF_INHIBIT_IRQ,
    MSR_APIC_BASE,
    MSR_CSTAR,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_TSC,
    RFLAGS_IF,
    RFLAGS_RF,
    RFLAGS_VM,
    RSP,
    STORED_MSRS,
    W_CR2,
    W_GDT,
    W_HFLAGS,
    W_IDT,
    W_LDT,
    W_SEG,
    W_TR,
    descriptor_fields,
)
from spk._x86 import EFER_NXE, MSR_EFER

if TYPE_CHECKING:
    import capstone

    from spk._fv_cpu import FullVcpu

_SUBREG = {}
for _name, _index in GPR_INDEX.items():
    if _name.startswith("r") and _name[1:].isdigit():
        _SUBREG[_name] = (_index, 8)
        _SUBREG[_name + "d"] = (_index, 4)
        _SUBREG[_name + "w"] = (_index, 2)
        _SUBREG[_name + "b"] = (_index, 1)
    else:
        stem = _name[1:]  # ax, cx, sp, si ...
        _SUBREG[_name] = (_index, 8)
        _SUBREG["e" + stem] = (_index, 4)
        _SUBREG[stem] = (_index, 2)
        _SUBREG[(stem[0] + "l") if stem.endswith("x") else stem + "l"] = (_index, 1)
_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def _canonical(va: int) -> bool:
    return va >> 47 in (0, 0x1FFFF)


class Emulator:
    """Decode-and-emulate for the guest kernel's privileged instructions."""

    def __init__(self, cpu: FullVcpu) -> None:
        self.cpu = cpu
        self._count_as = ""  #: the counter name of the instruction being emulated
        self._ss_loaded = False  #: the instruction being emulated loaded SS (an interrupt shadow follows)

    @classmethod
    def operations(cls) -> dict[str, str]:
        """Every instruction this emulator handles, by counter name: what review lists as trapped."""
        ops = {name[4:]: "#GP at real CPL 1; decoded and emulated by ring 0" for name in dir(cls)
               if name.startswith("_op_")}  # fmt: skip
        ops["mov_cr"] = "mov to or from CR0/CR2/CR3/CR4/CR8: #GP at real CPL 1; virtual control registers"
        ops["mov_dr"] = "mov to or from a debug register: #GP at real CPL 1; virtual debug registers"
        ops["mov_seg"] = "mov to SS/DS/ES/FS/GS of a ring-0 selector: #GP at real CPL 1; loaded by ring 0"
        return ops

    # -- operands ------------------------------------------------------------
    def _reg_read(self, insn: capstone.CsInsn, reg: int) -> int:
        name: str = insn.reg_name(reg)
        index, width = _SUBREG[name]
        return self.cpu.gpr(index) & ((1 << (8 * width)) - 1)

    def _reg_write(self, insn: capstone.CsInsn, reg: int, value: int) -> None:
        name = insn.reg_name(reg)
        index, width = _SUBREG[name]
        if width >= 4:  # a 32-bit write zero-extends
            self.cpu.set_gpr(index, value & ((1 << (8 * width)) - 1))
        else:
            mask = (1 << (8 * width)) - 1
            self.cpu.set_gpr(index, (self.cpu.gpr(index) & ~mask) | (value & mask))

    def _address(self, insn: capstone.CsInsn, op: object) -> int:
        mem = op.mem  # type: ignore[attr-defined]
        address: int = mem.disp
        if mem.base == cs_x86.X86_REG_RIP:
            address += insn.address + insn.size
        elif mem.base:
            address += self._reg_read(insn, mem.base)
        if mem.index:
            address += self._reg_read(insn, mem.index) * mem.scale
        if mem.segment in (cs_x86.X86_REG_FS, cs_x86.X86_REG_GS):
            address += self.cpu.segment_base("fs" if mem.segment == cs_x86.X86_REG_FS else "gs")
        address &= _MASK64
        if not _canonical(address):
            raise DeliveryFault(VECTOR_GP, 0)
        return address

    def _operand_value(self, insn: capstone.CsInsn, op: object, size: int) -> int:
        kind = op.type  # type: ignore[attr-defined]
        if kind == cs_x86.X86_OP_REG:
            return self._reg_read(insn, op.reg)  # type: ignore[attr-defined]
        if kind == cs_x86.X86_OP_MEM:
            return int.from_bytes(self.cpu.read_virtual(self._address(insn, op), size), "little")
        return int(op.imm) & ((1 << (8 * size)) - 1)  # type: ignore[attr-defined]

    # -- the dispatcher --------------------------------------------------------
    def emulate(self, rip: int) -> bool:
        """Emulate the instruction at ``rip`` if it is privileged; False: a genuine #GP for the guest."""
        cpu = self.cpu
        try:
            insn = cpu.instruction(rip)
            if insn is None:
                return False
            handler = getattr(self, "_op_" + insn.mnemonic.replace(" ", "_"), None)
            if handler is None:
                handler = self._mov_special if insn.mnemonic == "mov" else None
            if handler is None:
                return False
            self._count_as = insn.mnemonic
            self._ss_loaded = False
            # a handler returns None (done: rip moves past it), "jump" (it set rip),
            # "done" (it did everything itself) or False (not privileged: a genuine #GP)
            done = handler(insn)
            if done is False:
                return False
            # The instruction retired: an interrupt shadow (after sti or mov ss) covered it and ends
            # here, as on a PC (`sti; hlt` wakes on the next interrupt); a load of SS starts one.
            hflags = int(cpu.w[W_HFLAGS]) & ~HF_INHIBIT_IRQ
            cpu.w[W_HFLAGS] = hflags | (HF_INHIBIT_IRQ if self._ss_loaded else 0)
            cpu.counts[self._count_as] += 1
            if done == "done":
                return True
            if done != "jump":
                cpu.rip = rip + insn.size
            cpu.engine.retire(insn.size)
            return True
        except DeliveryFault as fault:
            cpu.deliver(fault.vector, fault.error, rip)
            return True

    # -- flags, halting, caches ------------------------------------------------
    def _op_hlt(self, insn: capstone.CsInsn) -> str:
        self.cpu.rip = insn.address + insn.size
        self.cpu.engine.retire(insn.size)
        self.cpu.request_stop(("halt",))
        return "done"

    def _op_cli(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        cpu.set_rflags(cpu.rflags() & ~RFLAGS_IF)

    def _op_sti(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        cpu.set_rflags(cpu.rflags() | RFLAGS_IF)

    def _op_wbinvd(self, insn: capstone.CsInsn) -> None:
        return None

    _op_invd = _op_wbinvd

    def _op_invlpg(self, insn: capstone.CsInsn) -> None:
        try:
            address = self._address(insn, insn.operands[0])
        except DeliveryFault:
            return  # a non-canonical address: invlpg is a no-op in 64-bit mode (SDM), not a fault
        self.cpu.mmu.invlpg(address)

    def _op_clts(self, insn: capstone.CsInsn) -> None:
        self._set_cr0(self.cpu.v.cr0 & ~CR0_TS)

    def _op_lmsw(self, insn: capstone.CsInsn) -> None:
        value = self._operand_value(insn, insn.operands[0], 2)
        cr0 = self.cpu.v.cr0
        # lmsw sets PE MP EM TS; it cannot clear PE
        self._set_cr0((cr0 & ~0xE) | (value & 0xF) | (cr0 & CR0_PE))

    # -- descriptor tables -------------------------------------------------------
    def _table_operand(self, insn: capstone.CsInsn) -> tuple[int, int]:
        data = self.cpu.read_virtual(self._address(insn, insn.operands[0]), 10)
        limit, base = struct.unpack("<HQ", data)
        return base, limit

    def _op_lgdt(self, insn: capstone.CsInsn) -> None:
        base, limit = self._table_operand(insn)
        w = self.cpu.w
        w[W_GDT + 1] = base
        w[W_GDT + 2] = (int(w[W_GDT + 2]) & ~0xFFFF_FFFF) | limit

    def _op_lidt(self, insn: capstone.CsInsn) -> None:
        base, limit = self._table_operand(insn)
        w = self.cpu.w
        w[W_IDT + 1] = base
        w[W_IDT + 2] = (int(w[W_IDT + 2]) & ~0xFFFF_FFFF) | limit

    def _system_descriptor(self, selector: int, wanted: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """(base, limit, flags, access, address) of the 16-byte system descriptor ``selector`` names."""
        cpu = self.cpu
        index = selector & 0xFFF8
        base = int(cpu.w[W_GDT + 1])
        limit = int(cpu.w[W_GDT + 2]) & 0xFFFF_FFFF
        if selector & 4 or index + 15 > limit:
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)
        address = base + index
        low, high = struct.unpack("<QQ", cpu.read_virtual(address, 16))
        seg_base, seg_limit, flags, access = descriptor_fields(low, high)
        if access & 0x1F not in wanted:
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)
        if not access & 0x80:
            raise DeliveryFault(11, selector & 0xFFFC)  # #NP
        return seg_base, seg_limit, flags, access, address

    def _op_ltr(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        selector = self._operand_value(insn, insn.operands[0], 2)
        if not selector & 0xFFF8:
            raise DeliveryFault(VECTOR_GP, 0)
        base, limit, flags, access, address = self._system_descriptor(selector, (0x09,))  # available 64-bit TSS
        cpu.write_virtual(address + 5, bytes([access | 0x02]))  # busy, as the CPU marks it
        w = cpu.w
        w[W_TR] = selector & 0xFFFF
        w[W_TR + 1] = base
        w[W_TR + 2] = limit | ((flags | 0x200) << 32)

    def _op_lldt(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        selector = self._operand_value(insn, insn.operands[0], 2)
        w = cpu.w
        if not selector & 0xFFF8:
            w[W_LDT] = w[W_LDT + 1] = w[W_LDT + 2] = 0
            return
        base, limit, flags, _access, _address = self._system_descriptor(selector, (0x02,))
        w[W_LDT] = selector & 0xFFFF
        w[W_LDT + 1] = base
        w[W_LDT + 2] = limit | (flags << 32)

    # -- control, debug and segment registers ------------------------------------
    def _mov_special(self, insn: capstone.CsInsn) -> object:
        dst, src = insn.operands
        dst_name = insn.reg_name(dst.reg) if dst.type == cs_x86.X86_OP_REG else ""
        src_name = insn.reg_name(src.reg) if src.type == cs_x86.X86_OP_REG else ""
        if dst_name.startswith("cr") or src_name.startswith("cr"):
            self._count_as = "mov_cr"
            if dst_name.startswith("cr"):
                self._write_cr(int(dst_name[2:]), self._reg_read(insn, src.reg))
            else:
                self._reg_write(insn, dst.reg, self._read_cr(int(src_name[2:])))
            return None
        if dst_name.startswith("dr") or src_name.startswith("dr"):
            self._count_as = "mov_dr"
            if dst_name.startswith("dr"):
                value = self._reg_read(insn, src.reg)
                if dst_name in ("dr6", "dr7") and value >> 32:
                    raise DeliveryFault(VECTOR_GP, 0)  # bits 63:32 of DR6/DR7 must be zero
                self.cpu.v.debug[int(dst_name[2:])] = value
            else:
                self._reg_write(insn, dst.reg, self.cpu.v.debug[int(src_name[2:])])
            return None
        if dst_name in _SEGMENTS and dst_name != "cs":
            self._count_as = "mov_seg"
            self._load_segment(dst_name, self._operand_value(insn, src, 2))
            return None
        return False

    def _read_cr(self, number: int) -> int:
        v = self.cpu.v
        values = {0: v.cr0, 2: v.cr2, 3: v.cr3, 4: v.cr4, 8: v.cr8}
        if number not in values:
            raise DeliveryFault(VECTOR_UD, 0)
        return values[number]

    def _write_cr(self, number: int, value: int) -> None:
        cpu = self.cpu
        if number == 0:
            self._set_cr0(value)
        elif number == 2:
            cpu.v.cr2 = value
            cpu.w[W_CR2] = value
        elif number == 3:
            try:
                real = cpu.mmu.load_cr3(value)
            except GuestFault:
                raise DeliveryFault(VECTOR_GP, 0) from None
            cpu.v.cr3 = value
            cpu.engine.write("cr3", real)
        elif number == 4:
            if not value & CR4_PAE:
                raise FullStop("unsupported", f"CR4 {value:#x}: leaving long mode (PAE off)")
            if value & ~0x3F7FFF:
                raise DeliveryFault(VECTOR_GP, 0)
            old = cpu.v.cr4
            cpu.v.cr4 = value
            cpu.engine.write("cr4", CR4_PAE | CR4_TSD | (value & CR4_FROM_GUEST))
            if (old ^ value) & 0xB0:  # PSE, PAE, PGE: paging changed
                cpu.mmu.flush()
        elif number == 8:
            cpu.v.cr8 = value & 0xF
        else:
            raise DeliveryFault(VECTOR_UD, 0)

    def _set_cr0(self, value: int) -> None:
        cpu = self.cpu
        if not value & CR0_PG or not value & CR0_PE:
            raise FullStop("unsupported", f"CR0 {value:#x}: paging or protection off (leaving long mode)")
        if value >> 32:
            raise DeliveryFault(VECTOR_GP, 0)
        old = cpu.v.cr0
        cpu.v.cr0 = value
        wp = bool(value & CR0_WP)
        cpu.mmu.wp = wp
        real_wp = CR0_WP if (wp or cpu.mmu.mode == "shadow") else 0  # shadow tables rely on WP at CPL 1
        cpu.engine.write("cr0", CR0_PE | CR0_PG | 0x10 | real_wp | (value & CR0_FROM_GUEST))
        if (old ^ value) & CR0_WP:
            cpu.mmu.flush()

    def _load_segment(self, seg: str, selector: int) -> None:
        """``mov seg, r/m`` with one of the guest's ring-0 selectors (the engine refused it at CPL 1)."""
        cpu = self.cpu
        word = W_SEG[seg]
        if not selector & 0xFFF8:  # null: allowed for SS too at the guest's ring 0 in 64-bit mode
            self._ss_loaded = seg == "ss"
            cpu.w[word] = selector & 0xFFFF
            cpu.w[word + 1] = 0
            cpu.w[word + 2] = int(cpu.w[word + 2]) if seg == "ss" else 0
            return
        low = cpu.gdt_descriptor(selector)
        base, limit, flags, access = descriptor_fields(low)
        if not access & 0x10 or (access & 0x08 and (seg == "ss" or not access & 0x02)):
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)  # a system or unreadable segment
        if seg == "ss" and not access & 0x02:
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)
        if not access & 0x80:
            raise DeliveryFault(12 if seg == "ss" else 11, selector & 0xFFFC)
        cpu.w[word] = selector & 0xFFFF
        if seg == "ss":
            self._ss_loaded = True
            cpu.w[word + 1] = 0
            cpu.w[word + 2] = cpu.ss_cache[cpu.cpl]  # the real SS stays valid for the real CPL
            return
        cpu.w[word + 1] = base
        cpu.w[word + 2] = limit | ((flags | 0x100) << 32)  # accessed

    def _op_swapgs(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        word = W_SEG["gs"] + 1
        current = int(cpu.w[word])
        cpu.w[word] = cpu.v.kernel_gs_base
        cpu.v.kernel_gs_base = current

    # -- MSRs and time ----------------------------------------------------------
    def _op_rdmsr(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        value = self._read_msr(cpu.gpr(1) & 0xFFFF_FFFF)
        cpu.set_gpr(0, value & 0xFFFF_FFFF)
        cpu.set_gpr(2, value >> 32)

    def _op_wrmsr(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        value = ((cpu.gpr(2) & 0xFFFF_FFFF) << 32) | (cpu.gpr(0) & 0xFFFF_FFFF)
        self._write_msr(cpu.gpr(1) & 0xFFFF_FFFF, value)

    def _read_msr(self, msr: int) -> int:
        cpu = self.cpu
        v = cpu.v
        if msr == MSR_EFER:
            return v.efer | EFER_LME | EFER_LMA
        simple = {MSR_STAR: v.star, MSR_LSTAR: v.lstar, MSR_CSTAR: v.cstar, MSR_SFMASK: v.sfmask}
        if msr in simple:
            return simple[msr]
        if msr == MSR_FS_BASE:
            return cpu.segment_base("fs")
        if msr == MSR_GS_BASE:
            return cpu.segment_base("gs")
        if msr == MSR_KERNEL_GS_BASE:
            return v.kernel_gs_base
        if msr == MSR_TSC:
            return cpu.board.now()
        if msr == MSR_APIC_BASE:
            return APIC_BASE_VALUE
        if msr in STORED_MSRS:
            return v.msrs.get(msr, 0)
        raise DeliveryFault(VECTOR_GP, 0)

    def _write_msr(self, msr: int, value: int) -> None:
        cpu = self.cpu
        v = cpu.v
        if msr == MSR_EFER:
            if value & ~0xD01 or not value & EFER_LME:
                raise DeliveryFault(VECTOR_GP, 0)
            v.efer = value | EFER_LMA
            cpu.mmu.nxe = bool(value & EFER_NXE)
            real = cpu.engine.read_msr(MSR_EFER)
            mirrored = EFER_NXE | EFER_SCE  # the engine checks SCE itself before sysret's privilege
            cpu.engine.write_msr(MSR_EFER, (real & ~mirrored) | (value & mirrored))
            cpu.mmu.flush()
        elif msr in (MSR_STAR, MSR_SFMASK):
            if msr == MSR_STAR:
                v.star = value
            else:
                v.sfmask = value & 0xFFFF_FFFF
        elif msr in (MSR_LSTAR, MSR_CSTAR, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE):
            if not _canonical(value):
                raise DeliveryFault(VECTOR_GP, 0)
            if msr == MSR_LSTAR:
                v.lstar = value
            elif msr == MSR_CSTAR:
                v.cstar = value
            elif msr == MSR_KERNEL_GS_BASE:
                v.kernel_gs_base = value
            else:
                cpu.w[W_SEG["fs" if msr == MSR_FS_BASE else "gs"] + 1] = value
        elif msr in (MSR_TSC, MSR_APIC_BASE):
            pass  # the virtual TSC is virtual time; there is one APIC base
        elif msr in STORED_MSRS:
            v.msrs[msr] = value
        else:
            raise DeliveryFault(VECTOR_GP, 0)

    def _op_rdtsc(self, insn: capstone.CsInsn) -> None:
        cpu = self.cpu
        now = cpu.board.now()
        cpu.set_gpr(0, now & 0xFFFF_FFFF)
        cpu.set_gpr(2, now >> 32)

    def _op_rdtscp(self, insn: capstone.CsInsn) -> None:
        self._op_rdtsc(insn)
        self.cpu.set_gpr(1, self.cpu.v.msrs.get(0xC000_0103, 0) & 0xFFFF_FFFF)

    # -- returns to the guest's ring 0 and to its apps --------------------------------
    def _pop(self, count: int) -> list[int]:
        cpu = self.cpu
        data = cpu.read_virtual(cpu.gpr(RSP), 8 * count)
        return list(struct.unpack(f"<{count}Q", data))

    def _op_iretq(self, insn: capstone.CsInsn) -> object:
        cpu = self.cpu
        rip, cs, flags, rsp, ss = self._pop(5)
        if cs & 3 == 3:
            return False  # the engine refused a return to ring 3: the frame is bad, a genuine #GP
        if cs & 3 != 0:
            raise DeliveryFault(VECTOR_GP, cs & 0xFFFC)
        self._check_code(cs)
        if not _canonical(rip):
            raise DeliveryFault(VECTOR_GP, 0)
        cpu.enter_cpl(1, cs, ss)
        cpu.set_gpr(RSP, rsp)
        cpu.set_rflags(flags & ~(RFLAGS_RF | RFLAGS_VM))
        cpu.rip = rip
        return "jump"

    def _op_retfq(self, insn: capstone.CsInsn) -> object:
        cpu = self.cpu
        rip, cs = self._pop(2)
        extra = insn.operands[0].imm if insn.operands else 0
        if cs & 3 == 3:
            return False
        if cs & 3 != 0:
            raise DeliveryFault(VECTOR_GP, cs & 0xFFFC)
        self._check_code(cs)
        if not _canonical(rip):
            raise DeliveryFault(VECTOR_GP, 0)
        cpu.enter_cpl(1, cs, cpu.selector("ss"))
        cpu.set_gpr(RSP, cpu.gpr(RSP) + 16 + extra)
        cpu.rip = rip
        return "jump"

    _op_lretq = _op_retfq

    def _check_code(self, selector: int) -> None:
        low = self.cpu.gdt_descriptor(selector)
        access = (low >> 40) & 0xFF
        if access & 0x18 != 0x18 or not (low >> 53) & 1 or (access >> 5) & 3:
            raise DeliveryFault(VECTOR_GP, selector & 0xFFFC)
        if not access & 0x80:
            raise DeliveryFault(11, selector & 0xFFFC)

    def _op_sysretq(self, insn: capstone.CsInsn) -> object:
        cpu = self.cpu
        v = cpu.v
        if not v.efer & 1:
            raise DeliveryFault(VECTOR_UD, 0)
        target = cpu.gpr(1)
        if not _canonical(target):
            raise DeliveryFault(VECTOR_GP, 0)
        user_base = (v.star >> 48) & 0xFFFF
        cpu.enter_cpl(3, (user_base + 16) | 3, (user_base + 8) | 3)
        cpu.set_rflags((cpu.gpr(11) & ~(RFLAGS_RF | RFLAGS_VM)) | 2)
        cpu.rip = target
        return "jump"
