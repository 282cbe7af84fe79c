"""The shadow MMU's table store: pool frames, shadow tables, their links and the reverse map.

:class:`ShadowTables` owns the shadow pool of one full partition (see
:mod:`spk._fv_shadow` for what the shadows mean). It hands out pool frames
as shadow tables, keeps one table per (guest table frame, level), links
tables to their parents with reference counts (a table no parent links is
freed with its orphaned subtree; a root is freed only when dropped), and
keeps the reverse map that write-protects guest table frames: guest frame
-> pool offsets of the shadow leaves mapping it writable. Whatever happens,
the store never writes an entry it was not given, and :meth:`audit` checks
the invariants the isolation rests on.

Errors: :class:`PoolExhausted` when no pool frame is left (the MMU drops
every shadow and starts again).
"""

from __future__ import annotations

import struct

from spk._fv_mmu import PAGE, PTE_ADDR, PTE_P, PTE_W, GuestPhysical

#: an ignored bit (AVL) of a shadow leaf: the guest allows writes, ring 0 took them away (a table frame)
SW_PROTECTED = 1 << 9

_U64 = struct.Struct("<Q")
_PAGE_Q = struct.Struct("<512Q")
_PW = PTE_P | PTE_W
_ZERO_PAGE = bytes(PAGE)


class PoolExhausted(Exception):
    """The pool has no free frame (caught by the MMU operation that allocates)."""


class ShadowTable:
    """One shadow table: a pool frame and what it shadows.

    ``gpa`` is the guest table it shadows (None for a synthesised table, which
    expands the huge guest entry ``owner`` names, from guest-physical
    ``base``). ``copy`` holds the guest entries as last derived (empty for a
    synthesised table); ``huge`` the huge entry a synthesised table was made
    for; ``children`` the tables its entries link; ``parents`` the (table,
    index) slots linking it.
    """

    __slots__ = ("base", "children", "copy", "gpa", "huge", "level", "live", "off", "owner", "parents")

    def __init__(
        self,
        off: int,
        level: int,
        gpa: int | None,
        copy: bytearray,
        owner: tuple[ShadowTable, int] | None = None,
        huge: int = 0,
        base: int = 0,
    ) -> None:
        self.off = off
        self.level = level
        self.gpa = gpa
        self.copy = copy
        self.owner = owner
        self.huge = huge
        self.base = base
        self.children: dict[int, ShadowTable] = {}
        self.parents: set[tuple[ShadowTable, int]] = set()
        self.live = True


