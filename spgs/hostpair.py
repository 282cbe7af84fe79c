"""Two hosts booted from one system description, in virtual-time lockstep: ``spk migrate``.

Host 0 boots the description as ``spk launch`` does. Host 1 has the same
RAM size, windows and channels, with every partition declared and none
started: a partition that arrives takes its declared slot, so it keeps its
windows to the tick, and its trace goes on as if it had not moved. Both
hosts run one major frame at a time; between two frames ring 1 pumps the
channel relays and carries out the migrations that are due: those asked for
on the command line (``--at``) and those a system partition asked for with
PART_CONTROL migrate (:attr:`spgs.system.System.migrator`). A migration is
live: pre-copy rounds run while both hosts go on, frame by frame.

The platform keys of the two hosts are fixed demonstration keys derived
from the host's index (``spk-hostpair-N``): deterministic, and no secret.

Errors: those of :func:`spgs.system.load_and_plan`; MigrationError is
reported as an event, never raised (the partition runs on where it was).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spgs.config import load
from spgs.migration import LINK_BYTES_PER_TICK, ChannelRelay, MigrationStats, migrate
from spgs.system import System, load_and_plan, plan
from spk import MachineEvent, MigrationError

HostListener = Callable[[str, MachineEvent], None]


def demo_key(index: int) -> bytes:
    """The fixed attestation seed of host ``index`` (a demonstration key, not a secret)."""
    return hashlib.sha256(f"spk-hostpair-{index}".encode()).digest()


@dataclass
class Move:
    """One migration a pair carried out (or refused)."""

    partition: str
    source: str
    dest: str
    time: int  #: when the partition stopped on the source
    stats: MigrationStats | None
    error: str | None = None


@dataclass
class HostPair:
    """Host 0 and host 1, from the description at ``path``; see the module docstring."""

    path: Path
    listener: HostListener
    secure_boot: str | None = None
    link_bytes_per_tick: int = LINK_BYTES_PER_TICK
    max_rounds: int = 8
    stop_frames: int = 16
    hosts: list[System] = field(init=False)
    names: tuple[str, str] = ("host0", "host1")
    moves: list[Move] = field(default_factory=list)
    relays: list[ChannelRelay] = field(default_factory=list)
    _pending: list[str] = field(default_factory=list)
    _moving: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        config, plans = load_and_plan(self.path, secure_boot=self.secure_boot)
        second = load(self.path)
        for p in second.description.partition:
            p.boot = False  # everything declared: a partition that arrives takes its slot
        self.hosts = [
            System(config, plans, self._tagged(0), secure_boot=self.secure_boot, attestation_key=demo_key(0)),
            System(second, plan(second, secure_boot=self.secure_boot), self._tagged(1),
                   secure_boot=self.secure_boot, attestation_key=demo_key(1)),
        ]  # fmt: skip
        for host in self.hosts:
            host.migrator = self.request

    def _tagged(self, index: int) -> Callable[[MachineEvent], None]:
        name = self.names[index]
        return lambda event: self.listener(name, event)

    @property
    def major_frame(self) -> int:
        return self.hosts[0].major_frame

    @property
    def now(self) -> int:
        return self.hosts[0].machine.now

    def where(self, name: str) -> int | None:
        """The index of the host running partition ``name``, if one does."""
        return next((i for i, h in enumerate(self.hosts) if h.pid_of(name) is not None), None)

    def request(self, name: str) -> str:
        """A migration asked for (PART_CONTROL migrate, or the command line): due at the end of the frame."""
        if self.where(name) is None:
            return "ignored: not running"
        if name in self._pending or name in self._moving:
            return "ignored: already moving"
        self._pending.append(name)
        return "accepted: moves at the end of the major frame"

    def live(self) -> bool:
        return any(h.live() for h in self.hosts)

    def frame(self, bound: int) -> None:
        """Both hosts run one major frame (or up to ``bound``); then the relays are pumped."""
        end = min(self.now + self.major_frame, bound)
        for host in self.hosts:
            host.run(end)
            host.machine.advance(end)
        for relay in self.relays:
            relay.pump()

    def run(self, max_ticks: int, schedule: dict[str, int] | None = None) -> None:
        """Run to ``max_ticks`` (or until nothing is left to run), moving partitions when due.

        ``schedule`` maps a partition to the virtual time from which it moves
        to the other host (once, at the first frame boundary at or after it).
        """
        due = dict(schedule or {})
        while self.now < max_ticks and (self.live() or due):
            self.frame(max_ticks)
            for name, when in list(due.items()):
                if when <= self.now:
                    del due[name]
                    self.request(name)
            while self._pending and self.now < max_ticks:
                self._move(self._pending.pop(0), max_ticks)

    def _move(self, name: str, bound: int) -> None:
        index = self.where(name)
        if index is None:
            return
        source, dest = self.hosts[index], self.hosts[1 - index]
        self._moving.add(name)

        def run_between(ticks: int) -> None:
            end = min(self.now + max(ticks, 1), bound)
            while self.now < end:
                self.frame(bound)

        try:
            done = migrate(
                source.machine, dest.machine, name, max_rounds=self.max_rounds, stop_frames=self.stop_frames,
                run_between=run_between, link_bytes_per_tick=self.link_bytes_per_tick, pid=dest.pids[name],
            )  # fmt: skip
        except MigrationError as exc:
            self.moves.append(Move(name, self.names[index], self.names[1 - index], self.now, None, str(exc)))
            return
        finally:
            self._moving.discard(name)
        self.relays += done.relays
        self.moves.append(Move(name, self.names[index], self.names[1 - index], self.now, done.stats))
        # The final copy takes downtime_ticks: the partition may not run before it is over. Its
        # next window on the destination starts ``offset`` into the next frame; the windows that
        # start before the copy is done pass idle (whole frames: a window is never cut short).
        stopped = self.now
        ready_at = stopped + done.stats.downtime_ticks
        offset = min((start for n, start, _d in dest.windows if n == name), default=0)
        if stopped + offset < ready_at and dest.machine.pause_partition(done.pid):
            while self.now + offset < ready_at and self.now < bound:
                self.frame(bound)
            dest.machine.resume_partition(done.pid)
