"""CPU bring-up: GDT, paging on, and the CPL 2 / CPL 3 template contexts.

Writing CS with a register write does not change the privilege level in the
engine: a real CPL is entered only by ``iretq``. So each vCPU is brought up
once, at CPL 0, through a tiny SPK stub that ``iretq``s to CPL 2 and then to
CPL 3, trapping at each level with ``int3``. The two saved contexts are the
*templates* every later world switch starts from: the SPK copies a guest's
registers into the right template and restores it (one C call).

Ring-0 memory: one shared SPK PDPT (PML4 slot 511 of every address space)
maps only the GDT, read-only and supervisor, with every descriptor's
accessed bit preset so that segment loads never write it. The stub, its
stack and the CPL 3 probe page live in a separate boot PML4 that no guest
ever runs under.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from spk._engine import Context, Engine, find_next_eip_slot, find_value_slot, set_bringup_slots
from spk._frames import FrameTable
from spk._x86 import EFER_NXE, MSR_EFER, PTE_A, PTE_ADDR, PTE_D, PTE_P, PTE_U, PTE_W
from spk.abi import (
    GDT_VADDR,
    PAGE_SHIFT,
    SEL_GUEST_CODE,
    SEL_GUEST_DATA,
    SEL_USER_CODE,
    SEL_USER_DATA,
    SPK_BASE,
)
from spk.errors import EngineError

#: Flat 64-bit descriptors, accessed bit preset (type 0xB code, 0x3 data).
GDT_ENTRIES = (
    0,
    0x00AF_9B00_0000_FFFF,  # 0x08 code, DPL 0
    0x00CF_9300_0000_FFFF,  # 0x10 data, DPL 0
    0x00AF_DB00_0000_FFFF,  # 0x18 code, DPL 2
    0x00CF_D300_0000_FFFF,  # 0x20 data, DPL 2
    0x00AF_FB00_0000_FFFF,  # 0x28 code, DPL 3
    0x00CF_F300_0000_FFFF,  # 0x30 data, DPL 3
)
GDT_LIMIT = len(GDT_ENTRIES) * 8 - 1

CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_TSD = 1 << 2  #: rdtsc/rdtscp fault outside CPL 0: guests must not read the host's clock
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9  #: SSE enabled, as an OS enables it (fxsave/fxrstor, SSE instructions)
CR4_OSXMMEXCPT = 1 << 10

_STUB_VADDR = SPK_BASE + 0x1000
_BOOT_STACK_VADDR = SPK_BASE + 0x2000
_PROBE_USER_VADDR = 0x1000
# Stub: iretq (to CPL 2) ; int3 ; iretq (to CPL 3)
_STUB_CODE = b"\x48\xcf" + b"\xcc" + b"\x48\xcf"
_PROBE_CODE = b"\xcc" + b"\xf4" + b"\xeb\xfe"  # int3 ; hlt (#GP at CPL 3) ; jmp $


def _install(frames: FrameTable, pml4: int, va: int, mfn: int, *, write: bool, user: bool) -> None:
    """Map one page in an SPK-owned tree; intermediate tables are SPK frames."""
    ram = frames.ram
    table = pml4 << PAGE_SHIFT
    for shift in (39, 30, 21):
        slot = table + ((va >> shift) & 511) * 8
        entry = ram.read_u64(slot)
        if not entry & PTE_P:
            (new,) = frames.reserve_spk(1)
            ram.zero_frame(new)
            entry = (new << PAGE_SHIFT) | PTE_P | PTE_W | (PTE_U if user else 0)
            ram.write_u64(slot, entry)
        table = entry & PTE_ADDR
    leaf = (mfn << PAGE_SHIFT) | PTE_P | PTE_A | (PTE_W | PTE_D if write else 0) | (PTE_U if user else 0)
    ram.write_u64(table + ((va >> 12) & 511) * 8, leaf)


@dataclass
class SpkMemory:
    """Ring-0 frames shared by every vCPU and address space."""

    spk_pdpt: int  #: the table PML4 slot 511 of every guest space points to
    boot_pml4: int  #: the bring-up space (stub, stack, probe page)


def build_spk_memory(frames: FrameTable) -> SpkMemory:
    """Reserve and fill the SPK's own frames (GDT, tables, bring-up stub)."""
    ram = frames.ram
    gdt, stub, stack, probe, guest_pml4_scratch, boot_pml4 = frames.reserve_spk(6)
    for mfn in (gdt, stub, stack, probe, guest_pml4_scratch, boot_pml4):
        ram.zero_frame(mfn)
    ram.write(gdt << PAGE_SHIFT, struct.pack(f"<{len(GDT_ENTRIES)}Q", *GDT_ENTRIES))
    ram.write(stub << PAGE_SHIFT, _STUB_CODE)
    ram.write(probe << PAGE_SHIFT, _PROBE_CODE)
    # The shared slot-511 tree: GDT only, read-only, supervisor.
    _install(frames, guest_pml4_scratch, GDT_VADDR, gdt, write=False, user=False)
    spk_pdpt = (ram.read_u64((guest_pml4_scratch << PAGE_SHIFT) + 511 * 8) & PTE_ADDR) >> PAGE_SHIFT
    # The boot space: the same slot 511 plus the stub and its stack, and a user probe page.
    ram.write_u64((boot_pml4 << PAGE_SHIFT) + 511 * 8, (spk_pdpt << PAGE_SHIFT) | PTE_P | PTE_W)
    # Stub and stack live in slot 510 of the boot space only (never in a guest space).
    _install(frames, boot_pml4, _STUB_VADDR - (1 << 39), stub, write=False, user=False)
    _install(frames, boot_pml4, _BOOT_STACK_VADDR - (1 << 39), stack, write=True, user=False)
    _install(frames, boot_pml4, _PROBE_USER_VADDR, probe, write=False, user=True)
    return SpkMemory(spk_pdpt=spk_pdpt, boot_pml4=boot_pml4)


