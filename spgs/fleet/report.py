"""What a fleet run did: load per host per round, events, moves, losses, and the metrics.

:class:`FleetReport` is built round by round by the runner and holds only
what follows from the fleet file and its seed (virtual time, counts, the
hosts' own events): two runs of one file give equal reports, whatever ran
them. :class:`FleetStatus` is the live view (the CLI's table, and the
management API's ``/api/v1/fleet``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spgs.fleet.messages import HostStatus


@dataclass
class RoundRecord:
    """The fleet after one round: every live host's load, and how uneven they are."""

    round: int
    time: int
    hosts: dict[str, dict[str, Any]]  #: name -> load, capacity, utilisation, partitions
    imbalance: float  #: max / mean utilisation over live hosts (1.0 when perfectly even)

    @classmethod
    def of(cls, round_: int, statuses: list[HostStatus]) -> RoundRecord:
        hosts = {
            s.name: {"load": s.load, "capacity": s.capacity, "utilisation": s.utilisation,
                     "partitions": [p.name for p in s.partitions],
                     "instructions": {p.name: p.instructions for p in s.partitions}}
            for s in statuses
        }  # fmt: skip
        time = max((s.time for s in statuses), default=0)
        return cls(round_, time, hosts, imbalance([s.utilisation for s in statuses]))


def imbalance(utilisations: list[float]) -> float:
    """max / mean, rounded to 6 places (1.0 for an empty or idle fleet)."""
    if not utilisations or sum(utilisations) <= 0:
        return 1.0
    return round(max(utilisations) / (sum(utilisations) / len(utilisations)), 6)


@dataclass
class FleetReport:
    name: str
    seed: int
    rounds: int
    round_ticks: int
    goal: float
    hosts: list[str]
    neighbours: dict[str, list[str]]
    history: list[RoundRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def disturbances(self) -> list[int]:
        """Rounds where demand changed or hosts joined, failed or left: convergence is measured between them."""
        kinds = ("joined", "failed", "left", "demand_changed")
        return sorted({e["round"] for e in self.events if e["event"] in kinds})

    def rounds_to_converge(self, start: int = 0) -> int | None:
        """Rounds from ``start`` until the imbalance is within the goal and stays so until the next disturbance."""
        later = [r for r in self.disturbances() if r > start]
        end = later[0] if later else len(self.history)
        window = [rec for rec in self.history if start <= rec.round < end]
        for i, rec in enumerate(window):
            if all(r.imbalance <= self.goal for r in window[i:]):
                return rec.round - start
        return None

    def finish(self, control_messages: int, host_rounds: int, bulk_bytes: int, by_kind: dict[str, int]) -> None:
        """The metrics of the run, once it is over."""
        migrations = self.of_kind("migrated")
        restarts = self.of_kind("restarted")
        failures = [e["round"] for e in self.of_kind("failed")]
        self.metrics = {
            "fleet_hosts": len(self.hosts),
            "fleet_rounds": self.rounds,
            "fleet_imbalance_start": self.history[0].imbalance if self.history else None,
            "fleet_imbalance_after": self.history[-1].imbalance if self.history else None,
            "fleet_rounds_to_converge": self.rounds_to_converge(0),
            "fleet_rounds_to_reconverge": [self.rounds_to_converge(r) for r in failures],
            "fleet_msgs_per_host_round": round(control_messages / host_rounds, 4) if host_rounds else 0.0,
            "fleet_control_messages": control_messages,
            "fleet_messages_by_kind": dict(sorted(by_kind.items())),
            "fleet_bulk_bytes": bulk_bytes,
            "fleet_migrations": len(migrations),
            "fleet_migration_bytes": sum(int(m.get("bytes", 0)) for m in migrations),
            "fleet_migration_downtime_ticks_max": max((int(m.get("downtime_ticks", 0)) for m in migrations),
                                                      default=0),
            "fleet_failures": len(failures),
            "fleet_restarted": len(restarts),
            "fleet_lost_ticks": {e["partition"]: e["lost_ticks"] for e in restarts},
            "fleet_lost_instructions": {e["partition"]: e["lost_instructions"] for e in restarts},
            "fleet_lost_partitions": [e["partition"] for e in self.of_kind("lost")],
        }  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "seed": self.seed, "rounds": self.rounds, "round_ticks": self.round_ticks,
            "goal_imbalance": self.goal, "hosts": self.hosts, "neighbours": self.neighbours,
            "metrics": self.metrics,
            "history": [{"round": r.round, "time": r.time, "imbalance": r.imbalance, "hosts": r.hosts}
                        for r in self.history],
            "events": self.events,
        }  # fmt: skip


class FleetStatus:
    """The fleet as it stands: what a live table or the management API shows.

    ``status()`` is a plain dict: ``{"name", "round", "time", "imbalance",
    "hosts": [{"name", "state", "load", "capacity", "utilisation",
    "partitions": [names]}], "events": [the last few]}``. Hosts that failed or
    left stay listed with their state.
    """

    #: Events kept for the status (the report keeps them all).
    RECENT = 20

    def __init__(self, name: str, hosts: list[str]) -> None:
        self.name = name
        self._hosts = sorted(hosts)
        self._record: RoundRecord | None = None
        self._events: list[dict[str, Any]] = []
        self._states: dict[str, str] = {h: "not joined" for h in hosts}

    def update(self, record: RoundRecord, events: list[dict[str, Any]]) -> None:
        self._record = record
        self._events = [e for e in events if e["event"] not in ("checkpoint",)][-self.RECENT :]
        for name in self._hosts:
            self._states[name] = "up" if name in record.hosts else self._states[name]
        for e in events:
            if e["event"] == "failed":
                self._states[e["host"]] = "failed"
            elif e["event"] == "left":
                self._states[e["host"]] = "left"

    def status(self) -> dict[str, Any]:
        record = self._record
        hosts = []
        for name in self._hosts:
            entry = record.hosts.get(name) if record is not None else None
            hosts.append({
                "name": name, "state": self._states[name],
                "load": entry["load"] if entry else 0.0, "capacity": entry["capacity"] if entry else None,
                "utilisation": entry["utilisation"] if entry else 0.0,
                "partitions": list(entry["partitions"]) if entry else [],
            })  # fmt: skip
        return {
            "name": self.name, "round": record.round if record else None, "time": record.time if record else 0,
            "imbalance": record.imbalance if record else None, "hosts": hosts, "events": list(self._events),
        }  # fmt: skip
