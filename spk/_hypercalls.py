"""The hypercall table: decode, then invoke.

Each hypercall is one function registered with :func:`hypercall`, which also
records its documented signature and its closed list of errors; the table is
what ``docs/abi.md`` is checked against.

seL4's discipline: the first part of every handler (*decode*) does all the
checks — argument ranges, reserved bits, handle lookup, rights, guest ranges
inside the caller's space without wrap-around — and raises
:class:`spk.errors.SpkError` with a typed status; nothing has changed yet.
The second part (*invoke*) only mutates state and cannot fail. Guest memory
is copied in once, then validated (no double fetch).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spk._channels import ChannelKind, Direction, Port
from spk._engine import LiveRegisters
from spk._frames import FrameType, guest_frame, machine_frame
from spk._partition import Partition, State
from spk.abi import (
    ABI_VERSION,
    APP_FRAME_SIZE,
    APP_FRAME_WORDS,
    KERNEL_BASE,
    KERNEL_END,
    MAP_FLAGS_VALID,
    MEASURE_MAX,
    MEASURE_NAME_MAX,
    NONCE_MAX,
    PART_ENTRY_SIZE,
    PART_QUERY_WORDS,
    PORT_NAME_MAX,
    RFLAGS_FIXED,
    RFLAGS_USER_MASK,
    USER_BASE,
    USER_END,
    EntryKind,
    Event,
    Hypercall,
    MapFlags,
    PartOp,
    Register,
    Status,
)
from spk.errors import OutOfMemory, SpkError

if TYPE_CHECKING:
    from spk._machine import Machine

#: A handler returns the value for rax, or NO_RESULT when it redirected the vCPU.
NO_RESULT = object()
Handler = Callable[["Machine", Partition, LiveRegisters, tuple[int, int, int, int, int]], object]

CONSOLE_MAX = 4096
MAX_SPACES = 64
_NOT_FOUND = int(Status.NOT_FOUND)
#: MAP's flag bits as plain ints (an IntFlag operation costs an enum construction: MAP is a hot path).
_MAP_WRITE, _MAP_USER, _MAP_NO_EXEC = int(MapFlags.WRITE), int(MapFlags.USER), int(MapFlags.NO_EXEC)
_MAP_FLAGS_RESERVED = ~MAP_FLAGS_VALID & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class HypercallSpec:
    number: Hypercall
    handler: Handler
    args: tuple[str, ...]
    returns: str
    errors: tuple[Status, ...]
    summary: str


TABLE: dict[int, HypercallSpec] = {}


def hypercall(
    number: Hypercall, args: tuple[str, ...], returns: str, errors: tuple[Status, ...]
) -> Callable[[Handler], Handler]:
    """Register a handler with its documented signature and errors."""

    def register(fn: Handler) -> Handler:
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        TABLE[int(number)] = HypercallSpec(number, fn, args, returns, errors, summary)
        return fn

    return register


def _fail(status: Status, message: str) -> SpkError:
    return SpkError(status, message)


def _space(p: Partition, handle: int) -> object:
    space = p.spaces.get(handle)
    if space is None:
        raise _fail(Status.BAD_HANDLE, f"no address space with handle {handle}")
    return space


@hypercall(Hypercall.VERSION, (), "(major << 16) | minor", ())
def hc_version(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """The ABI version the SPK speaks."""
    return ABI_VERSION


@hypercall(
    Hypercall.CONSOLE_WRITE,
    ("ptr", "len"),
    "bytes written",
    (Status.INVALID_ARGUMENT, Status.BAD_ADDRESS),
)
def hc_console_write(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Write bytes to the partition's console (lines are prefixed by its name)."""
    ptr, length = a[0], a[1]
    if length > CONSOLE_MAX:
        raise _fail(Status.INVALID_ARGUMENT, f"console write of {length} bytes > {CONSOLE_MAX}")
    data = m.mem.copy_in(ctx.cr3, ptr, length)
    m.console(p, data)
    return length