class ShadowTables:
    """The pool and every shadow table in it; ``stale`` says the engine's TLB must be flushed."""

    def __init__(self, mem: GuestPhysical, pool: GuestPhysical, pool_base: int, counts: dict[str, int]) -> None:
        self.mem = mem
        self.pool = pool
        self.view = pool.view
        self.pool_base = pool_base
        self.counts = counts
        self.clear()

    def clear(self) -> None:
        """Forget every table: the whole pool is free (nothing in it is reachable any more)."""
        self.free_frames = list(range(self.pool.size - PAGE, -1, -PAGE))
        self.tables: dict[tuple[int, int], ShadowTable] = {}
        self.by_frame: dict[int, list[ShadowTable]] = {}
        self.rmap: dict[int, set[int]] = {}
        self.roots: dict[int, ShadowTable] = {}  #: guest root gpa -> its shadow PML4, least recently loaded first
        self.stale = True

    # -- entries -----------------------------------------------------------------------------------

    def address(self, table: ShadowTable) -> int:
        """The table's engine-physical address (what a parent entry or CR3 holds)."""
        return self.pool_base + table.off

    def entry(self, table: ShadowTable, index: int) -> int:
        return int(_U64.unpack_from(self.view, table.off + 8 * index)[0])

    def poke(self, table: ShadowTable, index: int, value: int) -> None:
        """Write an entry as is (a temporary permission for a stepped store: no links, no reverse map)."""
        _U64.pack_into(self.view, table.off + 8 * index, value)

    def set(self, table: ShadowTable, index: int, value: int, child: ShadowTable | None) -> bool:
        """Write one shadow entry, keeping links and the reverse map; True when it changed."""
        addr = table.off + 8 * index
        old = int(_U64.unpack_from(self.view, addr)[0])
        if table.level == 1:
            if old & _PW == _PW:
                self._rmap_discard(old & PTE_ADDR, addr)
            if value & _PW == _PW:
                self.rmap.setdefault(value & PTE_ADDR, set()).add(addr)
        else:
            previous = table.children.get(index)
            if previous is not child:
                if previous is not None:
                    del table.children[index]
                    self._unlink(table, index, previous)
                if child is not None:
                    table.children[index] = child
                    child.parents.add((table, index))
        if old == value:
            return False
        _U64.pack_into(self.view, addr, value)
        if old & PTE_P:
            self.stale = True
        return True

    # -- tables ------------------------------------------------------------------------------------

    def new_table(
        self,
        level: int,
        gpa: int | None,
        *,
        owner: tuple[ShadowTable, int] | None = None,
        huge: int = 0,
        base: int = 0,
    ) -> ShadowTable:
        """An empty shadow table of guest table ``gpa`` (None: synthesised); its frame becomes protected.

        Errors: PoolExhausted.
        """
        if not self.free_frames:
            raise PoolExhausted
        off = self.free_frames.pop()
        self.view[off : off + PAGE] = _ZERO_PAGE
        copy = bytearray() if gpa is None else bytearray(self.mem.view[gpa : gpa + PAGE])
        table = ShadowTable(off, level, gpa, copy, owner, huge, base)
        self.counts["tables_created"] += 1
        if gpa is not None:
            self.tables[(gpa, level)] = table
            same_frame = self.by_frame.get(gpa)
            if same_frame is None:
                self.by_frame[gpa] = [table]
                self._protect(gpa)
            else:
                same_frame.append(table)
        return table

    def free(self, table: ShadowTable) -> None:
        """Return an unreferenced table to the pool, unlinking its children (freed in turn if orphaned)."""
        table.live = False
        children, table.children = table.children, {}
        for index, child in children.items():
            self._unlink(table, index, child)
        if table.level == 1:
            for index, entry in enumerate(_PAGE_Q.unpack_from(self.view, table.off)):
                if entry & _PW == _PW:
                    self._rmap_discard(entry & PTE_ADDR, table.off + 8 * index)
        if table.gpa is not None:
            del self.tables[(table.gpa, table.level)]
            same_frame = self.by_frame[table.gpa]
            same_frame.remove(table)
            if not same_frame:
                del self.by_frame[table.gpa]  # no longer protected: its read-only leaves heal on the next write
        self.free_frames.append(table.off)
        self.counts["tables_freed"] += 1
        self.stale = True

    def reset(self, keep: ShadowTable | None) -> ShadowTable | None:
        """Drop every table; ``keep`` (a root) is remade empty in its own frame, so a loaded CR3 stays valid."""
        for table in self.live_tables():
            table.live = False
        self.clear()
        if keep is None or keep.gpa is None:
            return None
        self.free_frames.remove(keep.off)
        self.free_frames.append(keep.off)
        root = self.new_table(4, keep.gpa)
        self.roots[keep.gpa] = root
        return root

    def live_tables(self) -> list[ShadowTable]:
        """Every table reachable from a root (which is every live table)."""
        seen: dict[int, ShadowTable] = {}
        pending = list(self.roots.values())
        while pending:
            table = pending.pop()
            if id(table) not in seen:
                seen[id(table)] = table
                pending.extend(table.children.values())
        return list(seen.values())

    def _protect(self, frame: int) -> None:
        """``frame`` became a guest table: no shadow leaf may map it writable any more."""
        addrs = self.rmap.pop(frame, None)
        if not addrs:
            return
        self.counts["protections"] += 1
        for addr in addrs:
            entry = int(_U64.unpack_from(self.view, addr)[0])
            _U64.pack_into(self.view, addr, (entry & ~PTE_W) | SW_PROTECTED)
        self.stale = True

    def _unlink(self, parent: ShadowTable, index: int, child: ShadowTable) -> None:
        child.parents.discard((parent, index))
        if not child.parents and child.level < 4:
            self.free(child)

    def _rmap_discard(self, frame: int, addr: int) -> None:
        entries = self.rmap.get(frame)
        if entries is not None:
            entries.discard(addr)
            if not entries:
                del self.rmap[frame]

    # -- invariants --------------------------------------------------------------------------------

    def audit(self) -> list[str]:
        """Check the invariants; each broken one is a line (empty: all hold).

        Every present shadow leaf names a page inside the quota, never a
        guest table frame writable; every other present entry names the live
        shadow table it links; the reverse map lists exactly the writable leaves.
        """
        problems: list[str] = []
        live = {self.address(t): t for t in self.live_tables()}
        writable: dict[int, set[int]] = {}
        for address, table in live.items():
            for index, entry in enumerate(_PAGE_Q.unpack_from(self.view, table.off)):
                if not entry & PTE_P:
                    continue
                where = f"shadow table {address:#x}[{index}] = {entry:#x}"
                target = entry & PTE_ADDR
                if table.level == 1:
                    if not self.mem.contains(target, PAGE):
                        problems.append(f"{where} maps a page outside the quota")
                    if entry & PTE_W:
                        writable.setdefault(target, set()).add(table.off + 8 * index)
                        if target in self.by_frame:
                            problems.append(f"{where} maps a guest table frame writable")
                elif live.get(target) is not table.children.get(index):
                    problems.append(f"{where} does not name its linked shadow table")
        if writable != {frame: entries for frame, entries in self.rmap.items() if entries}:
            problems.append("the reverse map differs from the writable shadow leaves")
        return problems
