"""The machine: RAM, the vCPU engine, partitions, and the run loop.

:class:`Machine` is the SPK's public face to ring 1. It creates and destroys
partitions from images, runs one partition on the vCPU up to a virtual-time
bound, and reports what happened. It decides nothing: which partition runs
in which window, and what a fault leads to, is ring 1's business. It is a
composition: the trap paths are :class:`spk._pv_traps.PvTraps` (the
engine's trap sink), guest-memory access is
:class:`spk._guestmem.GuestMemory`, the frame invariants are
:mod:`spk._invariants`.

Trap paths (all inside the engine's callbacks, none stops the engine unless
the partition must leave the CPU):

* ``int 0x82`` at CPL 2: a hypercall. Save context, decode and invoke,
  write rax into the saved context, restore it (one C call each way).
* ``int 0x80`` or ``syscall`` at CPL 3: bounce into the guest kernel's
  syscall entry, as an interrupt gate with a stack switch would: the app's
  GPRs are copied into the CPL 2 template, the iret frame is written on the
  kernel stack, the template is restored.
* an exception at CPL 3 (or a refused instruction: ``int 0x82``, port I/O,
  privileged instructions): bounced to the kernel's trap entry with vector,
  error code and fault address. Restoring the template also resets the
  engine's exception-escalation state (see unicorn-notes).
* an exception at CPL 2: the kernel faulted. The partition is stopped and
  the fault is reported to ring 1 (health monitor).

Virtual time (``time_mode="exact"``, the default) counts ticks, one per
byte of guest instruction retired, exactly and deterministically (see
:mod:`spk._engine`); idle time inside a window (a yield, a block without
wake-up) is added by ring 1 calling :meth:`Machine.advance`. No wall clock
is ever read, except in the documented non-deterministic ``"fast"`` mode,
where a tick is a host nanosecond on the vCPU.

Errors: :class:`spk.errors.SpkError` (OutOfMemory, ImageError) from
:meth:`create_partition`; :class:`KeyError` for an unknown partition id.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from spk import _invariants, _migrate, _snapshot, abi
from spk._channels import Channel, ChannelKind, Direction, Port, attach_relay, relay_put, relay_take
from spk._cpu import bring_up, build_spk_memory
from spk._debug import DebugError, DebugSession
from spk._engine import Engine
from spk._frames import FrameTable, FrameType, GuestFrames, PhysicalMemory, guest_frame
from spk._fv_host import FullPartitions
from spk._fv_partition import FullPartition
from spk._guestmem import GuestMemory
from spk._image import LoadImage, load_image
from spk._measure import AttestationKey, MeasurementEvent
from spk._migrate import DirtyLog, PartitionExport
from spk._paging import AddressSpace, KernelHalf, Walker
from spk._partition import Counters, KernelFault, Module, Partition, State
from spk._pv_traps import KERNEL_ENTRY_RFLAGS, PvTraps
from spk._snapshot import Snapshot
from spk._trace import EventSink, MachineEvent
from spk.abi import (
    HEALTH_EVENT_CODES,
    HEALTH_VECTOR,
    KERNEL_DATA_SIZE,
    KERNEL_DATA_VADDR,
    KERNEL_STACK_SIZE,
    KERNEL_STACK_TOP,
    PAGE_SHIFT,
    PAGE_SIZE,
    SEL_USER_CODE,
    SEL_USER_DATA,
    START_INFO_VADDR,
    SYSCALL_VECTOR,
    EntryKind,
    Event,
    PartOp,
    PartState,
    Register,
    Status,
)
from spk.errors import ImageError, SpkError

_RSP = 4
_TOKENS = itertools.count(1)
CONSOLE_LINE_MAX = 512
CONSOLE_LINES_PER_CALL = 64
#: Page-table frames of a fresh boot space: PML4, the shared kernel PDPT, and
#: the PD/PT pairs below KERNEL_BASE (image and data, start info, stack).
_BOOT_TABLES = 8


@dataclass(frozen=True)
class RunOutcome:
    """Why :meth:`Machine.run` returned."""

    pid: int
    reason: str  #: window_end, yield, blocked, exit, fault, not_runnable
    executed: int  #: virtual time this call took (ticks: instruction bytes retired, or its whole budget)
    end_time: int  #: virtual time when it returned

    def __init__(self, pid: int, reason: str, executed: int, end_time: int) -> None:
        # One per window: filling the instance's dict directly is about twice as
        # fast as the generated frozen __init__ (one object.__setattr__ per field).
        self.__dict__.update(pid=pid, reason=reason, executed=executed, end_time=end_time)


@dataclass(frozen=True)
class HealthEvent:
    """Something the health monitor (ring 1) must decide about."""

    pid: int
    event: str  #: a KernelFault kind, or guest_error
    detail: str


@dataclass(frozen=True)
class ManagementRequest:
    """A system partition asked ring 1 to act on a partition (PART_CONTROL)."""

    requester: int
    target: int
    op: PartOp


_STATE_CODES = {
    State.READY: PartState.READY, State.BLOCKED: PartState.BLOCKED, State.EXITED: PartState.EXITED,
    State.FAULTED: PartState.FAULTED, State.STOPPED: PartState.STOPPED, State.PAUSED: PartState.PAUSED,
}  # fmt: skip


@dataclass(frozen=True)
class PartitionInfo:
    """A read-only view of one partition for ring 1."""

    pid: int
    name: str
    state: str
    quota_frames: int
    frames_in_use: int
    exit_code: int | None
    fault: KernelFault | None
    counters: Counters
    restarts: int = 0
    virtualization: str = "para"  #: "para" or "full"
    mmu: str = ""  #: a full partition's memory virtualization: "nested" or "shadow"


class Machine:
    """One emulated host: physical RAM, one vCPU, the partitions on it.

    ``on_event`` receives every :class:`MachineEvent` (console lines,
    faults, exits, and hypercalls when ``trace_hypercalls`` is set).
    ``attestation_key`` is the platform's 32-byte Ed25519 seed; without it
    quotes are not supported.
    """

    #: the debugger's session (:meth:`debug_attach`), and where an interrupted run resumes
    _debug: DebugSession | None = None
    _debug_resume: tuple[int, int] | None = None  # (pid, end of the engine run a debug stop cut)

    def __init__(
        self,
        ram_bytes: int,
        *,
        on_event: EventSink | None = None,
        trace_hypercalls: bool = False,
        attestation_key: bytes | None = None,
        time_mode: str = "exact",
    ) -> None:
        self.ram = PhysicalMemory(ram_bytes)
        #: Unique per machine in this process (ids are reused; snapshots name their machine by this).
        self.token = next(_TOKENS)
        self.frames = FrameTable(self.ram)
        self._spk = build_spk_memory(self.frames)
        self._current: Partition | None = None
        #: the paravirtual trap paths, the engine's trap sink (bound below, once the engine is up)
        self.traps = PvTraps(self, trace_hypercalls=trace_hypercalls)
        self.engine = Engine(self.ram.address, ram_bytes, self.traps, time_mode=time_mode)
        #: "exact" (deterministic virtual time) or "fast" (host clock, not repeatable)
        self.time_mode = time_mode
        self._templates = bring_up(self.engine, self._spk, self.frames)
        # The app system call bounce (int 0x80 or syscall at CPL 3 into the
        # kernel's syscall entry) runs natively when armed (see _load): the
        # same steps as PvTraps._enter_kernel, which handles every other case.
        self.engine.configure_bounce(
            SYSCALL_VECTOR, self._templates.cpl2, SEL_USER_CODE, SEL_USER_DATA, KERNEL_ENTRY_RFLAGS
        )
        self.walker = Walker(self.ram, self.engine.page_walker())
        self.partitions: dict[int, Partition] = {}
        self.now = 0
        self._next_pid = 1
        self._on_event = on_event or (lambda _e: None)
        self._listener_error: Exception | None = None
        #: guest-memory access (copy in/out, translated-code invalidation)
        self.mem = GuestMemory(self, self.walker, self.ram, self.engine)
        self._attestation = AttestationKey(attestation_key) if attestation_key is not None else None
        self.channels: dict[int, Channel] = {}
        self.declared: dict[int, str] = {}
        self._health: list[HealthEvent] = []
        self._requests: list[ManagementRequest] = []
        self._loaded_cr3 = -1
        self._run_start = 0
        self._stop_reason: str | None = None
        # Traps read and write the live registers in place: no engine call.
        self._regs = self.engine.live_registers()
        self._live = self._regs.words
        self._rip_slot, self._cr3_slot = self._regs.rip_slot, self._regs.cr3_slot
        self._cs_word, self._cs_shift = self._regs.cs_word, self._regs.cs_shift
        # RFLAGS is the one register read on a bounce: the engine keeps the
        # arithmetic flags lazily, so it must compute them (one C call).
        self._read_rflags = self.engine.reader("rflags")
        self._write_rflags = self.engine.writer("rflags")
        self.traps.bind()
        #: the full-virtualization partitions (their own engines; see spk._fv_host)
        self.full = FullPartitions(
            self.ram, self.frames, time_mode=time_mode, emit=self._emit_full, console=self._console_full,
            now=self.time_now,
        )
        self._full_running: FullPartition | None = None

    # ------------------------------------------------------------------
    # Partitions
    # ------------------------------------------------------------------
    def create_partition(
        self,
        name: str,
        kernel_image: bytes | LoadImage,
        modules: Sequence[tuple[str, bytes]],
        quota_frames: int,
        *,
        frame_hint: int = 0,
        exact_placement: bool = False,
        kernel_name: str = "kernel",
        config_digest: bytes | None = None,
        pid: int | None = None,
        may_manage: bool = False,
    ) -> int:
        """Create a partition: grant its quota, load and map its kernel.

        ``frame_hint`` is where ring 1 would like the quota to start in RAM
        (first fit from there, else from the bottom; with ``exact_placement``
        there or nowhere: OutOfMemory). Measured boot: ring 0
        extends the partition's CONFIG register with ``config_digest`` (when
        given) and its KERNEL register with the SHA-256 of the image it
        loads, named ``kernel_name`` in the event log. ``pid`` starts a
        partition declared earlier (:meth:`declare_partition`);
        ``may_manage`` grants the management hypercalls (role "system").

        The kernel half of its boot space gets the image, a zeroed data
        area, a boot stack and the read-only start-info page; each module
        (an app image: its file's bytes) is loaded into contiguous frames the
        partition owns, mapped nowhere. A flat image (``bytes``) is mapped
        RW at KERNEL_IMAGE_VADDR and entered at its first byte; a
        :class:`LoadImage` (ring 1 reads it from an ELF) has its segments
        mapped at their addresses, read-only unless writable, and is entered
        at its entry point; ``bytes`` that are an ELF file are read into one
        (:func:`spk.load_image`). Either way the kernel gets rdi = START_INFO_VADDR.

        Errors: ImageError (image or module too large, bad name, too many
        modules), OutOfMemory (quota larger than free RAM, or too small for
        the images).
        """
        encoded = name.encode()
        if not encoded or len(encoded) >= abi.SI_NAME_LEN:
            raise ImageError(f"partition name {name!r} must be 1..{abi.SI_NAME_LEN - 1} bytes")
        try:
            image = load_image(kernel_image)
        except ImageError as exc:
            raise ImageError(f"{name}: {exc}", exc.rule) from None
        if len(modules) > abi.SI_MAX_MODULES:
            raise ImageError(f"{name}: {len(modules)} modules (max {abi.SI_MAX_MODULES})")
        needed = self.frames_to_boot(image, [len(b) for _, b in modules])
        if quota_frames < needed:
            raise ImageError(f"{name}: quota of {quota_frames} frames < {needed} needed to boot")
        if pid is None:
            pid = self._next_pid
            self._next_pid += 1
        elif self.declared.get(pid) != name:
            raise ImageError(f"{name}: partition {pid} is not declared under that name")
        self.frames.grant(pid, quota_frames, frame_hint, exact=exact_placement)
        try:
            partition = self._build(pid, name, image, modules, quota_frames)
        except SpkError:
            self.frames.reclaim(pid)
            raise
        self.declared.pop(pid, None)
        partition.may_manage = may_manage
        self.partitions[pid] = partition
        if config_digest is not None:
            partition.measurements.extend(Register.CONFIG, config_digest, "config", "system description")
        kernel_digest = hashlib.sha256(image.measured).digest()
        partition.measurements.extend(Register.KERNEL, kernel_digest, "kernel_image", kernel_name)
        self._emit(partition, "created", {"quota": quota_frames, "modules": [m for m, _ in modules]})
        return pid

    def create_full_partition(
        self,
        name: str,
        kernel_elf: bytes,
        quota_frames: int,
        *,
        mmu: str = "nested",
        frame_hint: int = 0,
        exact_placement: bool = False,
        kernel_name: str = "kernel",
        config_digest: bytes | None = None,
        pid: int | None = None,
    ) -> int:
        """Create a full-virtualization partition: an unmodified PC kernel on its own vCPU (docs/fullvirt.md).

        ``kernel_elf`` is an ELF64 x86-64 executable loaded at its physical
        addresses and entered at its 64-bit entry point; ``quota_frames``
        contiguous frames are its physical memory; ``mmu`` is "nested" or
        "shadow". Measured boot as for every partition (CONFIG, KERNEL).

        Errors: ImageError (name, ELF rules, rule "mmu", rule "quota": the
        kernel and boot tables do not fit), OutOfMemory (no contiguous run
        of free frames).
        """
        encoded = name.encode()
        if not encoded or len(encoded) >= abi.SI_NAME_LEN:
            raise ImageError(f"partition name {name!r} must be 1..{abi.SI_NAME_LEN - 1} bytes")
        if pid is None:
            pid = self._next_pid
            self._next_pid += 1
        elif self.declared.get(pid) != name:
            raise ImageError(f"{name}: partition {pid} is not declared under that name")
        try:
            part = self.full.create(
                pid, name, kernel_elf, quota_frames, mmu, frame_hint=frame_hint, exact=exact_placement,
                kernel_name=kernel_name, config_digest=config_digest,
            )  # fmt: skip
        except ImageError as exc:
            raise ImageError(f"{name}: {exc}" if not str(exc).startswith(name) else str(exc), exc.rule) from None
        self.declared.pop(pid, None)
        self.partitions[pid] = part  # type: ignore[assignment]
        self._emit_full(part, "created", {"quota": quota_frames, "virtualization": "full", "mmu": mmu})
        return pid

    def attach_serial(self, pid: int, port_base: int, cid: int, direction: str) -> None:
        """Wire the UART at ``port_base`` of full partition ``pid`` to a new port on channel ``cid``.

        ``direction`` "source": what the guest writes there is sent on the
        channel (a message per line); "destination": the channel's messages
        arrive on the UART's receive line. Errors: SpkError (NOT_FOUND: no
        such full partition or channel; INVALID_ARGUMENT: not a COM port).
        """
        p = self._full_partition(pid)
        channel = self.channels.get(cid)
        if channel is None:
            raise SpkError(Status.NOT_FOUND, f"no channel {cid}")
        port = Port(pid, f"com@{port_base:#x}", Direction(direction), channel)
        self.full.attach_serial(p, port_base, port)

    def serial_input(self, pid: int, port_base: int, data: bytes) -> None:
        """Bytes on the receive line of full partition ``pid``'s UART at ``port_base`` (COM1: 0x3F8).

        Errors: SpkError (NOT_FOUND, INVALID_ARGUMENT: not a COM port).
        """
        self.full.serial_input(self._full_partition(pid), port_base, data)

    def full_state(self, pid: int) -> dict[str, object]:
        """A full partition's virtual hardware as ring 0 sees it (review, fuzzing, benchmarks).

        Its MMU (mode, regions, counts), virtual registers, trapped
        operations by name, memory map, devices and serial cables.
        Errors: SpkError(NOT_FOUND) for a partition that is not full.
        """
        return self.full.describe(self._full_partition(pid))

    def _full_partition(self, pid: int) -> FullPartition:
        p = self.partitions.get(pid)
        if not isinstance(p, FullPartition):
            raise SpkError(Status.NOT_FOUND, f"no full-virtualization partition {pid}")
        return p

    def _emit_full(self, p: FullPartition, event: str, args: dict[str, object]) -> None:
        self._emit(p, event, args)  # type: ignore[arg-type]

    def _console_full(self, p: FullPartition, data: bytes) -> None:
        self.console(p, data)  # type: ignore[arg-type]

    def _run_full(self, p: FullPartition, until: int) -> RunOutcome:
        start = self.now
        if p.state not in (State.READY, State.BLOCKED) or until <= self.now:
            return RunOutcome(p.pid, "not_runnable", 0, self.now)
        self._full_running = p
        try:
            reason, end = self.full.run(p, self.now, until)
        finally:
            self._full_running = None
        self.now = max(self.now, end)
        if reason == "fault" and p.fault is not None:
            f = p.fault
            self._emit(p, "kernel_fault", {"kind": f.kind, "vector": f.vector, "rip": f.rip,  # type: ignore[arg-type]
                                           "address": f.address, "detail": f.detail})  # fmt: skip
            self._health.append(HealthEvent(p.pid, f.kind, f.detail))
        elif reason == "exit":
            self._emit(p, "exit", {"code": p.exit_code})  # type: ignore[arg-type]
        error, self._listener_error = self._listener_error, None
        if error is not None:
            raise error
        return RunOutcome(p.pid, reason, self.now - start, self.now)

    @staticmethod
    def frames_to_boot(kernel: int | bytes | LoadImage, module_sizes: Sequence[int]) -> int:
        """Frames a partition needs before its kernel runs a single instruction.

        ``kernel`` is the image, or the size in bytes of a flat one
        (ImageError for an image :func:`spk.load_image` refuses). Image,
        data area, boot stack, start-info page, modules, and the page tables
        the SPK builds for them. Ring 1 uses it to refuse a quota that cannot
        boot before anything is created.
        """
        image_pages = _pages(kernel) if isinstance(kernel, int) else load_image(kernel).pages
        pages = image_pages + KERNEL_DATA_SIZE // PAGE_SIZE + KERNEL_STACK_SIZE // PAGE_SIZE + 1
        pages += sum(_pages(size) for size in module_sizes)
        return pages + _BOOT_TABLES

    def _build(
        self, pid: int, name: str, image: LoadImage, modules: Sequence[tuple[str, bytes]], quota: int,
        guest_frames: GuestFrames | None = None,
    ) -> Partition:
        kernel = KernelHalf(pid, self.frames)
        space = AddressSpace(pid, self.frames, kernel, self._spk.spk_pdpt, self.cr3_changed)
        for segment in image.segments:
            for va, page in segment.pages():
                self._load_pages(space, va, page, write=segment.writable)
        self._load_pages(space, KERNEL_DATA_VADDR, bytes(KERNEL_DATA_SIZE), write=True)
        stack_base = KERNEL_STACK_TOP - KERNEL_STACK_SIZE
        self._load_pages(space, stack_base, bytes(KERNEL_STACK_SIZE), write=True)
        loaded: list[Module] = []
        for mod_name, blob in modules:
            count = _pages(len(blob))
            first = self.frames.pool_take(pid, FrameType.DATA, contiguous=count)
            self.ram.write(first << PAGE_SHIFT, blob)
            loaded.append(Module(mod_name, guest_frame(guest_frames, first), count, len(blob)))
        info = self._start_info(pid, name, quota, loaded)
        self._load_pages(space, START_INFO_VADDR, info, write=False)
        context = self.engine.new_context()
        context.copy_from(self._templates.cpl2)
        context.load_gprs([0] * 16)
        context.set_gpr(_RSP, KERNEL_STACK_TOP)
        context.set_gpr(7, START_INFO_VADDR)  # rdi
        context.rip = image.entry
        context.cr3 = space.cr3
        self.engine.flush_code()
        return Partition(
            pid=pid, name=name, quota=quota, kernel=kernel, spaces={0: space},
            context=context, modules=loaded, image=image, guest_frames=guest_frames,
        )  # fmt: skip

    def _start_info(self, pid: int, name: str, quota: int, modules: list[Module]) -> bytes:
        info = bytearray(PAGE_SIZE)
        struct.pack_into(
            "<6Q", info, 0, abi.START_INFO_MAGIC, abi.ABI_VERSION, pid, len(modules),
            quota, self.frames.pool_free_count(pid) - 1,
        )  # fmt: skip
        info[abi.SI_NAME : abi.SI_NAME + len(name.encode())] = name.encode()
        for i, mod in enumerate(modules):
            base = abi.SI_MODULES + i * abi.SI_MODULE_SIZE
            struct.pack_into("<3Q", info, base, mod.first_mfn, mod.pages, mod.size)
            encoded = mod.name.encode()[: abi.SI_NAME_LEN - 1]
            info[base + abi.SIM_NAME : base + abi.SIM_NAME + len(encoded)] = encoded
        return bytes(info)

    def _load_pages(self, space: AddressSpace, va: int, data: bytes, *, write: bool) -> None:
        for offset in range(0, len(data), PAGE_SIZE):
            mfn = self.frames.pool_take(space.owner, FrameType.DATA)
            self.ram.write(mfn << PAGE_SHIFT, data[offset : offset + PAGE_SIZE])
            space.map(va + offset, mfn, write, False)

    def new_space(self, p: Partition) -> AddressSpace:
        """A fresh address space of ``p`` (used by ASPACE_CREATE)."""
        return AddressSpace(p.pid, self.frames, p.kernel, self._spk.spk_pdpt, self.cr3_changed)

    def destroy_partition(self, pid: int, *, event: str = "destroyed") -> int:
        """Tear a partition down and return its frames to free RAM; returns how many.

        Every mapping of every space goes first, then the tables, then the
        frames: the frame table never sees a freed frame still mapped.
        ``event`` is what the trace calls it (``migrated_out`` when it left).
        """
        p = self.partitions[pid]
        if isinstance(p, FullPartition):
            del self.partitions[pid]
            frames = self.full.destroy(p)
            self._emit_full(p, event, {})
            self.declared[pid] = p.name
            return frames
        for port in p.ports.values():  # its queues must not fill up and block the senders
            if port in port.channel.destinations:
                port.channel.destinations.remove(port)
        for space in p.spaces.values():
            for va, _leaf in list(space.leaves()):
                space.unmap(va)
        p.spaces.clear()
        p.context.free()
        del self.partitions[pid]
        if self._current is p:
            self.engine.arm_bounce(0, 0)
            self._current = None
        self._loaded_cr3 = -1
        self.engine.flush_tlb()
        self.engine.flush_code()
        self._emit(p, event, {})
        self.declared[pid] = p.name  # it may be started again
        return self.frames.reclaim(pid)

    # ------------------------------------------------------------------
    # Snapshots
    # ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while :meth:`run` has a partition on the vCPU (inside its traps)."""
        return self._current is not None

    def snapshot(self) -> Snapshot:
        """The whole machine state, to :meth:`restore` later (see :mod:`spk._snapshot`).

        Errors: InternalError while the vCPU runs.
        """
        self._refuse_full("snapshots")
        return _snapshot.take(self)

    def restore(self, snapshot: Snapshot) -> None:
        """Go back to ``snapshot``: RAM, frames, partitions, channels, virtual time.

        Errors: InternalError while the vCPU runs, or for another machine's snapshot.
        """
        self._refuse_full("snapshots")
        _snapshot.restore(self, snapshot)

    def changed_frames(self, snapshot: Snapshot, runs: Sequence[tuple[int, int]] | None = None) -> list[int]:
        """Frames whose contents differ from ``snapshot`` (what a run wrote, by whomever).

        ``runs`` limits the comparison to (first frame, count) runs of RAM.
        Errors: InternalError for another machine's snapshot.
        """
        return _snapshot.changed_frames(self, snapshot, runs)

    def drop_caches(self) -> None:
        """Forget every engine cache (translated code, TLB, loaded CR3) and pending trap state."""
        self._loaded_cr3 = -1
        self.mem.code_dirty = False
        self.traps.pending = None
        self._stop_reason = None
        self.engine.flush_tlb()
        self.engine.flush_code()

    def declare_partition(self, name: str) -> int:
        """Reserve a partition id for a partition that is not started yet."""
        pid = self._next_pid
        self._next_pid += 1
        self.declared[pid] = name
        return pid

    def partition_table(self) -> list[tuple[int, int, str]]:
        """(id, PartState, name) of every running or declared partition, by id."""
        rows = [(pid, int(_STATE_CODES[p.state]), p.name) for pid, p in self.partitions.items()]
        rows += [(pid, int(PartState.DECLARED), name) for pid, name in self.declared.items()]
        return sorted(rows)

    def knows_partition(self, pid: int) -> bool:
        return pid in self.partitions or pid in self.declared

    def reset_partition(
        self,
        pid: int,
        kernel_image: bytes | LoadImage,
        modules: Sequence[tuple[str, bytes]],
        *,
        warm: bool = False,
        kernel_name: str = "kernel",
        config_digest: bytes | None = None,
    ) -> None:
        """Restart a partition on its own quota (the health monitor's restarts).

        Every space is torn down and every frame goes back to the quota,
        zeroed; then the kernel is loaded again as at creation. A cold
        restart also resets the measurements and measures again; a warm one
        keeps them, and keeps the kernel's data area as it was. Ports stay,
        closed; messages waiting for the partition are dropped. A warm
        restart keeps the writable segments of a segmented kernel image too
        (its .data and .bss): they are its data area as much as the ABI's.

        Errors: ImageError (a bad image: the partition is left as it was).
        """
        if isinstance(self.partitions[pid], FullPartition):
            full = self._full_partition(pid)
            if not isinstance(kernel_image, bytes | bytearray):
                raise ImageError(f"{full.name}: a full partition restarts from an ELF file")
            self.full.reset(full, bytes(kernel_image))
            full.restarts += 1
            if not warm:
                full.measurements = type(full.measurements)()
                if config_digest is not None:
                    full.measurements.extend(Register.CONFIG, config_digest, "config", "system description")
                full.measurements.extend(
                    Register.KERNEL, hashlib.sha256(bytes(kernel_image)).digest(), "kernel_image", kernel_name
                )
            self._emit_full(full, "restarted", {"warm": warm, "restarts": full.restarts})
            return
        image = load_image(kernel_image)
        old = self.partitions[pid]
        data = self._read_kernel_data(old) if warm else None
        for space in old.spaces.values():
            for va, _leaf in list(space.leaves()):
                space.unmap(va)
        self.frames.reset_pool(pid)
        self.engine.flush_tlb()
        self.engine.flush_code()
        self._loaded_cr3 = -1
        new = self._build(pid, old.name, image, modules, old.quota, old.guest_frames)
        old.context.free()  # only now: had the build failed, the old state would still be whole
        new.ports, new.may_manage = old.ports, old.may_manage
        new.counters, new.restarts = old.counters, old.restarts + 1
        for port in new.ports.values():
            port.queue.clear()
        if warm and data is not None:
            new.measurements = old.measurements
            for va, content in data:
                page = self.walker.translate(new.spaces[0].cr3, va)
                if page is not None:
                    self.ram.write(page.paddr, content)
        else:
            if config_digest is not None:
                new.measurements.extend(Register.CONFIG, config_digest, "config", "system description")
            new.measurements.extend(
                Register.KERNEL, hashlib.sha256(image.measured).digest(), "kernel_image", kernel_name
            )
        self.partitions[pid] = new
        self._emit(new, "restarted", {"warm": warm, "restarts": new.restarts})

    def _read_kernel_data(self, p: Partition) -> list[tuple[int, bytes]]:
        """The kernel's mutable pages, by address: its data area and, for a
        segmented image, its writable, non-executable segments (kept by a
        warm restart; a flat image is code and data in one, and is not)."""
        pages = [KERNEL_DATA_VADDR + offset for offset in range(0, KERNEL_DATA_SIZE, PAGE_SIZE)]
        if p.image is not None:
            for seg in p.image.segments:
                if seg.writable and not seg.executable:
                    pages += range(seg.first_page, seg.end_page, PAGE_SIZE)
        out = []
        for va in pages:
            tr = self.walker.translate(p.spaces[0].cr3, va)
            out.append((va, self.ram.read(tr.paddr, PAGE_SIZE) if tr is not None else bytes(PAGE_SIZE)))
        return out

    # -- channels ------------------------------------------------------------
    def create_channel(self, kind: str, message_size: int, *, depth: int = 1, refresh: int = 0) -> int:
        """A channel (sampling or queuing) with no ports yet; returns its id."""
        cid = len(self.channels) + 1
        self.channels[cid] = Channel(cid, ChannelKind(kind), message_size, depth, refresh)
        return cid

    def attach_port(self, pid: int, name: str, cid: int, direction: str) -> None:
        """Give partition ``pid`` a port named ``name`` on channel ``cid``."""
        p = self.partitions[pid]
        p.ports[name] = Port(pid, name, Direction(direction), self.channels[cid])

    # -- what ring 1 must decide about -----------------------------------------
    def health_event(self, p: Partition, event: str, detail: str) -> None:
        """Queue an event for ring 1's health monitor (which traces it)."""
        self._health.append(HealthEvent(p.pid, event, detail))

    def take_health_events(self) -> list[HealthEvent]:
        events, self._health = self._health, []
        return events

    def management_request(self, requester: Partition, target: int, op: PartOp) -> None:
        self._requests.append(ManagementRequest(requester.pid, target, op))
        self._emit(requester, "management_request", {"target": target, "op": op.name.lower()})

    def propagate(self, pid: int, event: str) -> None:
        """Deliver a health event to the partition's guest kernel (ring 1's choice).

        It arrives at the kernel's trap entry with vector HEALTH_VECTOR and
        the event's code as error code, the next time the vCPU runs an app
        (the guest kernel is never interrupted at CPL 2).
        """
        trap = (HEALTH_VECTOR, HEALTH_EVENT_CODES[event], 0)
        pending = self.partitions[pid].pending_traps
        if trap not in pending:  # one of each kind waits at most: the guest learns it happened
            pending.append(trap)

    def take_requests(self) -> list[ManagementRequest]:
        requests, self._requests = self._requests, []
        return requests

    def stop_partition(self, pid: int) -> None:
        """Take a partition off the CPU for good (ring 1's halt)."""
        p = self.partitions[pid]
        p.state, p.paused_from = State.STOPPED, None

    def pause_partition(self, pid: int) -> bool:
        """Keep a ready or blocked partition off the CPU until resumed; False if it was neither."""
        p = self.partitions[pid]
        if p.state not in (State.READY, State.BLOCKED):
            return False
        p.paused_from, p.state = p.state, State.PAUSED
        return True

    def resume_partition(self, pid: int) -> bool:
        """Undo a pause (its timer and blocked state are as they were); False if not paused."""
        p = self.partitions[pid]
        if p.state is not State.PAUSED or p.paused_from is None:
            return False
        p.state, p.paused_from = p.paused_from, None
        return True

    def state(self, pid: int) -> str:
        """A partition's state alone (``info`` also counts its frames: a scan of RAM's table)."""
        return self.partitions[pid].state.value

    def fault_of(self, pid: int) -> KernelFault | None:
        """Why a partition's kernel was stopped, if it was."""
        return self.partitions[pid].fault

    def info(self, pid: int) -> PartitionInfo:
        p = self.partitions[pid]
        if isinstance(p, FullPartition):
            return PartitionInfo(
                pid=p.pid, name=p.name, state=p.state.value, quota_frames=p.quota, frames_in_use=p.quota,
                exit_code=p.exit_code, fault=p.fault, counters=p.counters, restarts=p.restarts,
                virtualization="full", mmu=p.mmu_mode,
            )  # fmt: skip
        return PartitionInfo(
            pid=p.pid, name=p.name, state=p.state.value, quota_frames=p.quota,
            frames_in_use=p.quota - self.frames.pool_free_count(pid),
            exit_code=p.exit_code, fault=p.fault, counters=p.counters, restarts=p.restarts,
        )  # fmt: skip

    # ------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------
    def advance(self, until: int) -> None:
        """Let virtual time pass with the CPU idle (unused window time)."""
        self.now = max(self.now, until)

    def run(self, pid: int, until: int) -> RunOutcome:
        """Run partition ``pid`` until virtual time ``until`` at the latest.

        Returns early when it yields, blocks with no wake-up before
        ``until``, exits or faults. Exact and deterministic: the same
        partition state and bound give the same instructions and result.
        With a debugger attached it also returns ``debug_stop`` (see
        :mod:`spk._debug`); the next call goes on with the same window.
        """
        p = self.partitions[pid]
        if isinstance(p, FullPartition):
            return self._run_full(p, until)
        start = self.now
        if p.state not in (State.READY, State.BLOCKED) or until <= self.now:
            return RunOutcome(pid, "not_runnable", 0, self.now)
        resume_end = None
        if self._debug_resume is not None and self._debug_resume[0] == pid:
            resume_end, self._debug_resume = self._debug_resume[1], None
        self._load(p)
        if resume_end is None:
            p.counters.windows += 1
        reason = "window_end"
        while True:
            if p.state is State.BLOCKED:
                if p.timer_deadline and p.timer_deadline <= until:
                    self.now = max(self.now, p.timer_deadline)
                    p.timer_deadline = 0
                    p.state = State.READY
                    self.engine.write("rax", int(Event.TIMER))
                else:
                    reason = "blocked"
                    break
            if p.timer_deadline and p.timer_deadline <= self.now:
                p.timer_deadline = 0
                p.timer_pending = True
            if p.timer_pending and resume_end is None:
                self.traps.deliver_timer(p)
            if p.pending_traps and resume_end is None:
                self.traps.deliver_pending_trap(p)
            if p.state is State.FAULTED:  # a delivery found no entry or no kernel stack
                reason = "fault"
                break
            budget = until - self.now
            if budget <= 0:
                break
            if p.timer_deadline:
                budget = min(budget, p.timer_deadline - self.now)
            # A pending upcall or trap waits for CPL 3: the engine stops before
            # the first instruction the vCPU executes there (exact, no polling).
            wait_user = bool(p.timer_pending or p.pending_traps) and self._regs.cpl != 3
            if resume_end is not None:  # the engine run a debug stop cut goes on, nothing in between
                budget, resume_end = min(resume_end, until) - self.now, None
            self._stop_reason = None
            self.traps.pending = None
            self._run_start = self.now
            # Stopping the engine leaves an exception "in flight" (measured:
            # hypercalls do not, stops do): clear it before every run.
            self._regs.clear_exception_state()
            if self.mem.code_dirty:  # ring 0 rewrote guest memory: drop translations of it
                self.engine.flush_code()
                self.mem.code_dirty = False
            result = self.engine.run(self._live[self._rip_slot], budget, until_user=wait_user)
            self.now += result.elapsed
            p.counters.instructions += result.elapsed
            if self.traps.pending is not None:
                self.traps.resolve_pending_trap(p)
            if result.engine_error and self._stop_reason is None:
                self._kernel_fault(p, "internal_error", 0, 0, 0, f"engine: {result.engine_error}")
            stop = self._stop_reason
            if stop is not None and stop in ("yield", "exit", "fault"):
                reason = stop
                break
            if stop == "debug" and self._debug_resume is not None:
                reason = "debug_stop"
                break
            if self._listener_error is not None:
                reason = "host_error"
                break
        if reason == "window_end" and p.state is State.READY:
            p.counters.preemptions += 1
        if p.state not in (State.FAULTED,):
            self.engine.save(p.context)
        self.engine.arm_bounce(0, 0)
        self.sync_counters(p)
        self._current = None
        error, self._listener_error = self._listener_error, None
        if error is not None:
            raise error
        return RunOutcome(pid, reason, self.now - start, self.now)

    # -- debugging (mechanisms: spk._debug) ----------------------------------------
    def debug_attach(self, pid: int) -> DebugSession:
        """Debug partition ``pid``: it stops before its next instruction (its first, before it ran).

        One partition at a time. Errors: DebugError for an unknown
        partition, or when a session is open already.
        """
        if pid not in self.partitions:
            raise DebugError(Status.NOT_FOUND, f"no partition {pid}")
        if isinstance(self.partitions[pid], FullPartition):
            raise DebugError(Status.NOT_SUPPORTED, f"partition {pid} is a full-virtualization partition: "
                             "the debugger attaches to paravirtual partitions")  # fmt: skip
        if self._debug is not None and not self._debug.closed:
            raise DebugError(Status.BUSY, f"partition {self._debug.pid} is being debugged")
        self._debug = DebugSession(self, pid)
        return self._debug

    def debug_detach(self) -> None:
        """End the debug session: hooks go, the partition runs on from where it stopped."""
        if self._debug is not None:
            self._debug.close()
            self._debug = None

    @property
    def debug_session(self) -> DebugSession | None:
        return self._debug

    def debug_may_stop(self, pid: int) -> bool:
        """Inside a code hook: is ``pid`` on the CPU, with no other stop under way?"""
        p = self._current
        return p is not None and p.pid == pid and self._stop_reason is None and self.traps.pending is None

    def debug_stop_before(self) -> int:
        """Inside a code hook: stop before this instruction; returns the stop's virtual time.

        :meth:`run` returns ``debug_stop``; its next call resumes the same
        engine run (same budget end), so the stop changes nothing.
        """
        self.engine.stop_before()  # the instruction here is not counted: time is settled before it
        time = self.time_now()
        pid = self._current.pid if self._current is not None else -1
        self._debug_resume = (pid, time + self.engine.remaining())
        self._stop_reason = "debug"
        return time

    def _load(self, p: Partition) -> None:
        self.engine.restore(p.context)
        self._regs.clear_exception_state()
        # The TLB holds the translations of _loaded_cr3 only while no table
        # changed (every change sets it to -1): a partition that runs again
        # keeps them. A full flush costs tens of microseconds (the engine
        # clears its whole TLB and its jump cache).
        if p.context.cr3 != self._loaded_cr3:
            self.engine.flush_tlb()
            self._loaded_cr3 = p.context.cr3
        self._current = p
        self.kernel_entry_changed(p)

    def kernel_entry_changed(self, p: Partition) -> None:
        """``p``'s syscall entry or kernel stack changed: re-arm the native bounce if ``p`` runs.

        Every change of ``p.entries`` or ``p.kernel_stack`` while ``p`` is
        the running partition must call this (the SET_ENTRY and
        SET_KERNEL_STACK hypercalls do); between runs, :meth:`_load` arms it.
        """
        if p is self._current:
            self.engine.arm_bounce(p.entries.get(EntryKind.SYSCALL, 0), p.kernel_stack)

    def sync_counters(self, p: Partition) -> None:
        """Add the native bounces since the last call to the running ``p``'s syscall counter."""
        if p is self._current:
            p.counters.syscalls += self.engine.take_bounces()

    # -- services the hypercall handlers use -----------------------------
    def copy_in(self, cr3: int, va: int, length: int) -> bytes:
        """Copy guest memory once (supervisor view of ``cr3``); see :meth:`GuestMemory.copy_in`.

        Errors: SpkError(BAD_ADDRESS) when any byte is unmapped, the range
        wraps or leaves canonical space.
        """
        return self.mem.copy_in(cr3, va, length)

    def code_changed(self, va: int | None = None, length: int = 0) -> None:
        """Ring 0 rewrote guest memory the engine may hold translated code of (:meth:`GuestMemory.code_changed`)."""
        self.mem.code_changed(va, length)

    def copy_out(self, cr3: int, va: int, data: bytes) -> None:
        """Copy bytes into guest memory (supervisor view, writable pages only); see :meth:`GuestMemory.copy_out`.

        Errors: SpkError(BAD_ADDRESS) when any byte is not writable; nothing
        is written then.
        """
        self.mem.copy_out(cr3, va, data)

    def measurements(self, pid: int) -> tuple[list[bytes], list[MeasurementEvent]]:
        """A partition's measurement registers and event log (copies)."""
        m = self.partitions[pid].measurements
        return list(m.registers), list(m.events)

    def quote(self, pid: int, nonce: bytes) -> bytes:
        """A quote of partition ``pid``'s measurements over ``nonce``.

        Errors: SpkError(NOT_SUPPORTED) when the machine has no attestation key.
        """
        if self._attestation is None:
            raise SpkError(Status.NOT_SUPPORTED, "this machine has no attestation key")
        p = self.partitions[pid]
        return self._attestation.quote(p.name, p.measurements, nonce)

    @property
    def attestation_public_key(self) -> bytes | None:
        return self._attestation.public if self._attestation else None

    def console(self, p: Partition, data: bytes) -> None:
        """Split a partition's output into lines, CONSOLE_LINES_PER_CALL at most per call.

        The cap bounds the host's work for one hypercall (4096 newlines would
        otherwise be 4096 events); the rest of that write is dropped, said so.
        """
        buf = p.console_buffer
        buf.extend(data)
        emitted = 0
        while True:
            if emitted == CONSOLE_LINES_PER_CALL:
                dropped = buf.count(b"\n")
                buf.clear()
                if dropped:
                    self._emit(p, "console", {"text": f"[spk: {dropped} more lines of this write dropped]"})
                return
            emitted += 1
            cut = buf.find(b"\n")
            if cut < 0 and len(buf) < CONSOLE_LINE_MAX:
                return
            end = cut if cut >= 0 else CONSOLE_LINE_MAX
            line = buf[:end].decode("utf-8", "replace")
            del buf[: end + (1 if cut >= 0 else 0)]
            self._emit(p, "console", {"text": line})

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self.engine.stop()

    def time_now(self) -> int:
        if self._full_running is not None:
            return self.full.machines[self._full_running.pid].now()
        return self._run_start + self.engine.executed()

    def set_timer(self, p: Partition, deadline: int) -> None:
        p.timer_pending = False
        p.timer_deadline = deadline
        if not deadline:
            return
        now = self.time_now()
        if deadline <= now:
            p.timer_deadline = 0
            p.timer_pending = True
            self.engine.set_remaining(min(self.engine.remaining(), 1))
        else:
            self.engine.set_remaining(min(self.engine.remaining(), deadline - now))

    def cr3_changed(self) -> None:
        """Page tables or CR3 changed: cached translations must go."""
        self.engine.flush_tlb()
        self._loaded_cr3 = -1

    def enter_app(self, p: Partition, gprs: Sequence[int], rip: int, rflags: int, cr3: int) -> None:
        """Load an app's registers at CPL 3 (the IRET hypercall's invoke step)."""
        regs = self._regs
        regs.load_privilege(self._templates.cpl3)
        self._live[0:16] = memoryview(struct.pack("<16Q", *gprs)).cast("Q")
        regs.rip = rip
        regs.cr3 = cr3
        self._write_rflags(rflags)
        if cr3 != self._loaded_cr3:
            self.engine.flush_tlb()
            self._loaded_cr3 = cr3
        if p.timer_pending:
            self.traps.deliver_timer(p)

    # ------------------------------------------------------------------
    # Trap sink: the engine calls spk._pv_traps.PvTraps directly (bound at
    # construction); these delegate for callers that hold the machine.
    # ------------------------------------------------------------------
    def on_interrupt(self, vector: int) -> None:
        """An interrupt or exception on the vCPU (:meth:`PvTraps.on_interrupt`)."""
        self.traps.on_interrupt(vector)

    def on_port_io(self, port: int, is_write: bool, rip: int) -> bool:
        """Whether to refuse port I/O (:meth:`PvTraps.on_port_io`)."""
        return self.traps.on_port_io(port, is_write, rip)

    def on_refused_insn(self, rip: int, vector: int) -> None:
        """Fault an instruction the engine let through (:meth:`PvTraps.on_refused_insn`)."""
        self.traps.on_refused_insn(rip, vector)

    def on_syscall_insn(self, rip: int, plain: bool) -> None:
        """The syscall instruction (:meth:`PvTraps.on_syscall_insn`)."""
        self.traps.on_syscall_insn(rip, plain)

    def on_invalid_insn(self) -> bool:
        """An invalid opcode (:meth:`PvTraps.on_invalid_insn`)."""
        return self.traps.on_invalid_insn()

    def on_bad_memory(self, address: int) -> None:
        """A physical access outside RAM (:meth:`PvTraps.on_bad_memory`)."""
        self.traps.on_bad_memory(address)

    def _kernel_fault(self, p: Partition, kind: str, vector: int, rip: int, address: int, detail: str) -> None:
        p.state = State.FAULTED
        p.counters.faults += 1
        p.fault = KernelFault(kind, vector, rip, address, detail)
        args = {"kind": kind, "vector": vector, "rip": rip, "address": address, "detail": detail}
        self._emit(p, "kernel_fault", args)
        self._health.append(HealthEvent(p.pid, kind, detail))
        self.request_stop("fault")

    def _internal_error(self, p: Partition, exc: Exception) -> None:
        self._kernel_fault(p, "internal_error", 0, 0, 0, f"{type(exc).__name__}: {exc}")

    def _emit(self, p: Partition, event: str, args: dict[str, object], result: object = None) -> None:
        """Report an event to ring 1's listener.

        The listener is host code: if it raises (a closed pipe, a full disk),
        that is not the guest's doing. The vCPU is stopped after the current
        instruction and :meth:`run` raises the error to its caller, with the
        partition's state saved intact.
        """
        running = self._current is not None or self._full_running is not None
        time = self.time_now() if running and event != "created" else self.now
        try:
            self._on_event(MachineEvent(time, p.name, event, args, result))
        except Exception as exc:
            if not running:
                raise  # not inside a run: the caller gets it straight away
            if self._listener_error is None:
                self._listener_error = exc  # re-raised by run(), outside the engine
            if self._full_running is not None:
                self.full.machines[self._full_running.pid].vcpu.request_stop(("halt",))
            else:
                self.engine.stop()

    def check_invariants(self, pids: Collection[int] | None = None) -> None:
        """Recount every mapping from the page tables and check the frame rules (:func:`spk._invariants.check`).

        With ``pids``, only those partitions' spaces are walked and only the
        frames they own are recounted. Errors: InternalError naming the
        first broken rule.
        """
        _invariants.check(self.frames, self.partitions, pids)
        self.full.check_invariants(pids)

    def _refuse_full(self, what: str, pid: int | None = None) -> None:
        """Errors: SpkError(NOT_SUPPORTED) when a full partition is involved in ``what``."""
        involved = [p for p in self.partitions.values() if isinstance(p, FullPartition) and pid in (None, p.pid)]
        if involved:
            raise SpkError(Status.NOT_SUPPORTED, f"{what} of full-virtualization partitions are not supported "
                           f"({involved[0].name}: its vCPU and devices live in its own engine)")  # fmt: skip

    # ------------------------------------------------------------------
    # Migration (mechanisms: spk._migrate; the protocol is ring 1's)
    # ------------------------------------------------------------------
    def dirty_log(self, pid: int) -> DirtyLog:
        """Start tracking the frames of ``pid`` that differ from a destination's copy (zeros at first)."""
        self._refuse_full("migrations", pid)
        return DirtyLog(self, pid)

    def export_partition(
        self, pid: int, pages: dict[int, bytes] | None = None, *, detach: bool = False
    ) -> PartitionExport:
        """Partition ``pid``'s state with ``pages`` (default: every non-zero frame, a checkpoint).

        With ``detach`` the partition then leaves this machine (its id stays
        declared). Errors: MigrationError (the vCPU runs), KeyError.
        """
        self._refuse_full("migrations", pid)
        name = self.partitions[pid].name
        state = _migrate.export_state(self, pid)
        if pages is None:
            pages = _migrate.checkpoint_pages(self, pid)
        if detach:
            _migrate.detach(self, pid)
        return PartitionExport(name, state, pages)

    def import_partition(
        self,
        export: PartitionExport,
        pages: dict[int, bytes] | None = None,
        *,
        pid: int | None = None,
        port_channels: dict[str, int] | None = None,
    ) -> int:
        """Build an exported partition here; returns its id (see :func:`spk._migrate.import_partition`).

        ``pages``: every frame received (all rounds), default the export's own.
        Errors: MigrationError (nothing changed), OutOfMemory.
        """
        return _migrate.import_partition(
            self, export, export.pages if pages is None else pages, pid=pid, port_channels=port_channels
        )

    def ports_of(self, pid: int) -> dict[str, tuple[int, str]]:
        """A partition's ports: name -> (channel id, ``source`` or ``destination``)."""
        return {n: (port.channel.cid, port.direction.value) for n, port in self.partitions[pid].ports.items()}

    def attach_relay(self, cid: int, direction: str) -> None:
        """Give ring 1 an end of channel ``cid``: ``source`` to inject, ``destination`` to drain."""
        attach_relay(self.channels[cid], Direction(direction))

    def relay_take(self, cid: int, limit: int = 1 << 30) -> list[tuple[bytes, int]]:
        """Messages channel ``cid`` holds for its other half elsewhere (see :func:`spk._channels.relay_take`)."""
        return relay_take(self.channels[cid], limit)

    def relay_put(self, cid: int, messages: list[tuple[bytes, int]]) -> int:
        """Deliver messages from the other half, in order, until one does not fit; returns how many."""
        return relay_put(self.channels[cid], messages, self.now)


def _pages(length: int) -> int:
    return max(1, -(-length // PAGE_SIZE))
