"""Physical RAM and the frame table.

Every 4 KiB frame of RAM has one owner (the SPK, a partition, or nobody) and
one type. The invariant the whole isolation story rests on, after Xen's
``mm.c``:

    A frame of type PAGE_TABLE is never mapped writable anywhere, and a frame
    is only mapped into a partition's space if that partition owns it.

Types change only through this module: a frame is FREE in the global pool,
POOL when granted to a partition's quota but unused, DATA when handed to the
guest (mappable), PAGE_TABLE when the SPK uses it for that partition's page
tables, SPK when it holds ring-0 structures (GDT, shared SPK table).
``map_count``/``writable_count`` (and the count of no-execute mappings in
``no_exec``) are maintained by :mod:`spk._coherence` for :mod:`spk._paging`,
and recounted from the tables by :mod:`spk._invariants`.

Frames are zeroed whenever they change hands, so nothing leaks between
partitions or between the lives of one partition.
"""

from __future__ import annotations

import array
import bisect
import ctypes
import enum
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import overload

from spk._coherence import STALE, CodeCoherence
from spk.abi import PAGE_SHIFT, PAGE_SIZE
from spk.errors import InternalError, OutOfMemory

_ZERO_PAGE = bytes(PAGE_SIZE)
_TABLE = struct.Struct(f"<{PAGE_SIZE // 8}Q")


class FrameType(enum.Enum):
    FREE = "free"
    POOL = "pool"
    DATA = "data"
    PAGE_TABLE = "page_table"
    SPK = "spk"


#: Owner id of frames that belong to ring 0 itself.
SPK_OWNER = -1
NO_OWNER = 0


#: The type codes of the frame table's ``types`` array (one byte a frame), and back.
FRAME_TYPES: tuple[FrameType, ...] = tuple(FrameType)
TYPE_CODE: dict[FrameType, int] = {t: i for i, t in enumerate(FRAME_TYPES)}
FREE_CODE, POOL_CODE = TYPE_CODE[FrameType.FREE], TYPE_CODE[FrameType.POOL]
DATA_CODE, PAGE_TABLE_CODE = TYPE_CODE[FrameType.DATA], TYPE_CODE[FrameType.PAGE_TABLE]


class Frame:
    """One entry of the frame table: a view of its four fields in the table's arrays.

    Reading or setting an attribute reads or sets the array (the table's
    one copy, which ring 0's native MAP and UNMAP read and count too).
    Compare entries by their fields (``astuple``), not by identity.
    """

    __slots__ = ("_table", "mfn")

    def __init__(self, table: FrameTable, mfn: int) -> None:
        self._table = table
        self.mfn = mfn

    @property
    def owner(self) -> int:
        return self._table.owners[self.mfn]

    @owner.setter
    def owner(self, value: int) -> None:
        self._table.owners[self.mfn] = value

    @property
    def type(self) -> FrameType:
        return FRAME_TYPES[self._table.types[self.mfn]]

    @type.setter
    def type(self, value: FrameType) -> None:
        self._table.types[self.mfn] = TYPE_CODE[value]

    @property
    def map_count(self) -> int:
        return self._table.map_counts[self.mfn]

    @map_count.setter
    def map_count(self, value: int) -> None:
        self._table.map_counts[self.mfn] = value

    @property
    def writable_count(self) -> int:
        return self._table.writable_counts[self.mfn]

    @writable_count.setter
    def writable_count(self, value: int) -> None:
        self._table.writable_counts[self.mfn] = value

    def astuple(self) -> tuple[int, FrameType, int, int]:
        """(owner, type, map count, writable count): the entry's value."""
        t, mfn = self._table, self.mfn
        return t.owners[mfn], FRAME_TYPES[t.types[mfn]], t.map_counts[mfn], t.writable_counts[mfn]

    def __repr__(self) -> str:
        owner, kind, maps, writable = self.astuple()
        return f"Frame({self.mfn:#x}, owner={owner}, type={kind.value}, maps={maps}, writable={writable})"


class FrameEntries(Sequence[Frame]):
    """The frame table as a sequence of :class:`Frame` views, one per frame of RAM."""

    __slots__ = ("_table",)

    def __init__(self, table: FrameTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table.types)

    @overload
    def __getitem__(self, mfn: int) -> Frame: ...
    @overload
    def __getitem__(self, mfn: slice) -> list[Frame]: ...
    def __getitem__(self, mfn: int | slice) -> Frame | list[Frame]:
        n = len(self._table.types)
        if isinstance(mfn, slice):
            return [Frame(self._table, m) for m in range(*mfn.indices(n))]
        if mfn < 0:
            mfn += n
        if not 0 <= mfn < n:
            raise IndexError(f"frame {mfn} outside RAM")
        return Frame(self._table, mfn)