@dataclass
class Templates:
    """The two contexts every world switch starts from."""

    cpl2: Context
    cpl3: Context


def bring_up(engine: Engine, spk: SpkMemory, frames: FrameTable) -> Templates:
    """Enable paging, load the GDT and capture CPL 2 and CPL 3 templates.

    Errors: :class:`EngineError` when the CPU does not reach the expected
    privilege levels (the engine is not what the SPK was verified against).
    """
    stub = _STUB_VADDR - (1 << 39)
    stack = _BOOT_STACK_VADDR - (1 << 39)
    stack_mfn = _leaf_mfn(frames, spk.boot_pml4, stack)
    # Two iret frames on the boot stack: CPL 0 -> CPL 2 (stub + 2), then CPL 2 -> CPL 3 (probe).
    frame2_sp = stack + 0x800
    frame1 = struct.pack("<5Q", stub + 2, SEL_GUEST_CODE, 0x2, frame2_sp, SEL_GUEST_DATA)
    frame2 = struct.pack("<5Q", _PROBE_USER_VADDR, SEL_USER_CODE, 0x202, _PROBE_USER_VADDR + 0xF00, SEL_USER_DATA)
    base = stack_mfn << PAGE_SHIFT
    frames.ram.write(base + 0x400, frame1)
    frames.ram.write(base + 0x800, frame2)

    engine.write("cr3", spk.boot_pml4 << PAGE_SHIFT)
    engine.write("cr4", engine.read("cr4") | CR4_PAE | CR4_TSD | CR4_OSFXSR | CR4_OSXMMEXCPT)
    engine.write("cr0", engine.read("cr0") | CR0_PE | CR0_PG | CR0_WP)
    # No-execute leaves (data, stacks, MAP's NO_EXEC) are what lets stores run at engine speed (spk._coherence).
    engine.write_msr(MSR_EFER, engine.read_msr(MSR_EFER) | EFER_NXE)
    engine.write_gdtr(GDT_VADDR, GDT_LIMIT)
    engine.write("rsp", stack + 0x400)

    cpl2 = engine.new_context()
    cpl3 = engine.new_context()
    fault = engine.new_context()
    captured: list[Context] = []
    sink = engine._sink
    previous = getattr(sink, "bringup_capture", None)
    expected = (3, 3, 13)  # int3 at CPL 2, int3 at CPL 3, then a real #GP (hlt at CPL 3)

    def capture(vector: int) -> None:
        if len(captured) >= len(expected) or vector != expected[len(captured)]:
            raise EngineError(f"bring-up trapped with vector {vector}")
        target = (cpl2, cpl3, fault)[len(captured)]
        engine.save(target)
        captured.append(target)
        if len(captured) == len(expected):
            engine.stop()

    sink.bringup_capture = capture  # type: ignore[attr-defined]
    try:
        result = engine.run(stub, 10_000_000)  # ticks, or ns in fast mode: the captures stop it
    finally:
        sink.bringup_capture = previous  # type: ignore[attr-defined]
    if len(captured) != len(expected) or result.engine_error:
        raise EngineError(f"CPU bring-up failed: {result.engine_error or 'templates not captured'}")
    word, shift = find_value_slot(cpl2, SEL_GUEST_CODE, cpl3, SEL_USER_CODE)
    # Both captures stopped on int3: at stub + 3 (CPL 2) and the probe (CPL 3).
    int_word = find_next_eip_slot(cpl2, stub + 3, cpl3, _PROBE_USER_VADDR + 1)
    # QEMU's "exception in flight" (old_exception): no exception in the
    # templates (-1), the #GP's vector once the CPU has raised one.
    exc_word, exc_shift = find_value_slot(cpl3, 0xFFFF_FFFF, fault, 13)
    fault.free()
    gpr0 = cpl2.layout.gpr0
    size = (cpl2.size // 8) - gpr0
    privilege = tuple(i for i in range(16, size) if cpl2.words[gpr0 + i] != cpl3.words[gpr0 + i])
    if not privilege or len(privilege) > 32:
        raise EngineError(f"CPU bring-up: {len(privilege)} words differ between CPL 2 and CPL 3")
    layout = set_bringup_slots(word, shift, int_word, exc_word, exc_shift, privilege)
    cpl2.layout = cpl3.layout = engine.layout = layout
    if cpl2.cpl != 2 or cpl3.cpl != 3:
        raise EngineError("CPU bring-up: privilege levels not reached")
    return Templates(cpl2=cpl2, cpl3=cpl3)


def _leaf_mfn(frames: FrameTable, pml4: int, va: int) -> int:
    table = pml4 << PAGE_SHIFT
    for shift in (39, 30, 21, 12):
        entry = frames.ram.read_u64(table + ((va >> shift) & 511) * 8)
        table = entry & PTE_ADDR
    return table >> PAGE_SHIFT

