"""Moving a partition between machines: dirty tracking, export, import.

Ring 0's part of live migration (ring 1 runs the protocol:
:mod:`spgs.migration`). Three mechanisms:

* :class:`DirtyLog`, "log-dirty mode" by comparison: ring 0 keeps a copy of
  each frame of the partition as the destination last received it (zeros
  before the first round, which is what a freshly granted frame holds there)
  and reports the frames whose bytes differ, one ``memcmp`` per run of 16
  frames that did not change. It finds every change, whoever made it (the
  guest, or ring 0 writing on its behalf), and never sends a frame written
  back with the bytes it had. Its cost is one comparison of the quota per
  round (about 0.15 ms per MiB, measured once), paid by the host, never by the guest:
  write-protecting the frames would cost a fault per first write in the
  guest's virtual time and change what it observes.
* :func:`export_state`: everything of the partition that is not a frame's
  bytes (frame types by guest frame number, its page-table roots, vCPU
  context, timers, entries, ports with their queued messages, counters,
  measurements), as a JSON-able dict of plain values.
* :func:`import_partition`: builds the partition on another machine from
  that state and the frames' bytes. It grants a fresh quota (contiguous when
  it can), keeps the guest's frame numbers (:class:`spk._frames.GuestFrames`)
  and rewrites every page-table entry to the frames that hold them here:
  ring 0 owns the tables, so it can. What isolation rests on is checked,
  never assumed: every table reached is one of the partition's PAGE_TABLE
  frames, every leaf maps one of its DATA frames, no large pages, the map
  counts are recounted from the tables; the vCPU is built from ring 0's own
  template for its CPL 2 or 3 (segment state, CR0, CR4, EFER, GDTR, IDTR,
  LDTR, TR, DR7, exception state: ring 0's) and only the guest-visible
  registers of the payload are written over it, each checked (CS and SS
  must be the template's, data selectors ones that CPL can load, RIP and the
  FS/GS bases canonical, RFLAGS masked as IRET masks it, MXCSR without
  reserved bits); CR3 must be one of its spaces. Anything else is a
  :class:`MigrationError` and nothing on the machine has changed.

The wire form (:class:`PartitionExport`, ``spk-migration/2``) is explicit,
never pickled: a magic, a kind byte, a zlib-compressed JSON header of typed
fields (checked field by field on import), then the frames as raw 4 KiB
pages named by guest frame number. The vCPU travels by name
(``state.cpu``: the general registers, RIP, RFLAGS, selectors, FS/GS bases,
x87 control/status/tag/pointers and FP0-7, MXCSR, XMM0-15; see
:data:`spk._engine.GUEST_REGISTERS`), never as the engine's saved structure,
which holds host pointers: the same partition state gives the same bytes on
any host. ``spk-migration/1`` payloads (which carried that structure) are
refused with rule ``format``. Ring 1 may authenticate the bytes between the
hosts of a fleet (:mod:`spgs.migration` adds an HMAC).

Time: the partition's clock is the host's (TIME_NOW, absolute timer
deadlines), so the hosts of a fleet keep virtual time in lockstep; an import
onto a host whose clock is behind the moment the partition stopped is
refused (``clock_behind``): its time would run backwards.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import struct
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spk._channels import Channel, ChannelKind, Direction, Port
from spk._engine import GUEST_REGISTERS
from spk._frames import PAGE_TABLE_CODE, FrameType, GuestFrames, guest_frame
from spk._image import LoadImage, Segment
from spk._measure import LOG_MAX, MeasurementEvent, Measurements, canonical
from spk._paging import KERNEL_SLOT, SPK_SLOT, AddressSpace, KernelHalf
from spk._partition import Counters, KernelFault, Module, Partition, State
from spk._x86 import PTE_ADDR, PTE_NX, PTE_P, PTE_W
from spk.abi import (
    PAGE_SHIFT,
    PAGE_SIZE,
    RFLAGS_FIXED,
    RFLAGS_USER_MASK,
    SEL_GUEST_DATA,
    SEL_USER_DATA,
    EntryKind,
    Register,
)
from spk.errors import MigrationError, OutOfMemory

if TYPE_CHECKING:
    from spk._machine import Machine

FORMAT = "spk-migration/2"
MAGIC = b"SPKMIG\x00\x02"
#: Earlier wire forms, refused by name: /1 carried the engine's raw saved CPU structure.
_OLD_MAGICS = {b"SPKMIG\x00\x01": "spk-migration/1"}
KIND_PAGES, KIND_STATE = 0, 1
#: The largest header a payload may carry once decompressed (a zip bomb stops here).
HEADER_MAX = 1 << 24
_PTE_PS = 1 << 7
_TYPES = {"pool": FrameType.POOL, "data": FrameType.DATA, "page_table": FrameType.PAGE_TABLE}
_LIBC = ctypes.CDLL(None)
_MEMCMP = _LIBC.memcmp
_MEMCMP.restype = ctypes.c_int
_MEMCMP.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_RUN = 16
#: RFLAGS a guest kernel may hold (CPL 2 cannot set IF: a popf that tries is ignored).
_KERNEL_RFLAGS = 0x2
_ZERO = bytes(PAGE_SIZE)
_U64 = (1 << 64) - 1
#: address-space handles a payload may name (ring 0 counts them up from 1)
_HANDLE_MAX = 1 << 32
_RUNNABLE = (State.READY, State.BLOCKED)


# ---------------------------------------------------------------------------
# Dirty tracking
# ---------------------------------------------------------------------------
class DirtyLog:
    """The frames of one partition that differ from the destination's copy.

    Errors: MigrationError (``state``) when the partition is gone or its
    quota changed under the log (it was restarted elsewhere, destroyed).
    """

    def __init__(self, machine: Machine, pid: int) -> None:
        self._machine = machine
        self.pid = pid
        self._mfns = list(machine.frames.owned(pid))
        self._shadow = bytearray(len(self._mfns) * PAGE_SIZE)
        self._shadow_address = ctypes.addressof(ctypes.c_char.from_buffer(self._shadow))
        #: whether each frame was a page table when last sent (its bytes went translated)
        self._sent_table = [False] * len(self._mfns)

    def _check(self) -> Partition:
        p = self._machine.partitions.get(self.pid)
        if p is None or self._machine.frames.owned(self.pid) != self._mfns:
            raise MigrationError(f"partition {self.pid} is gone or its quota changed", "state")
        return p

    def _changed(self) -> list[int]:
        """Indices (in quota order) of the frames whose bytes differ from the shadow."""
        ram, shadow, mfns = self._machine.ram.address, self._shadow_address, self._mfns
        changed: list[int] = []
        k, count = 0, len(mfns)
        while k < count:
            run = 1
            while run < _RUN and k + run < count and mfns[k + run] == mfns[k] + run:
                run += 1
            here, there = ram + (mfns[k] << PAGE_SHIFT), shadow + k * PAGE_SIZE
            if _MEMCMP(here, there, run * PAGE_SIZE):
                changed += [
                    k + i for i in range(run) if _MEMCMP(here + i * PAGE_SIZE, there + i * PAGE_SIZE, PAGE_SIZE)
                ]
            k += run
        # A frame that became a page table, or stopped being one, with the same bytes: its
        # copy there was sent in the other form (translated or not), so it goes again.
        types = self._machine.frames.types
        retyped = [k for k, mfn in enumerate(mfns) if (types[mfn] == PAGE_TABLE_CODE) != self._sent_table[k]]
        return sorted(set(changed).union(retyped)) if retyped else changed

    def pending(self) -> int:
        """How many frames the next :meth:`collect` would return."""
        self._check()
        return len(self._changed())

    def collect(self) -> dict[int, bytes]:
        """The changed frames' bytes by guest frame number; from now on they count as sent."""
        p = self._check()
        view, out = self._machine.ram.view, {}
        types = self._machine.frames.types
        for k in self._changed():
            mfn = self._mfns[k]
            page = bytes(view[mfn << PAGE_SHIFT : (mfn + 1) << PAGE_SHIFT])
            self._shadow[k * PAGE_SIZE : (k + 1) * PAGE_SIZE] = page
            self._sent_table[k] = types[mfn] == PAGE_TABLE_CODE
            out[guest_frame(p.guest_frames, mfn)] = outgoing(p.guest_frames, page, self._sent_table[k])
        return out

    @property
    def frames(self) -> int:
        """The partition's quota, in frames (what a stop-and-copy of it all would move)."""
        return len(self._mfns)

    def sent_pages(self) -> dict[int, bytes]:
        """Every non-zero frame as last collected, by guest frame number (what the destination holds)."""
        p = self._check()
        out = {}
        for k, mfn in enumerate(self._mfns):
            page = bytes(self._shadow[k * PAGE_SIZE : (k + 1) * PAGE_SIZE])
            if page != _ZERO:
                out[guest_frame(p.guest_frames, mfn)] = outgoing(p.guest_frames, page, self._sent_table[k])
        return out