@dataclass
class GuestFrames:
    """A migrated partition's own frame numbers, and the machine frames behind them.

    A guest names its frames by number (FRAME_ALLOC, MAP, FRAME_FREE, the
    modules of its start info) and keeps those numbers in its memory. On the
    host that created it they are the machine's frame numbers; after a
    migration ring 0 translates them, as Xen translates a guest's
    pseudo-physical frames: ``to_machine`` maps each of the partition's
    numbers to the frame that holds it here, ``to_guest`` the other way.
    The map is monotone (the k-th lowest guest frame is the k-th lowest
    machine frame), so "the lowest free frame of the quota" is the same frame
    for the guest on every host. ``origin_frames`` is the RAM size, in
    frames, of the host that created it: a number at or beyond it does not
    exist (INVALID_ARGUMENT), a smaller one the partition does not own is
    someone else's (DENIED), as on that host.
    """

    to_machine: dict[int, int]
    to_guest: dict[int, int]
    origin_frames: int

    def machine(self, gfn: int) -> int:
        """The machine frame behind guest frame ``gfn``; -1 (no such frame) or
        :data:`FOREIGN` (a frame the partition does not own) otherwise."""
        mfn = self.to_machine.get(gfn)
        if mfn is not None:
            return mfn
        return -1 if not 0 <= gfn < self.origin_frames else FOREIGN

    def guest(self, mfn: int) -> int:
        return self.to_guest[mfn]


#: What a guest frame number the partition does not own translates to: frame 0,
#: always ring 0's (the SPK reserves the lowest frames), so the check refuses it as foreign.
FOREIGN = 0


def machine_frame(frames: GuestFrames | None, gfn: int) -> int:
    """A guest's frame number as a machine frame number (identity unless migrated)."""
    return gfn if frames is None else frames.machine(gfn)


def guest_frame(frames: GuestFrames | None, mfn: int) -> int:
    """A machine frame number as the guest knows it (identity unless migrated)."""
    return mfn if frames is None else frames.to_guest.get(mfn, mfn)


