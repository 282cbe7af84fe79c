"""Memory virtualization for full partitions: the guest's physical memory and the nested MMU.

A full partition's kernel builds its own x86-64 page tables in what it
believes is physical memory. That memory is its quota: one contiguous run of
host frames, guest-physical address ``g`` being byte ``g`` of the run
(:class:`GuestPhysical`). Two ways to make the CPU use the guest's tables
without letting it reach anything else:

* nested (:class:`NestedMmu`, this module), the analogue of EPT/NPT: the
  partition's engine maps guest-physical 0..quota and nothing else, so the
  engine's memory map *is* the second-level translation. The guest's tables
  are the real ones; a guest entry naming memory beyond the quota reaches
  nothing (the engine reports the access and ring 0 turns it into a #PF).
* shadow (:mod:`spk._fv_shadow`): ring 0 keeps shadow tables of its own and
  write-protects the guest's.

:func:`walk_guest` is ring 0's software walk of the guest's tables, the
architectural one (it sets accessed and dirty bits as the CPU does), used to
emulate instructions, deliver interrupts and fill shadows.

Errors: :class:`GuestMemoryError` for a guest-physical access outside the
quota, :class:`GuestFault` when a guest-supplied root is unusable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from spk._x86 import PAGE, PTE_A, PTE_ADDR, PTE_D, PTE_NX, PTE_P, PTE_PS, PTE_U, PTE_W
from spk.abi import Status
from spk.errors import SpkError

__all__ = ["PAGE", "PTE_A", "PTE_ADDR", "PTE_D", "PTE_NX", "PTE_P", "PTE_PS", "PTE_U", "PTE_W"]  # re-exported

ACCESS_WRITE = 2
ACCESS_USER = 4
ACCESS_FETCH = 16
#: #PF error-code bits (Intel SDM vol. 3, 4.7)
PF_PRESENT = 1
PF_WRITE = 2
PF_USER = 4
PF_RSVD = 8
PF_FETCH = 16

_U64 = struct.Struct("<Q")


class GuestMemoryError(SpkError):
    """A guest-physical access outside the partition's memory."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.BAD_ADDRESS, message)


class GuestFault(SpkError):
    """The guest asked for something its virtual hardware cannot do (a root outside its memory)."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.INVALID_ARGUMENT, message)


class GuestPhysical:
    """A full partition's physical memory: a host buffer seen from guest-physical 0.

    ``view`` is writable and ``len(view) == size``; ``host_address`` is the
    host address of guest-physical 0 (what the engine maps).
    """

    def __init__(self, view: memoryview, host_address: int) -> None:
        self.view = view.cast("B") if view.format != "B" else view
        self.size = len(self.view)
        self.host_address = host_address

    def _check(self, gpa: int, length: int) -> None:
        if gpa < 0 or length < 0 or gpa + length > self.size:
            raise GuestMemoryError(f"guest-physical {gpa:#x}+{length:#x} is outside its {self.size:#x} bytes")

    def read_u64(self, gpa: int) -> int:
        self._check(gpa, 8)
        return int(_U64.unpack_from(self.view, gpa)[0])

    def write_u64(self, gpa: int, value: int) -> None:
        self._check(gpa, 8)
        _U64.pack_into(self.view, gpa, value & 0xFFFF_FFFF_FFFF_FFFF)

    def read(self, gpa: int, length: int) -> bytes:
        self._check(gpa, length)
        return bytes(self.view[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self._check(gpa, len(data))
        self.view[gpa : gpa + len(data)] = data

    def contains(self, gpa: int, length: int = 1) -> bool:
        return gpa >= 0 and gpa + length <= self.size


@dataclass
class Walk:
    """The outcome of one walk of the guest's tables."""

    gpa: int | None  #: the translation; None on a fault
    error: int  #: the #PF error code when ``gpa`` is None
    tables: list[tuple[int, int]] = field(default_factory=list)  #: (level, table gpa) visited, PML4 first
    leaf_level: int = 1  #: 1: a 4 KiB page, 2: 2 MiB, 3: 1 GiB
    writable: bool = False
    user: bool = False
    executable: bool = False
    entries: list[tuple[int, int]] = field(default_factory=list)  #: (entry gpa, entry value) visited


def canonical(va: int) -> bool:
    top = va >> 47
    return top == 0 or top == 0x1FFFF