@hypercall(
    Hypercall.SET_ENTRY,
    ("kind", "address"),
    "0",
    (Status.INVALID_ARGUMENT, Status.BAD_ADDRESS),
)
def hc_set_entry(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Register the kernel entry for app syscalls, app traps or timer upcalls."""
    kind, address = a[0], a[1]
    if kind not in EntryKind._value2member_map_:
        raise _fail(Status.INVALID_ARGUMENT, f"unknown entry kind {kind}")
    if not KERNEL_BASE <= address < KERNEL_END:
        raise _fail(Status.BAD_ADDRESS, f"entry {address:#x} outside the kernel half")
    p.entries[EntryKind(kind)] = address
    m.kernel_entry_changed(p)
    return 0


@hypercall(Hypercall.SET_KERNEL_STACK, ("rsp",), "0", (Status.BAD_ADDRESS,))
def hc_set_kernel_stack(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Set the stack the SPK switches to when it enters the kernel from an app."""
    rsp = a[0]
    if not KERNEL_BASE < rsp <= KERNEL_END or rsp & 7:
        raise _fail(Status.BAD_ADDRESS, f"kernel stack {rsp:#x} outside the kernel half or unaligned")
    p.kernel_stack = rsp
    m.kernel_entry_changed(p)
    return 0


@hypercall(Hypercall.ASPACE_CREATE, (), "handle (> 0)", (Status.NO_MEMORY,))
def hc_aspace_create(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Create an address space sharing the partition's kernel half."""
    if len(p.spaces) >= MAX_SPACES:
        raise _fail(Status.NO_MEMORY, f"at most {MAX_SPACES} address spaces")
    if m.frames.pool_free_count(p.pid) < 1:
        raise _fail(Status.NO_MEMORY, "quota exhausted")
    handle = p.next_handle
    p.next_handle += 1
    p.spaces[handle] = m.new_space(p)
    return handle


@hypercall(
    Hypercall.ASPACE_DESTROY,
    ("handle",),
    "0",
    (Status.BAD_HANDLE, Status.DENIED, Status.BUSY),
)
def hc_aspace_destroy(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Destroy an address space and return its tables to the quota."""
    handle = a[0]
    _space(p, handle)
    if handle == 0:
        raise _fail(Status.DENIED, "the boot address space cannot be destroyed")
    if handle == p.current_space:
        raise _fail(Status.BUSY, "the current address space cannot be destroyed")
    p.spaces.pop(handle).destroy()
    return 0


@hypercall(
    Hypercall.MAP,
    ("handle", "va", "mfn", "flags"),
    "0",
    (
        Status.BAD_HANDLE,
        Status.INVALID_ARGUMENT,
        Status.DENIED,
        Status.BUSY,
        Status.NO_MEMORY,
    ),
)
def hc_map(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Map frame mfn at va in a space (validated: owner, type, region, flags; NO_EXEC: not executable)."""
    handle, va, mfn, flags = a[0], a[1], machine_frame(p.guest_frames, a[2]), a[3]
    space = p.spaces.get(handle)
    if space is None:
        raise _fail(Status.BAD_HANDLE, f"no address space with handle {handle}")
    if flags & _MAP_FLAGS_RESERVED:
        raise _fail(Status.INVALID_ARGUMENT, f"reserved map flags set: {flags:#x}")
    space.map(va, mfn, bool(flags & _MAP_WRITE), bool(flags & _MAP_USER), not flags & _MAP_NO_EXEC)
    return 0


@hypercall(
    Hypercall.UNMAP,
    ("handle", "va"),
    "0",
    (Status.BAD_HANDLE, Status.INVALID_ARGUMENT, Status.NOT_FOUND),
)
def hc_unmap(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Remove the mapping at va."""
    space = p.spaces.get(a[0])
    if space is None:
        raise _fail(Status.BAD_HANDLE, f"no address space with handle {a[0]}")
    space.unmap(a[1])
    return 0


@hypercall(Hypercall.ASPACE_SWITCH, ("handle",), "0", (Status.BAD_HANDLE,))
def hc_aspace_switch(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Load an address space (CR3) on the calling vCPU."""
    space = p.spaces.get(a[0])
    if space is None:
        raise _fail(Status.BAD_HANDLE, f"no address space with handle {a[0]}")
    p.current_space = a[0]
    ctx.cr3 = space.cr3
    m.cr3_changed()
    return 0


@hypercall(
    Hypercall.IRET,
    ("handle", "frame_ptr"),
    "does not return on success",
    (Status.BAD_HANDLE, Status.BAD_ADDRESS, Status.INVALID_ARGUMENT),
)
def hc_iret(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Enter an app at CPL 3 in a space, with the 18-word register frame at frame_ptr."""
    handle, frame_ptr = a[0], a[1]
    space = p.spaces.get(handle)
    if space is None:
        raise _fail(Status.BAD_HANDLE, f"no address space with handle {handle}")
    raw = m.mem.copy_in(ctx.cr3, frame_ptr, APP_FRAME_SIZE)
    words = struct.unpack(f"<{APP_FRAME_WORDS}Q", raw)
    rip, rflags, rsp = words[16], words[17], words[4]
    if not USER_BASE <= rip < USER_END:
        raise _fail(Status.INVALID_ARGUMENT, f"app rip {rip:#x} outside the user half")
    if rsp > USER_END:
        raise _fail(Status.INVALID_ARGUMENT, f"app rsp {rsp:#x} outside the user half")
    # invoke
    p.current_space = handle
    m.enter_app(p, words[:16], rip, (rflags & RFLAGS_USER_MASK) | RFLAGS_FIXED, space.cr3)
    return NO_RESULT


@hypercall(Hypercall.YIELD, (), "0 (when scheduled again)", ())
def hc_yield(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Give up the rest of the current window (it stays idle)."""
    m.request_stop("yield")
    return 0


@hypercall(Hypercall.BLOCK, (), "pending event bits (1 = timer)", ())
def hc_block(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Wait until an event is pending; return the event bits."""
    if p.timer_pending:
        p.timer_pending = False
        return int(Event.TIMER)
    p.state = State.BLOCKED
    m.request_stop("block")
    return 0


@hypercall(Hypercall.EXIT, ("code",), "does not return", ())
def hc_exit(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """End the partition with an exit code."""
    p.state = State.EXITED
    p.exit_code = a[0] if a[0] < (1 << 63) else a[0] - (1 << 64)
    m.request_stop("exit")
    return 0


@hypercall(Hypercall.TIMER_SET, ("deadline",), "0", ())
def hc_timer_set(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Arm the one-shot virtual timer at an absolute virtual time (0 cancels)."""
    m.set_timer(p, a[0])
    return 0


@hypercall(Hypercall.TIME_NOW, (), "current virtual time", ())
def hc_time_now(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Current virtual time (ticks since boot: instruction bytes retired, idle time included)."""
    return m.time_now()


@hypercall(Hypercall.FRAME_ALLOC, (), "mfn of a zeroed frame", (Status.NO_MEMORY,))
def hc_frame_alloc(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Take a zeroed frame from the partition's quota."""
    try:
        return guest_frame(p.guest_frames, m.frames.pool_take(p.pid, FrameType.DATA))
    except OutOfMemory as exc:
        raise _fail(Status.NO_MEMORY, str(exc)) from None


@hypercall(
    Hypercall.FRAME_FREE,
    ("mfn",),
    "0",
    (Status.INVALID_ARGUMENT, Status.DENIED, Status.BUSY),
)
def hc_frame_free(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Give a frame back to the quota; it must not be mapped anywhere."""
    mfn = machine_frame(p.guest_frames, a[0])
    if not m.frames.valid(mfn):
        raise _fail(Status.INVALID_ARGUMENT, f"frame {mfn:#x} does not exist")
    frame = m.frames[mfn]
    if frame.owner != p.pid or frame.type is not FrameType.DATA:
        raise _fail(Status.DENIED, f"frame {mfn:#x} is not a data frame of the caller")
    if frame.map_count:
        raise _fail(Status.BUSY, f"frame {mfn:#x} is still mapped")
    m.frames.pool_return(mfn)  # zeroed: code translated from it must go too
    m.mem.code_changed()
    return 0


@hypercall(
    Hypercall.MEASURE,
    ("ptr", "len", "name_ptr", "name_len"),
    "0",
    (Status.INVALID_ARGUMENT, Status.BAD_ADDRESS, Status.NO_MEMORY),
)
def hc_measure(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Extend the APPS register with SHA-256 of a region, logging it under a name."""
    ptr, length, name_ptr, name_len = a[0], a[1], a[2], a[3]
    if length > MEASURE_MAX or name_len > MEASURE_NAME_MAX:
        raise _fail(Status.INVALID_ARGUMENT, f"measure of {length} bytes / name of {name_len} bytes too long")
    if p.measurements.full:
        raise _fail(Status.NO_MEMORY, "the measurement log is full")
    data = m.mem.copy_in(ctx.cr3, ptr, length)
    name = m.mem.copy_in(ctx.cr3, name_ptr, name_len).decode("utf-8", "replace")
    p.measurements.extend(Register.APPS, hashlib.sha256(data).digest(), "app", name)
    return 0


@hypercall(
    Hypercall.ATTEST,
    ("nonce_ptr", "nonce_len", "out_ptr", "out_len"),
    "length of the quote written at out_ptr",
    (Status.NOT_SUPPORTED, Status.INVALID_ARGUMENT, Status.BAD_ADDRESS, Status.NO_MEMORY),
)
def hc_attest(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Write a quote of the caller's measurements, signed by the platform, over a nonce."""
    nonce_ptr, nonce_len, out_ptr, out_len = a[0], a[1], a[2], a[3]
    if nonce_len > NONCE_MAX:
        raise _fail(Status.INVALID_ARGUMENT, f"nonce of {nonce_len} bytes > {NONCE_MAX}")
    nonce = m.mem.copy_in(ctx.cr3, nonce_ptr, nonce_len)
    quote = m.quote(p.pid, nonce)  # raises NOT_SUPPORTED without a platform key
    if len(quote) > out_len:
        raise _fail(Status.NO_MEMORY, f"quote of {len(quote)} bytes > buffer of {out_len}")
    m.mem.copy_out(ctx.cr3, out_ptr, quote)  # BAD_ADDRESS before anything is written
    return len(quote)


def _port(p: Partition, handle: int) -> Port:
    if not 0 <= handle < len(p.open_ports):
        raise _fail(Status.BAD_HANDLE, f"no open port with handle {handle}")
    return p.open_ports[handle]


@hypercall(
    Hypercall.PORT_OPEN,
    ("name_ptr", "name_len"),
    "port handle (>= 0)",
    (Status.INVALID_ARGUMENT, Status.BAD_ADDRESS, Status.NOT_FOUND),
)
def hc_port_open(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Open one of the partition's configured ports by name; opening twice gives the same handle."""
    if not 0 < a[1] <= PORT_NAME_MAX:
        raise _fail(Status.INVALID_ARGUMENT, f"port name of {a[1]} bytes (1..{PORT_NAME_MAX})")
    name = m.mem.copy_in(ctx.cr3, a[0], a[1]).decode("utf-8", "replace")
    port = p.ports.get(name)
    if port is None:
        raise _fail(Status.NOT_FOUND, f"no port {name!r} configured for {p.name}")
    if port not in p.open_ports:
        p.open_ports.append(port)
    return p.open_ports.index(port)


@hypercall(
    Hypercall.PORT_SEND,
    ("handle", "ptr", "len"),
    "0",
    (Status.BAD_HANDLE, Status.DENIED, Status.INVALID_ARGUMENT, Status.BAD_ADDRESS, Status.BUSY),
)
def hc_port_send(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Send a message on a source port (copied in once; all-or-nothing for queues)."""
    port = _port(p, a[0])
    channel = port.channel
    if a[2] > channel.message_size:
        raise _fail(Status.INVALID_ARGUMENT, f"message of {a[2]} bytes > {channel.message_size}")
    message = m.mem.copy_in(ctx.cr3, a[1], a[2])
    channel.send(port, message, m.time_now() if channel.kind is ChannelKind.SAMPLING else 0)
    return 0


@hypercall(
    Hypercall.PORT_RECEIVE,
    ("handle", "ptr", "len"),
    "length of the message copied to ptr",
    (Status.BAD_HANDLE, Status.DENIED, Status.NOT_FOUND, Status.NO_MEMORY, Status.BAD_ADDRESS),
)
def hc_port_receive(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Receive the oldest (queuing) or latest (sampling) message on a destination port."""
    port = _port(p, a[0])
    if not port.queue and port.direction is Direction.DESTINATION and port.channel.kind is ChannelKind.QUEUING:
        return -_NOT_FOUND  # polling an empty queue, the common case: the status without an exception
    message = port.channel.peek(port)
    if len(message) > a[2]:
        raise _fail(Status.NO_MEMORY, f"message of {len(message)} bytes > buffer of {a[2]}")
    m.mem.copy_out(ctx.cr3, a[1], message)  # BAD_ADDRESS before the message is consumed
    port.channel.consume(port)
    return len(message)


@hypercall(
    Hypercall.PORT_STATUS,
    ("handle",),
    "queuing: messages waiting (destination) or free slots (source); sampling: age of the latest message",
    (Status.BAD_HANDLE, Status.NOT_FOUND),
)
def hc_port_status(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """A port's state: queue length or free slots, or a sampling message's age."""
    port = _port(p, a[0])
    return port.channel.status(port, m.time_now())


@hypercall(Hypercall.RAISE_ERROR, ("code",), "0", ())
def hc_raise_error(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Report a guest-declared error to the health monitor (ring 1 applies its policy)."""
    m.health_event(p, "guest_error", f"code {a[0]}")
    return 0


def _manager(p: Partition) -> None:
    if not p.may_manage:
        raise _fail(Status.DENIED, f"{p.name} is not a system partition")


@hypercall(
    Hypercall.PART_LIST,
    ("out_ptr", "max_entries"),
    "number of partitions (entries written: at most max_entries)",
    (Status.DENIED, Status.BAD_ADDRESS),
)
def hc_part_list(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """List partitions: id, state and name, PART_ENTRY_SIZE bytes each (system partitions only)."""
    _manager(p)
    entries = m.partition_table()
    shown = entries[: a[1]]
    blob = bytearray(len(shown) * PART_ENTRY_SIZE)
    for i, (pid, state, name) in enumerate(shown):
        struct.pack_into("<QQ", blob, i * PART_ENTRY_SIZE, pid, state)
        encoded = name.encode()[:31]
        blob[i * PART_ENTRY_SIZE + 16 : i * PART_ENTRY_SIZE + 16 + len(encoded)] = encoded
    m.mem.copy_out(ctx.cr3, a[0], bytes(blob))
    return len(entries)


@hypercall(
    Hypercall.PART_QUERY,
    ("id", "out_ptr"),
    "0",
    (Status.DENIED, Status.BAD_HANDLE, Status.BAD_ADDRESS),
)
def hc_part_query(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Usage of a partition: PART_QUERY_WORDS counters (system partitions only)."""
    _manager(p)
    target = m.partitions.get(a[0])
    if target is None:
        raise _fail(Status.BAD_HANDLE, f"no running partition {a[0]}")
    m.sync_counters(p)  # the caller's system calls and page-table hypercalls done natively so far
    c = target.counters
    used = target.quota - m.frames.pool_free_count(target.pid)
    # A partition asking about itself is mid-run: its counter is added to when
    # the engine run ends, so the ticks of this run so far count too (exact at
    # the hypercall, whatever cut the window into engine runs).
    ticks = c.instructions + (m.engine.executed() if target is p else 0)
    record = (ticks, c.hypercalls, c.syscalls, c.faults, c.windows, c.preemptions, used, target.quota,
              target.restarts)  # fmt: skip
    assert len(record) == PART_QUERY_WORDS
    m.mem.copy_out(ctx.cr3, a[1], struct.pack(f"<{PART_QUERY_WORDS}Q", *record))
    return 0


@hypercall(
    Hypercall.PART_CONTROL,
    ("id", "op"),
    "0: the request is accepted; ring 1 carries it out when the caller's run ends",
    (Status.DENIED, Status.BAD_HANDLE, Status.INVALID_ARGUMENT),
)
def hc_part_control(m: Machine, p: Partition, ctx: LiveRegisters, a: tuple[int, ...]) -> object:
    """Ask ring 1 to pause, resume, halt, restart, start, destroy or migrate a partition."""
    _manager(p)
    if a[1] not in PartOp._value2member_map_:
        raise _fail(Status.INVALID_ARGUMENT, f"unknown operation {a[1]}")
    if not m.knows_partition(a[0]):
        raise _fail(Status.BAD_HANDLE, f"no partition {a[0]}")
    m.management_request(p, a[0], PartOp(a[1]))
    return 0