class PhysicalMemory:
    """Guest-physical RAM: one anonymous ``mmap`` shared by every vCPU engine."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"RAM size {size} is not a positive multiple of {PAGE_SIZE}")
        self.size = size
        self.frames = size >> PAGE_SHIFT
        self._map = mmap.mmap(-1, size)
        self.view = memoryview(self._map)
        #: RAM as little-endian u64 words: word ``paddr >> 3`` (page-table entries, read and written in place).
        self.words = self.view.cast("Q")
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    def read(self, paddr: int, length: int) -> bytes:
        return bytes(self.view[paddr : paddr + length])

    def write(self, paddr: int, data: bytes) -> None:
        self.view[paddr : paddr + len(data)] = data

    def read_u64(self, paddr: int) -> int:
        return int(struct.unpack_from("<Q", self._map, paddr)[0])

    def write_u64(self, paddr: int, value: int) -> None:
        struct.pack_into("<Q", self._map, paddr, value)

    def table(self, paddr: int) -> tuple[int, ...]:
        """The 512 entries of the page table at ``paddr`` (one unpack)."""
        return _TABLE.unpack_from(self._map, paddr)

    def zero_frame(self, mfn: int) -> None:
        base = mfn << PAGE_SHIFT
        self.view[base : base + PAGE_SIZE] = _ZERO_PAGE

    def frame_bytes(self, mfn: int) -> bytes:
        return self.read(mfn << PAGE_SHIFT, PAGE_SIZE)


@dataclass
class FrameTable:
    """Ownership, type and mapping counts of every frame of RAM.

    Five arrays of one element a frame (``owners``, ``types`` as codes of
    :data:`FRAME_TYPES`, ``map_counts``, ``writable_counts``, ``no_exec``:
    twice the no-execute mappings plus a stale bit, see
    :mod:`spk._coherence`): one copy of the table, which Python reads
    through :attr:`entries` and ring 0's native MAP and UNMAP read and count
    in place (their addresses: :meth:`addresses`). The arrays never grow, so
    those addresses hold for the table's life. :attr:`coherence` counts
    every mapping made or removed.
    """

    ram: PhysicalMemory
    entries: FrameEntries = field(init=False)

    def __post_init__(self) -> None:
        n = self.ram.frames
        self.owners = array.array("i", bytes(4 * n))
        self.types = bytearray(n)  # FREE_CODE is 0
        self.map_counts = array.array("i", bytes(4 * n))
        self.writable_counts = array.array("i", bytes(4 * n))
        self.no_exec = array.array("i", bytes(4 * n))
        self.entries = FrameEntries(self)
        self.coherence = CodeCoherence(self)
        #: POOL frames per owner and the frames of each owner, kept in step by every
        #: method that retypes or hands over a frame: a quota check is O(1) and a
        #: recount of one partition visits its frames only. ``Machine.check_invariants``
        #: checks both against the entries (:meth:`scan_index`).
        self._pool: dict[int, int] = {}
        self._owned: dict[int, list[int]] = {}
        self._clear_hints()

    def addresses(self) -> tuple[int, int, int, int, int]:
        """Host addresses of the owners (int32), types (uint8), map, writable and no-execute counts (int32).

        Each array stays pinned from then on (a buffer export): an attempt
        to resize one raises BufferError instead of moving it under ring 0's
        native code.
        """
        arrays = (self.owners, self.types, self.map_counts, self.writable_counts, self.no_exec)
        self._pins = tuple((ctypes.c_char * memoryview(a).nbytes).from_buffer(a) for a in arrays)
        return tuple(ctypes.addressof(pin) for pin in self._pins)  # type: ignore[return-value]

    def state(self) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """The five arrays as bytes (a snapshot's copy)."""
        return (
            self.owners.tobytes(), bytes(self.types), self.map_counts.tobytes(),
            self.writable_counts.tobytes(), self.no_exec.tobytes(),
        )  # fmt: skip

    def set_state(self, state: tuple[bytes, bytes, bytes, bytes, bytes]) -> None:
        """Take back arrays :meth:`state` gave, in place (their addresses do not change).

        The store guard follows the counts taken back (:meth:`CodeCoherence.resync`).
        Errors: ValueError when their sizes are not this table's.
        """
        owners, types, maps, writable, no_exec = state
        n = len(self.types)
        if len(types) != n or not len(owners) == len(maps) == len(writable) == len(no_exec) == 4 * n:
            raise ValueError("a frame table state of another size")
        memoryview(self.owners).cast("B")[:] = owners
        self.types[:] = types
        memoryview(self.map_counts).cast("B")[:] = maps
        memoryview(self.writable_counts).cast("B")[:] = writable
        memoryview(self.no_exec).cast("B")[:] = no_exec
        self.coherence.resync()

    def values(self) -> list[tuple[int, FrameType, int, int]]:
        """Every entry's (owner, type, map count, writable count), in frame order."""
        kinds = map(FRAME_TYPES.__getitem__, self.types)
        return list(zip(self.owners, kinds, self.map_counts, self.writable_counts, strict=True))

    def values_of(self, mfns: Sequence[int]) -> list[tuple[int, FrameType, int, int]]:
        """The entries of ``mfns`` as :meth:`values` gives them, in that order.

        Why: checkers that compare part of the table after every step (the
        fuzzer's oracles) would otherwise build a :class:`Frame` view per
        frame; these are C passes over the arrays.
        """
        if not mfns:
            return []
        pick = itemgetter(*mfns) if len(mfns) > 1 else lambda array: (array[mfns[0]],)
        kinds = map(FRAME_TYPES.__getitem__, pick(self.types))
        return list(zip(pick(self.owners), kinds, pick(self.map_counts), pick(self.writable_counts), strict=True))

    def kinds(self) -> list[FrameType]:
        """Every frame's type, in frame order (one C pass)."""
        return list(map(FRAME_TYPES.__getitem__, self.types))

    def _set(self, mfn: int, owner: int, kind: int) -> None:
        """One frame handed over: its owner and type code, no mappings (a stale bit stays)."""
        self.owners[mfn] = owner
        self.types[mfn] = kind
        self.map_counts[mfn] = self.writable_counts[mfn] = 0
        self.no_exec[mfn] &= STALE

    def _clear_hints(self) -> None:
        """Forget the allocation hints (always safe: they are lower bounds only).

        Why hints: allocation used to scan every frame of RAM, which dominated
        the boot of big machines. ``_free_hint``: no FREE frame lies below it.
        ``_pool_hint[owner]``: no POOL frame of ``owner`` lies below that index
        of its (sorted) owned list. Both only ever skip frames of the wrong
        type, so allocation takes the same frames as a full scan: the lowest
        fitting ones, a deterministic order the traces and snapshots rely on.
        """
        self._free_hint = 0
        self._pool_hint: dict[int, int] = {}

    def scan_index(self) -> tuple[dict[int, int], dict[int, list[int]]]:
        """Pool counts and owner index counted from the entries (what :meth:`index` must equal,
        leaving out owners with no pool frame left)."""
        pools: dict[int, int] = {}
        owned: dict[int, list[int]] = {}
        types = self.types
        for mfn, owner in enumerate(self.owners):
            if owner != NO_OWNER:
                owned.setdefault(owner, []).append(mfn)
            if types[mfn] == POOL_CODE:
                pools[owner] = pools.get(owner, 0) + 1
        return pools, owned

    def index(self) -> tuple[dict[int, int], dict[int, list[int]]]:
        """The pool counts and owner index as they are (a snapshot keeps them with the entries)."""
        return self._pool, self._owned

    def set_index(self, index: tuple[dict[int, int], dict[int, list[int]]]) -> None:
        """Take pool counts and an owner index that match the entries (a snapshot's, restored)."""
        self._pool, self._owned = index
        self._clear_hints()

    def owned(self, owner: int) -> list[int]:
        """The frames ``owner`` holds, in frame order (ring 0's are SPK_OWNER's)."""
        return self._owned.get(owner, [])

    def __getitem__(self, mfn: int) -> Frame:
        return self.entries[mfn]

    def valid(self, mfn: int) -> bool:
        return 0 <= mfn < len(self.types)

    # -- the global pool -------------------------------------------------
    def reserve_spk(self, count: int) -> list[int]:
        """Take ``count`` free frames for ring 0 (lowest first)."""
        mfns = self._take_free(count, "SPK structures")
        for mfn in mfns:
            self._set(mfn, SPK_OWNER, TYPE_CODE[FrameType.SPK])
        self._owned.setdefault(SPK_OWNER, []).extend(mfns)
        self._owned[SPK_OWNER].sort()
        return mfns

    def grant(self, owner: int, count: int, start_hint: int = 0, *, exact: bool = False) -> list[int]:
        """Grant ``count`` free frames to partition ``owner`` as its quota pool.

        Frames are taken as one contiguous run when possible (first fit from
        ``start_hint``), else lowest-first; with ``exact`` the run must
        start at ``start_hint``. Errors: :class:`OutOfMemory`.
        """
        if exact:
            wanted = range(start_hint, start_hint + count)
            if wanted.stop > len(self.types) or any(self.types[m] != FREE_CODE for m in wanted):
                raise OutOfMemory(f"frames {start_hint:#x}..{wanted.stop:#x} are not free")
        run = start_hint if exact else self._find_run(count, start_hint)
        mfns = list(range(run, run + count)) if run >= 0 else self._take_free(count, f"partition {owner}")
        for mfn in mfns:
            self.ram.zero_frame(mfn)
            self._set(mfn, owner, POOL_CODE)
        self._pool[owner] = self._pool.get(owner, 0) + len(mfns)
        self._owned.setdefault(owner, []).extend(mfns)
        self._owned[owner].sort()
        self._pool_hint.pop(owner, None)  # new frames may sort below the hint
        return mfns

    def reclaim(self, owner: int) -> int:
        """Return every frame of ``owner`` to the global pool; returns how many.

        Errors: :class:`InternalError` if one is still mapped (the caller must
        tear the address spaces down first).
        """
        return self._release(owner, keep=False)

    def _release(self, owner: int, *, keep: bool) -> int:
        """Zero every frame of ``owner``: back to its pool (``keep``) or to free RAM.

        Nothing changes unless every frame can go (none is still mapped).
        """
        mapped = next((mfn for mfn in self.owned(owner) if self.map_counts[mfn]), None)
        if mapped is not None:
            raise InternalError(f"frame {mapped:#x} of {owner} released while mapped")
        owned = self.owned(owner)
        for mfn in owned:
            self.ram.zero_frame(mfn)
            self._set(mfn, owner if keep else NO_OWNER, POOL_CODE if keep else FREE_CODE)
        count = len(owned)
        self._pool_hint.pop(owner, None)
        if owned and not keep:
            self._free_hint = min(self._free_hint, owned[0])
        if keep:
            self._pool[owner] = count
        else:
            self._pool.pop(owner, None)
            self._owned.pop(owner, None)
        return count

    def _find_run(self, count: int, start_hint: int) -> int:
        types = self.types
        n = len(types)
        for origin in (max(start_hint, self._free_hint), self._free_hint):
            run_start, run_len = -1, 0
            for mfn in range(origin, n):
                if types[mfn] == FREE_CODE:
                    if run_len == 0:
                        run_start = mfn
                    run_len += 1
                    if run_len == count:
                        return run_start
                else:
                    run_len = 0
        return -1

    def _take_free(self, count: int, what: str) -> list[int]:
        types = self.types
        free: list[int] = []
        for mfn in range(self._free_hint, len(types)):
            if types[mfn] == FREE_CODE:
                free.append(mfn)
                if len(free) == count:
                    break
        if len(free) < count:
            raise OutOfMemory(f"{what}: {count} frames asked, {len(free)} free")
        if free:
            self._free_hint = free[-1] + 1
        return free

    # -- a partition's pool ---------------------------------------------
    def pool_take(self, owner: int, new_type: FrameType, contiguous: int = 1) -> int:
        """Take frames of ``owner``'s pool and retype them (zeroed).

        With ``contiguous`` > 1 the frames form one run; the first is returned.
        Errors: :class:`OutOfMemory` when the quota is used up.
        """
        # The owner's frames in frame order, from the first that may be POOL:
        # the lowest run of ``contiguous`` adjacent POOL frames, as a scan of
        # all RAM would find, in O(frames of the owner) at worst.
        types, new_code = self.types, TYPE_CODE[new_type]
        owned = self.owned(owner)
        start = self._pool_hint.get(owner, 0)
        first_pool = -1  # index in owned of the first POOL frame met: the next hint
        run_start, run_len, previous = -1, 0, -2
        for i in range(start, len(owned)):
            mfn = owned[i]
            if types[mfn] == POOL_CODE:
                if first_pool < 0:
                    first_pool = i
                if run_len == 0 or mfn != previous + 1:
                    run_start, run_len = i, 0
                run_len += 1
                previous = mfn
                if run_len == contiguous:
                    for m in owned[run_start : run_start + contiguous]:
                        self.ram.zero_frame(m)
                        types[m] = new_code
                    self._pool[owner] -= contiguous
                    self._pool_hint[owner] = i + 1 if first_pool == run_start else first_pool
                    return owned[run_start]
            else:
                run_len = 0
        self._pool_hint[owner] = len(owned) if first_pool < 0 else first_pool
        raise OutOfMemory(f"partition {owner}: quota exhausted ({contiguous} frame(s) asked)")

    def pool_return(self, mfn: int) -> None:
        """Give a frame back to its owner's pool (zeroed)."""
        if self.map_counts[mfn] or self.writable_counts[mfn]:
            raise InternalError(f"frame {mfn:#x} returned to pool while mapped")
        self.ram.zero_frame(mfn)
        self.types[mfn] = POOL_CODE
        owner = self.owners[mfn]
        self._pool[owner] = self._pool.get(owner, 0) + 1
        hint = self._pool_hint.get(owner)
        if hint is not None:
            self._pool_hint[owner] = min(hint, bisect.bisect_left(self.owned(owner), mfn))

    def reset_pool(self, owner: int) -> int:
        """Give every frame of ``owner`` back to its own pool, zeroed (a restart).

        Errors: :class:`InternalError` if one is still mapped.
        """
        return self._release(owner, keep=True)

    def retype(self, types: dict[int, FrameType]) -> None:
        """Give pool frames of one owner the types they had on another host (an import).

        Each frame must be POOL and not mapped; only DATA and PAGE_TABLE are
        given. Errors: InternalError naming the first frame that is not.
        """
        for mfn, new in types.items():
            if (
                self.types[mfn] != POOL_CODE
                or self.map_counts[mfn]
                or new not in (FrameType.DATA, FrameType.PAGE_TABLE)
            ):
                raise InternalError(f"frame {mfn:#x} cannot become {new.value}")
        for mfn, new in types.items():
            self.types[mfn] = TYPE_CODE[new]
            self._pool[self.owners[mfn]] -= 1

    def pool_free_count(self, owner: int) -> int:
        return self._pool.get(owner, 0)

    def check_invariant(self) -> None:
        """Assert the page-table/writable rule for every frame.

        Errors: :class:`InternalError` naming the frame that breaks it.
        """
        types, maps = self.types, self.map_counts
        for mfn, writable in enumerate(self.writable_counts):
            if types[mfn] == PAGE_TABLE_CODE and writable:
                raise InternalError(f"frame {mfn:#x} is a page table and mapped writable")
            if writable > maps[mfn]:
                raise InternalError(f"frame {mfn:#x}: more writable mappings than mappings")
            if maps[mfn] < 0:
                raise InternalError(f"frame {mfn:#x}: negative map count")