def outgoing(frames: GuestFrames | None, page: bytes, is_table: bool) -> bytes:
    """A frame's bytes as they travel: a page table's entries name the partition's own frame numbers.

    On the host that created the partition they are its machine frames
    already; after a migration ring 0 translates them back (the SPK slot of
    a PML4 names no frame of the partition and is left: the destination
    sets it).
    """
    if frames is None or not is_table:
        return page
    words = list(struct.unpack(f"<{PAGE_SIZE // 8}Q", page))
    to_guest = frames.to_guest
    for i, entry in enumerate(words):
        if entry & PTE_P:
            gfn = to_guest.get((entry & PTE_ADDR) >> PAGE_SHIFT)
            if gfn is not None:
                words[i] = (entry & ~PTE_ADDR) | (gfn << PAGE_SHIFT)
    return struct.pack(f"<{PAGE_SIZE // 8}Q", *words)


# ---------------------------------------------------------------------------
# The wire form
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionExport:
    """One migration payload: a round of pages, or a partition's state with pages.

    ``state`` is None for a pre-copy round; ``pages`` maps guest frame
    numbers to 4 KiB pages.
    """

    partition: str
    state: dict[str, Any] | None
    pages: dict[int, bytes] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        header = {"format": FORMAT, "partition": self.partition, "state": self.state}
        packed = zlib.compress(canonical(header))
        gfns = sorted(self.pages)
        out = [MAGIC, struct.pack("<BII", KIND_STATE if self.state is not None else KIND_PAGES, len(packed),
                                  len(gfns)), packed]  # fmt: skip
        out.append(struct.pack(f"<{len(gfns)}Q", *gfns))
        out += [self.pages[g] for g in gfns]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionExport:
        """Parse a payload. Errors: MigrationError (``format``, ``malformed``)."""
        view = memoryview(data)
        old = _OLD_MAGICS.get(bytes(view[: len(MAGIC)]))
        if old is not None:
            raise MigrationError(f"an {old} payload: this host speaks {FORMAT} only (the vCPU travels "
                                 "by named registers since /2); upgrade the source host", "format")  # fmt: skip
        if bytes(view[: len(MAGIC)]) != MAGIC:
            raise MigrationError(f"not an {FORMAT} payload (bad magic)", "format")
        offset = len(MAGIC)
        try:
            kind, header_len, count = struct.unpack_from("<BII", view, offset)
        except struct.error:
            raise MigrationError("payload truncated in its preamble") from None
        offset += 9
        end_pages = offset + header_len + 8 * count + PAGE_SIZE * count
        if kind not in (KIND_PAGES, KIND_STATE) or len(view) != end_pages:
            raise MigrationError(f"payload of {len(view)} bytes does not match its preamble ({end_pages})")
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(view[offset : offset + header_len], HEADER_MAX)
            if inflater.unconsumed_tail:
                raise MigrationError(f"payload header larger than {HEADER_MAX} bytes")
            if not inflater.eof or inflater.unused_data:
                raise MigrationError("payload header: the compressed stream is cut short or followed by bytes")
            # JSON nested deeper than the interpreter recurses is a RecursionError, not a ValueError;
            # NaN and Infinity are not JSON.
            header = json.loads(raw, parse_constant=_no_constant)
        except (zlib.error, ValueError, RecursionError) as exc:
            raise MigrationError(f"payload header unreadable: {type(exc).__name__}") from None
        offset += header_len
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise MigrationError(f"payload header is not {FORMAT}", "format")
        name, state = header.get("partition"), header.get("state")
        if not isinstance(name, str) or (state is not None and not isinstance(state, dict)):
            raise MigrationError("payload header: partition must be a string, state an object")
        if (state is None) != (kind == KIND_PAGES):
            raise MigrationError("payload kind and header disagree")
        gfns = struct.unpack_from(f"<{count}Q", view, offset)
        offset += 8 * count
        if len(set(gfns)) != count:
            raise MigrationError("payload names a frame twice")
        pages = {g: bytes(view[offset + i * PAGE_SIZE : offset + (i + 1) * PAGE_SIZE]) for i, g in enumerate(gfns)}
        return cls(name, state, pages)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def export_state(machine: Machine, pid: int) -> dict[str, Any]:
    """Everything of partition ``pid`` but its frames' bytes, in its own frame numbers.

    Errors: MigrationError (``state``) while the vCPU runs.
    """
    if machine.running:
        raise MigrationError("a partition is exported between runs only", "state")
    p = machine.partitions[pid]
    gf = p.guest_frames

    def g(mfn: int) -> int:
        return guest_frame(gf, mfn)

    frames = machine.frames
    ctx = p.context
    fault = p.fault
    image = p.image
    return {
        "name": p.name,
        "pid": pid,
        "now": machine.now,
        "origin_frames": gf.origin_frames if gf is not None else machine.ram.frames,
        "platform_key": (machine.attestation_public_key or b"").hex(),
        "frames": [[g(m), frames[m].type.value] for m in frames.owned(pid)],
        "kernel": {"pdpt": g(p.kernel.pdpt), "tables": [g(t) for t in p.kernel.tables],
                   "generation": p.kernel.generation},
        "spaces": [[h, g(s.pml4), [g(t) for t in s.tables]] for h, s in p.spaces.items()],
        # The guest-visible registers by name, never the engine's saved structure (host pointers).
        "cpu": machine.engine.guest_state_read(ctx),
        "cr3": g(ctx.cr3 >> PAGE_SHIFT),
        "cpl": ctx.cpl,
        "state": p.state.value,
        "paused_from": p.paused_from.value if p.paused_from is not None else None,
        "current_space": p.current_space,
        "next_handle": p.next_handle,
        "entries": [[int(k), v] for k, v in p.entries.items()],
        "kernel_stack": p.kernel_stack,
        "timer_deadline": p.timer_deadline,
        "timer_pending": p.timer_pending,
        "exit_code": p.exit_code,
        "fault": None if fault is None else [fault.kind, fault.vector, fault.rip, fault.address, fault.detail],
        "counters": dict(vars(p.counters)),
        "console_buffer": _b64(bytes(p.console_buffer)),
        "measurements": {"registers": [r.hex() for r in p.measurements.registers],
                         "events": [e.as_json() for e in p.measurements.events]},
        "ports": [_port_record(p, port) for port in p.ports.values()],
        "open_ports": [port.name for port in p.open_ports],
        "may_manage": p.may_manage,
        "restarts": p.restarts,
        "pending_traps": [list(t) for t in p.pending_traps],
        "modules": [[m.name, m.first_mfn, m.pages, m.size] for m in p.modules],
        "image": None if image is None else {
            "entry": image.entry,
            "segments": [[s.vaddr, s.memsz, s.writable, s.executable] for s in image.segments],
        },
    }


