"""The machine: RAM, the vCPU engine, partitions, and their composition.

:class:`Machine` is the SPK's public face to ring 1. It creates and destroys
partitions from images, runs one partition on the vCPU up to a virtual-time
bound, and reports what happened. It decides nothing: which partition runs
in which window, and what a fault leads to, is ring 1's business.

It is a composition, one module per responsibility (docs/architecture.md):
partition lifecycle is :class:`spk._lifecycle.PvLifecycle`, the run loop and
world switch :class:`spk._world.PvWorldSwitch`, the trap paths
:class:`spk._pv_traps.PvTraps` (the engine's trap sink, see that module for
each trap), guest-memory access :class:`spk._guestmem.GuestMemory`, the
reports to ring 1 (console lines, faults, health events, management
requests) :class:`spk._reports.Reports`, the frame invariants
:mod:`spk._invariants`, snapshots :mod:`spk._snapshot`, migration
:mod:`spk._migrate`, the debugger :mod:`spk._debug`. The machine keeps
ring 1's API and what is machine-wide: virtual time (``now``), channels,
measurements and quotes. The services a hypercall may use on every call
are its parts' own methods bound as the machine's attributes, so the split
adds no call on the per-trap path.

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
from collections.abc import Callable, Collection, Sequence

from spk import _invariants, _lifecycle, _migrate, _snapshot
from spk._channels import Channel, ChannelKind, Direction, Port, attach_relay, relay_put, relay_take
from spk._cpu import bring_up, build_spk_memory
from spk._debug import DebugError, DebugSession
from spk._engine import Engine
from spk._frames import FrameTable, PhysicalMemory
from spk._fv_host import FullPartitions
from spk._fv_partition import FullPartition
from spk._guestmem import GuestMemory
from spk._image import LoadImage
from spk._lifecycle import PvLifecycle
from spk._measure import AttestationKey, MeasurementEvent
from spk._migrate import DirtyLog, PartitionExport
from spk._paging import AddressSpace, Walker
from spk._partition import KernelFault, Partition, State
from spk._pv_traps import KERNEL_ENTRY_RFLAGS, PvTraps
from spk._reports import (
    CONSOLE_LINE_MAX,
    CONSOLE_LINES_PER_CALL,
    HealthEvent,
    ManagementRequest,
    PartitionInfo,
    Reports,
    partition_info,
    partition_table,
)
from spk._snapshot import Snapshot
from spk._trace import EventSink
from spk._world import PvWorldSwitch, RunOutcome
from spk.abi import (
    HEALTH_EVENT_CODES,
    HEALTH_VECTOR,
    SEL_USER_CODE,
    SEL_USER_DATA,
    SYSCALL_VECTOR,
    EntryKind,
    PartOp,
    Register,
    Status,
)
from spk.errors import ImageError, InternalError, SpkError

# The console's limits a guest sees (docs/abi.md) are the reports' own, named here too.
__all__ = [
    "CONSOLE_LINES_PER_CALL", "CONSOLE_LINE_MAX", "HealthEvent", "Machine", "ManagementRequest", "PartitionInfo",
    "RunOutcome",
]  # fmt: skip

_TOKENS = itertools.count(1)


class Machine:
    """One emulated host: physical RAM, one vCPU, the partitions on it.

    ``on_event`` receives every :class:`MachineEvent` (console lines,
    faults, exits, and hypercalls when ``trace_hypercalls`` is set).
    ``attestation_key`` is the platform's 32-byte Ed25519 seed; without it
    quotes are not supported.
    """

    #: the debugger's session (:meth:`debug_attach`)
    _debug: DebugSession | None = None

    # The world switch's services the hypercall handlers and the guest-memory
    # paths call on every hypercall: bound to it as attributes in __init__
    # (no call through the machine). See :class:`spk._world.PvWorldSwitch`.
    #: stop the vCPU after the current instruction (yield, block, exit, flush)
    request_stop: Callable[[str], None]
    #: virtual time now, inside a run as between runs
    time_now: Callable[[], int]
    #: arm or cancel the running partition's one-shot timer
    set_timer: Callable[[Partition, int], None]
    #: page tables or CR3 changed: cached translations must go
    cr3_changed: Callable[[], None]
    #: one page's leaf went away: the engine drops that page's translations (as invlpg)
    page_unmapped: Callable[[int], None]
    #: load an app's registers at CPL 3 (the IRET hypercall)
    enter_app: Callable[[Partition, Sequence[int], int, int, int], None]
    #: report an event to ring 1's listener (a listener's error stops the run and is raised by :meth:`run`)
    _emit: Callable[..., None]

    # What ring 1 must decide about (spk._reports.Reports, bound in __init__):
    #: cut a partition's console output into lines, one event each (CONSOLE_WRITE)
    console: Callable[[Partition, bytes], None]
    #: stop a partition's kernel for good: (partition, kind, vector, rip, address, detail)
    kernel_fault: Callable[[Partition, str, int, int, int, str], None]
    #: a host-side exception on a partition's behalf becomes its ``internal_error`` fault
    _internal_error: Callable[[Partition, Exception], None]
    #: queue an event for ring 1's health monitor: (partition, event, detail)
    health_event: Callable[[Partition, str, str], None]
    #: the health events so far, oldest first; the queue is empty after
    take_health_events: Callable[[], list[HealthEvent]]
    #: queue a PART_CONTROL request of a system partition: (requester, target, op)
    management_request: Callable[[Partition, int, PartOp], None]
    #: the management requests so far, oldest first; the queue is empty after
    take_requests: Callable[[], list[ManagementRequest]]

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
        #: the paravirtual trap paths, the engine's trap sink (bound below, once the engine is up)
        self.traps = PvTraps(self, trace_hypercalls=trace_hypercalls)
        self.engine = Engine(self.ram.address, ram_bytes, self.traps, time_mode=time_mode)
        #: "exact" (deterministic virtual time) or "fast" (host clock, not repeatable)
        self.time_mode = time_mode
        self._templates = bring_up(self.engine, self._spk, self.frames)
        # Stores through no-execute mappings run fast; ring 0 keeps translated code coherent (spk._coherence).
        self.frames.coherence.attach(self.engine.guard_stores, self.engine.drop_frame_code)
        # The app system call bounce (int 0x80 or syscall at CPL 3 into the
        # kernel's syscall entry) runs natively when armed (see
        # kernel_entry_changed): the same steps as PvTraps._enter_kernel,
        # which handles every other case.
        self.engine.configure_bounce(
            SYSCALL_VECTOR, self._templates.cpl2, SEL_USER_CODE, SEL_USER_DATA, KERNEL_ENTRY_RFLAGS
        )
        self.walker = Walker(self.ram, self.engine.page_walker())
        #: every partition on this machine by id (this dict object for the machine's life)
        self.partitions: dict[int, Partition] = {}
        #: ids reserved for partitions not started (name by id; this dict object for the machine's life)
        self.declared: dict[int, str] = {}
        self.channels: dict[int, Channel] = {}
        #: virtual time (ticks) between runs; inside a run, :meth:`time_now`
        self.now = 0
        self._attestation = AttestationKey(attestation_key) if attestation_key is not None else None
        #: guest-memory access (copy in/out, translated-code invalidation)
        self.mem = GuestMemory(self, self.walker, self.ram, self.engine)
        #: the run loop and world switch of paravirtual partitions
        listener = on_event or _ignore
        self.world = world = PvWorldSwitch(self, self.engine, self._templates, self.traps, self.mem, listener)
        self.request_stop, self.time_now, self.set_timer = world.request_stop, world.time_now, world.set_timer
        self.cr3_changed, self.enter_app, self._emit = world.cr3_changed, world.enter_app, world.emit
        self.page_unmapped = world.page_unmapped
        #: what ring 1 must decide about, and console lines
        self.reports = reports = Reports(world.emit, world.request_stop)
        self.console, self.kernel_fault, self._internal_error = (
            reports.console, reports.kernel_fault, reports.internal_error
        )
        self.health_event, self.take_health_events = reports.health_event, reports.take_health_events
        self.management_request, self.take_requests = reports.management_request, reports.take_requests
        #: partition creation, destruction and restart
        self.lifecycle = PvLifecycle(
            frames=self.frames, ram=self.ram, engine=self.engine, walker=self.walker, spk=self._spk,
            templates=self._templates, world=world, partitions=self.partitions, declared=self.declared,
            emit=world.emit,
        )  # fmt: skip
        self.traps.bind(
            world=world, engine=self.engine, walker=self.walker, ram=self.ram, templates=self._templates,
            regs=world.regs, read_rflags=world.read_rflags, write_rflags=world.write_rflags,
            mem_read=self.mem.read, kernel_fault=reports.kernel_fault, internal_error=reports.internal_error,
            emit=world.emit,
        )  # fmt: skip
        #: the full-virtualization partitions (their own engines; see spk._fv_host)
        self.full = FullPartitions(
            self.ram, self.frames, time_mode=time_mode, emit=self._emit_full, console=self._console_full,
            now=self._clock,
        )

    # ------------------------------------------------------------------
    # Partitions (mechanisms: spk._lifecycle)
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
        return self.lifecycle.create(
            name, kernel_image, modules, quota_frames, frame_hint=frame_hint, exact_placement=exact_placement,
            kernel_name=kernel_name, config_digest=config_digest, pid=pid, may_manage=may_manage,
        )  # fmt: skip

    # -- full virtualization (mechanisms: spk._fv_host) ------------------------------
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
        _lifecycle.check_name(name)
        pid = self.lifecycle.claim_id(name, pid)
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
        self.full.attach_serial(p, port_base, channel, Direction(direction))

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
        self._emit(p, event, args)

    def _console_full(self, p: FullPartition, data: bytes) -> None:
        self.console(p, data)  # type: ignore[arg-type]

    def _clock(self) -> int:
        """Virtual time now, whichever vCPU runs (a full partition's own engine, or the shared one)."""
        other = self.world.other_vcpu
        return other[0]() if other is not None else self.world.time_now()

    def _run_full(self, p: FullPartition, until: int) -> RunOutcome:
        start = self.now
        if p.state not in (State.READY, State.BLOCKED) or until <= self.now:
            return RunOutcome(p.pid, "not_runnable", 0, self.now)
        world, machines, pid = self.world, self.full.machines, p.pid
        world.other_vcpu = (lambda: machines[pid].now(), lambda: machines[pid].vcpu.request_stop(("halt",)))
        try:
            reason, end = self.full.run(p, self.now, until)
        finally:
            world.other_vcpu = None
        self.now = max(self.now, end)
        if reason == "fault" and p.fault is not None:
            f = p.fault
            self._emit(p, "kernel_fault", {"kind": f.kind, "vector": f.vector, "rip": f.rip,
                                           "address": f.address, "detail": f.detail})  # fmt: skip
            self.reports.health.append(HealthEvent(p.pid, f.kind, f.detail))
        elif reason == "exit":
            self._emit(p, "exit", {"code": p.exit_code})
        error, world.listener_error = world.listener_error, None
        if error is not None:
            raise error
        return RunOutcome(p.pid, reason, self.now - start, self.now)

    def _refuse_full(self, what: str, pid: int | None = None) -> None:
        """Errors: SpkError(NOT_SUPPORTED) when a full partition is involved in ``what``."""
        involved = [p for p in self.partitions.values() if isinstance(p, FullPartition) and pid in (None, p.pid)]
        if involved:
            raise SpkError(Status.NOT_SUPPORTED, f"{what} of full-virtualization partitions are not supported "
                           f"({involved[0].name}: its vCPU and devices live in its own engine)")  # fmt: skip

    @staticmethod
    def frames_to_boot(kernel: int | bytes | LoadImage, module_sizes: Sequence[int]) -> int:
        """Frames a partition needs before its kernel runs a single instruction.

        ``kernel`` is the image, or the size in bytes of a flat one
        (ImageError for an image :func:`spk.load_image` refuses). Image,
        data area, boot stack, start-info page, modules, and the page tables
        the SPK builds for them. Ring 1 uses it to refuse a quota that cannot
        boot before anything is created.
        """
        return _lifecycle.frames_to_boot(kernel, module_sizes)

    def new_space(self, p: Partition) -> AddressSpace:
        """A fresh address space of ``p`` (used by ASPACE_CREATE)."""
        return self.lifecycle.new_space(p)

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
        return self.lifecycle.destroy(pid, event)

    # ------------------------------------------------------------------
    # Snapshots
    # ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while :meth:`run` has a partition on the vCPU (inside its traps)."""
        return self.world.current is not None

    @property
    def _current(self) -> Partition | None:
        """The partition on the vCPU (the world switch's; for tests that patch the trap paths).

        None during CPU bring-up too, before the world switch exists.
        """
        world: PvWorldSwitch | None = self.__dict__.get("world")
        return world.current if world is not None else None

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
        self.world.drop_caches()

    def declare_partition(self, name: str) -> int:
        """Reserve a partition id for a partition that is not started yet."""
        return self.lifecycle.declare(name)

    def partition_table(self) -> list[tuple[int, int, str]]:
        """(id, PartState, name) of every running or declared partition, by id."""
        return partition_table(self.partitions, self.declared)

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
        self.lifecycle.reset(
            pid, kernel_image, modules, warm=warm, kernel_name=kernel_name, config_digest=config_digest
        )

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

    # -- what ring 1 decides -------------------------------------------------
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
        """A read-only view of partition ``pid`` (its frames in use counted from the frame table)."""
        p = self.partitions[pid]
        if isinstance(p, FullPartition):
            return PartitionInfo(
                pid=p.pid, name=p.name, state=p.state.value, quota_frames=p.quota, frames_in_use=p.quota,
                exit_code=p.exit_code, fault=p.fault, counters=p.counters, restarts=p.restarts,
                virtualization="full", mmu=p.mmu_mode,
            )  # fmt: skip
        return partition_info(p, self.frames.pool_free_count(pid))

    # ------------------------------------------------------------------
    # Running (mechanisms: spk._world)
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
        Errors: KeyError for an unknown ``pid``; a listener's exception,
        raised once the partition is saved and off the vCPU.
        """
        p = self.partitions[pid]
        if isinstance(p, FullPartition):
            return self._run_full(p, until)
        return self.world.run(p, until)

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
        return self.world.debug_may_stop(pid)

    def debug_stop_before(self) -> int:
        """Inside a code hook: stop before this instruction; returns the stop's virtual time.

        :meth:`run` returns ``debug_stop``; its next call resumes the same
        engine run (same budget end), so the stop changes nothing.
        """
        return self.world.debug_stop_before()

    def kernel_entry_changed(self, p: Partition) -> None:
        """``p``'s syscall entry or kernel stack changed: re-arm the native bounce if ``p`` runs.

        Every change of ``p.entries`` or ``p.kernel_stack`` while ``p`` is
        the running partition must call this (the SET_ENTRY and
        SET_KERNEL_STACK hypercalls do); the world switch calls it when it
        loads ``p``. The one place the bounce is armed (here, not in the
        world switch, so a window costs no added call).
        """
        if p is self.world.current:
            self.engine.arm_bounce(p.entries.get(EntryKind.SYSCALL, 0), p.kernel_stack)

    def sync_counters(self, p: Partition) -> None:
        """Add the native bounces and page-table hypercalls since the last call to the running ``p``'s counters."""
        self.world.sync_counters(p)

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

    def check_invariants(self, pids: Collection[int] | None = None) -> None:
        """Recount every mapping from the page tables and check the frame rules (:func:`spk._invariants.check`).

        With ``pids``, only those partitions' spaces are walked and only the
        frames they own are recounted. Errors: InternalError naming the
        first broken rule.
        """
        _invariants.check(self.frames, self.partitions, pids)
        if self.engine.stores_guarded != (self.frames.coherence.guarded > 0):
            guarded = self.frames.coherence.guarded
            raise InternalError(f"store guard up: {self.engine.stores_guarded}, with {guarded} frames that need it")
        self.full.check_invariants(pids)

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


def _ignore(_event: object) -> None:
    """The listener of a machine nobody listens to."""
