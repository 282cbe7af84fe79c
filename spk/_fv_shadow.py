"""Shadow page tables for full partitions (``mmu = "shadow"``), as VMware's and Xen's shadow modes do.

The engine of a shadow partition maps guest-physical 0..quota at
engine-physical 0 (as nested mode does) and, above it, a *shadow pool*:
frames ring 0 owns for the partition, not part of its quota. The real CR3 is
a shadow PML4 in the pool. Shadow tables translate guest-virtual addresses
to guest-physical (= engine-physical) pages; they are built by ring 0 from
the guest's own tables and never map the pool, so whatever the guest writes
in its tables, the engine reaches only the quota.

How the shadows follow the guest (Xen's shadow code is the model):

* one shadow table per (guest table frame, level), shared by every guest
  root that uses it; the shadow PML4 of each known root stays (a bounded
  LRU), so an address-space switch to a known root costs nothing here;
* filling is lazy: the engine's #PF comes to :meth:`ShadowMmu.page_fault`,
  which walks the guest's tables (:func:`spk._fv_mmu.walk_guest`, setting
  A/D as the CPU does) and fills the shadow path, or returns the guest's
  #PF error code when the guest's tables refuse the access. A shadow entry
  is present only when the guest entry's A bit is set, and a leaf writable
  only when its D bit is, so the first access and the first write come
  back to ring 0 and set them;
* 2 MiB and 1 GiB guest pages become 4 KiB shadow pages under synthesised
  shadow tables (Xen's "fl1" shadows), so a table frame inside a huge page
  can still be write-protected on its own;
* every guest frame that has a shadow table is write-protected in every
  shadow leaf: a reverse map (guest frame -> shadow leaf entries that map it
  writable) takes the write access away when a frame becomes a table. A
  guest write to such a frame is a #PF: ring 0 makes the page writable for
  exactly that instruction (``step``), then diffs the frame against its copy
  of what the shadows were derived from and re-derives the changed entries
  (a changed target unlinks the old shadow subtree, freed when no parent
  uses it any more). Such a leaf carries SW_PROTECTED (an ignored bit), so
  the next write to a known table is recognised from the shadow alone,
  without walking the guest's tables.

A guest entry naming memory outside the quota (the pool included) is not
present to the shadow: the guest gets a #PF with RSVD set (what
:func:`spk._fv_mmu.walk_guest` reports for it), and no shadow leaf ever names it.
:meth:`ShadowMmu.audit` checks that over the whole pool.

When the pool is exhausted, every shadow is dropped and filling starts again
(counted as a reset); the current root keeps its page so the real CR3 stays
valid.

The pool, the tables' links and the reverse map are
:class:`spk._fv_shadow_tables.ShadowTables`; this module derives shadow
entries from guest entries and handles the faults.

Errors: :class:`spk._fv_mmu.GuestFault` for a CR3 outside the quota,
:class:`spk.errors.SpkError` (INVALID_ARGUMENT) for a pool that cannot work,
:class:`spk.errors.InternalError` when a fault makes no progress (a bug).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from spk._fv_mmu import (
    ACCESS_FETCH,
    ACCESS_USER,
    ACCESS_WRITE,
    PAGE,
    PTE_A,
    PTE_ADDR,
    PTE_D,
    PTE_NX,
    PTE_P,
    PTE_PS,
    PTE_U,
    PTE_W,
    GuestFault,
    GuestPhysical,
    walk_guest,
)
from spk._fv_shadow_tables import SW_PROTECTED, PoolExhausted, ShadowTable, ShadowTables
from spk.abi import Status
from spk.errors import InternalError, SpkError

#: fewest pool frames that always hold one full path (PML4, PDPT, PD, PT and synthesised tables)
MIN_POOL_FRAMES = 8
#: shadow PML4s of known roots kept between address-space switches (least recently loaded dropped)
MAX_ROOTS = 32
#: identical faults in a row that change nothing before ring 0 calls it a bug
_STUCK_LIMIT = 3

_U64 = struct.Struct("<Q")
_PAGE_Q = struct.Struct("<512Q")
_P_PROTECTED = PTE_P | SW_PROTECTED
_Path = list[tuple[ShadowTable, int]]  # (table, index) from the root down to a leaf
_PERMISSIVE = PTE_P | PTE_W | PTE_U | PTE_A
_COUNTERS = (
    "cr3_loads",
    "page_faults",
    "fills",
    "guest_faults",
    "protected_writes",
    "fast_protected_writes",
    "resync_tables",
    "resyncs",
    "protections",
    "unshadowed_roots",
    "invlpg",
    "flushes",
    "resets",
    "spurious",
    "tables_created",
    "tables_freed",
    "tlb_flushes",
)


def _index(va: int, level: int) -> int:
    return (va >> (3 + 9 * level)) & 511


class ShadowMmu:
    """The shadow MMU of one full partition (the :class:`spk._fv_mmu.Mmu` protocol).

    ``mem`` is the guest's physical memory (the quota), ``pool`` the shadow
    pool's memory and ``pool_base`` its engine-physical address (at or above
    the quota, page aligned); ``flush_tlb`` flushes the engine's TLB.
    Errors: SpkError(INVALID_ARGUMENT) for a pool smaller than
    ``MIN_POOL_FRAMES`` frames, misaligned or overlapping the quota.
    """

    mode = "shadow"

    def __init__(
        self,
        mem: GuestPhysical,
        pool: GuestPhysical,
        pool_base: int,
        flush_tlb: Callable[[], None],
        flush_page: Callable[[int], None],
    ) -> None:
        if pool.size % PAGE or pool.size < MIN_POOL_FRAMES * PAGE:
            raise SpkError(
                Status.INVALID_ARGUMENT,
                f"a shadow pool needs at least {MIN_POOL_FRAMES} whole frames, not {pool.size:#x} bytes",
            )
        if pool_base % PAGE or pool_base < mem.size:
            raise SpkError(
                Status.INVALID_ARGUMENT,
                f"the shadow pool at {pool_base:#x} must be page aligned and above the quota ({mem.size:#x})",
            )
        self.mem = mem
        self.pool = pool
        self.pool_base = pool_base
        self._flush_tlb = flush_tlb
        self._flush_page = flush_page
        self._wp = True
        self._nxe = False
        self.cr3 = 0
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self._stuck: tuple[int, int, int] = (-1, -1, 0)
        self.store = ShadowTables(mem, pool, pool_base, self.counts)  #: the pool and its tables (read-only here)
        self._root: ShadowTable | None = None

    # -- the virtual CPU's paging bits -------------------------------------------------------

    @property
    def wp(self) -> bool:
        """The guest's CR0.WP (shadows do not depend on it: a WP=0 write is stepped)."""
        return self._wp

    @wp.setter
    def wp(self, value: bool) -> None:
        self._wp = bool(value)

    @property
    def nxe(self) -> bool:
        """The guest's EFER.NXE: shadow entries carry NX only with it, so a change drops them all."""
        return self._nxe

    @nxe.setter
    def nxe(self, value: bool) -> None:
        if bool(value) != self._nxe:
            self._nxe = bool(value)
            self.flush()

    # -- the Mmu protocol ----------------------------------------------------------------------

    def engine_regions(self) -> list[tuple[int, int, int]]:
        return [(0, self.mem.size, self.mem.host_address), (self.pool_base, self.pool.size, self.pool.host_address)]

    def load_cr3(self, guest_cr3: int) -> int:
        """The engine-physical address of the shadow PML4 for ``guest_cr3`` (made on first use).

        Errors: GuestFault when the guest's root is outside its memory.
        """
        gpa = guest_cr3 & PTE_ADDR
        if not self.mem.contains(gpa, PAGE):
            raise GuestFault(f"CR3 {guest_cr3:#x} names memory outside the guest's {self.mem.size:#x} bytes")
        self.counts["cr3_loads"] += 1
        self.cr3 = guest_cr3
        root = self.store.roots.pop(gpa, None)
        if root is None:
            try:
                root = self.store.new_table(4, gpa)
            except PoolExhausted:
                self.counts["resets"] += 1
                self._reset(keep_root=False)
                root = self.store.new_table(4, gpa)
        self.store.roots[gpa] = root
        self._root = root
        while len(self.store.roots) > MAX_ROOTS:
            self.store.free(self.store.roots.pop(next(iter(self.store.roots))))
        self._sync_tlb()
        return self.store.address(root)

    def page_fault(self, va: int, access: int, step: Callable[[], None]) -> int | None:
        """Fill the shadow for ``va`` (None: retry), or the guest's #PF error code.

        A write the guest allows to a write-protected table frame (or a
        supervisor write to a read-only page with CR0.WP clear) is run by
        ``step`` with the page briefly writable, then the shadows are resynced.
        Errors: InternalError when the same fault keeps coming with nothing to fill.
        """
        self.counts["page_faults"] += 1
        root = self._root
        if root is None:
            raise InternalError("a shadow page fault before the guest's CR3 was loaded")
        if access & ACCESS_WRITE:
            found = self._protected_path(root, va, access)
            if found is not None:  # the common case of a table write: the shadow already says it all
                self.counts["fast_protected_writes"] += 1
                self._stepped_write(found[0], found[1], step)
                return None
        walk = walk_guest(self.mem, self.cr3, va, access, wp=self._wp, nxe=self._nxe, set_ad=True)
        if walk.gpa is None:
            self.counts["guest_faults"] += 1
            self._stuck = (-1, -1, 0)
            return walk.error
        try:
            path, changed = self._fill(root, va)
        except PoolExhausted:
            self.counts["resets"] += 1
            self._reset(keep_root=True)
            self._sync_tlb()
            return None
        self.counts["fills"] += 1
        denied = self._denied(path, access)
        if denied == ACCESS_WRITE:
            self._stepped_write(path, walk.gpa, step)
            self._stuck = (-1, -1, 0)
            return None
        if denied:
            raise InternalError(f"shadow of {va:#x} refuses access {access:#x} the guest's tables allow")
        if changed:
            self._stuck = (-1, -1, 0)
        else:
            # Nothing to fill: an engine TLB entry older than the shadow. Flush; a third time is a bug.
            self.counts["spurious"] += 1
            last_va, last_access, repeats = self._stuck
            repeats = repeats + 1 if (last_va, last_access) == (va, access) else 1
            if repeats >= _STUCK_LIMIT:
                raise InternalError(f"shadow fault at {va:#x} (access {access:#x}) repeats with nothing to fill")
            self._stuck = (va, access, repeats)
            self.store.stale = True
        self._sync_tlb()
        return None

    def invlpg(self, va: int) -> None:
        """Re-derive the shadow leaf of ``va`` under the current root from the guest's entry.

        The engine then forgets that page only (``flush_page``), as the
        hardware's invlpg does, unless a flush was already owed for other
        changes: only the one leaf changed here (a leaf's change frees no
        table). Another virtual address of the same table (an alias) keeps
        its translation, as on hardware, until the guest invalidates it.
        """
        self.counts["invlpg"] += 1
        owed = self.store.stale
        table = self._root
        while table is not None and table.level > 1:
            table = table.children.get(_index(va, table.level))
        if table is not None:
            index = _index(va, 1)
            if table.gpa is not None:
                entry = self.mem.read_u64(table.gpa + 8 * index)
                _U64.pack_into(table.copy, 8 * index, entry)
                self.store.set(table, index, *self._derive(table, index, entry, create=False))
            else:
                self.store.set(table, index, *self._derive_synthetic(table, index, create=False))
        if owed:
            self.store.stale = True
            self._sync_tlb()
        else:
            self.store.stale = False
            self._flush_page(va)

    def flush(self) -> None:
        """Drop every shadow (the guest changed paging bits); the current root keeps its frame."""
        self.counts["flushes"] += 1
        self._reset(keep_root=True)
        self._sync_tlb()

    def guest_written(self, gpa: int, length: int) -> None:
        """Ring 0 wrote guest memory itself (an emulated store): resync the table frames it touched."""
        if length <= 0:
            return
        for frame in range(gpa & ~(PAGE - 1), gpa + length, PAGE):
            if frame in self.store.by_frame:
                self._resync_frame(frame)
        self._sync_tlb()

    def describe(self) -> dict[str, object]:
        synthetic = sum(1 for t in self.store.live_tables() if t.gpa is None)
        return {
            "mode": self.mode,
            "regions": [
                {"engine_physical": 0, "size": self.mem.size, "what": "guest memory (quota)"},
                {"engine_physical": self.pool_base, "size": self.pool.size, "what": "shadow pool (ring 0)"},
            ],
            "pool_frames": self.pool.size // PAGE,
            "pool_free": len(self.store.free_frames),
            "tables": len(self.store.tables) + synthetic,
            "synthetic_tables": synthetic,
            "roots": len(self.store.roots),
            "protected_frames": len(self.store.by_frame),
            "writable_leaves": sum(len(entries) for entries in self.store.rmap.values()),
            "counts": dict(self.counts),
        }

    def audit(self) -> list[str]:
        """The shadows' invariants (:meth:`spk._fv_shadow_tables.ShadowTables.audit`): empty when all hold."""
        return self.store.audit()

    # -- filling ---------------------------------------------------------------------------------

    def _fill(self, root: ShadowTable, va: int) -> tuple[_Path, bool]:
        """Derive the shadow path of ``va`` from the guest's entries (the walk just set their A/D)."""
        table: ShadowTable | None = root
        path: _Path = []
        changed = False
        while table is not None:
            index = _index(va, table.level)
            if table.gpa is not None:
                entry = self.mem.read_u64(table.gpa + 8 * index)
                _U64.pack_into(table.copy, 8 * index, entry)
                value, child = self._derive(table, index, entry, create=True)
            else:
                value, child = self._derive_synthetic(table, index, create=True)
            if not value & PTE_P:
                raise InternalError(f"shadow fill of {va:#x}: level {table.level} derives nothing")
            changed |= self.store.set(table, index, value, child)
            path.append((table, index))
            table = child
        return path, changed

    def _protected_path(self, root: ShadowTable, va: int, access: int) -> tuple[_Path, int] | None:
        """The shadow path of ``va`` and its gpa when it maps a protected table frame ``access`` may write.

        The shadows follow the guest's tables at every write, so a leaf marked
        SW_PROTECTED under a writable (and, for a user access, user) path is
        exactly such a write: no walk of the guest's tables is needed.
        """
        path: _Path = []
        need = PTE_U if access & ACCESS_USER else 0
        table: ShadowTable | None = root
        while table is not None:
            index = _index(va, table.level)
            path.append((table, index))
            if table.level == 1:
                leaf = self.store.entry(table, index)
                if leaf & _P_PROTECTED != _P_PROTECTED or leaf & need != need:
                    return None
                if (leaf & PTE_ADDR) not in self.store.by_frame:
                    return None
                for upper, slot in path[:-1]:
                    entry = self.store.entry(upper, slot)
                    if entry & (PTE_W | need) != PTE_W | need:
                        return None
                return path, (leaf & PTE_ADDR) | (va & (PAGE - 1))
            table = table.children.get(index)
        return None

    def _denied(self, path: _Path, access: int) -> int:
        """Which of ``access`` the filled shadow path still refuses (ACCESS_WRITE, or another bit)."""
        combined = PTE_W | PTE_U
        nx = 0
        for table, index in path:
            entry = self.store.entry(table, index)
            combined &= entry
            nx |= entry & PTE_NX
        if access & ACCESS_USER and not combined & PTE_U:
            return ACCESS_USER
        if access & ACCESS_FETCH and nx:
            return ACCESS_FETCH
        if access & ACCESS_WRITE and not combined & PTE_W:
            return ACCESS_WRITE
        return 0

    def _derive(self, table: ShadowTable, index: int, entry: int, *, create: bool) -> tuple[int, ShadowTable | None]:
        """The shadow entry (and linked shadow table) for guest ``entry`` at ``index`` of ``table``.

        Not present unless the guest's entry is present, accessed, free of
        reserved bits and inside the quota; with ``create`` a missing child
        shadow is made, else the entry stays not present (filled on use).
        """
        if not entry & PTE_P or not entry & PTE_A:
            return 0, None
        nx = entry & PTE_NX
        if nx and not self._nxe:
            return 0, None
        flags = PTE_P | PTE_A | (entry & (PTE_W | PTE_U)) | nx
        level = table.level
        if level == 1:
            return self._leaf(entry & PTE_ADDR, entry, flags), None
        if level < 4 and entry & PTE_PS:
            span = 1 << (3 + 9 * level)
            if entry & PTE_ADDR & (span - 1) & ~0x1FFF:
                return 0, None
            child = table.children.get(index)
            if child is not None and child.gpa is None and self._keeps(child.huge, entry):
                child.huge = entry
            elif create:
                base = entry & PTE_ADDR & ~(span - 1)
                child = self.store.new_table(level - 1, None, owner=(table, index), huge=entry, base=base)
            else:
                return 0, None
            return self.store.address(child) | flags, child
        target = entry & PTE_ADDR
        if not self.mem.contains(target, PAGE):
            return 0, None
        child = self.store.tables.get((target, level - 1))
        if child is None:
            if not create:
                return 0, None
            child = self.store.new_table(level - 1, target)
        return self.store.address(child) | flags, child

    @staticmethod
    def _keeps(old: int, new: int) -> bool:
        """A synthesised expansion of huge entry ``old`` still fits ``new``: only A or a gained D differ."""
        diff = old ^ new
        return not diff & ~(PTE_A | PTE_D) and not (diff & PTE_D and not new & PTE_D)

    def _derive_synthetic(self, table: ShadowTable, index: int, *, create: bool) -> tuple[int, ShadowTable | None]:
        """An entry of a synthesised table: 4 KiB pieces of the huge guest page its owner maps."""
        assert table.owner is not None
        owner, slot = table.owner
        huge = int(_U64.unpack_from(owner.copy, 8 * slot)[0])
        if table.level == 1:
            flags = PTE_P | PTE_A | (huge & (PTE_W | PTE_U)) | (huge & PTE_NX)
            return self._leaf(table.base + index * PAGE, huge, flags), None
        child = table.children.get(index)
        if child is None:
            if not create:
                return 0, None
            child = self.store.new_table(1, None, owner=table.owner, base=table.base + (index << 21))
        return self.store.address(child) | _PERMISSIVE, child

    def _leaf(self, frame: int, entry: int, flags: int) -> int:
        """A 4 KiB shadow leaf: writable only once the guest's D is set and never over a table frame."""
        if not self.mem.contains(frame, PAGE):
            return 0
        value = frame | flags | PTE_D
        if not entry & PTE_D:
            value &= ~PTE_W
        elif value & PTE_W and frame in self.store.by_frame:
            value ^= PTE_W | SW_PROTECTED
        return value

    # -- protected writes and resync -----------------------------------------------------------

    def _stepped_write(self, path: _Path, gpa: int, step: Callable[[], None]) -> None:
        """Run the faulting store with the path writable for one instruction, then resync its frame.

        Adding a permission needs no TLB flush (the engine walks again on a
        permission miss); taking it back afterwards does.
        """
        flipped: list[tuple[ShadowTable, int, int]] = []
        for table, index in path:
            entry = self.store.entry(table, index)
            if not entry & PTE_W:
                self.store.poke(table, index, entry | PTE_W)
                flipped.append((table, index, entry))
        self.counts["protected_writes"] += 1
        try:
            step()
        finally:
            for table, index, entry in flipped:
                if self.store.entry(table, index) == entry | PTE_W:
                    self.store.poke(table, index, entry)
            self.store.stale = True
            if gpa & PTE_ADDR in self.store.by_frame:
                self._resync_frame(gpa & PTE_ADDR, gpa & (PAGE - 1))
            self._sync_tlb()

    def _resync_frame(self, frame: int, hint: int | None = None) -> None:
        """Re-derive the shadow entries of every table of ``frame`` whose guest entry changed.

        ``hint``: the offset the guest just wrote, looked at first.
        """
        for table in list(self.store.by_frame.get(frame, ())):
            if not table.live:
                continue
            if table.level == 4 and table is not self._root:
                # A root not in use that is written: the guest is likely reusing the frame. Drop it.
                self.counts["unshadowed_roots"] += 1
                del self.store.roots[frame]
                self.store.free(table)
                continue
            self._resync(table, hint)

    def _resync(self, table: ShadowTable, hint: int | None = None) -> None:
        """Diff the guest table with its copy (around ``hint`` first) and re-derive what changed."""
        assert table.gpa is not None
        current = self.mem.view[table.gpa : table.gpa + PAGE]
        copy = table.copy
        if copy == current:  # bytearray first: a memcmp (a memoryview compares item by item)
            return
        self.counts["resync_tables"] += 1
        changed: list[int] = []
        if hint is not None:  # a store of up to 16 bytes at ``hint``: patch those entries, then compare the rest
            low, high = hint & ~7, min(PAGE, (hint & ~7) + 24)
            old_window = bytes(copy[low:high])
            copy[low:high] = current[low:high]
            if copy == current:
                changed = [
                    index
                    for index in range(low // 8, high // 8)
                    if old_window[8 * index - low : 8 * index - low + 8] != current[8 * index : 8 * index + 8]
                ]
            else:
                copy[low:high] = old_window
                hint = None
        if hint is None:
            new = _PAGE_Q.unpack_from(current)
            old = _PAGE_Q.unpack_from(copy)
            copy[:] = current
            changed = [i for i, (a, b) in enumerate(zip(new, old, strict=True)) if a != b]
        for index in changed:
            self.counts["resyncs"] += 1
            entry = int(_U64.unpack_from(copy, 8 * index)[0])
            self.store.set(table, index, *self._derive(table, index, entry, create=False))

    def _reset(self, *, keep_root: bool) -> None:
        """Drop every shadow; with ``keep_root`` the current root is remade, empty, in its own frame."""
        self._root = self.store.reset(self._root if keep_root else None)

    def _sync_tlb(self) -> None:
        if self.store.stale:
            self.store.stale = False
            self._flush_tlb()
            self.counts["tlb_flushes"] += 1