def _port_record(p: Partition, port: Port) -> dict[str, Any]:
    ch = port.channel
    return {
        "name": port.name, "direction": port.direction.value, "kind": ch.kind.value,
        "message_size": ch.message_size, "depth": ch.depth, "refresh": ch.refresh,
        "queue": [_b64(m) for m in port.queue],
        "latest": _b64(ch.latest) if ch.latest is not None else None, "written_at": ch.written_at,
    }  # fmt: skip


def detach(machine: Machine, pid: int) -> None:
    """Take a partition off this machine after its export: tables, frames, ports go.

    Its id stays declared under its name (it may come back). Errors:
    MigrationError (``state``) while the vCPU runs.
    """
    if machine.running:
        raise MigrationError("a partition leaves between runs only", "state")
    machine.destroy_partition(pid, event="migrated_out")


# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------
class _Reader:
    """Typed access to a header's fields: every wrong field is a MigrationError naming it."""

    def __init__(self, data: Mapping[str, Any], where: str = "state") -> None:
        self.data, self.where = data, where

    def fail(self, key: str, what: str) -> MigrationError:
        return MigrationError(f"payload {self.where}.{key}: {what}")

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise self.fail(key, "missing")
        return self.data[key]

    def integer(self, key: str, lo: int = 0, hi: int = (1 << 64) - 1, *, optional: bool = False) -> Any:
        value = self.get(key)
        if optional and value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self.fail(key, f"must be an integer in {lo}..{hi}")
        return value

    def text(self, key: str, *, optional: bool = False) -> Any:
        value = self.get(key)
        if optional and value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def items(self, key: str) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(key, "must be a list")
        return value

    def obj(self, key: str) -> _Reader:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "must be an object")
        return _Reader(value, f"{self.where}.{key}")

    def blob(self, key: str, *, optional: bool = False) -> Any:
        text = self.text(key, optional=optional)
        if text is None:
            return None
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise self.fail(key, "must be base64") from None


