"""Unit tests of the frame table and the page-table validation (negative spec)."""

from __future__ import annotations

import pytest

from spk._frames import FrameTable, FrameType, PhysicalMemory
from spk._paging import AddressSpace, KernelHalf, Walker
from spk.abi import KERNEL_BASE, Status
from spk.errors import InternalError, OutOfMemory, SpkError


def make(owner: int = 1, quota: int = 32) -> tuple[FrameTable, AddressSpace]:
    frames = FrameTable(PhysicalMemory(1 << 20))
    (spk_pdpt,) = frames.reserve_spk(1)
    frames.grant(owner, quota)
    kernel = KernelHalf(owner, frames)
    return frames, AddressSpace(owner, frames, kernel, spk_pdpt, lambda: None, lambda _va: None)


def test_grant_more_than_free_fails() -> None:
    frames = FrameTable(PhysicalMemory(1 << 20))
    with pytest.raises(OutOfMemory):
        frames.grant(1, 257)


def test_pool_take_beyond_quota_fails() -> None:
    frames = FrameTable(PhysicalMemory(1 << 20))
    frames.grant(1, 2)
    frames.pool_take(1, FrameType.DATA)
    frames.pool_take(1, FrameType.DATA)
    with pytest.raises(OutOfMemory):
        frames.pool_take(1, FrameType.DATA)


def _status(fn: object, *args: object) -> Status:
    with pytest.raises(SpkError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.status


def test_map_fail_unaligned() -> None:
    frames, space = make()
    mfn = frames.pool_take(1, FrameType.DATA)
    assert _status(space.map, 0x400001, mfn, False, True) is Status.INVALID_ARGUMENT


def test_map_fail_foreign_frame() -> None:
    frames, space = make()
    frames.grant(2, 4)
    foreign = frames.pool_take(2, FrameType.DATA)
    assert _status(space.map, 0x400000, foreign, False, True) is Status.DENIED


def test_map_fail_pool_frame_not_handed_out() -> None:
    frames, space = make()
    pool = next(i for i, f in enumerate(frames.entries) if f.owner == 1 and f.type is FrameType.POOL)
    assert _status(space.map, 0x400000, pool, False, True) is Status.DENIED


def test_map_fail_page_table_writable() -> None:
    _frames, space = make()
    assert _status(space.map, 0x400000, space.pml4, True, True) is Status.DENIED


def test_map_fail_twice() -> None:
    frames, space = make()
    mfn = frames.pool_take(1, FrameType.DATA)
    space.map(0x400000, mfn, True, True)
    assert _status(space.map, 0x400000, mfn, True, True) is Status.BUSY


def test_map_fail_kernel_half_as_user() -> None:
    frames, space = make()
    mfn = frames.pool_take(1, FrameType.DATA)
    assert _status(space.map, KERNEL_BASE, mfn, False, True) is Status.INVALID_ARGUMENT


def test_map_fail_quota_cannot_pay_for_tables() -> None:
    frames, space = make(quota=4)  # kernel PDPT + PML4 + one data frame + one left
    mfn = frames.pool_take(1, FrameType.DATA)
    assert _status(space.map, 0x400000, mfn, False, True) is Status.NO_MEMORY
    assert frames[mfn].map_count == 0


def test_unmap_fail_not_mapped() -> None:
    _frames, space = make()
    assert _status(space.unmap, 0x400000) is Status.NOT_FOUND


def test_counts_and_walk() -> None:
    frames, space = make()
    mfn = frames.pool_take(1, FrameType.DATA)
    space.map(0x400000, mfn, True, True)
    space.map(0x500000, mfn, False, True)
    assert (frames[mfn].map_count, frames[mfn].writable_count) == (2, 1)
    tr = Walker(frames.ram).translate(space.cr3, 0x400123)
    assert tr is not None and tr.paddr == (mfn << 12) + 0x123 and tr.writable and tr.user
    space.unmap(0x400000)
    assert (frames[mfn].map_count, frames[mfn].writable_count) == (1, 0)
    frames.check_invariant()


def test_invariant_catches_writable_page_table() -> None:
    frames, space = make()
    frames[space.pml4].map_count = 1
    frames[space.pml4].writable_count = 1
    with pytest.raises(InternalError, match="page table and mapped writable"):
        frames.check_invariant()


def test_pool_return_refuses_mapped_frame() -> None:
    frames, space = make()
    mfn = frames.pool_take(1, FrameType.DATA)
    space.map(0x400000, mfn, False, True)
    with pytest.raises(InternalError):
        frames.pool_return(mfn)


def test_walker_refuses_wrapping_range() -> None:
    _frames, space = make()
    walker = Walker(space.ram)
    assert walker.spans(space.cr3, (1 << 64) - 8, 16, write=False, user=False) is None
    assert walker.spans(space.cr3, 0x7FFF_FFFF_FFF8, 16, write=False, user=False) is None


def _lowest_pool_run(table: FrameTable, owner: int, contiguous: int) -> int:
    """What an allocation must return: the lowest run of adjacent POOL frames of ``owner`` (a full scan)."""
    run_start, run_len = -1, 0
    for mfn, frame in enumerate(table.entries):
        if frame.owner == owner and frame.type is FrameType.POOL:
            run_start, run_len = (mfn, 1) if run_len == 0 else (run_start, run_len + 1)
            if run_len == contiguous:
                return run_start
        else:
            run_len = 0
    return -1


def test_allocation_order_matches_a_full_scan() -> None:
    """The allocation hints skip only frames of the wrong type: every take is the lowest fit.

    A seeded random mix of grants (some fragmented), takes of 1 to 3
    contiguous frames, returns, resets and reclaims, each take compared with
    a scan of the whole table.
    """
    import contextlib
    import random

    rng = random.Random(7)
    table = FrameTable(PhysicalMemory(96 * 4096))
    table.reserve_spk(3)
    taken: dict[int, list[int]] = {}
    for step in range(600):
        owner = rng.randint(1, 4)
        action = rng.random()
        if action < 0.15:
            short = sum(f.type is FrameType.FREE for f in table.entries) < 5
            with pytest.raises(OutOfMemory) if short else contextlib.nullcontext():
                table.grant(owner, 5, rng.randrange(0, 96))
        elif action < 0.7:
            contiguous = rng.choice((1, 1, 2, 3))
            expected = _lowest_pool_run(table, owner, contiguous)
            if expected < 0:
                with pytest.raises(OutOfMemory):
                    table.pool_take(owner, FrameType.DATA, contiguous)
            else:
                assert table.pool_take(owner, FrameType.DATA, contiguous) == expected, step
                taken.setdefault(owner, []).extend(range(expected, expected + contiguous))
        elif action < 0.9 and taken.get(owner):
            table.pool_return(taken[owner].pop(rng.randrange(len(taken[owner]))))
        elif action < 0.95:
            table.reset_pool(owner)
            taken.pop(owner, None)
        else:
            table.reclaim(owner)
            taken.pop(owner, None)
        assert table.scan_index() == ({o: n for o, n in table.index()[0].items() if n}, table.index()[1]), step
