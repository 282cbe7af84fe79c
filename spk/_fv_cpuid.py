"""The CPU a full partition sees through ``cpuid``: QEMU's ``-cpu qemu64``.

The engine's own CPUID answers as its own model (unicorn's qemu64 says
``GenuineIntel``), while QEMU's ``qemu64`` says ``AuthenticAMD``: a full
guest must see the same CPU under the SPK as under QEMU, the outside
reference (docs/fullvirt.md). Values are QEMU's definition of the model
(target/i386/cpu.c: level 0xd, xlevel 0x8000000A, family 15, model 107,
stepping 1, PPRO_FEATURES | MTRR | CLFLUSH | MCA | PSE36, SSE3 | CX16, and
LM | SYSCALL | NX, LAHF_LM | SVM). Leaves it does not define answer zero;
there is one CPU (APIC id 0) and no hypervisor leaf.
"""

from __future__ import annotations

import struct

_VENDOR = b"AuthenticAMD"
_BRAND = b"QEMU Virtual CPU version 2.5+".ljust(48, b"\0")

# CPUID.1:EDX: FPU DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36 CLFLUSH MMX FXSR SSE SSE2
_LEAF1_EDX = sum(1 << b for b in (0, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26))
_LEAF1_ECX = (1 << 0) | (1 << 13)  # SSE3, CX16
_LEAF1_EAX = (6 << 16) | (0xF << 8) | (0xB << 4) | 1  # ext. model 6, family 15, model 0xB: model 107; stepping 1
_LEAF1_EBX = (8 << 8) | (1 << 16)  # CLFLUSH line 8 qwords, 1 logical processor, APIC id 0
# CPUID.80000001: EDX = the leaf 1 bits AMD mirrors, plus SYSCALL, NX, LM; ECX = LAHF_LM, SVM
_EXT_EDX = (_LEAF1_EDX & 0x0183F3FF) | (1 << 11) | (1 << 20) | (1 << 29)
_EXT_ECX = (1 << 0) | (1 << 2)


def _words(data: bytes) -> tuple[int, int, int, int]:
    a, b, c, d = struct.unpack("<4I", data)
    return a, b, c, d


def cpuid(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
    """(eax, ebx, ecx, edx) of ``cpuid`` with eax = ``leaf``, ecx = ``subleaf``."""
    del subleaf  # no leaf of this model depends on it
    vendor = struct.unpack("<3I", _VENDOR)
    if leaf == 0:
        return 0xD, vendor[0], vendor[2], vendor[1]  # ebx, edx, ecx spell the vendor
    if leaf == 1:
        return _LEAF1_EAX, _LEAF1_EBX, _LEAF1_ECX, _LEAF1_EDX
    if leaf == 0x8000_0000:
        return 0x8000_000A, vendor[0], vendor[2], vendor[1]
    if leaf == 0x8000_0001:
        return _LEAF1_EAX, 0, _EXT_ECX, _EXT_EDX
    if 0x8000_0002 <= leaf <= 0x8000_0004:
        index = leaf - 0x8000_0002
        return _words(_BRAND[index * 16 : index * 16 + 16])
    if leaf == 0x8000_0008:
        return 0x3028, 0, 0, 0  # 40 physical, 48 virtual address bits
    return 0, 0, 0, 0