def walk_guest(
    mem: GuestPhysical, cr3: int, va: int, access: int, *, wp: bool, nxe: bool, set_ad: bool
) -> Walk:
    """Translate ``va`` through the guest's 4-level tables rooted at ``cr3``, as the CPU does.

    ``access`` holds ACCESS_WRITE / ACCESS_USER / ACCESS_FETCH. Permissions
    combine over the levels (writable and user only if every level says so,
    executable unless a level sets NX with EFER.NXE); a supervisor write to
    a read-only page faults only with CR0.WP. On success, with ``set_ad``,
    the accessed bit is set at every level and the dirty bit on the leaf for
    a write. A table or page outside the quota, or a reserved bit, is a
    fault with PF_RSVD set (the nested engine reports such an access the
    same way). Never raises for guest-controlled values.
    """
    user = bool(access & ACCESS_USER)
    write = bool(access & ACCESS_WRITE)
    fetch = bool(access & ACCESS_FETCH)
    base_error = (PF_WRITE if write else 0) | (PF_USER if user else 0) | (PF_FETCH if fetch and nxe else 0)
    walk = Walk(gpa=None, error=base_error)
    if not canonical(va):
        walk.error = base_error | PF_RSVD
        return walk
    table = cr3 & PTE_ADDR
    writable = executable = user_ok = True
    level = 4
    entries: list[tuple[int, int]] = []
    while True:
        slot = table + ((va >> (12 + 9 * (level - 1))) & 511) * 8
        if not mem.contains(slot, 8):
            walk.error = base_error | PF_RSVD | PF_PRESENT
            return walk
        walk.tables.append((level, table))
        entry = mem.read_u64(slot)
        entries.append((slot, entry))
        if not entry & PTE_P:
            return walk
        if entry & PTE_NX and not nxe:  # NX is a reserved bit unless EFER.NXE
            walk.error = base_error | PF_RSVD | PF_PRESENT
            return walk
        writable &= bool(entry & PTE_W)
        user_ok &= bool(entry & PTE_U)
        executable &= not (nxe and entry & PTE_NX)
        huge = level in (2, 3) and bool(entry & PTE_PS)
        if level == 1 or huge:
            shift = 12 + 9 * (level - 1)
            frame = entry & PTE_ADDR & ~((1 << shift) - 1)
            if huge and entry & PTE_ADDR & ((1 << shift) - 1) & ~0x1FFF:  # reserved bits of a huge entry
                walk.error = base_error | PF_RSVD | PF_PRESENT
                return walk
            gpa = frame | (va & ((1 << shift) - 1))
            denied = (
                (user and not user_ok)
                or (write and not writable and (user or wp))
                or (fetch and not executable)
            )
            if denied:
                walk.error = base_error | PF_PRESENT
                return walk
            if not mem.contains(gpa & ~(PAGE - 1), PAGE):
                walk.error = base_error | PF_RSVD | PF_PRESENT
                return walk
            walk.leaf_level = level
            break
        table = entry & PTE_ADDR
        level -= 1
    if set_ad:
        for index, (slot, entry) in enumerate(entries):
            wanted = entry | PTE_A
            if index == len(entries) - 1 and write:
                wanted |= PTE_D
            if wanted != entry:
                mem.write_u64(slot, wanted)
    walk.gpa = gpa
    walk.error = 0
    walk.writable, walk.user, walk.executable = writable, user_ok, executable
    walk.entries = entries
    return walk


class Mmu(Protocol):
    """How a full partition's engine sees memory: nested (:class:`NestedMmu`) or shadow."""

    mode: str
    wp: bool  #: the guest's CR0.WP (set by the vCPU on every CR0 write)
    nxe: bool  #: the guest's EFER.NXE

    def engine_regions(self) -> list[tuple[int, int, int]]:
        """(engine-physical start, size, host address) of every region the engine maps."""
        ...

    def load_cr3(self, guest_cr3: int) -> int:
        """The real CR3 for the guest's CR3 (GuestFault when it names memory outside the quota)."""
        ...

    def page_fault(self, va: int, access: int, step: Callable[[], None]) -> int | None:
        """A #PF the engine raised at ``va``: None when ring 0 handled it, else the guest's error code."""
        ...

    def invlpg(self, va: int) -> None: ...

    def flush(self) -> None: ...

    def guest_written(self, gpa: int, length: int) -> None:
        """Ring 0 wrote guest memory (an interrupt frame, an emulated store): a shadow must resync."""
        ...

    def describe(self) -> dict[str, object]: ...


class NestedMmu:
    """EPT/NPT's analogue: the engine maps the quota at 0 and nothing else; the guest's tables are real.

    Nothing here is on the guest's fast path: page-table writes, CR3 loads of
    a known root and TLB hits run natively. Ring 0 sees only faults, which
    are the guest's own (the error code is recomputed by :func:`walk_guest`
    since the engine reports none), and ``invlpg``, which drops that page
    from the engine's TLB (``flush_page``: the engine's own invlpg).
    """

    mode = "nested"

    def __init__(self, mem: GuestPhysical, flush_tlb: Callable[[], None], flush_page: Callable[[int], None]) -> None:
        self.mem = mem
        self._flush_tlb = flush_tlb
        self._flush_page = flush_page
        self.wp = True
        self.nxe = False
        self.cr3 = 0
        self.counts = {"page_faults": 0, "invlpg": 0, "cr3_loads": 0}

    def engine_regions(self) -> list[tuple[int, int, int]]:
        return [(0, self.mem.size, self.mem.host_address)]

    def load_cr3(self, guest_cr3: int) -> int:
        root = guest_cr3 & PTE_ADDR
        if not self.mem.contains(root, PAGE):
            raise GuestFault(f"CR3 {guest_cr3:#x} names memory outside the guest's {self.mem.size:#x} bytes")
        self.cr3 = guest_cr3
        self.counts["cr3_loads"] += 1
        return guest_cr3

    def page_fault(self, va: int, access: int, step: Callable[[], None]) -> int | None:
        self.counts["page_faults"] += 1
        walk = walk_guest(self.mem, self.cr3, va, access, wp=self.wp, nxe=self.nxe, set_ad=False)
        if walk.gpa is not None:
            # The guest's tables allow it now (the engine's TLB held an older entry): retry.
            self._flush_tlb()
            return None
        return walk.error

    def invlpg(self, va: int) -> None:
        self.counts["invlpg"] += 1
        self._flush_page(va)

    def flush(self) -> None:
        self._flush_tlb()

    def guest_written(self, gpa: int, length: int) -> None:
        return None  # the engine walks the guest's tables itself: nothing is cached here

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "regions": [
                {"engine_physical": 0, "size": self.mem.size, "what": "guest memory (quota)"},
            ],
            "counts": dict(self.counts),
        }
