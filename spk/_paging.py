"""Address spaces: x86-64 4-level page tables, written only by the SPK.

Every mapping a guest asks for goes through :meth:`AddressSpace.map`, the one
validation routine (Xen's rule, see :mod:`spk._frames`):

* the frame exists and is owned by the partition, and is of type DATA
  (PAGE_TABLE, SPK, POOL and FREE frames are never mappable, so a table is
  never writable and can always be freed with its space);
* the virtual address is page aligned and inside the region its flags allow:
  user mappings in the lower half, supervisor mappings in the partition's
  kernel slot (PML4 256); nothing else;
* the slot is not already mapped.

Layout of one partition's spaces: PML4 entries 0..255 are private to each
space (user half); entry 256 points to one PDPT shared by all the spaces of
the partition (the guest-kernel half, supervisor); entry 511 points to the
SPK's shared table (GDT, read-only, supervisor). Intermediate tables are
allocated from the partition's own quota, so page tables count against it.

Errors: :class:`spk.errors.SpkError` with the status of the broken rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import compress

from spk._frames import DATA_CODE, FRAME_TYPES, FrameTable, FrameType, PhysicalMemory
from spk._x86 import PTE_A, PTE_ADDR, PTE_D, PTE_NX, PTE_P, PTE_U, PTE_W
from spk.abi import (
    KERNEL_BASE,
    KERNEL_END,
    PAGE_SHIFT,
    PAGE_SIZE,
    USER_BASE,
    USER_END,
    Status,
)
from spk.errors import SpkError

_MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_SIGN_EXTENSION = 0xFFFF_0000_0000_0000
_INDICES = range(512)

KERNEL_SLOT = 256
SPK_SLOT = 511


def canonical(va: int) -> bool:
    """True when ``va`` is a canonical 48-bit address."""
    top = va >> 47
    return top == 0 or top == 0x1FFFF


#: The shifts of a 4-level walk's indices (PML4, PDPT, PD, PT), and of its three upper levels.
_SHIFTS = (39, 30, 21, 12)
_UPPER_SHIFTS = _SHIFTS[:3]


def _indices(va: int) -> tuple[int, int, int, int]:
    return ((va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511, (va >> 12) & 511)


@dataclass(frozen=True)
class Translation:
    """Result of a software walk: where ``va`` lands and with which rights."""

    paddr: int
    writable: bool
    user: bool


class Walker:
    """Reads page tables in physical RAM, as the MMU would.

    ``native``: an equivalent walk in C (``Engine.page_walker``:
    ``(cr3, va, need) -> paddr or -1``), which :meth:`spans` uses per page
    (ring 0's copies: a hypercall's arguments, channel messages); without
    it, the Python walk of :meth:`translate`.
    """

    def __init__(self, ram: PhysicalMemory, native: Callable[[int, int, int], int] | None = None) -> None:
        self.ram = ram
        self._native = native

    def translate(self, cr3: int, va: int) -> Translation | None:
        """Translate ``va`` under ``cr3``; None if not present at any level."""
        if not canonical(va):
            return None
        table = cr3 & PTE_ADDR
        writable = user = True
        for index in _indices(va):
            entry = self.ram.read_u64(table + index * 8)
            if not entry & PTE_P:
                return None
            writable = writable and bool(entry & PTE_W)
            user = user and bool(entry & PTE_U)
            table = entry & PTE_ADDR
        return Translation(table | (va & (PAGE_SIZE - 1)), writable, user)

    def spans(self, cr3: int, va: int, length: int, *, write: bool, user: bool) -> list[tuple[int, int]] | None:
        """Physical (address, length) pieces of ``[va, va+length)`` or None.

        None when the range wraps, leaves canonical space, or any page is
        absent or lacks the asked rights.
        """
        if length < 0 or va < 0 or va + length > _MASK64 + 1:
            return None
        if length == 0:
            return []
        end = va + length
        if not canonical(va) or not canonical(end - 1) or (va >> 47) != ((end - 1) >> 47):
            return None
        pieces: list[tuple[int, int]] = []
        cursor = va
        native = self._native
        if native is not None:
            need = (PTE_W if write else 0) | (PTE_U if user else 0)
            while cursor < end:
                paddr = native(cr3, cursor, need)
                if paddr < 0:
                    return None
                chunk = min(end, (cursor | (PAGE_SIZE - 1)) + 1) - cursor
                pieces.append((paddr, chunk))
                cursor += chunk
            return pieces
        while cursor < end:
            tr = self.translate(cr3, cursor)
            if tr is None or (write and not tr.writable) or (user and not tr.user):
                return None
            chunk = min(end, (cursor | (PAGE_SIZE - 1)) + 1) - cursor
            pieces.append((tr.paddr, chunk))
            cursor += chunk
        return pieces


class AddressSpace:
    """One PML4 and the tables below it, owned by one partition.

    ``alloc_table`` draws a zeroed PAGE_TABLE frame from the owner's quota;
    ``on_change`` is called after a change that may leave stale translations
    of many pages in an engine (the machine flushes its TLBs), ``on_unmap``
    with the address of one page whose leaf went away (the machine drops that
    page only, as ``invlpg``). A new mapping needs neither: the engine caches
    no translation that was not present.
    """

    def __init__(
        self,
        owner: int,
        frames: FrameTable,
        kernel: KernelHalf,
        spk_pdpt: int,
        on_change: Callable[[], None],
        on_unmap: Callable[[int], None],
    ) -> None:
        self.owner = owner
        self.frames = frames
        self.ram = frames.ram
        self._on_change = on_change
        self._on_unmap = on_unmap
        self.pml4 = frames.pool_take(owner, FrameType.PAGE_TABLE)
        self.tables = [self.pml4]
        base = self.pml4 << PAGE_SHIFT
        # Kernel half: supervisor, writable at the upper level (leaves decide).
        self.ram.write_u64(base + KERNEL_SLOT * 8, (kernel.pdpt << PAGE_SHIFT) | PTE_P | PTE_W)
        self.ram.write_u64(base + SPK_SLOT * 8, (spk_pdpt << PAGE_SHIFT) | PTE_P | PTE_W)
        self.kernel = kernel

    @property
    def cr3(self) -> int:
        return self.pml4 << PAGE_SHIFT

    # -- validation + mutation -------------------------------------------------
    def check_map(self, va: int, mfn: int, write: bool, user: bool) -> None:
        """The decode step of a mapping: every rule about the address and the frame, no mutation.

        (Whether the slot is free is known only by walking to it: :meth:`map`
        checks that on its one walk, before it changes anything.)
        Errors: SpkError(INVALID_ARGUMENT) bad alignment/region/frame number;
        SpkError(DENIED) foreign frame, writable page table, SPK frame.
        """
        if va & (PAGE_SIZE - 1):
            raise SpkError(Status.INVALID_ARGUMENT, f"address {va:#x} not page aligned")
        if user:
            if not (USER_BASE <= va < USER_END):
                raise SpkError(Status.INVALID_ARGUMENT, f"user address {va:#x} outside the user half")
        elif not (KERNEL_BASE <= va < KERNEL_END):
            raise SpkError(Status.INVALID_ARGUMENT, f"kernel address {va:#x} outside the kernel slot")
        frames = self.frames
        if not frames.valid(mfn):
            raise SpkError(Status.INVALID_ARGUMENT, f"frame {mfn:#x} does not exist")
        if frames.owners[mfn] != self.owner:
            raise SpkError(Status.DENIED, f"frame {mfn:#x} is not owned by the caller")
        if frames.types[mfn] != DATA_CODE:
            kind = FRAME_TYPES[frames.types[mfn]]
            if kind is FrameType.PAGE_TABLE:
                # Stricter than Xen (which allows read-only): a guest never sees
                # a table, so a table can always be freed with its space.
                raise SpkError(Status.DENIED, f"frame {mfn:#x} is a page table: never mappable")
            raise SpkError(Status.DENIED, f"frame {mfn:#x} is {kind.value}, not mappable")

    def map(self, va: int, mfn: int, write: bool, user: bool, execute: bool = True) -> None:
        """Validate then install one 4 KiB mapping, in one walk of the tables.

        Nothing changes before every rule held: the slot can be taken only if
        every level above it exists, and then the walk allocates nothing.
        Without ``execute`` the leaf is no-execute (``PTE_NX``): stores
        through it may run at engine speed (:mod:`spk._coherence`, which
        counts the mapping).
        Errors: those of :meth:`check_map`; SpkError(BUSY) the slot is already
        mapped; SpkError(NO_MEMORY) the quota cannot pay for the intermediate
        tables.
        """
        self.check_map(va, mfn, write, user)
        words = self.ram.words
        table = self.pml4 << PAGE_SHIFT
        for depth, shift in enumerate(_UPPER_SHIFTS):
            slot = (table >> 3) + ((va >> shift) & 511)
            entry = words[slot]
            if not entry & PTE_P:
                # The first missing level: every level below it is missing too (so is the slot).
                if self.frames.pool_free_count(self.owner) < 3 - depth:
                    raise SpkError(Status.NO_MEMORY, "quota exhausted: no frame left for page tables")
                new = self.frames.pool_take(self.owner, FrameType.PAGE_TABLE)
                # Tables under the shared kernel slot belong to the kernel half.
                (self.tables if user else self.kernel.tables).append(new)
                entry = (new << PAGE_SHIFT) | PTE_P | PTE_W | (PTE_U if user else 0)
                words[slot] = entry
            table = entry & PTE_ADDR
        slot = (table >> 3) + ((va >> PAGE_SHIFT) & 511)
        if words[slot] & PTE_P:
            raise SpkError(Status.BUSY, f"address {va:#x} already mapped")
        leaf = (mfn << PAGE_SHIFT) | PTE_P | PTE_A | (PTE_W | PTE_D if write else 0) | (0 if execute else PTE_NX)
        self.frames.coherence.mapped(mfn, write, execute)
        words[slot] = leaf | (PTE_U if user else 0)

    def _leaf_slot(self, va: int) -> int:
        """The word index of the present leaf PTE mapping ``va``, or -1 (a level not present)."""
        words = self.ram.words
        table = self.pml4 << PAGE_SHIFT
        slot = -1
        for shift in _SHIFTS:
            slot = (table >> 3) + ((va >> shift) & 511)
            entry = words[slot]
            if not entry & PTE_P:
                return -1
            table = entry & PTE_ADDR
        return slot

    def lookup_leaf(self, va: int) -> int | None:
        """The leaf PTE mapping ``va`` (present), or None."""
        slot = self._leaf_slot(va)
        return None if slot < 0 else int(self.ram.words[slot])

    def unmap(self, va: int) -> int:
        """Remove the mapping at ``va``; returns the frame it mapped.

        The engine forgets the page at once (``on_unmap``: one page's TLB
        entries, as ``invlpg``), whichever space is loaded: a kernel-half page
        is mapped in every space of the partition.
        Errors: SpkError(INVALID_ARGUMENT) unaligned or outside both halves;
        SpkError(NOT_FOUND) nothing mapped there.
        """
        if va & (PAGE_SIZE - 1) or not (USER_BASE <= va < USER_END or KERNEL_BASE <= va < KERNEL_END):
            raise SpkError(Status.INVALID_ARGUMENT, f"address {va:#x} cannot be unmapped")
        slot = self._leaf_slot(va)
        if slot < 0:
            raise SpkError(Status.NOT_FOUND, f"nothing mapped at {va:#x}")
        words = self.ram.words
        leaf = words[slot]
        words[slot] = 0
        mfn = (leaf & PTE_ADDR) >> PAGE_SHIFT
        if va >= KERNEL_BASE:
            self.kernel.generation += 1
        self._on_unmap(va)
        self.frames.coherence.unmapped(mfn, bool(leaf & PTE_W), not leaf & PTE_NX)
        return mfn

    def leaves(self, *, user_half_only: bool = False) -> Iterator[tuple[int, int]]:
        """Every (va, leaf PTE) reachable from this PML4 (kernel slot included)."""
        pml4 = self.ram.table(self.pml4 << PAGE_SHIFT)
        slots = pml4[: KERNEL_SLOT + (0 if user_half_only else 1)]
        for i4 in compress(_INDICES, slots):  # the non-zero slots, found in C
            entry = pml4[i4]
            if entry & PTE_P:
                yield from self._subtree(entry & PTE_ADDR, i4 << 39, 2)

    def _subtree(self, table: int, va: int, level: int) -> Iterator[tuple[int, int]]:
        """Leaves below one table (level 2: a PDPT, 1: a PD, 0: a page table)."""
        shift = 12 + 9 * level
        entries = self.ram.table(table)
        for index in compress(_INDICES, entries):  # the non-zero entries, found in C
            entry = entries[index]
            if entry & PTE_P:
                address = va | (index << shift)
                if level:
                    yield from self._subtree(entry & PTE_ADDR, address, level - 1)
                else:
                    yield (address | _SIGN_EXTENSION if address >> 47 else address), entry

    def destroy_user_half(self) -> list[int]:
        """Unmap every user mapping and free the private tables (not the PML4).

        Returns the frames that were mapped (so the caller may audit them).
        """
        mapped = []
        for va, _leaf in list(self.leaves(user_half_only=True)):
            mapped.append(self.unmap(va))
        base = self.pml4 << PAGE_SHIFT
        for table in self.tables[1:]:
            self.frames.pool_return(table)
        self.tables = [self.pml4]
        for i in range(256):
            self.ram.write_u64(base + i * 8, 0)
        self._on_change()
        return mapped

    def destroy(self) -> None:
        """Tear the space down and give its tables back to the quota."""
        self.destroy_user_half()
        self.frames.pool_return(self.pml4)
        self.tables = []


class KernelHalf:
    """The PDPT (and tables below) shared by all the spaces of one partition."""

    def __init__(self, owner: int, frames: FrameTable) -> None:
        self.owner = owner
        self.frames = frames
        self.pdpt = frames.pool_take(owner, FrameType.PAGE_TABLE)
        self.tables: list[int] = [self.pdpt]
        #: bumped whenever a kernel-half mapping goes away (drops SPK caches)
        self.generation = 0