def _u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64


def _ints(values: Any, what: str, size: int | None = None) -> list[int]:
    if not isinstance(values, list) or not all(_u64(v) for v in values):
        raise MigrationError(f"payload {what}: must be a list of non-negative integers")
    if size is not None and len(values) != size:
        raise MigrationError(f"payload {what}: must have {size} items")
    return values


@dataclass
class _Plan:
    """A checked import, before anything of the machine changes."""

    name: str
    pid: int
    types: dict[int, FrameType]  #: guest frame -> type
    origin_frames: int


def import_partition(
    machine: Machine,
    export: PartitionExport,
    pages: Mapping[int, bytes],
    *,
    pid: int | None = None,
    port_channels: Mapping[str, int] | None = None,
) -> int:
    """Build the exported partition on ``machine``; returns its id here.

    ``pages`` are every frame the destination received (all rounds, latest
    bytes of each); frames not among them are zero. ``pid`` takes a declared
    id of the same name (else a new one). Each port joins the channel
    ``port_channels`` names for it, or a new channel like its old one.
    The partition's CONFIG register is extended with a ``migrated`` event
    naming both platform keys. Errors: MigrationError (nothing changed),
    OutOfMemory (no room for the quota).
    """
    if export.state is None:
        raise MigrationError("a pre-copy round holds no partition state", "state")
    if machine.running:
        raise MigrationError("a partition arrives between runs only", "state")
    r = _Reader(export.state)
    name = r.text("name")
    if name != export.partition or not name or len(name.encode()) >= 32:
        raise MigrationError(f"payload names partition {export.partition!r} and {name!r}")
    stopped_at = r.integer("now")
    if machine.now < stopped_at:
        raise MigrationError(f"this host's clock ({machine.now}) is behind the partition's ({stopped_at})",
                             "clock_behind")  # fmt: skip
    if pid is None:
        # Ring 1 finds partitions by name: a second one called like a running one would be taken for it.
        if any(q.name == name for q in machine.partitions.values()):
            raise MigrationError(f"a partition named {name!r} runs here already", "state")
        pid = machine.declare_partition(name)
        fresh = True
    else:
        fresh = False
        if machine.declared.get(pid) != name:
            raise MigrationError(f"partition {pid} is not declared here under the name {name!r}", "state")
    try:
        return _build(machine, r, pages, pid, port_channels or {}, stopped_at)
    except Exception:
        if fresh:
            machine.declared.pop(pid, None)
        raise


def _build(
    machine: Machine, r: _Reader, pages: Mapping[int, bytes], pid: int, port_channels: Mapping[str, int],
    stopped_at: int,
) -> int:  # fmt: skip
    origin = r.integer("origin_frames", 1, 1 << 40)
    types: dict[int, FrameType] = {}
    for item in r.items("frames"):
        if not (isinstance(item, list) and len(item) == 2 and _u64(item[0])
                and isinstance(item[1], str) and item[1] in _TYPES):  # fmt: skip
            raise MigrationError("payload state.frames: each item is [frame, pool|data|page_table]", "frames")
        if not 0 <= item[0] < origin or item[0] in types:
            raise MigrationError(f"payload state.frames: frame {item[0]!r} repeated or beyond its RAM", "frames")
        types[item[0]] = _TYPES[item[1]]
    if not types:
        raise MigrationError("payload state.frames: a partition owns frames", "frames")
    for gfn, page in pages.items():
        kind = types.get(gfn)
        # A frame sent while it held data and given back since is POOL now: its last page is zeros.
        if kind is None or len(page) != PAGE_SIZE or (kind is FrameType.POOL and page != _ZERO):
            raise MigrationError(f"page for frame {gfn:#x}, which is not a data or table frame of it", "frames")
    ports = _check_ports(machine, r.items("ports"), port_channels, r.items("open_ports"), stopped_at)
    # Read now: a field found wrong after the frames are granted would leave a partition half built.
    source_key = r.text("platform_key")
    if len(source_key) not in (0, 64) or not all(c in "0123456789abcdef" for c in source_key):
        raise MigrationError("payload state.platform_key: an Ed25519 public key in hex, or empty", "state")
    # Everything below changes the machine; errors from here on undo it.
    frames = machine.frames
    try:
        granted = frames.grant(pid, len(types))
    except OutOfMemory as exc:
        raise MigrationError(f"no room here for a quota of {len(types)} frames: {exc}", "frames") from None
    p: Partition | None = None
    try:
        gfns = sorted(types)
        gf = GuestFrames(dict(zip(gfns, granted, strict=True)), dict(zip(granted, gfns, strict=True)), origin)
        _load_frames(machine, gf, types, pages)
        p = _partition(machine, r, gf, pid)
        _relocate_tables(machine, p, gf, types)
    except Exception:
        if p is not None:
            p.context.free()
        for mfn in granted:
            frames.coherence.set_counts(mfn, 0, 0, 0)
            machine.ram.zero_frame(mfn)  # free RAM as it was: no byte of a refused payload stays
        frames.reclaim(pid)
        raise
    _attach_ports(machine, p, ports, r.items("open_ports"))
    _adopt(machine, p, source_key, stopped_at)
    return pid


