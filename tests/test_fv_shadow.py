"""Shadow page tables (spk/_fv_shadow.py), in pure Python: guest tables in a bytearray, the engine modelled.

The model engine does what unicorn does with a shadow partition: it
translates through a TLB, then through the *shadow* tables (the real CR3 is
the shadow PML4 ring 0 returned), and reports a #PF to the MMU when they
refuse; a TLB entry lives until the MMU flushes. Every access is compared
with the architectural walk of the guest's own tables, and after every step
the shadows and the TLB are checked: no translation ever leaves the quota,
none allows more than the guest's tables do, a guest table frame is never
writable.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spk._fv_mmu import (
    ACCESS_FETCH,
    ACCESS_USER,
    ACCESS_WRITE,
    PAGE,
    PF_FETCH,
    PF_PRESENT,
    PF_RSVD,
    PF_USER,
    PF_WRITE,
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
from spk._fv_shadow import MIN_POOL_FRAMES, ShadowMmu
from spk.errors import InternalError, SpkError

QUOTA = 4 << 20
TABLES = 1 << 20  # the guest's page tables are allocated from here up
USER_VA = 0x4000_0000
KERNEL = PTE_P | PTE_W
USER = PTE_P | PTE_W | PTE_U
_PAGE_Q = struct.Struct("<512Q")


Leaf = tuple[int, int, bool, bool, bool]  # va, gpa, writable, user, executable


class Fault(int):
    """A #PF the MMU handed to the guest (the error code)."""


def _va(i4: int, i3: int, i2: int, i1: int) -> int:
    va = (i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12)
    return va | 0xFFFF_0000_0000_0000 if va >> 47 else va


