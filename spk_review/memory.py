"""The memory map of a booted system, read from ring 0's own records.

For each running partition: the frames it owns (by type, and where they lie
in physical RAM) and every mapping of every address space it has; for a
full-virtualization partition, which has no address space of ring 0's (its
page tables are its own, inside its quota), the memory map of its own engine
(:func:`spk_review.fullvirt.full_memory`). Then the
shared regions: frames a partition maps that another party owns or maps
too, once each, with every partition that maps them (ring 0's GDT is one
region mapped by all, not one row per partition). The page tables are
walked here from physical RAM (``Machine.ram``), level by level, so the
rights shown are the effective ones (writable and user only if every level
says so), and ring 0's slot is walked as well. Frame ownership comes from
the frame table (``Machine.frames``), the modules from the partition records
(``Machine.partitions``): attributes of the public ``Machine`` whose classes
are not in ``spk.__all__`` (see docs/review.md, "What the review reads").

Errors: none of its own; ``Machine.check_invariants`` failing is a fact of
the report (``MemoryFacts.invariants``), not an exception.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from spk import InternalError, Machine
from spk.abi import (
    GDT_VADDR,
    KERNEL_BASE,
    KERNEL_DATA_SIZE,
    KERNEL_DATA_VADDR,
    KERNEL_END,
    KERNEL_IMAGE_MAX,
    KERNEL_IMAGE_VADDR,
    KERNEL_STACK_SIZE,
    KERNEL_STACK_TOP,
    PAGE_SHIFT,
    PAGE_SIZE,
    SPK_BASE,
    START_INFO_VADDR,
)
from spk_review.fullvirt import full_memory
from spk_review.model import Mapping, MemoryFacts, PartitionMemory, PhysicalRange, SharedMapping, SharedRegion

# x86-64 page-table entry bits (architectural).
_PRESENT, _WRITE, _USER = 1, 1 << 1, 1 << 2
_ADDRESS = 0x000F_FFFF_FFFF_F000
_ENTRIES = 512
_CANONICAL_HIGH = 0xFFFF_0000_0000_0000

_KERNEL_REGIONS = (
    (KERNEL_IMAGE_VADDR, KERNEL_IMAGE_MAX, "kernel image"),
    (KERNEL_DATA_VADDR, KERNEL_DATA_SIZE, "kernel data"),
    (START_INFO_VADDR, PAGE_SIZE, "start info"),
    (KERNEL_STACK_TOP - KERNEL_STACK_SIZE, KERNEL_STACK_SIZE, "boot stack"),
)


@dataclass(frozen=True)
class _Leaf:
    va: int
    mfn: int
    writable: bool
    user: bool


def walk(machine: Machine, cr3: int) -> Iterator[_Leaf]:
    """Every present 4 KiB mapping under ``cr3``, with its effective rights."""

    def level(table: int, depth: int, va: int, writable: bool, user: bool) -> Iterator[_Leaf]:
        for index in range(_ENTRIES):
            entry = machine.ram.read_u64(table + index * 8)
            if not entry & _PRESENT:
                continue
            here = va | index << (PAGE_SHIFT + 9 * (3 - depth))
            w, u = writable and bool(entry & _WRITE), user and bool(entry & _USER)
            if depth == 3:
                yield _Leaf(here | _CANONICAL_HIGH if here >> 47 else here, (entry & _ADDRESS) >> PAGE_SHIFT, w, u)
            else:
                yield from level(entry & _ADDRESS, depth + 1, here, w, u)

    yield from level(cr3 & _ADDRESS, 0, 0, True, True)


def _owner_name(machine: Machine, mfn: int) -> str:
    frame = machine.frames[mfn]
    if frame.type.value == "spk":
        return "ring 0"
    if frame.type.value == "free":
        return "nobody"
    p = machine.partitions.get(frame.owner)
    return p.name if p is not None else f"owner {frame.owner}"


def _region(va: int, mfn: int, modules: dict[int, str]) -> str:
    if mfn in modules:
        return f"app image {modules[mfn]}"
    if va >= SPK_BASE:
        return "ring 0 (GDT)" if va == GDT_VADDR else "ring 0"
    if KERNEL_BASE <= va < KERNEL_END:
        return next((label for base, size, label in _KERNEL_REGIONS if base <= va < base + size), "kernel memory")
    return "app memory"


def _runs(mfns: list[int]) -> list[PhysicalRange]:
    ranges: list[PhysicalRange] = []
    for mfn in sorted(mfns):
        if ranges and ranges[-1].first_mfn + ranges[-1].frames == mfn:
            last = ranges.pop()
            ranges.append(PhysicalRange(first_mfn=last.first_mfn, frames=last.frames + 1))
        else:
            ranges.append(PhysicalRange(first_mfn=mfn, frames=1))
    return ranges


def _coalesce(leaves: dict[_Leaf, set[int]], modules: dict[int, str]) -> list[Mapping]:
    """Merge pages contiguous in both address spaces, with the same rights, spaces and region."""
    ordered = sorted(leaves.items(), key=lambda item: (item[0].va < KERNEL_BASE, sorted(item[1]), item[0].va))
    out: list[Mapping] = []
    for leaf, spaces in ordered:
        region = _region(leaf.va, leaf.mfn, modules)
        if out:
            last = out[-1]
            if (
                last.spaces == sorted(spaces) and last.region == region
                and (last.writable, last.user) == (leaf.writable, leaf.user)
                and last.va + last.pages * PAGE_SIZE == leaf.va and last.mfn + last.pages == leaf.mfn
            ):  # fmt: skip
                out[-1] = last.model_copy(update={"pages": last.pages + 1})
                continue
        out.append(
            Mapping(spaces=sorted(spaces), va=leaf.va, pages=1, mfn=leaf.mfn, writable=leaf.writable,
                    user=leaf.user, region=region)
        )
    return out


def memory_map(machine: Machine) -> MemoryFacts:
    """The memory facts of every running partition, the shared regions, and the frame table's summary."""
    leaves: dict[int, dict[_Leaf, set[int]]] = {}
    for pid, p in sorted(machine.partitions.items()):
        found: dict[_Leaf, set[int]] = {}
        for handle, space in sorted(p.spaces.items()):
            for leaf in walk(machine, space.cr3):
                found.setdefault(leaf, set()).add(handle)
        leaves[pid] = found
    owned: dict[int, list[int]] = {}
    owners: Counter[str] = Counter()
    for mfn, frame in enumerate(machine.frames.entries):
        owners[_owner_name(machine, mfn)] += 1
        if frame.owner in machine.partitions:
            owned.setdefault(frame.owner, []).append(mfn)
    try:
        machine.check_invariants()
        invariants = None
    except InternalError as exc:
        invariants = str(exc)
    partitions = []
    for pid, p in sorted(machine.partitions.items()):
        info = machine.info(pid)
        full = info.virtualization == "full"  # its own engine: no ring-0 address space, no boot modules
        modules = {} if full else {m.first_mfn + i: m.name for m in p.modules for i in range(m.pages)}
        mine = owned.get(pid, [])
        mapped = {leaf.mfn for leaf in leaves[pid]}
        partitions.append(
            PartitionMemory(
                name=p.name, pid=pid, virtualization="full" if full else "para", quota_frames=info.quota_frames,
                frames_in_use=info.frames_in_use,
                frame_types=dict(sorted(Counter(machine.frames[m].type.value for m in mine).items())),
                physical=_runs(mine), spaces=len(p.spaces), mappings=_coalesce(leaves[pid], modules),
                unmapped_data_frames=sum(
                    1 for m in mine if machine.frames[m].type.value == "data" and m not in mapped
                ),
                full=full_memory(machine, pid, invariants_hold=invariants is None) if full else None,
            )
        )
    names = {pid: p.name for pid, p in machine.partitions.items()}
    return MemoryFacts(
        ram_frames=len(machine.frames.entries), owners=dict(sorted(owners.items())), invariants=invariants,
        partitions=partitions, shared=shared_regions(machine, {names[pid]: found for pid, found in leaves.items()}),
    )  # fmt: skip


