"""Ring 0's frame invariants, recounted from the page tables.

The frame table keeps, per frame, its owner, type and mapping counts
incrementally on every map and unmap; :func:`check` recomputes them from
the partitions' page tables and compares. Tests and the fuzzer call it
(through :meth:`spk.Machine.check_invariants`) after every step; the run
loop never does.

Errors: :class:`spk.errors.InternalError` naming the first broken rule.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

from spk._frames import FrameTable, FrameType
from spk.abi import PAGE_SHIFT
from spk.errors import InternalError

if TYPE_CHECKING:
    from spk._partition import Partition

_OWNER = attrgetter("owner")


def check(table: FrameTable, partitions: Mapping[int, Partition], pids: Collection[int] | None = None) -> None:
    """Recount every mapping from the page tables and check the frame rules.

    With ``pids``, only those partitions' spaces are walked and only the
    frames they own are recounted (a frame is mapped only by its owner,
    so the recount is exact for them); a caller that knows the others
    did not change (the fuzzer compares them with a snapshot) saves
    their walk. Errors: InternalError naming the first broken rule.
    """
    counted: dict[int, tuple[int, int]] = {}
    entries = table.entries
    walked = [p for pid, p in partitions.items() if pids is None or pid in pids]
    for p in walked:
        seen_kernel = False
        for handle, space in p.spaces.items():
            for va, leaf in space.leaves(user_half_only=seen_kernel):
                mfn = (leaf & 0x000F_FFFF_FFFF_F000) >> PAGE_SHIFT
                if mfn >= len(entries) or entries[mfn].owner != p.pid:
                    raise InternalError(f"{p.name}: space {handle} maps foreign frame {mfn:#x} at {va:#x}")
                maps, writable = counted.get(mfn, (0, 0))
                counted[mfn] = (maps + 1, writable + (1 if leaf & 2 else 0))
            seen_kernel = True
    recorded: dict[int, tuple[int, int]] = {}
    pools: dict[int, int] = {}
    pool = FrameType.POOL
    if pids is None:
        scanned = list(enumerate(entries))
        kept_pools, kept_owned = table.index()
        if table.scan_index() != ({o: n for o, n in kept_pools.items() if n}, kept_owned):
            raise InternalError("the frame table's pool counts or owner index are not its entries'")
    else:
        scanned = []
        for p in walked:
            owned = table.owned(p.pid)
            frames = [entries[owned[0]]] if len(owned) == 1 else list(itemgetter(*owned)(entries)) if owned else []
            if owned and set(map(_OWNER, frames)) != {p.pid}:
                raise InternalError(f"{p.name}: the owner index lists a frame it does not own")
            scanned += zip(owned, frames, strict=True)
    for mfn, frame in scanned:
        if frame.map_count or frame.writable_count:
            recorded[mfn] = (frame.map_count, frame.writable_count)
        if frame.type is pool:
            pools[frame.owner] = pools.get(frame.owner, 0) + 1
    if recorded != counted:
        mfn = min(m for m in recorded.keys() | counted.keys() if recorded.get(m) != counted.get(m))
        maps, writable = recorded.get(mfn, (0, 0))
        raise InternalError(f"frame {mfn:#x}: counts {maps}/{writable}, tables say {counted.get(mfn, (0, 0))}")
    for p in walked:
        if table.pool_free_count(p.pid) != pools.get(p.pid, 0):
            raise InternalError(f"{p.name}: pool count {table.pool_free_count(p.pid)} is not the table's")
    for mfn in recorded:
        frame = entries[mfn]
        if frame.type is FrameType.PAGE_TABLE and frame.writable_count:
            raise InternalError(f"frame {mfn:#x} is a page table and mapped writable")
        if frame.writable_count > frame.map_count:
            raise InternalError(f"frame {mfn:#x}: more writable mappings than mappings")