class Machine:
    """One shadow partition: guest memory, pool, the MMU and a model of the engine's TLB and walk."""

    def __init__(self, *, pool_frames: int = 64, wp: bool = True, nxe: bool = False) -> None:
        self.buf = bytearray(QUOTA + pool_frames * PAGE)
        view = memoryview(self.buf)
        self.engine = GuestPhysical(view, 0)  # engine-physical: the quota, then the pool
        self.mem = GuestPhysical(view[:QUOTA], 0x7000_0000)
        self.tlb: dict[int, tuple[int, bool, bool, bool]] = {}
        pool = GuestPhysical(view[QUOTA:], 0x9000_0000)
        self.mmu = ShadowMmu(self.mem, pool, QUOTA, self.flush_tlb, self.flush_page)
        self.mmu.wp = wp
        self.mmu.nxe = nxe
        self.tables: list[int] = []
        self.next_table = TABLES
        self.cr3 = self.real_cr3 = 0
        self.steps = 0

    # -- the guest's side (set-up writes go straight to memory, as a loader's would)

    def new_table(self) -> int:
        gpa = self.next_table
        self.next_table += PAGE
        self.tables.append(gpa)
        return gpa

    def map(self, root: int, va: int, target: int, flags: int, level: int = 1) -> int:
        """Write a guest mapping (tables made as needed); returns the leaf entry's gpa."""
        table = root
        for lvl in range(4, level, -1):
            slot = table + ((va >> (3 + 9 * lvl)) & 511) * 8
            entry = self.mem.read_u64(slot)
            if not entry & PTE_P:
                entry = self.new_table() | USER
                self.mem.write_u64(slot, entry)
            table = entry & PTE_ADDR
        slot = table + ((va >> (3 + 9 * level)) & 511) * 8
        self.mem.write_u64(slot, target | flags | (PTE_PS if level > 1 else 0))
        return slot

    def identity(self, root: int, *, huge: bool) -> None:
        """The guest kernel's view of its memory: va == gpa, supervisor read-write."""
        if huge:
            for gpa in range(0, QUOTA, 2 << 20):
                self.map(root, gpa, gpa, KERNEL, level=2)
        else:
            for gpa in range(PAGE, QUOTA, PAGE):
                self.map(root, gpa, gpa, KERNEL)

    # -- the engine's side

    def flush_tlb(self) -> None:
        self.tlb.clear()

    def flush_page(self, va: int) -> None:
        """The engine's invlpg: that page's entry only."""
        self.tlb.pop(va & ~(PAGE - 1), None)

    def load_cr3(self, cr3: int) -> None:
        self.real_cr3 = self.mmu.load_cr3(cr3)
        self.cr3 = cr3
        self.tlb.clear()  # a CR3 write flushes the engine's TLB

    def translate(self, va: int, access: int) -> int | None:
        """The engine: TLB hit, else a walk of the shadow tables (which fills the TLB)."""
        page = va & ~(PAGE - 1)
        hit = self.tlb.get(page)
        if hit is not None and self._allows(hit, access):
            return hit[0] | (va & (PAGE - 1))
        walk = walk_guest(self.engine, self.real_cr3, va, access, wp=True, nxe=self.mmu.nxe, set_ad=False)
        if walk.gpa is None:
            return None
        assert walk.gpa < QUOTA, f"the shadow maps {va:#x} outside the quota: {walk.gpa:#x}"
        self.tlb[page] = (walk.gpa & ~(PAGE - 1), walk.writable, walk.user, walk.executable)
        return walk.gpa

    @staticmethod
    def _allows(entry: tuple[int, bool, bool, bool], access: int) -> bool:
        _, writable, user, executable = entry
        return (
            (writable or not access & ACCESS_WRITE)
            and (user or not access & ACCESS_USER)
            and (executable or not access & ACCESS_FETCH)
        )

    def access(self, va: int, access: int, value: int | None = None) -> int:
        """One guest access (a store of ``value`` for a write): the gpa reached, or a Fault."""
        for _ in range(4):
            gpa = self.translate(va, access)
            if gpa is not None:
                if value is not None:
                    self.mem.write_u64(gpa, value)
                return gpa
            stepped: list[int] = []
            error = self.mmu.page_fault(va, access, partial(self._step, va, access, value, stepped))
            if error is not None:
                return Fault(error)
            if stepped:
                return stepped[0]
        raise AssertionError(f"access {access:#x} at {va:#x} makes no progress")

    def _step(self, va: int, access: int, value: int | None, stepped: list[int]) -> None:
        """The vCPU's step(): the faulting store, once, through the (briefly writable) shadow."""
        reached = self.translate(va, access)
        assert reached is not None, "step() ran with the page still refused"
        if value is not None:
            self.mem.write_u64(reached, value)
        stepped.append(reached)
        self.steps += 1

    def checked_access(self, va: int, access: int, value: int | None = None) -> int:
        """An access, compared with the architectural walk of the guest's tables."""
        ref = walk_guest(self.mem, self.cr3, va, access, wp=self.mmu.wp, nxe=self.mmu.nxe, set_ad=False)
        got = self.access(va, access, value)
        if ref.gpa is None:
            assert isinstance(got, Fault) and got == ref.error, (hex(va), access, got, ref.error)
        else:
            assert not isinstance(got, Fault) and got == ref.gpa, (hex(va), access, got, ref.gpa)
            if value is not None:
                assert self.mem.read_u64(ref.gpa) == value
        return got

    # -- invariants

    def shadow_leaves(self) -> Iterator[Leaf]:
        """(va, gpa, writable, user, executable) of every leaf reachable from the real CR3."""

        def visit(table: int, level: int, va: int, w: bool, u: bool, x: bool) -> Iterator[Leaf]:
            assert QUOTA <= table < len(self.buf), f"a shadow table at {table:#x}, outside the pool"
            for index, entry in enumerate(_PAGE_Q.unpack_from(self.buf, table)):
                if not entry & PTE_P:
                    continue
                here = va | (index << (3 + 9 * level))
                ww, uu, xx = w and bool(entry & PTE_W), u and bool(entry & PTE_U), x and not entry & PTE_NX
                if level == 1:
                    yield (here, entry & PTE_ADDR, ww, uu, xx)
                else:
                    assert not entry & PTE_PS, "the shadow has a huge page"
                    yield from visit(entry & PTE_ADDR, level - 1, here, ww, uu, xx)

        for va, gpa, w, u, x in visit(self.real_cr3 & PTE_ADDR, 4, 0, True, True, True):
            yield (va | 0xFFFF_0000_0000_0000 if va >> 47 else va), gpa, w, u, x

    def check(self) -> None:
        assert self.mmu.audit() == []
        grants = [(va, gpa, w, u, x) for va, gpa, w, u, x in self.shadow_leaves()]
        grants += [(va, gpa, w, u, x) for va, (gpa, w, u, x) in self.tlb.items()]
        nxe = self.mmu.nxe
        for va, gpa, writable, user, executable in grants:
            assert gpa + PAGE <= QUOTA, f"{va:#x} reaches {gpa:#x}, outside the quota"
            read = walk_guest(self.mem, self.cr3, va, 0, wp=True, nxe=nxe, set_ad=False)
            assert read.gpa is not None and read.gpa & ~(PAGE - 1) == gpa, (hex(va), hex(gpa), read)
            assert all(entry & PTE_A for _, entry in read.entries), f"{va:#x} mapped before the guest's A bits"
            if writable:
                write = walk_guest(self.mem, self.cr3, va, ACCESS_WRITE, wp=True, nxe=nxe, set_ad=False)
                assert write.gpa is not None and write.entries[-1][1] & PTE_D, f"{va:#x} writable in the shadow"
                assert gpa not in self.table_frames(), f"guest table frame {gpa:#x} writable at {va:#x}"
            if user:
                assert walk_guest(self.mem, self.cr3, va, ACCESS_USER, wp=True, nxe=nxe, set_ad=False).gpa is not None
            if executable and nxe:
                fetch = walk_guest(self.mem, self.cr3, va, ACCESS_FETCH, wp=True, nxe=nxe, set_ad=False)
                assert fetch.gpa is not None

    def table_frames(self) -> set[int]:
        return set(self.mmu.store.by_frame)


