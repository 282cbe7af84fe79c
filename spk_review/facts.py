"""Boot the system under review and gather what its partitions are and did.

The review boots the description exactly as ``spk launch`` does (ring 1's
:class:`spgs.system.System`, secure boot as configured) with a platform key,
runs it for its ``max_ticks`` (or the bound given), and keeps the machine for
the other fact gatherers: the memory map, the hypercall table and the
attestation read the same booted system.

Errors: those of :func:`spgs.system.load_and_plan` (ConfigError,
ImageNotFound, AssemblyError, TrustError), TrustError for an unreadable
platform key, SpkError when ring 0 refuses to create a partition, ValueError
for a bound that is not positive.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from spgs.config import LoadedConfig
from spgs.system import System, SystemReport, load_and_plan, run_bound
from spgs.trust import load_seed
from spk import MachineEvent
from spk_review.fullvirt import full_partition_facts, full_pids, serial_cables
from spk_review.model import (
    FAULT_SITES_KEPT,
    FaultSite,
    FullPartitionFacts,
    PartitionFacts,
    PortFacts,
    SystemFacts,
)

#: Bytes of an Ed25519 seed (a platform key).
SEED_BYTES = 32
#: Health actions that restart a partition (up to its table's restart_limit).
RESTARTS = ("cold_restart", "warm_restart")


@dataclass
class Booted:
    """A system booted and run for the review, with what its run reported."""

    config: LoadedConfig
    system: System
    run: SystemReport
    key_origin: Literal["ephemeral", "file"]
    #: health-monitor actions taken during the run, per partition
    health_actions: dict[str, Counter[str]] = field(default_factory=dict)
    #: per partition, the health event it was halted for when its table asked for a restart
    #: and its restart limit was reached
    restarts_exhausted: dict[str, str] = field(default_factory=dict)
    #: per partition, its first faults with the code they happened in
    fault_sites: dict[str, list[FaultSite]] = field(default_factory=dict)


def boot(
    config_path: Path, *, seed: int | None = None, max_ticks: int | None = None, platform_key: Path | None = None
) -> Booted:
    """Load, boot and run the system; ``seed`` overrides ``[system].seed``, ``max_ticks`` its bound."""
    loaded, plans = load_and_plan(config_path)
    desc = loaded.description
    bound = run_bound(desc, seed=seed, max_ticks=max_ticks)
    key = load_seed(platform_key) if platform_key is not None else secrets.token_bytes(SEED_BYTES)
    actions: dict[str, Counter[str]] = {}
    exhausted: dict[str, str] = {}
    tables = {p.name: p.health for p in desc.partition}
    sites: dict[str, list[FaultSite]] = {}

    def listen(event: MachineEvent) -> None:
        if event.event in ("kernel_fault", "app_fault"):
            kept = sites.setdefault(event.partition, [])
            if len(kept) < FAULT_SITES_KEPT:
                a = event.args
                source: Literal["kernel", "app"] = "kernel" if event.event == "kernel_fault" else "app"
                kept.append(FaultSite(source=source, module=a.get("module"), vector=a["vector"], rip=a["rip"],
                                      where=a.get("where")))  # fmt: skip
        if event.event == "health_action":
            action, health_event = str(event.args["action"]), str(event.args["event"])
            actions.setdefault(event.partition, Counter())[action] += 1
            table = tables.get(event.partition)
            if action == "halt" and table is not None and table.action(health_event) in RESTARTS:
                exhausted[event.partition] = health_event  # ring 1 halts instead once restart_limit is reached

    system = System(loaded, plans, listen, attestation_key=key)
    run = system.run(bound)
    return Booted(loaded, system, run, "file" if platform_key is not None else "ephemeral", actions, exhausted, sites)


def _status(booted: Booted, name: str) -> str:
    pid = booted.system.pid_of(name)
    if pid is not None:
        info = booted.system.machine.info(pid)
        return info.state if info.exit_code is None else f"{info.state} ({info.exit_code})"
    if name in {r.name for r in booted.system.refused}:
        return "refused by secure boot"
    return "declared, not running"


def serial_ports(booted: Booted) -> dict[str, dict[str, str]]:
    """Per running full partition, the UART (``COM2``..) ring 0 wired to each of its configured ports.

    Read from ring 0's cables (``Machine.full_state``): a cable is matched to
    the configured port by its channel and direction.
    """
    system, desc = booted.system, booted.config.description
    machine = system.machine
    ends = {end: ch.name for ch in desc.channel for end in (ch.source, *ch.destinations)}
    out: dict[str, dict[str, str]] = {}
    for plan in system.plans:
        pid = system.pid_of(plan.name)
        if pid is None or machine.info(pid).virtualization != "full":
            continue
        cables = {(c.channel, c.direction): c.uart for c in serial_cables(
            machine.full_state(pid), {cid: name for name, cid in system.channel_ids.items()}, {})}  # fmt: skip
        found = {}
        for port in plan.config.ports:
            channel = ends.get(f"{plan.name}.{port.name}")
            if channel is not None and (channel, port.direction) in cables:
                found[port.name] = cables[(channel, port.direction)]
        out[plan.name] = found
    return out


def system_facts(booted: Booted) -> SystemFacts:
    """The description's partitions with what ring 0 and ring 1 report after the run."""
    system, desc = booted.system, booted.config.description
    machine = system.machine
    ends = {end: ch.name for ch in desc.channel for end in (ch.source, *ch.destinations)}
    serial = serial_ports(booted)
    parts = []
    for plan in system.plans:
        cfg = plan.config
        pid = system.pid_of(plan.name)
        info = machine.info(pid) if pid is not None else None
        full = info.virtualization == "full" if info is not None else cfg.full
        p = machine.partitions[pid] if pid is not None and not full else None
        opened = {port.name for port in p.open_ports} if p is not None else set()
        uarts = serial.get(plan.name, {})
        ports = [
            PortFacts(name=port.name, direction=port.direction, channel=ends.get(f"{plan.name}.{port.name}"),
                      opened=port.name in opened if p is not None else None, serial=uarts.get(port.name))
            for port in cfg.ports
        ]  # fmt: skip
        counters = info.counters if info is not None else None
        window_time = sum(d for n, _s, d in system.windows if n == plan.name)
        mmu = (info.mmu if info is not None else cfg.effective_mmu) if full else None
        parts.append(
            PartitionFacts(
                name=plan.name, role=cfg.role, virtualization="full" if full else "para",
                mmu="shadow" if mmu == "shadow" else ("nested" if full else None), boot=cfg.boot,
                status=_status(booted, plan.name), image=cfg.image,
                apps=[label for label, _ in plan.apps], memory=cfg.memory, window_time=window_time,
                window_share=window_time / system.major_frame if system.major_frame else 0.0,
                health=cfg.health.model_dump(), health_declared="health" in cfg.model_fields_set, ports=ports,
                instructions=counters.instructions if counters else 0,
                hypercalls=counters.hypercalls if counters else 0, faults=counters.faults if counters else 0,
                overruns=booted.run.usage[plan.name].overruns,
                restarts=machine.info(pid).restarts if pid is not None else 0,
                health_actions=dict(sorted(booted.health_actions.get(plan.name, Counter()).items())),
                restarts_exhausted=booted.restarts_exhausted.get(plan.name),
                fault_sites=booted.fault_sites.get(plan.name, []),
            )
        )  # fmt: skip
    return SystemFacts(
        config=str(booted.config.path), name=desc.system.name, digest=booted.config.digest.hex(),
        seed=desc.system.seed, ran_until=machine.now, major_frame=system.major_frame,
        major_frames=booted.run.major_frames, partitions=parts,
    )  # fmt: skip


def channel_names(booted: Booted) -> dict[int, str]:
    """Ring 0's channel ids, by the description's names."""
    return {cid: name for name, cid in booted.system.channel_ids.items()}


def full_partitions(booted: Booted) -> list[FullPartitionFacts]:
    """Every running full-virtualization partition: trapped operations, devices, serial cables."""
    machine = booted.system.machine
    serial = serial_ports(booted)
    names = channel_names(booted)
    out = []
    for pid in full_pids(machine):
        name = machine.info(pid).name
        plan = next((p for p in booted.system.plans if p.name == name), None)
        directions: dict[str, str] = {port.name: port.direction for port in plan.config.ports} if plan else {}
        ports = {(uart, directions[port]): port for port, uart in serial.get(name, {}).items()}
        out.append(full_partition_facts(machine, pid, names, ports))
    return out


def channel_traffic(booted: Booted) -> dict[str, int]:
    """Messages sent on each channel during the run, by channel name."""
    machine = booted.system.machine
    return {name: machine.channels[cid].sent for name, cid in booted.system.channel_ids.items()}