def _load_frames(machine: Machine, gf: GuestFrames, types: dict[int, FrameType], pages: Mapping[int, bytes]) -> None:
    frames = machine.frames
    frames.retype({gf.to_machine[g]: t for g, t in types.items() if t is not FrameType.POOL})
    for gfn, page in pages.items():
        machine.ram.write(gf.to_machine[gfn] << PAGE_SHIFT, page)


def _frame(gf: GuestFrames, gfn: Any, what: str, types: Mapping[int, FrameType], want: FrameType) -> int:
    if not _u64(gfn) or types.get(gfn) is not want:
        raise MigrationError(f"payload {what}: frame {gfn!r} is not a {want.value} frame of the partition",
                             "page_table")  # fmt: skip
    return gf.to_machine[gfn]


def _partition(machine: Machine, r: _Reader, gf: GuestFrames, pid: int) -> Partition:
    types = {gf.to_guest[m]: machine.frames[m].type for m in gf.to_guest}
    pt = FrameType.PAGE_TABLE
    kr = r.obj("kernel")
    kernel = KernelHalf.__new__(KernelHalf)
    kernel.owner, kernel.frames = pid, machine.frames
    kernel.pdpt = _frame(gf, kr.get("pdpt"), "kernel.pdpt", types, pt)
    kernel.tables = [_frame(gf, t, "kernel.tables", types, pt) for t in kr.items("tables")]
    kernel.generation = kr.integer("generation")
    spaces: dict[int, AddressSpace] = {}
    for item in r.items("spaces"):
        if not (isinstance(item, list) and len(item) == 3 and _u64(item[0]) and item[0] < _HANDLE_MAX
                and isinstance(item[2], list)):  # fmt: skip
            raise MigrationError("payload state.spaces: each item is [handle, pml4, tables]", "page_table")
        space = AddressSpace.__new__(AddressSpace)
        space.owner, space.frames, space.ram, space.kernel = pid, machine.frames, machine.ram, kernel
        space._on_change, space._on_unmap = machine.cr3_changed, machine.page_unmapped
        space.pml4 = _frame(gf, item[1], "spaces.pml4", types, pt)
        space.tables = [_frame(gf, t, "spaces.tables", types, pt) for t in item[2]]
        if item[0] in spaces or not space.tables or space.tables[0] != space.pml4:
            raise MigrationError(f"payload state.spaces: space {item[0]} repeated or without its PML4", "page_table")
        spaces[item[0]] = space
    if 0 not in spaces:
        raise MigrationError("payload state.spaces: no boot space (handle 0)", "page_table")
    listed = [kernel.pdpt, *kernel.tables] if kernel.pdpt not in kernel.tables else list(kernel.tables)
    for s in spaces.values():
        listed += s.tables
    if sorted(listed) != sorted(set(listed)) or set(listed) != {gf.to_machine[g] for g, t in types.items() if t is pt}:
        raise MigrationError("payload state: the page-table frames are not exactly its spaces' tables", "page_table")
    context = _context(machine, r, gf, types, spaces)
    p = Partition(pid=pid, name=r.text("name"), quota=len(types), kernel=kernel, spaces=spaces, context=context)
    try:
        _fill(p, r, gf)
    except Exception:
        context.free()
        raise
    p.guest_frames = gf
    return p


def _canonical(value: int) -> bool:
    """A 48-bit canonical address (bits 63..47 all equal)."""
    return value < 1 << 47 or value >= 0xFFFF_8000_0000_0000


#: Data selectors a guest at each CPL can load (null, ring 0's DPL 2 and DPL 3 data
#: descriptors at an RPL the CPL may use): anything else no guest could hold.
_DATA_SELECTORS = {
    2: frozenset({0, 1, 2, 3} | {SEL_GUEST_DATA & ~3 | rpl for rpl in (0, 1, 2)}
                 | {SEL_USER_DATA & ~3 | rpl for rpl in (0, 1, 2, 3)}),
    3: frozenset({0, 1, 2, 3} | {SEL_USER_DATA & ~3 | rpl for rpl in (0, 1, 2, 3)}),
}  # fmt: skip
#: The widest value each named register may carry (mxcsr: reserved bits would #GP on ldmxcsr).
_REGISTER_MAX = {name: (1 << (8 * width)) - 1 for name, width in GUEST_REGISTERS} | {"mxcsr": 0xFFFF, "fop": 0x7FF}