def counts(machine: Machine) -> dict[str, int]:
    described = machine.mmu.describe()["counts"]
    assert isinstance(described, dict)
    return described


def kernel(machine: Machine, *, huge: bool = False) -> int:
    root = machine.new_table()
    machine.identity(root, huge=huge)
    return root


# -- filling and the guest's faults ---------------------------------------------------------------


def test_lazy_fill_follows_the_guests_walk_and_sets_its_accessed_and_dirty_bits() -> None:
    m = Machine()
    root = kernel(m)
    slot = m.map(root, USER_VA, 0x30_0000, USER)
    m.load_cr3(root)
    assert counts(m)["tables_created"] == 1  # the root only: nothing is filled before it is used
    assert m.checked_access(USER_VA + 8, ACCESS_USER) == 0x30_0008
    assert m.mem.read_u64(slot) & (PTE_A | PTE_D) == PTE_A
    assert [gpa for va, gpa, w, _, _ in m.shadow_leaves() if va == USER_VA] == [0x30_0000]
    assert not next(w for va, _, w, _, _ in m.shadow_leaves() if va == USER_VA)  # D clear: read-only
    assert m.checked_access(USER_VA, ACCESS_USER | ACCESS_WRITE, 42) == 0x30_0000
    assert m.mem.read_u64(slot) & PTE_D
    assert next(w for va, _, w, _, _ in m.shadow_leaves() if va == USER_VA)
    before = counts(m)["page_faults"]
    assert m.checked_access(USER_VA + 16, ACCESS_USER | ACCESS_WRITE, 7) == 0x30_0010
    assert counts(m)["page_faults"] == before  # filled: the engine runs on its own
    assert counts(m)["fills"] == 2 and counts(m)["tables_created"] == 4
    m.check()


def test_the_guest_gets_its_own_error_codes() -> None:
    m = Machine(nxe=True)
    root = kernel(m)
    m.map(root, USER_VA, 0x30_0000, PTE_P | PTE_U)  # user read-only
    m.map(root, USER_VA + PAGE, 0x30_1000, USER | PTE_NX)
    m.map(root, USER_VA + 2 * PAGE, QUOTA, USER)  # the pool's first frame
    m.map(root, USER_VA + 3 * PAGE, 1 << 40, USER)
    m.load_cr3(root)
    cases = [
        (USER_VA + 5 * PAGE, ACCESS_USER, PF_USER),  # not present
        (USER_VA, ACCESS_USER | ACCESS_WRITE, PF_PRESENT | PF_WRITE | PF_USER),
        (USER_VA + PAGE, ACCESS_USER | ACCESS_FETCH, PF_PRESENT | PF_USER | PF_FETCH),
        (0x20_0000, ACCESS_USER, PF_PRESENT | PF_USER),  # the kernel's memory
        (USER_VA + 2 * PAGE, ACCESS_USER, PF_PRESENT | PF_RSVD | PF_USER),
        (USER_VA + 3 * PAGE, 0, PF_PRESENT | PF_RSVD),
        (1 << 47, 0, PF_RSVD),  # not canonical
    ]
    for va, access, error in cases:
        assert m.checked_access(va, access) == error
        assert isinstance(m.access(va, access), Fault)
    assert counts(m)["guest_faults"] == 2 * len(cases)
    assert m.checked_access(USER_VA + PAGE, ACCESS_USER | ACCESS_WRITE, 1) == 0x30_1000
    m.check()


def test_a_root_outside_the_quota_is_refused() -> None:
    m = Machine()
    with pytest.raises(GuestFault):
        m.load_cr3(QUOTA)
    with pytest.raises(GuestFault):
        m.load_cr3(1 << 40)


def test_a_pool_that_cannot_hold_a_path_is_refused() -> None:
    view = memoryview(bytearray(QUOTA + MIN_POOL_FRAMES * PAGE))
    mem = GuestPhysical(view[:QUOTA], 0)
    with pytest.raises(SpkError, match="at least"):
        ShadowMmu(mem, GuestPhysical(view[QUOTA : QUOTA + PAGE], 0), QUOTA, lambda: None, lambda _va: None)
    with pytest.raises(SpkError, match="above the quota"):
        ShadowMmu(mem, GuestPhysical(view[QUOTA:], 0), QUOTA - PAGE, lambda: None, lambda _va: None)
    ShadowMmu(mem, GuestPhysical(view[QUOTA:], 0), QUOTA, lambda: None, lambda _va: None)


# -- write protection of the guest's tables -------------------------------------------------------


