"""Running a fleet: the virtual clock and the network between its hosts.

There is no manager. The driver here is what the hosts' world is made of:
the clock (a barrier after each phase of a round: every host finishes the
phase before any starts the next) and the network (a message produced in
one phase reaches its target at the next, or is dropped when the target is
not there). It reads no message's content, makes no decision, and injects
only what the fleet file says happens to hosts: joins and failures.
The hosts (:class:`spgs.fleet.host.FleetHost`) run in Ray actors
(:mod:`spgs.fleet.ray_transport`), or in this process (:class:`LocalTransport`,
the same code, for fleets too large for the machine's Ray).

Determinism: hosts are called in the order of their names, each inbox is
sorted before a host reads it, and results are gathered by name, so the
order Ray runs things in never shows: the same file and seed give the same
report.

Errors: ConfigError (the fleet file, or an image it names), ImageNotFound,
AssemblyError, BuildError; RuntimeError when Ray is asked for and not
installed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from spgs.fleet.config import FleetDescription, FleetPartition, FleetSettings, HostConfig, LoadedFleet
from spgs.fleet.host import BootImage, FleetHost, HostSpec
from spgs.fleet.messages import BULK, CONTROL, PHASES, Message, PhaseResult
from spgs.fleet.moves import Mover
from spgs.fleet.report import FleetReport, FleetStatus, RoundRecord
from spgs.fleet.rules import neighbours
from spgs.images import build
from spgs.system import image_label
from spk.abi import PAGE_SIZE


class Transport(Protocol):
    """Where hosts run: create them, call one phase on several at once, kill one."""

    def create(self, spec: HostSpec) -> None: ...

    def call(self, phase: str, round_: int, inboxes: dict[str, list[Message]]) -> dict[str, PhaseResult]: ...

    def kill(self, name: str) -> None: ...

    def close(self) -> None: ...


class LocalTransport:
    """Every host in this process, one after the other (same host code as on Ray)."""

    def __init__(self) -> None:
        self.hosts: dict[str, FleetHost] = {}

    def create(self, spec: HostSpec) -> None:
        self.hosts[spec.name] = FleetHost(spec, Mover(spec.settings.seed))

    def call(self, phase: str, round_: int, inboxes: dict[str, list[Message]]) -> dict[str, PhaseResult]:
        results: dict[str, PhaseResult] = {}
        for name in sorted(inboxes):
            results[name] = getattr(self.hosts[name], phase)(round_, inboxes[name])
        return results

    def kill(self, name: str) -> None:
        del self.hosts[name]

    def close(self) -> None:
        self.hosts.clear()


def host_specs(desc: FleetDescription, base_dir: Path) -> list[HostSpec]:
    """What each host is given: its capacity, neighbours, the demand table, the partitions it boots.

    Errors: ImageNotFound, AssemblyError, BuildError (an image the file names).
    """
    wanted = [("kernel", p.image) for p in desc.partition] + [("app", a) for p in desc.partition for a in p.apps]
    images = build(wanted, base_dir)
    names = [h.name for h in desc.host]
    graph = neighbours(names, desc.fleet.neighbours, desc.fleet.seed)
    demand = {p.name: list(p.demand) for p in desc.partition}
    specs = []
    for h in desc.host:
        boot = [
            BootImage(p.name, image_label(p.image), images[("kernel", p.image)],
                      [(image_label(a), images[("app", a)]) for a in p.apps], p.memory // PAGE_SIZE)
            for p in desc.partition if p.host == h.name
        ]  # fmt: skip
        specs.append(HostSpec(h.name, h.capacity, graph[h.name], desc.fleet, demand, boot, h.join or 0, h.leave,
                              h.memory))  # fmt: skip
    return specs


@dataclass
class _Counters:
    control: int = 0
    bulk_bytes: int = 0
    host_rounds: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


OnRound = Callable[[FleetStatus], None]


def run_fleet(
    loaded: LoadedFleet,
    transport: Transport,
    *,
    on_round: OnRound | None = None,
    description: FleetDescription | None = None,
    status: FleetStatus | None = None,
) -> FleetReport:
    """Run the fleet the file describes on ``transport``; the report of the run.

    ``status`` (a :class:`FleetStatus`, made here when not given) is updated
    after every round: a management API may hold it and serve
    ``status.status()`` while the run goes on; ``on_round`` is called with it
    then (the live table). ``description`` replaces the file's (the scaling
    experiment).
    Errors: as the module says.
    """
    desc = description or loaded.description
    settings = desc.fleet
    specs = {s.name: s for s in host_specs(desc, loaded.path.parent)}
    hosts = {h.name: h for h in desc.host}
    status = status if status is not None else FleetStatus(settings.name, [h.name for h in desc.host])
    report = FleetReport(settings.name, settings.seed, settings.rounds, settings.round_ticks, settings.goal_imbalance,
                         sorted(hosts), {n: s.neighbours for n, s in specs.items()})  # fmt: skip
    alive: list[str] = []
    pending: dict[str, list[Message]] = {}
    counters = _Counters()
    try:
        for round_ in range(settings.rounds):
            _host_events(round_, hosts, specs, transport, alive, pending, report)
            counters.host_rounds += len(alive)
            statuses = {}
            for phase in PHASES:
                inboxes = {name: pending.pop(name, []) for name in sorted(alive)}
                pending.clear()  # messages to hosts not there are dropped
                results = transport.call(phase, round_, inboxes)
                for name in sorted(results):
                    result = results[name]
                    report.events.extend(dict(e, phase=phase) for e in result.events)
                    if result.status is not None:
                        statuses[name] = result.status
                    for msg in result.outbox:
                        counters.control += msg.kind in CONTROL
                        counters.by_kind[msg.kind] = counters.by_kind.get(msg.kind, 0) + 1
                        counters.bulk_bytes += msg.size if msg.kind in BULK else 0
                        pending.setdefault(msg.target, []).append(msg)
            for name in sorted(n for n in alive if n in statuses and statuses[n].leaving):
                if any(e["event"] == "left" and e["host"] == name and e["round"] == round_ for e in report.events):
                    alive.remove(name)
                    transport.kill(name)
            record = RoundRecord.of(round_, [statuses[n] for n in sorted(statuses)])
            report.history.append(record)
            status.update(record, report.events)
            if on_round is not None:
                on_round(status)
    finally:
        transport.close()
    report.finish(counters.control, counters.host_rounds, counters.bulk_bytes, counters.by_kind)
    return report


def _host_events(
    round_: int, hosts: dict[str, HostConfig], specs: dict[str, HostSpec], transport: Transport, alive: list[str],
    pending: dict[str, list[Message]], report: FleetReport,
) -> None:  # fmt: skip
    """What the fleet file says happens to hosts at the start of a round: joins, then failures."""
    for name in sorted(hosts):
        h = hosts[name]
        if (h.join or 0) == round_:
            transport.create(specs[name])
            alive.append(name)
            if round_:
                report.events.append({"round": round_, "host": name, "event": "joined", "phase": "-"})
        if h.fail == round_ and name in alive:
            transport.kill(name)
            alive.remove(name)
            pending.pop(name, None)
            report.events.append({"round": round_, "host": name, "event": "failed", "phase": "-"})
    alive.sort()
    changed = sorted(p for p, steps in next(iter(specs.values())).demand.items() if any(r == round_ for r, _ in steps))
    if round_ and changed:
        report.events.append({"round": round_, "host": "-", "event": "demand_changed", "partitions": changed,
                              "phase": "-"})


def scaling_description(desc: FleetDescription, hosts: int) -> FleetDescription:
    """The scaling experiment's fleet of ``hosts`` hosts, with the file's rules.

    Each host has capacity ``2 × partitions_per_host`` and there are
    ``partitions_per_host`` partitions per host, of demand 1 (half full once
    balanced); each starts on a host drawn from the seed, so the fleet starts
    uneven and a host's neighbourhood looks alike at every size. Every host
    has RAM for four times its share; the seed's draw is kept within it.
    """
    scaling = desc.scaling
    assert scaling is not None
    per_host = scaling.partitions_per_host
    width = len(str(hosts - 1))
    names = [f"h{i:0{width}d}" for i in range(hosts)]
    quota = 64 * PAGE_SIZE
    room = 4 * per_host
    digest = hashlib.sha256(f"spk-fleet-scaling/{desc.fleet.seed}/{hosts}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    placed = {n: 0 for n in names}
    partitions = []
    for i in range(hosts * per_host):
        host = rng.choice([n for n in names if placed[n] < room])
        placed[host] += 1
        partitions.append(FleetPartition(name=f"s{i:03d}", host=host, memory=quota, demand=[(0, 1.0)]))
    mib = 1 << 20
    settings = FleetSettings.model_validate(
        dict(desc.fleet.model_dump(), rounds=scaling.rounds, host_memory=-(-(room * quota + 2 * mib) // mib) * mib,
             name=f"{desc.fleet.name}-{hosts}")
    )  # fmt: skip
    host_list = [HostConfig(name=n, capacity=float(2 * per_host)) for n in names]
    return FleetDescription(fleet=settings, host=host_list, partition=partitions)