def _cpu_values(machine: Machine, r: _Reader, cpl: int, template: Any) -> dict[str, int]:
    """The named guest registers of ``state.cpu``, checked one by one."""
    cpu = r.obj("cpu")
    names = {name for name, _width in GUEST_REGISTERS}
    unknown = sorted(str(k) for k in cpu.data if k not in names)
    if unknown:
        raise MigrationError(f"payload state.cpu: unknown registers {', '.join(unknown)[:200]}", "context")
    values: dict[str, int] = {}
    for name, _width in GUEST_REGISTERS:
        value, top = cpu.data.get(name), _REGISTER_MAX[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top):
            raise MigrationError(f"payload state.cpu.{name}: must be an integer in 0..{top:#x}", "context")
        values[name] = value
    own = machine.engine.guest_state_read(template)
    for name in ("cs", "ss"):
        if values[name] != own[name]:
            raise MigrationError(f"payload state.cpu.{name}: {values[name]:#x} is not ring 0's selector for "
                                 f"CPL {cpl} ({own[name]:#x})", "context")  # fmt: skip
    for name in ("ds", "es", "fs", "gs"):
        if values[name] not in _DATA_SELECTORS[cpl]:
            raise MigrationError(f"payload state.cpu.{name}: {values[name]:#x} is not a data selector CPL {cpl} "
                                 "can load", "context")  # fmt: skip
    for name in ("rip", "fs_base", "gs_base"):
        if not _canonical(values[name]):
            raise MigrationError(f"payload state.cpu.{name}: {values[name]:#x} is not a canonical address",
                                 "context")  # fmt: skip
    # RFLAGS as IRET would let the guest have it: no IOPL, TF, VM...; IF fixed by the CPL.
    values["rflags"] = (values["rflags"] & RFLAGS_USER_MASK) | (RFLAGS_FIXED if cpl == 3 else _KERNEL_RFLAGS)
    return values


def _context(
    machine: Machine, r: _Reader, gf: GuestFrames, types: Mapping[int, FrameType], spaces: dict[int, AddressSpace]
) -> Any:
    """The vCPU: ring 0's own template for its CPL with the payload's named guest registers written over it."""
    cpl = r.integer("cpl", 2, 3)
    cr3 = _frame(gf, r.get("cr3"), "cr3", types, FrameType.PAGE_TABLE)
    if cr3 not in {s.pml4 for s in spaces.values()}:
        raise MigrationError("payload state.cr3: not one of the partition's spaces", "context")
    templates = machine._templates
    template = templates.cpl2 if cpl == 2 else templates.cpl3
    values = _cpu_values(machine, r, cpl, template)
    context = machine.engine.new_context()
    try:
        # CS and SS are the template's already (checked above): its hidden segment state stays whole.
        machine.engine.guest_state_write(context, template, {k: v for k, v in values.items() if k not in ("cs", "ss")})
    except Exception:
        context.free()
        raise
    context.cr3 = cr3 << PAGE_SHIFT
    return context


def _fill(p: Partition, r: _Reader, gf: GuestFrames) -> None:
    """Every plain field of the partition, checked."""
    # Types first, then the lookups: a list or object where a string or number belongs is refused
    # by name, never met by a hash or an enum lookup (TypeError: unhashable).
    entries = r.items("entries")
    if not all(isinstance(e, list) and len(e) == 2 and _u64(e[0]) and _u64(e[1]) for e in entries):
        raise MigrationError("payload state.entries: each item is [kind, 64-bit unsigned address]", "state")
    try:
        p.state = State(r.text("state"))
        paused = r.text("paused_from", optional=True)
        p.paused_from = State(paused) if paused is not None else None
        p.entries = {EntryKind(k): v for k, v in entries}
    except ValueError:
        raise MigrationError("payload state: a state or entry kind is unknown", "state") from None
    if (p.state is State.PAUSED) != (p.paused_from is not None) or p.paused_from not in (None, *_RUNNABLE):
        raise MigrationError("payload state.paused_from: set exactly when paused, to ready or blocked", "state")
    p.current_space = r.integer("current_space")
    if p.current_space not in p.spaces:
        raise MigrationError("payload state.current_space: no such space", "state")
    # ASPACE_CREATE gives out next_handle: a handle in use would replace a live space, leaking its tables.
    p.next_handle = r.integer("next_handle", max(p.spaces) + 1, _HANDLE_MAX)
    p.kernel_stack = r.integer("kernel_stack")
    p.timer_deadline = r.integer("timer_deadline")
    p.timer_pending = r.flag("timer_pending")
    p.exit_code = r.integer("exit_code", -(1 << 63), (1 << 63) - 1, optional=True)
    fault = r.get("fault")
    if fault is not None:
        if not (isinstance(fault, list) and len(fault) == 5 and all(_u64(v) for v in fault[1:4])
                and isinstance(fault[0], str) and isinstance(fault[4], str)):  # fmt: skip
            raise MigrationError("payload state.fault: [kind, vector, rip, address, detail]", "state")
        p.fault = KernelFault(*fault)
    counters = r.obj("counters")
    p.counters = Counters(**{k: counters.integer(k) for k in vars(Counters())})
    p.console_buffer = bytearray(r.blob("console_buffer"))
    m = r.obj("measurements")
    try:
        registers = [bytes.fromhex(x) if isinstance(x, str) and len(x) == 64 else b"" for x in m.items("registers")]
    except ValueError:
        raise MigrationError("payload state.measurements.registers: hex digits", "state") from None
    if len(registers) != len(Register) or any(len(x) != 32 for x in registers):
        raise MigrationError("payload state.measurements.registers: three SHA-256 values", "state")
    if len(m.items("events")) > LOG_MAX:
        raise MigrationError(f"payload state.measurements.events: more than {LOG_MAX}", "state")
    events = []
    for e in m.items("events"):
        er = _Reader(e if isinstance(e, dict) else {}, "state.measurements.events")
        digest = er.text("digest")
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise er.fail("digest", "64 hex digits")
        events.append(MeasurementEvent(er.integer("register", 0, len(Register) - 1), bytes.fromhex(digest),
                                       er.text("type"), er.text("description")))  # fmt: skip
    # The registers are what the log extends to from zeros: a payload cannot show a verifier a log
    # and quote other values (what the log claims is still the source's word: see docs/migration.md).
    replay = Measurements()
    for e in events:
        replay.extend(Register(e.register), e.digest, e.type, e.description)
    if replay.registers != registers:
        raise MigrationError("payload state.measurements: the registers are not what the log extends to", "state")
    p.measurements = Measurements(registers, events)
    p.may_manage = r.flag("may_manage")
    p.restarts = r.integer("restarts")
    p.pending_traps = [tuple(_ints(t, "state.pending_traps", 3)) for t in r.items("pending_traps")]  # type: ignore[misc]
    modules = []
    for item in r.items("modules"):
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)):
            raise MigrationError("payload state.modules: [name, first frame, pages, size]", "state")
        modules.append(Module(item[0], *_ints(item[1:], "state.modules", 3)))
    p.modules = modules
    image = r.get("image")
    if image is not None:
        ir = _Reader(image if isinstance(image, dict) else {}, "state.image")
        segments = []
        for s in ir.items("segments"):
            if not (isinstance(s, list) and len(s) == 4 and _u64(s[0]) and _u64(s[1])
                    and all(isinstance(v, int) for v in s[2:])):  # fmt: skip
                raise ir.fail("segments", "[vaddr, memsz, writable, executable] each")
            segments.append(Segment(s[0], b"", s[1], bool(s[2]), bool(s[3])))
        p.image = LoadImage(tuple(segments), ir.integer("entry"), b"")