def test_a_frame_that_becomes_a_table_loses_write_access_everywhere() -> None:
    m = Machine()
    root = kernel(m)
    m.load_cr3(root)
    spare = m.new_table()  # not linked yet: ordinary memory the kernel writes freely
    assert m.checked_access(spare + 8, ACCESS_WRITE, 0) == spare + 8
    assert any(gpa == spare and w for _, gpa, w, _, _ in m.shadow_leaves())
    # The kernel links it as the page table of the user region and maps a page in it.
    pd_slot = m.map(root, USER_VA, 0, 0, level=2)
    m.checked_access(pd_slot, ACCESS_WRITE, spare | USER)
    m.checked_access(spare, ACCESS_WRITE, 0x30_0000 | USER)
    assert m.checked_access(USER_VA, ACCESS_USER) == 0x30_0000  # the shadow of `spare` is made here
    assert spare in m.table_frames()
    assert not any(gpa == spare and w for _, gpa, w, _, _ in m.shadow_leaves())
    m.check()
    # A write to it now is stepped and the shadow follows without invlpg.
    writes = counts(m)["protected_writes"]
    m.checked_access(spare, ACCESS_WRITE, 0x31_0000 | USER)
    assert counts(m)["protected_writes"] == writes + 1 and m.steps == 1
    assert m.checked_access(USER_VA, ACCESS_USER) == 0x31_0000
    m.check()


def test_resync_rederives_changed_entries_and_drops_subtrees_that_changed_target() -> None:
    m = Machine()
    root = kernel(m)
    pt_slot = m.map(root, USER_VA, 0x30_0000, USER | PTE_A | PTE_D)
    m.map(root, USER_VA + PAGE, 0x30_1000, USER)
    m.load_cr3(root)
    for page in range(2):
        m.checked_access(USER_VA + page * PAGE, ACCESS_USER)
    created, freed = counts(m)["tables_created"], counts(m)["tables_freed"]
    # Remap page 0 in place (already accessed and dirty: re-derived eagerly, no fault).
    m.checked_access(pt_slot, ACCESS_WRITE, 0x32_0000 | USER | PTE_A | PTE_D)
    faults = counts(m)["page_faults"]
    assert m.checked_access(USER_VA + 8, ACCESS_USER | ACCESS_WRITE, 5) == 0x32_0008
    assert counts(m)["page_faults"] == faults
    # Unmap page 1: its shadow goes with the write.
    m.checked_access(pt_slot + 8, ACCESS_WRITE, 0)
    assert isinstance(m.checked_access(USER_VA + PAGE, ACCESS_USER), Fault)
    # Point the PDE at another page table: the old one's shadow is freed.
    other = m.new_table()
    m.mem.write_u64(other, 0x33_0000 | USER)
    pd_slot = walk_guest(m.mem, root, USER_VA, 0, wp=True, nxe=False, set_ad=False).entries[2][0]
    created, freed = counts(m)["tables_created"], counts(m)["tables_freed"]
    m.checked_access(pd_slot, ACCESS_WRITE, other | USER)
    assert counts(m)["tables_freed"] == freed + 1
    assert m.checked_access(USER_VA, ACCESS_USER) == 0x33_0000
    assert counts(m)["tables_created"] == created + 1
    assert counts(m)["resyncs"] >= 3
    m.check()


def test_a_supervisor_write_to_a_read_only_page_with_wp_clear_is_stepped() -> None:
    m = Machine(wp=False)
    root = kernel(m)
    m.map(root, USER_VA, 0x30_0000, PTE_P | PTE_U)
    m.load_cr3(root)
    assert m.checked_access(USER_VA, ACCESS_WRITE, 9) == 0x30_0000
    assert m.steps == 1
    assert isinstance(m.checked_access(USER_VA, ACCESS_USER | ACCESS_WRITE, 9), Fault)
    m.check()


def test_ring_0_writes_to_a_guest_table_are_followed_through_guest_written() -> None:
    m = Machine()
    root = kernel(m)
    slot = m.map(root, USER_VA, 0x30_0000, USER)
    m.load_cr3(root)
    m.checked_access(USER_VA, ACCESS_USER | ACCESS_WRITE, 1)
    assert USER_VA in m.tlb
    m.mem.write_u64(slot, 0x31_0000 | USER | PTE_A | PTE_D)  # an emulated store by ring 0, not the engine
    m.mmu.guest_written(slot, 8)
    assert USER_VA not in m.tlb  # the old translation is gone from the engine's TLB too
    assert m.checked_access(USER_VA, ACCESS_USER) == 0x31_0000
    m.mmu.guest_written(0x30_0000, 0)
    m.mmu.guest_written(0x30_0000, PAGE)  # not a table: nothing to do
    m.check()


