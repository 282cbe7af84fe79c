"""``fleet.toml``: the hosts of a fleet, its partitions and their demand, validated.

The same error style as ``partitions.toml`` (:mod:`spgs.config`): every
problem names the file, the line, the field and the rule, and all problems
are reported, not only the first. pydantic checks each field; the rules that
span fields (names unique, a partition placed on a host that exists, demand
steps in order, events inside the run) run once every field has passed.
docs/fleet.md documents every field and rule.

Errors: :class:`spgs.config.ConfigError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from spgs.config import (
    ConfigError,
    Problem,
    Size,
    _check_name,
    _LineIndex,
    _shorten,
    read_toml_model,
)
from spk.abi import PAGE_SIZE

_MODEL = ConfigDict(extra="forbid", strict=True)
#: Most hosts and partitions one file may name (a 64-host fleet with a few partitions each).
MAX_HOSTS = 256
MAX_PARTITIONS = 1024
#: Longest run, in rounds.
MAX_ROUNDS = 10_000


def _pair(value: object) -> object:
    """A TOML array ``[round, demand]`` as the pair it stands for (strict: no other conversion)."""
    return tuple(value) if isinstance(value, list) else value


#: One step of a demand profile: from this round on, this demand.
DemandStep = Annotated[tuple[int, float], BeforeValidator(_pair)]
#: A round of the run (the fleet's virtual time, in rounds).
Round = Annotated[int, Field(ge=0, le=MAX_ROUNDS)]


class BandConfig(BaseModel):
    """``[fleet.band]``: the utilisation each host keeps itself in (load / capacity)."""

    model_config = _MODEL

    low: float = Field(default=0.2, ge=0.0, le=10.0, description="below: the host takes work, never sheds it")
    high: float = Field(default=0.9, gt=0.0, le=10.0, description="above: the host must shed work")


class FleetSettings(BaseModel):
    """``[fleet]``: the run and the rules every host follows."""

    model_config = _MODEL

    name: str = "fleet"
    seed: int = Field(default=0, ge=0, lt=1 << 63)
    rounds: int = Field(default=30, ge=1, le=MAX_ROUNDS, description="length of the run, in rounds")
    round_ticks: int = Field(default=20_000, ge=1_000, le=10_000_000, description="virtual time of one round")
    neighbours: int = Field(default=3, ge=1, le=16, description="hosts each host gossips with")
    band: BandConfig = Field(default_factory=BandConfig)
    hysteresis: float = Field(default=0.05, ge=0.0, le=1.0, description="least gain in utilisation gap to move")
    checkpoint_every: int = Field(default=4, ge=1, le=MAX_ROUNDS, description="rounds between checkpoints")
    suspect_after: int = Field(default=2, ge=1, le=100, description="silent rounds before a neighbour is dead")
    max_precopy_rounds: int = Field(default=4, ge=1, le=64, description="pre-copy rounds before stop-and-copy")
    stop_frames: int = Field(default=8, ge=0, le=1 << 18, description="dirty frames small enough to stop and copy")
    host_memory: Size = Field(default=32 << 20, description="RAM of every host")
    goal_imbalance: float = Field(default=1.2, ge=1.0, le=100.0, description="max/mean utilisation called balanced")

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _check_name(value, "fleet_name")

    @field_validator("host_memory")
    @classmethod
    def _memory_rule(cls, value: int) -> int:
        if value % PAGE_SIZE or not (2 << 20) <= value <= (1 << 30):
            raise PydanticCustomError("host_memory_size", "must be a multiple of 4 KiB between 2 MiB and 1 GiB")
        return value


class HostConfig(BaseModel):
    """``[[host]]``: one SPK machine of the fleet."""

    model_config = _MODEL

    name: str
    capacity: float = Field(gt=0.0, le=1e6, description="demand units the host serves in one round")
    memory: Size | None = Field(default=None, description="its RAM (default: [fleet].host_memory)")
    join: Round | None = Field(default=None, description="round the host joins (default: there from the start)")
    leave: Round | None = Field(default=None, description="round the host starts leaving (it hands its work on)")
    fail: Round | None = Field(default=None, description="round the host dies, without warning")

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _check_name(value, "host_name")

    @field_validator("memory")
    @classmethod
    def _memory_rule(cls, value: int | None) -> int | None:
        if value is not None and (value % PAGE_SIZE or not (2 << 20) <= value <= (1 << 30)):
            raise PydanticCustomError("host_memory_size", "must be a multiple of 4 KiB between 2 MiB and 1 GiB")
        return value


class FleetPartition(BaseModel):
    """``[[partition]]``: a guest domain, where it starts, and what it demands over time."""

    model_config = _MODEL

    name: str
    image: str = Field(default="fleet_worker", description="guest kernel: a bundled name or a path")
    apps: list[str] = Field(default_factory=list, max_length=8)
    memory: Size = Field(default=256 << 10, description="memory quota in bytes")
    host: str = Field(description="the host it starts on")
    demand: list[DemandStep] = Field(
        min_length=1, max_length=256, description="[[round, demand], ...]: demand units from that round on"
    )

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _check_name(value, "partition_name")

    @field_validator("memory")
    @classmethod
    def _quota_rule(cls, value: int) -> int:
        if value % PAGE_SIZE or not 64 * PAGE_SIZE <= value <= (1 << 30):
            raise PydanticCustomError("quota_size", "must be a multiple of 4 KiB, at least 256 KiB and at most 1 GiB")
        return value

    @field_validator("demand")
    @classmethod
    def _demand_rule(cls, value: list[tuple[int, float]]) -> list[tuple[int, float]]:
        for step_round, amount in value:
            if not 0 <= step_round <= MAX_ROUNDS or not 0.0 <= amount <= 1e6:
                raise PydanticCustomError(
                    "demand_step", "{step}: a step is [round 0..{rounds}, demand 0..1e6]",
                    {"step": _shorten(repr([step_round, amount])), "rounds": MAX_ROUNDS},
                )  # fmt: skip
        return value

    def demand_at(self, round_: int) -> float:
        """The partition's demand in round ``round_`` (the last step at or before it; 0 before the first)."""
        current = 0.0
        for step_round, amount in self.demand:
            if step_round > round_:
                break
            current = amount
        return current