def _relocate_tables(machine: Machine, p: Partition, gf: GuestFrames, types: Mapping[int, FrameType]) -> None:
    """Rewrite every table entry to this machine's frames, checking the structure; recount the maps."""
    ram, frames = machine.ram, machine.frames
    to_machine = gf.to_machine
    pt, data = FrameType.PAGE_TABLE, FrameType.DATA
    counted: dict[int, list[int]] = {}
    spk_entry = (machine._spk.spk_pdpt << PAGE_SHIFT) | PTE_P | PTE_W
    kernel_entry = (p.kernel.pdpt << PAGE_SHIFT) | PTE_P | PTE_W
    # Every root counts as reached before any walk: a PML4 reached from below (as a PDPT, PD or
    # PT) would have its kernel and SPK slots, which ring 0 sets, read as lower-level entries,
    # putting ring 0's own PDPT into the partition's tables as a table it can write through.
    done: set[int] = {s.pml4 for s in p.spaces.values()} | {p.kernel.pdpt}
    if len(done) != len(p.spaces) + 1:
        raise MigrationError("two roots share a table", "page_table")
    reached: set[int] = set()  # the tables of the root being walked

    def target(entry: int, want: FrameType, where: str) -> int:
        gfn = (entry & PTE_ADDR) >> PAGE_SHIFT
        if types.get(gfn) is not want:
            raise MigrationError(f"{where}: entry {entry:#x} names frame {gfn:#x}, not a {want.value} frame of it",
                                 "page_table")  # fmt: skip
        return to_machine[gfn]

    def walk(table: int, level: int) -> None:
        """Relocate one table (level 2: PDPT, 1: PD, 0: PT) and those below it."""
        if table in done:
            raise MigrationError(f"table {table:#x} is reached twice", "page_table")
        done.add(table)
        reached.add(table)
        base = table << PAGE_SHIFT
        entries = ram.table(base)
        for index, entry in enumerate(entries):
            if not entry & PTE_P:
                if entry:
                    ram.write_u64(base + index * 8, 0)  # nothing may hide in a non-present entry
                continue
            if level and entry & _PTE_PS:
                raise MigrationError(f"table {table:#x}: a large page (never made by ring 0)", "page_table")
            if level:
                child = target(entry, pt, f"table {table:#x}")
                ram.write_u64(base + index * 8, (entry & ~PTE_ADDR) | (child << PAGE_SHIFT))
                walk(child, level - 1)
            else:
                leaf = target(entry, data, f"table {table:#x}")
                ram.write_u64(base + index * 8, (entry & ~PTE_ADDR) | (leaf << PAGE_SHIFT))
                counts = counted.setdefault(leaf, [0, 0, 0])
                counts[0] += 1
                counts[1] += 1 if entry & PTE_W else 0
                counts[2] += 1 if entry & PTE_NX else 0

    done.discard(p.kernel.pdpt)
    walk(p.kernel.pdpt, 2)
    # Each root's tables are exactly the ones it lists: a table listed under another space would
    # be freed with that space (ASPACE_DESTROY) while this one still walks through it.
    if reached != set(p.kernel.tables) | {p.kernel.pdpt}:
        raise MigrationError("the kernel half's tables are not the ones it lists", "page_table")
    for space in p.spaces.values():
        base = space.pml4 << PAGE_SHIFT
        pml4 = ram.table(base)
        reached = {space.pml4}
        for index, entry in enumerate(pml4[:KERNEL_SLOT]):
            if not entry & PTE_P:
                if entry:
                    ram.write_u64(base + index * 8, 0)
                continue
            child = target(entry, pt, f"PML4 {space.pml4:#x}")
            ram.write_u64(base + index * 8, (entry & ~PTE_ADDR) | (child << PAGE_SHIFT))
            walk(child, 2)
        for index in range(KERNEL_SLOT, 512):
            ram.write_u64(base + index * 8, 0)
        ram.write_u64(base + KERNEL_SLOT * 8, kernel_entry)
        ram.write_u64(base + SPK_SLOT * 8, spk_entry)
        if reached != set(space.tables):
            raise MigrationError(f"space {space.pml4:#x}: its tables are not the ones it lists", "page_table")
    listed = {t for s in p.spaces.values() for t in s.tables} | set(p.kernel.tables) | {p.kernel.pdpt}
    if done != listed:
        raise MigrationError("the page-table frames reached are not the partition's tables", "page_table")
    for mfn, (maps, writable, no_exec) in counted.items():
        frames.coherence.set_counts(mfn, maps, writable, no_exec)