def test_a_write_to_a_known_table_takes_the_short_path() -> None:
    m = Machine()
    root = kernel(m)
    slot = m.map(root, USER_VA, 0x30_0000, USER)
    m.load_cr3(root)
    m.checked_access(USER_VA, ACCESS_USER)
    m.checked_access(slot + 8, ACCESS_WRITE, 0)  # fills the kernel's path to the page table, then steps
    before = counts(m)
    for page in range(1, 20):
        m.checked_access(slot + 8 * page, ACCESS_WRITE, (0x30_0000 + page * PAGE) | USER | PTE_A)
    after = counts(m)
    assert after["protected_writes"] - before["protected_writes"] == 19
    assert after["fast_protected_writes"] - before["fast_protected_writes"] == 19
    assert after["fills"] == before["fills"]  # no walk, no fill: the shadow already knew
    assert after["resyncs"] - before["resyncs"] == 19
    for page in range(1, 20):
        assert m.checked_access(USER_VA + page * PAGE + 8, ACCESS_USER) == 0x30_0008 + page * PAGE
    m.check()


def test_the_short_path_still_honours_the_upper_levels_and_heals_when_a_frame_is_no_table() -> None:
    m = Machine()
    root = kernel(m)
    table = m.new_table()  # a page table the guest also maps as data, dirty, under a read-only PDE
    m.map(root, USER_VA, table, USER | PTE_A | PTE_D)
    pde_slot = walk_guest(m.mem, root, USER_VA, 0, wp=True, nxe=False, set_ad=False).entries[2][0]
    m.mem.write_u64(pde_slot, m.mem.read_u64(pde_slot) & ~PTE_W)
    m.mem.write_u64(table, 0x30_0000 | USER)
    second_pde = pde_slot + 8  # the next PDE names `table` as the page table of the next 2 MiB
    m.mem.write_u64(second_pde, table | USER)
    m.load_cr3(root)
    assert m.checked_access(USER_VA + (1 << 21), ACCESS_USER) == 0x30_0000  # `table` is now a table
    assert m.checked_access(USER_VA, ACCESS_USER) == table
    for access in (ACCESS_USER | ACCESS_WRITE, ACCESS_WRITE):
        assert m.checked_access(USER_VA, access, 1) == PF_PRESENT | PF_WRITE | (access & ACCESS_USER)
    # Once no shadow uses it any more, it is ordinary memory again: the next write heals the leaf.
    m.checked_access(second_pde, ACCESS_WRITE, 0)
    assert table not in m.table_frames()
    m.mem.write_u64(pde_slot, m.mem.read_u64(pde_slot) | PTE_W)
    m.mmu.guest_written(pde_slot, 8)
    assert m.checked_access(USER_VA, ACCESS_USER | ACCESS_WRITE, 2) == table
    faults = counts(m)["page_faults"]
    assert m.checked_access(USER_VA + 8, ACCESS_USER | ACCESS_WRITE, 3) == table + 8
    assert counts(m)["page_faults"] == faults
    m.check()


def test_a_fault_that_keeps_coming_with_nothing_to_fill_is_a_bug_reported() -> None:
    m = Machine()
    root = kernel(m)
    m.load_cr3(root)
    m.checked_access(0x20_0000, 0)
    # A vCPU that reports a fault the shadow cannot explain (the page is mapped for reads).
    assert m.mmu.page_fault(0x20_0000, 0, lambda: None) is None
    assert m.mmu.page_fault(0x20_0000, 0, lambda: None) is None
    with pytest.raises(InternalError, match="repeats"):
        m.mmu.page_fault(0x20_0000, 0, lambda: None)
    assert counts(m)["spurious"] == 3


# -- sharing, huge pages, invlpg, flush, exhaustion -------------------------------------------------


def test_shadow_tables_are_shared_between_roots() -> None:
    m = Machine()
    first = kernel(m)
    second = m.new_table()
    m.mem.write_u64(second, m.mem.read_u64(first))  # the same kernel PDPT
    m.map(first, USER_VA, 0x30_0000, USER)  # in PML4[0], which the second root shares
    m.load_cr3(first)
    for gpa in (0x20_0000, 0x20_1000, 0x3F_F000):
        m.checked_access(gpa, ACCESS_WRITE, 1)
    created = counts(m)["tables_created"]
    m.load_cr3(second)
    assert counts(m)["tables_created"] == created + 1  # its PML4; the kernel's PDPT, PD and PTs are shared
    for gpa in (0x20_0000, 0x20_1000, 0x3F_F000):
        m.checked_access(gpa, ACCESS_WRITE, 2)
    assert counts(m)["tables_created"] == created + 1
    m.load_cr3(first)
    assert counts(m)["tables_created"] == created + 1  # a known root: nothing made again
    assert m.checked_access(USER_VA, ACCESS_USER) == 0x30_0000
    m.check()