class ScalingConfig(BaseModel):
    """``[scaling]``: the message-count experiment, same rules on fleets of several sizes."""

    model_config = _MODEL

    hosts: list[int] = Field(default_factory=lambda: [4, 64], min_length=1, max_length=8)
    partitions_per_host: int = Field(default=2, ge=1, le=16)
    rounds: int = Field(default=16, ge=1, le=1000)

    @field_validator("hosts")
    @classmethod
    def _hosts_rule(cls, value: list[int]) -> list[int]:
        for n in value:
            if not 2 <= n <= MAX_HOSTS:
                raise PydanticCustomError("scaling_hosts", "{n}: a fleet has 2 to {most} hosts", {"n": n,
                                                                                                   "most": MAX_HOSTS})
        return value


class FleetDescription(BaseModel):
    """The whole file."""

    model_config = _MODEL

    fleet: FleetSettings = Field(default_factory=FleetSettings)
    host: list[HostConfig] = Field(min_length=2, max_length=MAX_HOSTS)
    partition: list[FleetPartition] = Field(min_length=1, max_length=MAX_PARTITIONS)
    scaling: ScalingConfig | None = None


@dataclass(frozen=True)
class LoadedFleet:
    path: Path
    description: FleetDescription
    digest: bytes  #: SHA-256 of the file's bytes


def _problems(desc: FleetDescription, file: str, lines: _LineIndex) -> Iterator[Problem]:
    """The rules that span fields, each named; every violation, not only the first."""

    def problem(path: tuple[str | int, ...], rule: str, message: str) -> Problem:
        loc = tuple(str(p) for p in path)
        return Problem(file, lines.find(loc), ".".join(loc), rule, message)

    for kind, names in (("host", [h.name for h in desc.host]), ("partition", [p.name for p in desc.partition])):
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first:
                yield problem((kind, i, "name"), "duplicate_name", f"{name!r} already names {kind} {first[name]}")
            first.setdefault(name, i)
    hosts = {h.name: h for h in desc.host}
    settings = desc.fleet
    if settings.band.low >= settings.band.high:
        yield problem(("fleet", "band", "low"), "band_order",
                      f"low {settings.band.low} must be below high {settings.band.high}")  # fmt: skip
    for i, h in enumerate(desc.host):
        for event in ("join", "leave", "fail"):
            value = getattr(h, event)
            if value is not None and value >= settings.rounds:
                yield problem(("host", i, event), "event_round",
                              f"{h.name}: round {value} is not inside the run (rounds 0..{settings.rounds - 1})")
        if h.join is not None and any(v is not None and v <= h.join for v in (h.leave, h.fail)):
            yield problem(("host", i, "join"), "event_order", f"{h.name}: leaves or fails before it joins")
    present = [h for h in desc.host if h.join is None]
    if not present:
        yield problem(("host",), "no_host_at_start", "at least one host must be there from round 0")
    survivors = [h for h in desc.host if h.fail is None and h.leave is None]
    if not survivors:
        yield problem(("host",), "no_survivor", "every host fails or leaves: the work would have nowhere to go")
    if settings.neighbours >= len(desc.host):
        yield problem(("fleet", "neighbours"), "neighbours_range",
                      f"{settings.neighbours} neighbours need more than {len(desc.host)} hosts")  # fmt: skip
    if settings.neighbours % 2 == 1 and len(desc.host) % 2 == 1 and settings.neighbours > 1:
        yield problem(("fleet", "neighbours"), "neighbours_parity",
                      f"an odd number of neighbours ({settings.neighbours}) needs an even number of hosts "
                      f"({len(desc.host)}): every host has exactly that many")  # fmt: skip
    for i, p in enumerate(desc.partition):
        where = hosts.get(p.host)
        if where is None:
            yield problem((("partition", i, "host")), "unknown_host",
                          f"{p.name}: no host {p.host!r} (hosts: {', '.join(sorted(hosts))})")
        elif where.join is not None:
            yield problem(("partition", i, "host"), "host_not_present",
                          f"{p.name}: host {p.host!r} joins at round {where.join}, after the start")
        rounds = [r for r, _ in p.demand]
        if rounds != sorted(set(rounds)) or rounds[0] != 0:
            yield problem(("partition", i, "demand"), "demand_order",
                          f"{p.name}: demand steps must start at round 0 and go up ({rounds})")
        ram = where.memory if where is not None and where.memory is not None else settings.host_memory
        if p.memory + (1 << 20) > ram:
            yield problem(("partition", i, "memory"), "quota_above_host",
                          f"{p.name}: {p.memory >> 10} KiB does not fit a host of {ram >> 10} KiB "
                          "(1 MiB is ring 0's)")


def load_fleet(path: Path) -> LoadedFleet:
    """Read and validate a fleet description.

    Errors: ConfigError (unreadable file, not UTF-8, TOML syntax, a field's
    rule, or a rule across fields), every problem with file, line and rule.
    """
    name = str(path)
    raw_bytes, description, index = read_toml_model(path, FleetDescription)
    found = list(_problems(description, name, index))
    if found:
        raise ConfigError(found)
    return LoadedFleet(path, description, hashlib.sha256(raw_bytes).digest())