def _check_ports(
    machine: Machine, records: list[Any], port_channels: Mapping[str, int], open_names: list[Any], stopped_at: int
) -> list[dict[str, Any]]:
    """The ports' records, checked against the channels they will join (before anything changes)."""
    out = []
    names: set[str] = set()
    for record in records:
        pr = _Reader(record if isinstance(record, dict) else {}, "state.ports")
        name, direction, kind = pr.text("name"), pr.text("direction"), pr.text("kind")
        if name in names or direction not in ("source", "destination") or kind not in ("sampling", "queuing"):
            raise MigrationError(f"payload state.ports: port {name!r} repeated or of an unknown kind", "ports")
        names.add(name)
        size, depth = pr.integer("message_size", 1, 1 << 20), pr.integer("depth", 1, 1 << 16)
        try:
            queue = [base64.b64decode(q, validate=True) for q in pr.items("queue") if isinstance(q, str)]
        except ValueError:
            raise MigrationError(f"payload state.ports: the queue of {name!r} is not base64", "ports") from None
        if len(queue) != len(pr.items("queue")) or len(queue) > depth or any(len(q) > size for q in queue):
            raise MigrationError(f"payload state.ports: the queue of {name!r} does not fit its channel", "ports")
        cid = port_channels.get(name)
        if cid is not None:
            ch = machine.channels.get(cid)
            if ch is None or ch.kind.value != kind or ch.message_size != size or len(queue) > ch.depth:
                raise MigrationError(f"port {name!r}: channel {cid} here is not a {kind} channel of {size}-byte "
                                     "messages", "ports")  # fmt: skip
        latest, written_at = pr.blob("latest", optional=True), pr.integer("written_at", 0, stopped_at)
        if latest is not None and (len(latest) > size or kind != "sampling"):
            raise MigrationError(f"payload state.ports: the latest message of {name!r} does not fit", "ports")
        # A channel of this host is shared: only a port that sends on it may bring it a message.
        if cid is not None and direction != "source":
            latest = None
        out.append({"name": name, "direction": direction, "kind": kind, "message_size": size, "depth": depth,
                    "refresh": pr.integer("refresh"), "queue": queue, "cid": cid,
                    "latest": latest, "written_at": written_at})  # fmt: skip
    if any(not isinstance(n, str) or n not in names for n in open_names) or len(set(open_names)) != len(open_names):
        raise MigrationError("payload state.open_ports: names a port the partition does not have", "ports")
    return out


def _attach_ports(machine: Machine, p: Partition, ports: list[dict[str, Any]], open_names: list[Any]) -> None:
    for rec in ports:
        cid = rec["cid"]
        if cid is None:
            cid = machine.create_channel(rec["kind"], rec["message_size"], depth=rec["depth"], refresh=rec["refresh"])
        channel: Channel = machine.channels[cid]
        port = Port(p.pid, rec["name"], Direction(rec["direction"]), channel)
        port.queue = deque(rec["queue"])
        if channel.kind is ChannelKind.SAMPLING and rec["latest"] is not None and (
            channel.latest is None or channel.written_at < rec["written_at"]
        ):
            channel.latest, channel.written_at = rec["latest"], rec["written_at"]
        p.ports[rec["name"]] = port
    p.open_ports = [p.ports[n] for n in open_names]


def migrated_event(source_key: str, dest_key: bytes | None, time: int) -> tuple[bytes, str]:
    """The digest and description of the ``migrated`` measurement: from which platform to which, when."""
    dest = (dest_key or b"").hex()
    digest = hashlib.sha256(canonical({"format": "spk-migrated/1", "from": source_key, "to": dest,
                                       "time": time})).digest()  # fmt: skip

    def short(key: str) -> str:
        return hashlib.sha256(bytes.fromhex(key)).hexdigest()[:16] if key else "no-key"

    return digest, f"from platform {short(source_key)} to platform {short(dest)} at {time}"


def _adopt(machine: Machine, p: Partition, source_key: str, stopped_at: int) -> None:
    """The partition is whole: it joins the machine, measured as migrated, announced."""
    digest, description = migrated_event(source_key, machine.attestation_public_key, stopped_at)
    p.measurements.extend(Register.CONFIG, digest, "migrated", description)
    machine.declared.pop(p.pid, None)
    machine.partitions[p.pid] = p
    machine.drop_caches()
    machine._emit(p, "migrated_in", {"stopped_at": stopped_at, "frames": p.quota})


def checkpoint_pages(machine: Machine, pid: int) -> dict[int, bytes]:
    """Every non-zero data or table frame of a partition, by guest frame number (a whole copy)."""
    p = machine.partitions[pid]
    view, out = machine.ram.view, {}
    for mfn in machine.frames.owned(pid):
        kind = machine.frames[mfn].type
        if kind in (FrameType.DATA, FrameType.PAGE_TABLE):
            page = bytes(view[mfn << PAGE_SHIFT : (mfn + 1) << PAGE_SHIFT])
            if page != _ZERO:
                out[guest_frame(p.guest_frames, mfn)] = outgoing(p.guest_frames, page, kind is FrameType.PAGE_TABLE)
    return out