def test_huge_pages_are_shadowed_with_small_pages_and_table_frames_stay_protected() -> None:
    m = Machine()
    root = kernel(m, huge=True)  # 2 MiB pages, and its tables live inside one of them
    m.map(root, 0x80_0000_0000, 0, USER, level=3)  # a 1 GiB page at 0: only the quota is reachable
    m.load_cr3(root)
    assert m.checked_access(0x30_0010, ACCESS_WRITE, 3) == 0x30_0010
    assert m.checked_access(root, 0) == root
    writes = counts(m)["protected_writes"]
    m.checked_access(root + 8 * 300, ACCESS_WRITE, 0)  # the root is a table: stepped
    assert counts(m)["protected_writes"] == writes + 1
    assert m.checked_access(0x80_0000_0000 + 0x1234, ACCESS_USER) == 0x1234
    assert m.checked_access(0x80_0000_0000 + QUOTA, ACCESS_USER) == PF_PRESENT | PF_RSVD | PF_USER
    assert m.checked_access(0x80_0000_0000 + (1 << 29), ACCESS_USER) == PF_PRESENT | PF_RSVD | PF_USER
    leaves = list(m.shadow_leaves())
    assert {va & ~(PAGE - 1) for va, *_ in leaves} >= {0x30_0000, root, 0x80_0000_1000}
    assert all(gpa < QUOTA for _, gpa, *_ in leaves)
    described = m.mmu.describe()
    assert isinstance(described["synthetic_tables"], int) and described["synthetic_tables"] >= 3
    # Clearing the huge entry's D bit takes write access back from every piece of it.
    walk = walk_guest(m.mem, root, 0x30_0000, 0, wp=True, nxe=False, set_ad=False)
    pd_slot = walk.entries[-1][0]
    m.checked_access(pd_slot, ACCESS_WRITE, walk.entries[-1][1] & ~PTE_D)
    assert not any(w for va, _, w, _, _ in m.shadow_leaves() if 0x20_0000 <= va < 0x40_0000)
    m.check()


def test_invlpg_rederives_and_flush_drops_everything() -> None:
    m = Machine()
    root = kernel(m)
    m.map(root, USER_VA, 0x30_0000, USER)
    m.load_cr3(root)
    m.checked_access(USER_VA, ACCESS_USER)
    m.checked_access(0x30_0000, 0)  # the kernel's identity map: another page in the TLB
    assert {USER_VA, 0x30_0000} <= set(m.tlb)
    m.mmu.invlpg(USER_VA)
    assert USER_VA not in m.tlb and 0x30_0000 in m.tlb  # that page only, as the hardware's invlpg
    m.mmu.invlpg(0x7000_0000_0000)  # nothing shadowed there
    assert [gpa for va, gpa, *_ in m.shadow_leaves() if va == USER_VA] == [0x30_0000]
    real = m.real_cr3
    m.mmu.flush()
    assert list(m.shadow_leaves()) == [] and m.tlb == {}
    assert m.mmu.load_cr3(root) == real  # the current root keeps its frame
    m.checked_access(USER_VA, ACCESS_USER)
    assert counts(m)["invlpg"] == 2 and counts(m)["flushes"] == 1
    m.mmu.nxe = True  # NX bits change meaning: dropped again
    assert counts(m)["flushes"] == 2
    m.check()


def test_pool_exhaustion_drops_all_shadows_and_starts_again() -> None:
    m = Machine(pool_frames=MIN_POOL_FRAMES)
    root = kernel(m, huge=True)
    spaces = [_va(slot, slot, slot, slot) for slot in range(1, 6)]  # three tables each: more than the pool
    for k, va in enumerate(spaces):
        m.map(root, va, 0x30_0000 + k * PAGE, USER)
    m.load_cr3(root)
    for rnd in range(2):
        for k, va in enumerate(spaces):
            assert m.checked_access(va + 8 * rnd, ACCESS_USER | ACCESS_WRITE, rnd) == 0x30_0000 + k * PAGE + 8 * rnd
            m.check()
    assert counts(m)["resets"] >= 2
    assert m.mmu.describe()["pool_frames"] == MIN_POOL_FRAMES


# -- hostile tables ---------------------------------------------------------------------------------


