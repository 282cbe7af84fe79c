"""Live migration, ring 1's part: the pre-copy protocol, channel relays, checkpoints.

Xen's live migration (Clark et al., NSDI 2005) on the SPK's mechanisms
(:meth:`spk.Machine.dirty_log`, ``export_partition``, ``import_partition``):

1. Pre-copy: round 1 sends every frame of the partition that is not zero;
   each later round sends the frames whose bytes changed since the previous
   round, while the partition keeps running on the source.
2. Stop-and-copy, when few frames are left to send (``stop_frames``) or
   after ``max_rounds``: the partition leaves the source between two of its
   runs; the last changed frames go with its vCPU context, timers, ports
   (queued messages too) and measurements. The destination rebuilds it
   (page tables relocated by ring 0) and runs it in its next window.

Payloads are ``bytes`` (the explicit ``spk-migration/2`` form, never
pickled), so :class:`MigrationSource` and :class:`MigrationSink` can sit in
two processes (Ray actors) with the bytes shipped between them. With a
``key`` each payload carries an HMAC-SHA256 over it and its place in the
migration (or "checkpoint"), checked before it is parsed: hosts of one fleet
share the key, so a payload from anywhere else, or out of its turn, is
refused (``authentication``). What an arriving partition may have here (its
quota, the management right) is the destination's policy
(:class:`MigrationSink`), never the payload's (docs/migration.md, "Threat
model").

Time: virtual time is the hosts' own ``now``; a link is modelled as
``link_bytes_per_tick`` bytes per tick, so a payload of ``n`` bytes takes
``ceil(n / link_bytes_per_tick)`` ticks. Pre-copy rounds take that long
with the partition running (``run_between``); the final payload's copy time
is the downtime, the virtual time the partition does not run. The stats put
it beside ``full_copy_ticks``, a stop-and-copy of the whole quota.

Errors: :class:`spk.MigrationError` (with its ``rule``) for everything a
migration refuses; the partition then runs on where it was.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from spk import Machine, MigrationError, PartitionExport
from spk.abi import PAGE_SIZE

#: The modelled link: bytes per tick of virtual time (a tick is one guest
#: instruction; at 1 G instructions/s this is a 8 Gbit/s link).
LINK_BYTES_PER_TICK = 1
_MAC = 32

__all__ = [
    "LINK_BYTES_PER_TICK", "ChannelRelay", "Migration", "MigrationError", "MigrationSink", "MigrationSource",
    "MigrationStats", "checkpoint", "measure", "migrate", "pid_of", "restore_checkpoint", "ticks_for",
]  # fmt: skip


def _label(seq: int | None) -> bytes:
    """What a MAC covers besides the bytes: which payload of a migration this is, or a checkpoint.

    Not sent (the payload's size is unchanged): each end knows it. A round
    replayed, dropped or reordered, or a checkpoint given as a migration
    payload (or the other way), does not authenticate.
    """
    return b"spk-checkpoint/1\0" if seq is None else b"spk-migration/2 payload %d\0" % seq


def _seal(data: bytes, key: bytes | None, seq: int | None) -> bytes:
    return data if key is None else data + hmac.new(key, _label(seq) + data, hashlib.sha256).digest()


def _authentic(payload: bytes, key: bytes, seq: int | None) -> bool:
    if len(payload) < _MAC:
        return False
    data, mac = payload[:-_MAC], payload[-_MAC:]
    return hmac.compare_digest(mac, hmac.new(key, _label(seq) + data, hashlib.sha256).digest())


def _open(
    payload: bytes, key: bytes | None, seqs: tuple[int | None, ...] = (None,)
) -> tuple[PartitionExport, int | None]:
    """Check a payload's MAC (when keyed) before parsing anything of it; returns it and the label it had.

    ``seqs`` are the labels it may carry, tried in order (in constant time
    each). Errors: MigrationError (``authentication``, or the parse's).
    """
    if key is None:
        return PartitionExport.from_bytes(payload), seqs[0]
    for seq in seqs:
        if _authentic(payload, key, seq):
            return PartitionExport.from_bytes(payload[:-_MAC]), seq
    raise MigrationError("payload not authenticated by the fleet's key (or out of sequence)", "authentication")


def ticks_for(nbytes: int, link_bytes_per_tick: int = LINK_BYTES_PER_TICK) -> int:
    """Virtual time the modelled link takes to move ``nbytes``."""
    return -(-nbytes // link_bytes_per_tick)


def pid_of(machine: Machine, name: str) -> int:
    """The id of the running partition ``name``. Errors: MigrationError (``state``)."""
    for pid, info_name in ((pid, machine.info(pid).name) for pid in machine.partitions):
        if info_name == name:
            return pid
    raise MigrationError(f"no partition {name!r} on this host", "state")


@dataclass(frozen=True)
class MigrationStats:
    """What one migration moved and cost."""

    partition: str
    rounds: int  #: pre-copy rounds (the stop-and-copy not counted)
    bytes: int  #: every payload byte moved, pre-copy and final
    frames_sent: int
    final_bytes: int  #: the stop-and-copy payload
    downtime_ticks: int  #: virtual time the partition did not run: the final payload's copy time
    full_copy_ticks: int  #: what a stop-and-copy of the whole quota would have taken
    round_frames: tuple[int, ...] = ()  #: frames sent per round, final last

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["round_frames"] = list(self.round_frames)
        return out


class MigrationSource:
    """The source host's side: pre-copy rounds, then the stop-and-copy.

    Errors: MigrationError (``state``) when the partition is not running
    here, or is gone or restarted in the middle.
    """

    def __init__(
        self, machine: Machine, name: str, *, link_bytes_per_tick: int = LINK_BYTES_PER_TICK, key: bytes | None = None
    ) -> None:
        if link_bytes_per_tick < 1:
            raise ValueError("link_bytes_per_tick must be positive")
        self.machine, self.name, self.key = machine, name, key
        self.pid = pid_of(machine, name)
        self.link = link_bytes_per_tick
        self._log = machine.dirty_log(self.pid)
        self._round_frames: list[int] = []
        self._bytes = 0
        self._final: tuple[PartitionExport, dict[int, bytes]] | None = None
        self._final_bytes = 0
        self._aborted = False

    def pending(self) -> int:
        """Frames changed since the last round: what the next one would send."""
        return self._log.pending()

    def round_ticks(self, payload: bytes) -> int:
        """The modelled copy time of ``payload``: let the source run that long before the next round."""
        return ticks_for(len(payload), self.link)

    def _send(self, export: PartitionExport) -> bytes:
        data = _seal(export.to_bytes(), self.key, len(self._round_frames))
        self._round_frames.append(len(export.pages))
        self._bytes += len(data)
        return data

    def _usable(self) -> None:
        if self._final is not None or self._aborted:
            raise MigrationError(f"the migration of {self.name} is over (it left, or was given up)", "state")

    def precopy(self) -> bytes:
        """One pre-copy round: every non-zero frame the first time, then the frames changed since."""
        self._usable()
        return self._send(PartitionExport(self.name, None, self._log.collect()))

    def stop_and_copy(self) -> bytes:
        """The partition leaves this host; returns the final payload (rest of the frames and its state)."""
        self._usable()
        pages = self._log.collect()
        everything = self._log.sent_pages()
        export = self.machine.export_partition(self.pid, pages, detach=True)
        self._final = (export, everything)
        data = self._send(export)
        self._final_bytes = len(data)
        return data

    def abort(self) -> None:
        """Give the migration up before the stop-and-copy: the partition runs on here, untouched.

        After the stop-and-copy it is :meth:`rollback` that brings it back.
        The source is spent: a new migration starts with a new one (the
        destination forgets the rounds it took).
        """
        if self._final is not None:
            raise MigrationError(f"{self.name} has left this host: roll it back instead", "state")
        self._aborted = True

    def rollback(self) -> int:
        """The destination refused the partition: it comes back here, as it left (same id)."""
        if self._final is None:
            return self.pid
        export, pages = self._final
        self._final = None
        return self.machine.import_partition(export, pages, pid=self.pid)

    @property
    def stats(self) -> MigrationStats:
        rounds = len(self._round_frames) - (1 if self._final_bytes else 0)
        return MigrationStats(
            self.name, rounds, self._bytes, sum(self._round_frames), self._final_bytes,
            ticks_for(self._final_bytes, self.link), ticks_for(self._log.frames * PAGE_SIZE, self.link),
            tuple(self._round_frames),
        )  # fmt: skip


def _admit(export: PartitionExport, quota: int | None, may_manage: bool | None) -> PartitionExport:
    """The destination's policy on an arriving partition: its quota, its management right.

    Ring 0 checks that the payload cannot reach beyond the frames it is
    given; how many, and whether it may manage other partitions, are this
    host's to decide, never the payload's. ``may_manage`` None keeps what
    the payload says (a source in this process, read by ring 1 itself).
    Errors: MigrationError (``frames``: more frames than ``quota``).
    """
    state = export.state
    if state is None:
        return export
    frames = state.get("frames")
    if quota is not None and (not isinstance(frames, list) or len(frames) > quota):
        count = len(frames) if isinstance(frames, list) else "?"
        raise MigrationError(f"payload asks for {count} frames, this host gives {export.partition} {quota}", "frames")
    if may_manage is None:
        return export
    return PartitionExport(export.partition, {**state, "may_manage": may_manage}, export.pages)


class MigrationSink:
    """The destination host's side: keeps the rounds' frames, builds the partition from the final payload.

    ``quota`` bounds the frames the partition may have here (default: this
    host's RAM); ``may_manage`` is whether it arrives with the management
    right (default: without; None keeps the payload's claim). With a
    ``key``, payloads must come in the order they were sent: a payload that
    authenticates as the first of a migration starts it over (the source
    gave up and began again), any other out of turn is refused.
    """

    def __init__(
        self, machine: Machine, *, pid: int | None = None, port_channels: Mapping[str, int] | None = None,
        key: bytes | None = None, quota: int | None = None, may_manage: bool | None = False,
    ) -> None:  # fmt: skip
        self.machine, self.key = machine, key
        self._pid, self._ports = pid, dict(port_channels or {})
        self._quota, self._may_manage = quota, may_manage
        self._pages: dict[int, bytes] = {}
        self._name: str | None = None
        self._seq = 0

    def _reset(self) -> None:
        self._pages.clear()
        self._name, self._seq = None, 0

    def accept(self, payload: bytes) -> int | None:
        """Take one payload; returns the partition's id here once the final one is in.

        Errors: MigrationError (a payload refused: nothing changed here; a
        refused final payload ends the migration: the sink starts afresh).
        """
        export, seq = _open(payload, self.key, (self._seq, 0) if self._seq else (0,))
        if seq == 0 and self._seq:
            self._reset()  # a new migration of it: the rounds of the one given up are forgotten
        if self._name is None:
            self._name = export.partition
        elif export.partition != self._name:
            raise MigrationError(f"payload of {export.partition!r} in the migration of {self._name!r}", "state")
        limit = self._quota if self._quota is not None else self.machine.ram.frames
        fresh = sum(1 for g in export.pages if g not in self._pages)
        if len(self._pages) + fresh > limit:  # host memory: rounds may not pile up more pages than a quota
            raise MigrationError(f"payloads of {self._name} hold more than {limit} frames", "frames")
        self._seq += 1
        if export.state is None:
            self._pages.update(export.pages)
            return None
        pages = {**self._pages, **export.pages}
        self._reset()
        export = _admit(export, self._quota, self._may_manage)
        return self.machine.import_partition(export, pages, pid=self._pid, port_channels=self._ports)


@dataclass
class ChannelRelay:
    """One direction of a channel whose ends sit on two hosts: ring 1 carries the messages.

    The sending host's half has a relay end that receives like a destination
    port (``Machine.attach_relay(cid, "destination")``); the receiving
    host's half has one that sends like a source port. :meth:`pump` moves
    messages in order: what the receiving half cannot take yet (a full
    queue) waits in :attr:`buffer`, and no more is taken from the sending
    half than the buffer can hold, so its own queue keeps pushing back on
    the sender. Nothing is lost, duplicated or reordered.
    """

    source: Machine
    source_channel: int
    dest: Machine
    dest_channel: int
    capacity: int = 64
    buffer: deque[tuple[bytes, int]] = field(default_factory=deque)
    moved: int = 0

    def __post_init__(self) -> None:
        self.source.attach_relay(self.source_channel, "destination")
        self.dest.attach_relay(self.dest_channel, "source")

    def pump(self) -> int:
        """Move what can move now; returns how many messages reached the receiving half."""
        room = self.capacity - len(self.buffer)
        if room > 0:
            self.buffer.extend(self.source.relay_take(self.source_channel, room))
        done = self.dest.relay_put(self.dest_channel, list(self.buffer))
        for _ in range(done):
            self.buffer.popleft()
        self.moved += done
        return done


@dataclass
class Migration:
    """A finished in-process migration: its stats, the partition's id there, and the relays it needs."""

    stats: MigrationStats
    pid: int
    relays: list[ChannelRelay]


def migrate(
    source: Machine,
    dest: Machine,
    name: str,
    *,
    max_rounds: int = 8,
    stop_frames: int = 16,
    run_between: Callable[[int], None] | None = None,
    link_bytes_per_tick: int = LINK_BYTES_PER_TICK,
    pid: int | None = None,
    port_channels: Mapping[str, int] | None = None,
    key: bytes | None = None,
) -> Migration:
    """Move partition ``name`` from ``source`` to ``dest`` (both in this process).

    ``run_between(ticks)`` lets the source host run about ``ticks`` of
    virtual time between two rounds (the partition keeps running during
    pre-copy); without it the migration is a pure stop-and-copy. Pre-copy
    stops when at most ``stop_frames`` frames changed, or after
    ``max_rounds``. ``pid`` takes a slot declared on ``dest`` under that
    name. Each port of the partition gets a channel on ``dest`` (a new one,
    or the one ``port_channels`` names) and a :class:`ChannelRelay` joining
    it to its channel on ``source``, attached before anything else runs
    there; pump them between runs. ``dest``'s clock must not be behind the
    source's when the partition stops. Errors: MigrationError (the partition
    is back on the source, unchanged), OutOfMemory.
    """
    sender = MigrationSource(source, name, link_bytes_per_tick=link_bytes_per_tick, key=key)
    # Both machines are in this process: the right the partition had on the source goes with it.
    receiver = MigrationSink(dest, pid=pid, port_channels=port_channels, key=key, may_manage=None)
    old_ports = source.ports_of(sender.pid)
    if run_between is not None:
        for _ in range(max_rounds):
            payload = sender.precopy()
            receiver.accept(payload)
            run_between(sender.round_ticks(payload))
            if sender.pending() <= stop_frames:
                break
    final = sender.stop_and_copy()
    try:
        new_pid = receiver.accept(final)
    except Exception:
        sender.rollback()
        raise
    assert new_pid is not None
    relays = []
    for port, (cid, direction) in dest.ports_of(new_pid).items():
        old_cid = old_ports[port][0]
        if direction == "destination":
            relays.append(ChannelRelay(source, old_cid, dest, cid))
        else:
            relays.append(ChannelRelay(dest, cid, source, old_cid))
    return Migration(sender.stats, new_pid, relays)


def checkpoint(machine: Machine, name: str, *, key: bytes | None = None) -> bytes:
    """A whole copy of a running partition (state and every non-zero frame); it runs on.

    Restored with :func:`restore_checkpoint` on any host of the fleet, it
    goes on from this instant: what it did since is lost, and declared so by
    whoever restores it. Errors: MigrationError (``state``).
    """
    return _seal(machine.export_partition(pid_of(machine, name)).to_bytes(), key, None)


def restore_checkpoint(
    machine: Machine, data: bytes, *, pid: int | None = None, port_channels: Mapping[str, int] | None = None,
    key: bytes | None = None, quota: int | None = None, may_manage: bool | None = False,
) -> int:  # fmt: skip
    """Start a partition from a checkpoint on ``machine``; returns its id.

    ``quota`` and ``may_manage`` as for :class:`MigrationSink`. Errors:
    MigrationError (a payload refused, a clock behind the checkpoint's, no
    room for its quota).
    """
    export, _seq = _open(data, key)
    if export.state is None:
        raise MigrationError("a pre-copy round is not a checkpoint", "state")
    export = _admit(export, quota, may_manage)
    return machine.import_partition(export, pid=pid, port_channels=dict(port_channels or {}))


#: The benchmark's partition: 1 MiB of quota, filled with data, then a hot working set written forever.
BENCH_QUOTA_FRAMES = 256
BENCH_WINDOW = 10_000


def measure(*, quick: bool = False, link_bytes_per_tick: int = LINK_BYTES_PER_TICK) -> dict[str, float | int]:
    """Live-migration metrics for ``spk bench``: a 1 MiB partition under write load.

    The guest (``partitions/migrate_writer.asm``) fills every frame of its
    1 MiB quota, then keeps writing its first 8 pages. It runs in windows
    of BENCH_WINDOW ticks on one host and is migrated live to another (in
    virtual-time lockstep), then runs on there; the numbers are virtual time
    and bytes, the same on every machine. ``quick`` runs it for less time
    before and after (the metrics are the same: the fill is done either way).
    Errors: MigrationError or an image build error (a bug).
    """
    from pathlib import Path

    from spgs.images import build

    image = build([("kernel", "migrate_writer")], Path.cwd())[("kernel", "migrate_writer")]
    source, dest = Machine(8 << 20), Machine(8 << 20)
    dest.create_partition("resident", image, [], 64)  # the destination is not empty: frames are relocated
    pid = source.create_partition("writer", image, [], BENCH_QUOTA_FRAMES)

    def run(ticks: int) -> None:
        end = source.now + ticks
        while source.now < end:
            window_end = min(end, source.now + BENCH_WINDOW)
            source.run(pid, window_end)
            source.advance(window_end)
        dest.advance(source.now)

    run(1_000_000 if quick else 2_000_000)
    done = migrate(source, dest, "writer", run_between=run, link_bytes_per_tick=link_bytes_per_tick)
    dest.advance(source.now + done.stats.downtime_ticks)
    before = dest.info(done.pid).counters.instructions
    end = dest.now + (50_000 if quick else 200_000)
    dest.run(done.pid, end)
    if dest.info(done.pid).counters.instructions <= before or dest.info(done.pid).state != "ready":
        raise MigrationError("the migrated benchmark partition did not run on", "state")
    dest.check_invariants()
    stats = done.stats
    return {
        "migration_downtime_ticks": stats.downtime_ticks,
        "migration_bytes": stats.bytes,
        "migration_rounds": stats.rounds,
        "migration_final_frames": stats.round_frames[-1],
        "migration_full_copy_ticks": stats.full_copy_ticks,
        "migration_downtime_ratio": stats.downtime_ticks / stats.full_copy_ticks,
    }
