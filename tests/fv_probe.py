"""Probe what the engine does with each privileged or sensitive instruction at each CPL.

Full virtualization runs an unmodified kernel that believes it is at ring 0
at a CPL above 0; ring 0 must trap and emulate every operation whose effect
or result depends on the privilege level. This probe measures, on the bare
engine (no SPK), what happens to each such instruction at CPL 0, 1, 2 and 3:
a fault (with its vector as the engine reports it), a call of an
instruction hook, or a silent native execution and what it then shows.
tests/test_fv_engine_facts.py pins the result; docs/fullvirt.md quotes it.
``python -m tests.fv_probe`` prints the table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import unicorn
from unicorn import x86_const as x

from spgs.assembler import Source, assemble

GDT, SCRATCH, CODE, STACK = 0x1000, 0x2000, 0x10000, 0x80000
# null, then a 64-bit code and a data descriptor for each DPL 0..3
# and a 64-bit TSS (selector 0x48) at TSS
TSS = 0x3000
_DESCRIPTORS = (
    [0]
    + [d for dpl in range(4) for d in (0x00AF9A000000FFFF | dpl << 45, 0x00CF92000000FFFF | dpl << 45)]
    + [0x67 | TSS << 16 | 0x89 << 40, 0]
)
TSS_SEL = 0x48
RFLAGS_IF = 0x200
VECTORS = {0: "#DE", 6: "#UD", 8: "#DF", 13: "#GP", 14: "#PF", 3: "#BP"}


def code_sel(cpl: int) -> int:
    return (1 + 2 * cpl) * 8 | cpl


def data_sel(cpl: int) -> int:
    return (2 + 2 * cpl) * 8 | cpl


@dataclass(frozen=True)
class Probe:
    """One instruction (with set-up) and what to read after it ran natively."""

    name: str
    text: str
    start_if: bool = True  # IF in the RFLAGS the guest starts with
    iopl: int = 0  # IOPL in the RFLAGS the guest starts with


PROBES = [
    Probe("cli", "cli"),
    Probe("sti", "sti", start_if=False),
    Probe("popf clearing IF", "pushfq; and qword ptr [rsp], 0xfffffffffffffdff; popfq; pushfq; pop rax"),
    Probe("popf setting IF", "pushfq; or qword ptr [rsp], 0x200; popfq; pushfq; pop rax", start_if=False),
    Probe("pushf", "pushfq; pop rax"),
    Probe("cli, IOPL 3", "cli", iopl=3),
    Probe(
        "popf clearing IF, IOPL 3", "pushfq; and qword ptr [rsp], 0xfffffffffffffdff; popfq; pushfq; pop rax", iopl=3
    ),
    Probe("hlt", "hlt"),
    Probe("lgdt", f"lgdt [{SCRATCH:#x}]"),
    Probe("lidt", f"lidt [{SCRATCH:#x}]"),
    Probe("ltr", f"mov ax, {TSS_SEL:#x}; ltr ax"),
    Probe("lldt", "xor eax, eax; lldt ax"),
    Probe("sgdt", f"sgdt [{SCRATCH:#x}]; mov rax, [{SCRATCH + 2:#x}]"),
    Probe("sidt", f"sidt [{SCRATCH:#x}]; mov rax, [{SCRATCH + 2:#x}]"),
    Probe("smsw", "smsw rax"),
    Probe("str", "xor eax, eax; str ax"),
    Probe("sldt", "mov eax, 0xffff; sldt ax"),
    Probe("mov from cs", "mov ax, cs"),
    Probe("mov from ss", "mov ax, ss"),
    # ring compression: a guest selector with RPL 0 naming a descriptor compressed to DPL 1
    Probe("mov ds, RPL 0 to a DPL 1 descriptor", "mov ax, 0x20; mov ds, ax"),
    Probe("mov ss, RPL 0 to a DPL 1 descriptor", "mov ax, 0x20; mov ss, ax"),
    Probe("mov to cr3", "mov rax, 0x3000; mov cr3, rax"),
    Probe("mov from cr0", "mov rax, cr0"),
    Probe("mov to cr0", "mov rax, cr0; mov cr0, rax"),
    Probe("lmsw", "mov ax, 0x11; lmsw ax"),
    Probe("clts", "clts"),
    Probe("invlpg", "invlpg [0x5000]"),
    Probe("wbinvd", "wbinvd"),
    Probe("mov to dr7", "xor eax, eax; mov dr7, rax"),
    Probe("rdmsr", "mov ecx, 0xC0000080; rdmsr"),
    Probe("wrmsr", "mov ecx, 0xC0000081; xor eax, eax; xor edx, edx; wrmsr"),
    Probe("in", "mov dx, 0x3f8; in al, dx"),
    Probe("out", "mov dx, 0x3f8; mov al, 0x41; out dx, al"),
    Probe("cpuid", "xor eax, eax; cpuid"),
    Probe("rdtsc", "rdtsc"),
    Probe("syscall", "syscall"),
    Probe("swapgs", "swapgs"),
    Probe("int 0x80", "int 0x80"),
    Probe("sysretq", "lea rcx, [rip + done]; mov r11, 0x2; .byte 0x48, 0x0f, 0x07; done: nop"),
    Probe(
        "iretq to CPL 0",
        "mov rax, rsp; push 0x10; push rax; pushfq; push 0x8; lea rax, [rip + done]; push rax; iretq; done: nop",
    ),
    Probe(
        "iretq to CPL 3, IF=0 in frame",
        "mov rax, rsp; push 0x43; push rax; push 0x2; push 0x3b;"
        " lea rax, [rip + done]; push rax; iretq; done: pushfq; pop rax",
    ),
    Probe("lretq to CPL 0", "push 0x8; lea rax, [rip + done]; push rax; .byte 0x48, 0xcb; done: nop"),
]
#: Probes that change the CPL when they run.
_TRANSFERS = ("syscall", "sysretq", "iretq to CPL 0", "lretq to CPL 0", "iretq to CPL 3, IF=0 in frame")


@dataclass(frozen=True)
class Outcome:
    """What one probe did: a fault vector, the hooks it called, and rax/IF after a native run."""

    fault: str | None
    hooks: tuple[str, ...]
    rax: int
    flags_if: bool
    cpl_after: int

    def summary(self, probe: Probe) -> str:
        if self.fault:
            return self.fault
        if self.hooks:
            return "hook " + "+".join(self.hooks)
        if probe.name.startswith("iretq to CPL 3"):
            return f"runs, to CPL {self.cpl_after}, IF={int(bool(self.rax & RFLAGS_IF))}"
        if probe.name in _TRANSFERS:
            return f"runs, to CPL {self.cpl_after}"
        if probe.name.startswith(("popf", "pushf")):
            return f"runs, IF={int(bool(self.rax & RFLAGS_IF))}"
        if probe.name.startswith(("cli", "sti")):
            return f"runs, IF={int(self.flags_if)}"
        if probe.name in ("smsw", "str", "sldt", "mov from cs", "mov from ss"):
            return f"runs, {self.rax & 0xFFFF:#x}"
        if probe.name in ("sgdt", "sidt"):
            return f"runs, base {self.rax:#x}"
        return "runs"


def _frame(cpl: int, rip: int, start_if: bool, iopl: int) -> str:
    flags = 0x2 | (RFLAGS_IF if start_if else 0) | iopl << 12
    return (
        f"mov rsp, {STACK:#x}; push {data_sel(cpl):#x}; mov rax, {STACK - 0x1000:#x}; push rax; "
        f"push {flags:#x}; push {code_sel(cpl):#x}; mov rax, {rip:#x}; push rax; iretq"
    )


def run_probe(probe: Probe, cpl: int) -> Outcome:
    """Enter ``cpl`` by iretq at CPL 0 and run the probe's instructions on a fresh engine."""
    target = CODE + 0x100
    entry, body = assemble(
        [
            Source("entry", _frame(cpl, target, probe.start_if, probe.iopl), CODE),
            Source(probe.name, probe.text + "; nop; nop; nop; nop", target),
        ]
    )
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 1 << 20)
    uc.mem_write(GDT, b"".join(struct.pack("<Q", d) for d in _DESCRIPTORS))
    uc.mem_write(SCRATCH, struct.pack("<HQ", 0x47, GDT))
    uc.mem_write(CODE, entry)
    uc.mem_write(target, body)
    uc.reg_write(x.UC_X86_REG_GDTR, (0, GDT, len(_DESCRIPTORS) * 8 - 1, 0))
    uc.msr_write(0xC0000080, 0x501)  # EFER: SCE for sysretq
    uc.msr_write(0xC0000081, 0x30 << 48 | 0x08 << 32)  # STAR: sysretq to CS 0x43, SS 0x3B
    fault: list[str] = []
    hooks: list[str] = []

    def on_intr(engine: unicorn.Uc, intno: int, _data: object) -> None:
        fault.append(VECTORS.get(intno, f"vector {intno}") if intno != 0x80 else "int 0x80 (vector 128)")
        engine.emu_stop()

    def on_in(_engine: unicorn.Uc, port: int, size: int, _data: object) -> int:
        hooks.append("IN")
        return 0

    def on_out(_engine: unicorn.Uc, port: int, size: int, value: int, _data: object) -> None:
        hooks.append("OUT")

    def on_cpuid(_engine: unicorn.Uc, _data: object) -> int:
        hooks.append("CPUID")
        return 0

    def on_syscall(_engine: unicorn.Uc, _data: object) -> None:
        hooks.append("SYSCALL")

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_in, None, 1, 0, x.UC_X86_INS_IN)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, x.UC_X86_INS_OUT)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_cpuid, None, 1, 0, x.UC_X86_INS_CPUID)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_syscall, None, 1, 0, x.UC_X86_INS_SYSCALL)
    uc.emu_start(CODE, target + len(body), count=200)
    cs = uc.reg_read(x.UC_X86_REG_CS)
    assert fault or cs & 3 == cpl or probe.name in _TRANSFERS, (probe.name, cpl, hex(cs))
    flags = uc.reg_read(x.UC_X86_REG_RFLAGS)
    rax = uc.reg_read(x.UC_X86_REG_RAX)
    return Outcome(fault[0] if fault else None, tuple(hooks), rax, bool(flags & RFLAGS_IF), cs & 3)


def table() -> dict[str, list[str]]:
    """Every probe's summary at CPL 0, 1, 2, 3."""
    return {p.name: [run_probe(p, cpl).summary(p) for cpl in range(4)] for p in PROBES}


if __name__ == "__main__":
    print("| instruction | CPL 0 | CPL 1 | CPL 2 | CPL 3 |")
    print("| --- | --- | --- | --- | --- |")
    for name, cells in table().items():
        print(f"| `{name}` | " + " | ".join(cells) + " |")