def test_hostile_tables_never_reach_outside_the_quota() -> None:
    m = Machine(nxe=True)
    root = kernel(m)
    pdpt = m.mem.read_u64(root) & PTE_ADDR
    m.mem.write_u64(root + 8 * 1, root | USER)  # self-reference: the root seen as a PDPT, PD and PT
    m.mem.write_u64(root + 8 * 2, pdpt | USER)  # a PDPT seen as a PML4's child twice
    m.mem.write_u64(pdpt + 8 * 5, root | USER)  # a cycle: PDPT -> root as a PD
    m.mem.write_u64(root + 8 * 3, QUOTA | USER)  # a table in the pool
    m.mem.write_u64(root + 8 * 4, (QUOTA - PAGE) | USER | PTE_PS)  # PS at level 4 is no huge page
    m.mem.write_u64(root + 8 * 6, (1 << 45) | USER)
    m.mem.write_u64(root + 8 * 7, root | USER | PTE_NX | (0x7FF << 52))  # ignored bits
    m.load_cr3(root)
    vas = [
        _va(1, 1, 1, 1),  # root -> root -> root -> root: the leaf is the root itself
        _va(1, 1, 1, 0),  # the root's entry 0 as a leaf: its PDPT
        _va(1, 1, 3, 0),  # the pool as a leaf
        _va(1, 1, 6, 0),
        _va(2, 5, 1, 1),
        _va(2, 5, 1, 3),
        _va(3, 0, 0, 0),
        _va(4, 0, 0, 0),
        _va(6, 0, 0, 0),
        _va(7, 1, 1, 1),
        _va(1, 2, 0, 1),
    ]
    for va in vas:
        for access in (0, ACCESS_USER, ACCESS_WRITE, ACCESS_USER | ACCESS_WRITE, ACCESS_FETCH):
            m.checked_access(va, access, 0 if access & ACCESS_WRITE and va == vas[1] else None)
            m.check()
    # Through its self-map the guest rewrites its own root (protected: stepped and resynced).
    m.checked_access(_va(1, 1, 1, 1) + 8 * 3, ACCESS_WRITE, m.mem.size | USER)
    m.checked_access(_va(1, 1, 1, 1) + 8 * 8, ACCESS_WRITE, root | USER)
    for va in (_va(8, 1, 1, 1), _va(8, 8, 8, 8), _va(3, 0, 0, 0)):
        m.checked_access(va, ACCESS_USER)
        m.check()
    assert counts(m)["protected_writes"] >= 2


# -- random guests against the architectural walk ---------------------------------------------------


def _entry_values(m: Machine) -> st.SearchStrategy[int]:
    frames = st.one_of(
        st.sampled_from([0x30_0000, 0x30_1000, 0x3F_F000, QUOTA - PAGE]),
        st.sampled_from(m.tables),
        st.sampled_from([QUOTA, QUOTA + PAGE, QUOTA + 0x20_0000, 1 << 40]),
    )
    accessed = PTE_A | PTE_D
    flags = st.sampled_from(
        [USER | accessed, USER | PTE_A, KERNEL | accessed, USER, PTE_P | PTE_U | PTE_A, KERNEL | PTE_PS | accessed]
    ) | st.integers(0, 0x1FF)
    value = st.builds(lambda f, g, n: f | g | n, frames, flags, st.sampled_from([0, 0, 0, PTE_NX]))
    return st.sampled_from([st.just(0)] + [value] * 5).flatmap(lambda strategy: strategy)


def _guest(*, wp: bool, nxe: bool, pool_frames: int, huge: bool) -> tuple[Machine, list[int]]:
    """Two address spaces sharing the kernel's PDPT (and so the user region's tables), hostile bits included."""
    m = Machine(wp=wp, nxe=nxe, pool_frames=pool_frames)
    first = kernel(m, huge=huge)
    second = m.new_table()
    m.mem.write_u64(second, m.mem.read_u64(first))
    m.map(first, USER_VA, 0x30_0000, USER)
    m.map(first, USER_VA + PAGE, 0x30_1000, USER)
    m.map(second, USER_VA + (1 << 30), 0x31_0000, USER)
    m.map(second, USER_VA + (1 << 30) + PAGE, first, USER)  # its own root, user-writable
    m.map(first, USER_VA + (2 << 21), 0x20_0000, USER, level=2)
    return m, [first, second]


_VAS = [USER_VA, USER_VA + PAGE, USER_VA + (1 << 30), USER_VA + (1 << 30) + PAGE, USER_VA + (2 << 21) + PAGE]
_ACCESSES = [0, ACCESS_WRITE, ACCESS_USER, ACCESS_USER | ACCESS_WRITE, ACCESS_FETCH]


def _run(m: Machine, ops: list[tuple[object, ...]]) -> None:
    for op in ops:
        kind = op[0]
        if kind == "access":
            _, page, offset, access, value = op
            assert isinstance(page, int) and isinstance(offset, int) and isinstance(access, int)
            store = value if access & ACCESS_WRITE else None
            m.checked_access(page + offset, access, store if isinstance(store, int) else None)
        elif kind == "entry":  # the guest kernel writes one of its table entries, through its own mappings
            _, table, offset, value = op
            assert isinstance(table, int) and isinstance(offset, int) and isinstance(value, int)
            m.checked_access(table + offset, ACCESS_WRITE, value)
        elif kind == "cr3":
            assert isinstance(op[1], int)
            m.load_cr3(op[1])
        elif kind == "invlpg":
            assert isinstance(op[1], int)
            m.mmu.invlpg(op[1])
        else:
            m.mmu.flush()
        m.check()
    assert m.mmu.describe()["tables"] == len(m.mmu.store.live_tables())