def shared_regions(machine: Machine, leaves: dict[str, dict[_Leaf, set[int]]]) -> list[SharedRegion]:
    """Frames more than one party reaches, each run of them once with every partition that maps it.

    A frame is shared when a partition maps it and another partition maps it
    too or owns it, or ring 0 owns it. Adjacent frames with the same owner and
    type, mapped by the same partitions at adjacent addresses with the same
    rights, are one region.
    """
    by_frame: dict[int, list[SharedMapping]] = {}
    for name, found in sorted(leaves.items()):
        for leaf in found:
            by_frame.setdefault(leaf.mfn, []).append(
                SharedMapping(partition=name, va=leaf.va, writable=leaf.writable, user=leaf.user)
            )
    regions: list[SharedRegion] = []
    for mfn, mapped in sorted(by_frame.items()):
        owner = _owner_name(machine, mfn)
        if len({m.partition for m in mapped} | {owner}) < 2:
            continue  # only its owner maps it
        mapped = sorted(mapped, key=lambda m: (m.partition, m.va))
        frame_type = machine.frames[mfn].type.value
        if regions:
            last = regions[-1]
            follows = [m.model_copy(update={"va": m.va + last.frames * PAGE_SIZE}) for m in last.mapped_by]
            if (last.mfn + last.frames, last.owner, last.frame_type, follows) == (mfn, owner, frame_type, mapped):
                regions[-1] = last.model_copy(update={"frames": last.frames + 1})
                continue
        regions.append(SharedRegion(mfn=mfn, frames=1, owner=owner, frame_type=frame_type, mapped_by=mapped))
    return regions

