"""Architectural x86-64 constants both ways of running a guest share (Intel SDM vol. 3, 4.5).

Page-table entry bits mean the same to the SPK's own tables (paravirtual
address spaces, :mod:`spk._paging`) and to a full partition's tables
(:mod:`spk._fv_mmu`, :mod:`spk._fv_shadow`): one definition for both.
"""

from __future__ import annotations

PAGE = 4096
PTE_P = 1 << 0  #: present
PTE_W = 1 << 1  #: writable
PTE_U = 1 << 2  #: user
PTE_A = 1 << 5  #: accessed
PTE_D = 1 << 6  #: dirty
PTE_PS = 1 << 7  #: a 2 MiB or 1 GiB page (levels 2 and 3)
PTE_NX = 1 << 63  #: no execute (with EFER.NXE)
PTE_ADDR = 0x000F_FFFF_FFFF_F000  #: the frame address bits

MSR_EFER = 0xC000_0080  #: extended features (long mode, no-execute, syscall)
EFER_NXE = 1 << 11  #: PTE_NX is honoured (without it bit 63 is reserved)
