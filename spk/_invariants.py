"""Ring 0's frame invariants, recounted from the page tables.

The frame table keeps, per frame, its owner, type and mapping counts
incrementally on every map and unmap; :func:`check` recomputes them from
the partitions' page tables and compares. Tests and the fuzzer call it
(through :meth:`spk.Machine.check_invariants`) after every step; the run
loop never does.

Errors: :class:`spk.errors.InternalError` naming the first broken rule.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from spk._frames import PAGE_TABLE_CODE, POOL_CODE, FrameTable
from spk._x86 import PTE_NX, PTE_W
from spk.abi import PAGE_SHIFT
from spk.errors import InternalError

if TYPE_CHECKING:
    from spk._partition import Partition


def check(table: FrameTable, partitions: Mapping[int, Partition], pids: Collection[int] | None = None) -> None:
    """Recount every mapping from the page tables and check the frame rules.

    With ``pids``, only those partitions' spaces are walked and only the
    frames they own are recounted (a frame is mapped only by its owner,
    so the recount is exact for them); a caller that knows the others
    did not change (the fuzzer compares them with a snapshot) saves
    their walk. Errors: InternalError naming the first broken rule.
    """
    counted: dict[int, tuple[int, int, int]] = {}
    owners, types = table.owners, table.types
    maps, writables, no_exec = table.map_counts, table.writable_counts, table.no_exec
    walked = [p for pid, p in partitions.items() if pids is None or pid in pids]
    for p in walked:
        seen_kernel = False
        for handle, space in p.spaces.items():
            for va, leaf in space.leaves(user_half_only=seen_kernel):
                mfn = (leaf & 0x000F_FFFF_FFFF_F000) >> PAGE_SHIFT
                if mfn >= len(types) or owners[mfn] != p.pid:
                    raise InternalError(f"{p.name}: space {handle} maps foreign frame {mfn:#x} at {va:#x}")
                n, writable, nx = counted.get(mfn, (0, 0, 0))
                counted[mfn] = (n + 1, writable + (1 if leaf & PTE_W else 0), nx + (1 if leaf & PTE_NX else 0))
            seen_kernel = True
    scanned: Iterable[int]
    if pids is None:
        scanned = range(len(types))
        kept_pools, kept_owned = table.index()
        if table.scan_index() != ({o: n for o, n in kept_pools.items() if n}, kept_owned):
            raise InternalError("the frame table's pool counts or owner index are not its entries'")
    else:
        scanned = []
        for p in walked:
            owned = table.owned(p.pid)
            if any(owners[mfn] != p.pid for mfn in owned):
                raise InternalError(f"{p.name}: the owner index lists a frame it does not own")
            scanned += owned
    recorded: dict[int, tuple[int, int, int]] = {}
    pools: dict[int, int] = {}
    for mfn in scanned:
        if maps[mfn] or writables[mfn] or no_exec[mfn] > 1:
            recorded[mfn] = (maps[mfn], writables[mfn], no_exec[mfn] >> 1)
        if types[mfn] == POOL_CODE:
            pools[owners[mfn]] = pools.get(owners[mfn], 0) + 1
    if recorded != counted:
        mfn = min(m for m in recorded.keys() | counted.keys() if recorded.get(m) != counted.get(m))
        raise InternalError(
            f"frame {mfn:#x}: counts (maps, writable, no-execute) {recorded.get(mfn, (0, 0, 0))}, "
            f"tables say {counted.get(mfn, (0, 0, 0))}"
        )
    for p in walked:
        if table.pool_free_count(p.pid) != pools.get(p.pid, 0):
            raise InternalError(f"{p.name}: pool count {table.pool_free_count(p.pid)} is not the table's")
    for mfn in recorded:
        if types[mfn] == PAGE_TABLE_CODE and writables[mfn]:
            raise InternalError(f"frame {mfn:#x} is a page table and mapped writable")
        if writables[mfn] > maps[mfn]:
            raise InternalError(f"frame {mfn:#x}: more writable mappings than mappings")
    if pids is None:
        guarded = sum(1 for mfn in recorded if table.coherence.is_guarded(mfn))
        if guarded != table.coherence.guarded:
            raise InternalError(f"{table.coherence.guarded} frames counted as guarded, {guarded} are")