@st.composite
def _programs(draw: st.DrawFn) -> tuple[Machine, list[tuple[object, ...]]]:
    m, roots = _guest(
        wp=draw(st.booleans()),
        nxe=draw(st.booleans()),
        pool_frames=draw(st.sampled_from([8, 12, 64])),
        huge=draw(st.booleans()),
    )
    vas = st.one_of(
        st.sampled_from(_VAS),
        st.sampled_from(m.tables),
        st.integers(0, QUOTA // PAGE - 1).map(lambda p: p * PAGE),
        st.integers(0, (1 << 48) // PAGE - 1).map(lambda p: p * PAGE),
    )
    offsets = st.integers(0, 511).map(lambda i: 8 * i)
    access = st.tuples(st.just("access"), vas, offsets, st.sampled_from(_ACCESSES), st.integers(0, 2**64 - 1))
    entry = st.tuples(st.just("entry"), st.sampled_from(m.tables), offsets, _entry_values(m))
    other = st.one_of(
        st.tuples(st.just("cr3"), st.sampled_from(roots)),
        st.tuples(st.just("invlpg"), vas),
        st.tuples(st.just("flush")),
    )
    weighted = st.sampled_from([access] * 8 + [entry] * 6 + [other] * 2).flatmap(lambda strategy: strategy)
    return m, [("cr3", roots[0]), *draw(st.lists(weighted, min_size=10, max_size=50))]


@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(_programs())
def test_random_guests_shadow_exactly_their_tables(program: tuple[Machine, list[tuple[object, ...]]]) -> None:
    _run(*program)


def _entry_value(rng: random.Random, m: Machine) -> int:
    if rng.random() < 0.15:
        return 0
    frame = rng.choice(
        [0x30_0000, QUOTA - PAGE, QUOTA, QUOTA + PAGE, 1 << 40, *m.tables, rng.randrange(QUOTA // PAGE) * PAGE]
    )
    flags = rng.choice([USER | PTE_A | PTE_D, USER | PTE_A, KERNEL | PTE_A | PTE_D, USER, rng.randrange(0x200)])
    return frame | flags | (PTE_NX if rng.random() < 0.2 else 0) | (PTE_PS if rng.random() < 0.1 else 0)


@pytest.mark.parametrize("seed", range(10))
def test_long_random_runs_shadow_exactly_their_tables(seed: int) -> None:
    """Longer programs than hypothesis makes, from a seed: deep histories of rewrites, shares and resets."""
    rng = random.Random(seed)
    m, roots = _guest(wp=seed % 4 != 0, nxe=seed % 2 == 0, pool_frames=[8, 16, 64][seed % 3], huge=seed % 5 == 0)
    ops: list[tuple[object, ...]] = [("cr3", roots[0])]
    for _ in range(150):
        roll = rng.random()
        va = rng.choice([rng.choice(_VAS), rng.choice(m.tables), rng.randrange(QUOTA // PAGE) * PAGE])
        if roll < 0.45:
            ops.append(("access", va, 8 * rng.randrange(512), rng.choice(_ACCESSES), rng.getrandbits(64)))
        elif roll < 0.9:
            ops.append(("entry", rng.choice(m.tables), 8 * rng.randrange(512), _entry_value(rng, m)))
        elif roll < 0.96:
            ops.append(("cr3", rng.choice(roots)))
        elif roll < 0.99:
            ops.append(("invlpg", va))
        else:
            ops.append(("flush",))
    _run(m, ops)


# -- the reference kernel under the shadow MMU ------------------------------------------------------


def test_pcref_boots_under_shadow_tables_with_its_golden_transcript() -> None:
    """partitions/pcref, unmodified, under ``mmu = "shadow"``: QEMU's transcript byte for byte."""
    from spk import Machine as SpkMachine
    from spk_tools.qemu import pcref_elf
    from tests.guests import Recorder

    recorder = Recorder()
    machine = SpkMachine(32 << 20, on_event=recorder)
    pid = machine.create_full_partition("pcref", pcref_elf(), 1040, mmu="shadow")
    mmu = machine.full.machines[pid].mmu
    assert isinstance(mmu, ShadowMmu)
    while machine.now < 400_000_000 and machine.info(pid).state in ("ready", "blocked"):
        end = machine.now + 2_000_000
        machine.run(pid, end)
        machine.advance(end)
        assert mmu.audit() == []
    info = machine.info(pid)
    assert (info.state, info.exit_code, info.mmu) == ("exited", 0, "shadow")
    golden = (Path(__file__).parent / "golden" / "pcref.serial").read_text()
    assert "".join(line + "\n" for line in recorder.lines("pcref")) == golden
    described = machine.full_state(pid)["mmu"]
    assert isinstance(described, dict)
    shadow = described["counts"]
    assert isinstance(shadow, dict)
    # Its two demand-paged PTEs are table writes; every app switch is a CR3 load of a known root.
    assert shadow["protected_writes"] >= 2 and shadow["fills"] > 0 and shadow["guest_faults"] == 3
    assert described["roots"] == 3 and shadow["cr3_loads"] > 3
    assert shadow["resets"] == 0 and shadow["spurious"] == 0
