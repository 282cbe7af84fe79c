"""A full partition's vCPU state: where each register lives, real or virtual.

The guest kernel of a full partition believes it runs at ring 0; it runs
at real CPL 1 (its apps at CPL 3) in an engine of its own. Part of what it
sees is the engine's real state, arranged so that the native instructions
that read it show the guest's values (the "holes" closed by layout, see
docs/fullvirt.md); the rest is virtual, kept here and shown by emulation.

Real (in the engine's live state, at fixed words after the GPRs of QEMU's
CPUX86State, checked at bring-up): RIP, RFLAGS (IF native with IOPL 1),
the CS/SS/DS/ES/FS/GS caches (the *selectors* are the guest's, the CPL is
hflags'), GDTR (the guest's own GDT), IDTR, TR and LDTR (the engine never
delivers an interrupt, so they only need to hold what ``sidt``/``str``/
``sldt`` must show), CR0's low word (``smsw``), CR2.

Virtual (:class:`VirtualRegisters`): CR0, CR3 and CR4 as the guest wrote
them, EFER and the syscall MSRs, KERNEL_GS_BASE, the debug registers and
the other MSRs a PC kernel touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Live-state words, counted from RAX (CPUX86State: regs[16], eip, eflags,
# cc_dst, cc_src, cc_src2, cc_op|df, hflags|hflags2, segs[6], ldt, tr,
# gdt, idt, cr[5]); a segment cache is (selector, base, limit|flags << 32).
W_RIP = 16
W_EFLAGS = 17
W_HFLAGS = 22
W_SEG = {"es": 23, "cs": 26, "ss": 29, "ds": 32, "fs": 35, "gs": 38}
W_LDT = 41
W_TR = 44
W_GDT = 47
W_IDT = 50
W_CR0 = 53
W_CR2 = 55
W_CR3 = 56
W_CR4 = 57
GPR_INDEX = {
    name: i
    for i, name in enumerate(
        ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
    )
}
RSP = 4

HF_CPL = 3
HF_INHIBIT_IRQ = 1 << 3
#: hflags bits the code and stack segments decide (CS32, SS32, ADDSEG, CS64): what a 64-bit CS loads.
HF_SEGMENT_MODE = (1 << 4) | (1 << 5) | (1 << 6) | (1 << 15)
HF_CS64 = 1 << 15

RFLAGS_CF = 1 << 0
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_IOPL = 3 << 12
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18
RFLAGS_ID = 1 << 21
#: the flags a guest may hold (reserved bits and VM/VIF/VIP excluded)
RFLAGS_GUEST = 0x0000_0000_0024_7FD7 & ~RFLAGS_VM
#: the real IOPL of a full partition: its kernel (CPL 1) may cli/sti/popf natively, its apps not
REAL_IOPL = 1 << 12

CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_PG = 1 << 31
#: CR0 bits the engine takes from the guest's CR0 (its low word shows in smsw)
CR0_FROM_GUEST = CR0_MP | CR0_EM | CR0_TS | CR0_NE | CR0_AM
CR4_TSD = 1 << 2
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_FROM_GUEST = CR4_OSFXSR | CR4_OSXMMEXCPT

EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

MSR_TSC = 0x10
MSR_APIC_BASE = 0x1B
MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_PAT = 0x277
MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_CSTAR = 0xC000_0083
MSR_SFMASK = 0xC000_0084
MSR_FS_BASE = 0xC000_0100
MSR_GS_BASE = 0xC000_0101
MSR_KERNEL_GS_BASE = 0xC000_0102
MSR_TSC_AUX = 0xC000_0103
#: MSRs a PC kernel may keep values in with no effect on this virtual hardware
#: (MTRRs, SYSENTER, PAT, TSC_AUX, MISC_ENABLE): stored and read back
STORED_MSRS = frozenset(
    {0xFE, 0x1A0, MSR_PAT, MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP, MSR_TSC_AUX, 0x2FF}
    | set(range(0x200, 0x210))
    | set(range(0x250, 0x270))
)
APIC_BASE_VALUE = 0xFEE0_0900  #: BSP, enabled, at the architectural address (no APIC is modelled)


@dataclass
class VirtualRegisters:
    """What the guest wrote that the engine does not hold as such."""

    cr0: int = CR0_PE | CR0_ET | CR0_PG
    cr2: int = 0
    cr3: int = 0
    cr4: int = CR4_PAE
    cr8: int = 0
    efer: int = EFER_LME | EFER_LMA
    star: int = 0
    lstar: int = 0
    cstar: int = 0
    sfmask: int = 0
    kernel_gs_base: int = 0
    debug: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    msrs: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {
            "cr0": self.cr0, "cr2": self.cr2, "cr3": self.cr3, "cr4": self.cr4, "cr8": self.cr8,
            "efer": self.efer, "star": self.star, "lstar": self.lstar, "sfmask": self.sfmask,
            "kernel_gs_base": self.kernel_gs_base,
        }  # fmt: skip


def descriptor_fields(low: int, high: int = 0) -> tuple[int, int, int, int]:
    """(base, limit, flags as QEMU caches them, type|S|DPL|P byte) of a GDT descriptor.

    ``high`` is the upper 8 bytes of a 16-byte system descriptor (TSS, LDT),
    whose base has 32 more bits.
    """
    base = ((low >> 16) & 0xFFFFFF) | (((low >> 56) & 0xFF) << 24) | ((high & 0xFFFF_FFFF) << 32)
    limit = (low & 0xFFFF) | (((low >> 48) & 0xF) << 16)
    if (low >> 55) & 1:  # granularity: 4 KiB units
        limit = (limit << 12) | 0xFFF
    flags = (low >> 32) & 0x00F0FF00
    access = (low >> 40) & 0xFF
    return base, limit, flags, access
