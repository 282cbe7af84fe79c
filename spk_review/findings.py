"""What a reviewer should look at, one small named rule each, with a severity.

Like :mod:`spgs.rules` (Muen's mucfgcheck style), a rule's name is its
function's name, it checks one thing and reports every case it finds. The
difference: ``spk validate`` rejects descriptions that cannot work, while
these rules judge descriptions that do work, and the system they boot.
Severities:

* ``high``: isolation or the chain of trust is broken, or a defence could
  not be shown to hold: ``spk review`` exits 1.
* ``medium``: a defence is off or incomplete (secure boot, measured boot).
* ``low``: a choice worth a second look (defaults nobody decided on, idle
  ports, one partition taking most of the time).
* ``info``: facts that shape the threat model.

docs/review.md lists every rule; a test checks the list against :data:`RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from spgs.config import LoadedConfig
from spgs.trust import signature_path
from spk_review.model import (
    SEVERITIES,
    AdversarialFacts,
    AttestationFacts,
    Finding,
    FlowFacts,
    FullPartitionFacts,
    FuzzStats,
    MemoryFacts,
    Severity,
    SystemFacts,
)

#: A partition whose windows take more than this share of the major frame, beside others, is "large".
LARGE_WINDOW_SHARE = 0.5


@dataclass(frozen=True)
class Facts:
    """Everything a rule may read."""

    config: LoadedConfig
    system: SystemFacts
    memory: MemoryFacts
    flow: FlowFacts
    attestation: AttestationFacts
    adversarial: AdversarialFacts
    fuzz: FuzzStats | None
    fullvirt: list[FullPartitionFacts] = field(default_factory=list)

    def index(self, partition: str) -> int:
        return next(i for i, p in enumerate(self.config.description.partition) if p.name == partition)


#: (subject, message, configuration path or None) as a rule yields it.
Hit = tuple[str, str, tuple[str | int, ...] | None]
Rule = Callable[[Facts], Iterator[Hit]]
#: Every rule with its severity, in report order.
RULES: list[tuple[Rule, Severity]] = []


def rule(severity: Severity) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES.append((fn, severity))
        return fn

    return register


def check_all(facts: Facts) -> list[Finding]:
    """Run every rule; the findings, most severe first, then in rule order."""
    findings = []
    for check, severity in RULES:
        for subject, message, path in check(facts):
            line = facts.config.lines.find(path) if path is not None else None
            field = ".".join(str(p) for p in path) if path is not None else None
            findings.append(
                Finding(rule=check.__name__, severity=severity, subject=subject, message=message, line=line,
                        field=field)
            )
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


# -- high ------------------------------------------------------------------------
@rule("high")
def guest_to_system_flow(facts: Facts) -> Iterator[Hit]:
    """A guest partition can send data to a system partition, through one channel or several."""
    channels = [c.name for c in facts.config.description.channel]
    for path in facts.flow.violations:
        first = path[1]
        route = " → ".join(f"[{step}]" if i % 2 else step for i, step in enumerate(path))
        where: tuple[str | int, ...] | None = ("channel", channels.index(first)) if first in channels else None
        yield (
            f"{path[0]} → {path[-1]}",
            f"guest partition {path[0]} can send data to system partition {path[-1]}, which controls every "
            f"partition: {route}",
            where,
        )


@rule("high")
def shared_frame(facts: Facts) -> Iterator[Hit]:
    """A frame two partitions can both reach in the booted system (ring 0 shares none of theirs by design).

    Ring 0's own frames (the GDT, in every space) are judged by ring0_frame_exposed.
    """
    names = {p.name for p in facts.system.partitions}
    for region in facts.memory.shared:
        parties = {m.partition for m in region.mapped_by} | ({region.owner} & names)
        if region.owner != "ring 0" and len(parties & names) > 1:
            where = ", ".join(f"{m.partition} at {m.va:#x}" for m in region.mapped_by)
            yield (
                f"frame {region.mfn:#x}",
                f"{_frames(region.mfn, region.frames)} (owner {region.owner}) is reachable by "
                f"{', '.join(sorted(parties))}: mapped by {where}",
                None,
            )


def _frames(mfn: int, count: int) -> str:
    return f"frame {mfn:#x}" if count == 1 else f"frames {mfn:#x}-{mfn + count - 1:#x}"


@rule("high")
def foreign_mapping(facts: Facts) -> Iterator[Hit]:
    """A partition maps a frame it does not own (other than ring 0's read-only, supervisor GDT)."""
    for region in facts.memory.shared:
        for m in region.mapped_by:
            if region.owner not in (m.partition, "ring 0"):
                yield (m.partition, f"maps {_frames(region.mfn, region.frames)} of {region.owner} at {m.va:#x}", None)


@rule("high")
def ring0_frame_exposed(facts: Facts) -> Iterator[Hit]:
    """A frame of ring 0 is mapped writable, or reachable from CPL 3, in a partition."""
    for region in facts.memory.shared:
        for m in region.mapped_by:
            if region.owner == "ring 0" and (m.writable or m.user):
                rights = ", ".join(r for r, on in (("writable", m.writable), ("user", m.user)) if on)
                yield (
                    m.partition,
                    f"maps ring 0's {_frames(region.mfn, region.frames)} at {m.va:#x} ({rights})",
                    None,
                )


@rule("high")
def invariant_broken(facts: Facts) -> Iterator[Hit]:
    """Machine.check_invariants() fails on the booted system: the frame table and the page tables disagree."""
    if facts.memory.invariants is not None:
        yield ("ring 0", facts.memory.invariants, None)


@rule("high")
def attestation_failed(facts: Facts) -> Iterator[Hit]:
    """A quote of a running partition does not verify (signature, nonce, partition, log replay)."""
    for part in facts.attestation.partitions:
        if part.quoted and not part.verified:
            yield (part.name, "; ".join(part.problems), None)


@rule("high")
def measured_boot_mismatch(facts: Facts) -> Iterator[Hit]:
    """Ring 0's CONFIG or KERNEL measurements differ from the description and kernel image ring 1 loaded."""
    for part in facts.attestation.partitions:
        if not part.quoted:
            continue
        ring0 = [(e.type, e.description, e.digest) for e in part.events if e.type != "app"]
        loaded = [(e.type, e.description, e.digest) for e in part.loaded if e.type != "app"]
        if ring0 != loaded:
            yield (
                part.name,
                f"ring 0 logged {_events(ring0)}, ring 1 loaded {_events(loaded)}",
                ("partition", facts.index(part.name), "image"),
            )


def _events(events: list[tuple[str, str, str]]) -> str:
    return ", ".join(f"{t} {d!r} {g[:16]}…" for t, d, g in events) or "nothing"


@rule("high")
def attack_not_contained(facts: Facts) -> Iterator[Hit]:
    """An attack of the adversarial suite was not contained."""
    for attack in facts.adversarial.attacks:
        if not attack.contained:
            evidence = "; ".join(attack.evidence) or "no evidence given"
            yield (f"{attack.attack_class} ({attack.attacker})", f"{attack.title}: {evidence}", None)


@rule("high")
def adversarial_suite_error(facts: Facts) -> Iterator[Hit]:
    """The adversarial suite could not run: containment was not shown."""
    if facts.adversarial.error is not None:
        yield ("adversarial suite", facts.adversarial.error, None)


@rule("high")
def fuzz_findings(facts: Facts) -> Iterator[Hit]:
    """A fuzz campaign of the bounded run reported findings (broken isolation invariants)."""
    for campaign in facts.fuzz.campaigns if facts.fuzz else []:
        if campaign.findings:
            yield (
                campaign.name,
                f"{campaign.findings} finding(s) in {campaign.examples} examples ({campaign.executions} executions)",
                None,
            )


# -- medium ----------------------------------------------------------------------
@rule("medium")
def secure_boot_off(facts: Facts) -> Iterator[Hit]:
    """Secure boot is off: no image is verified before it boots."""
    if facts.config.description.trust.secure_boot == "off":
        yield ("system", 'secure_boot = "off": any image boots, signed or not', ("trust", "secure_boot"))


@rule("medium")
def secure_boot_warn(facts: Facts) -> Iterator[Hit]:
    """Secure boot only warns: an image that does not verify still boots."""
    if facts.config.description.trust.secure_boot == "warn":
        yield ("system", 'secure_boot = "warn": an image that fails verification boots anyway',
               ("trust", "secure_boot"))  # fmt: skip


@rule("medium")
def secure_boot_refused(facts: Facts) -> Iterator[Hit]:
    """Secure boot refused a partition: the system that runs is not the one described."""
    for name, decision in facts.attestation.secure_boot_decisions.items():
        if decision in ("refused", "warned"):
            yield (name, f"secure boot {decision} its images", ("partition", facts.index(name), "image"))


@rule("medium")
def apps_not_measured(facts: Facts) -> Iterator[Hit]:
    """A running partition's log does not hold each of its apps, in order: measured boot stops at CPL 2."""
    for part in facts.attestation.partitions:
        measured = [(e.type, e.description, e.digest) for e in part.events if e.type == "app"]
        loaded = [(e.type, e.description, e.digest) for e in part.loaded if e.type == "app"]
        if part.quoted and measured != loaded:
            yield (
                part.name,
                f"measured {len(measured)} app image(s) where {len(loaded)} were loaded: "
                + "; ".join(d for d in part.differences if not d.startswith(("config", "kernel_image"))),
                ("partition", facts.index(part.name), "apps"),
            )


@rule("medium")
def restarts_exhausted(facts: Facts) -> Iterator[Hit]:
    """A partition was halted during the review's run: its health table asked for a restart, and it had used
    its restart_limit: it no longer runs, and nothing restarts it but a system partition or an operator."""
    for part in facts.system.partitions:
        if part.restarts_exhausted is not None:
            yield (
                part.name,
                f"halted after {part.restarts} restart(s): {part.restarts_exhausted} again with "
                f"restart_limit = {part.health.get('restart_limit')} reached",
                ("partition", facts.index(part.name), "health", "restart_limit"),
            )


@rule("medium")
def no_window(facts: Facts) -> Iterator[Hit]:
    """A partition has no window time in the major frame: it can never run."""
    for part in facts.system.partitions:
        if part.window_time == 0:
            yield (part.name, "no window in the major frame", ("partition", facts.index(part.name)))


# -- low -------------------------------------------------------------------------
@rule("low")
def health_table_default(facts: Facts) -> Iterator[Hit]:
    """A partition gives no health table: every event gets the default action (overruns ignored)."""
    for part in facts.system.partitions:
        if not part.health_declared:
            yield (part.name, "no [partition.health] table: the defaults apply", ("partition", facts.index(part.name)))


@rule("low")
def overruns_ignored(facts: Facts) -> Iterator[Hit]:
    """A partition overran its windows during the review's run and its health table ignores overruns."""
    for part in facts.system.partitions:
        if part.overruns and part.health.get("overrun") == "ignore":
            yield (
                part.name,
                f'{part.overruns} overruns in {facts.system.major_frames} major frames, health.overrun = "ignore"',
                ("partition", facts.index(part.name), "health", "overrun"),
            )


@rule("low")
def unused_port(facts: Facts) -> Iterator[Hit]:
    """A declared port is an end of no channel: nothing ever arrives or leaves through it."""
    for part in facts.system.partitions:
        for j, port in enumerate(part.ports):
            if port.channel is None:
                yield (f"{part.name}.{port.name}", "no channel names this port",
                       ("partition", facts.index(part.name), "ports", j))  # fmt: skip


@rule("low")
def large_window(facts: Facts) -> Iterator[Hit]:
    """A partition's windows take more than half of the major frame while other partitions share it."""
    if len(facts.system.partitions) < 2:
        return
    for part in facts.system.partitions:
        if part.window_share > LARGE_WINDOW_SHARE:
            yield (part.name, f"{part.window_share:.0%} of the major frame ({part.window_time:,} of "
                   f"{facts.system.major_frame:,} instructions)", ("partition", facts.index(part.name)))  # fmt: skip


@rule("low")
def description_unsigned(facts: Facts) -> Iterator[Hit]:
    """Secure boot is on but the description has no signature: an edit can turn it off."""
    mode = facts.config.description.trust.secure_boot
    if mode != "off" and not signature_path(facts.config.path).exists():
        yield ("system", f"no {signature_path(facts.config.path).name}: sign it (spk sign) and boot with "
               "--config-key", ("trust", "secure_boot"))  # fmt: skip


@rule("low")
def multiple_system_partitions(facts: Facts) -> Iterator[Hit]:
    """More than one system partition: each may pause, halt, restart or destroy the others."""
    systems = [p.name for p in facts.system.partitions if p.role == "system"]
    if len(systems) > 1:
        yield ("system", f"{len(systems)} system partitions: {', '.join(systems)}", None)


# -- info ------------------------------------------------------------------------
@rule("low")
def serial_cable_dropped(facts: Facts) -> Iterator[Hit]:
    """A full partition's serial cable dropped messages during the run (a PC's serial line loses them too)."""
    ports = {p.name: p.ports for p in facts.system.partitions}
    for full in facts.fullvirt:
        for cable in full.serial_cables:
            if cable.dropped:
                index = next((j for j, q in enumerate(ports.get(full.name, [])) if q.name == cable.port), None)
                where = ("partition", facts.index(full.name), "ports", index) if index is not None else None
                yield (f"{full.name}.{cable.port}",
                       f"{cable.dropped} message(s) the guest wrote to {cable.uart} were dropped: channel "
                       f"{cable.channel} refused them, or its queues stayed full past the cable's backlog",
                       where)  # fmt: skip


@rule("info")
def management_observes(facts: Facts) -> Iterator[Hit]:
    """A system partition reads every partition's state and counters (PART_LIST, PART_QUERY) and controls them."""
    for part in facts.system.partitions:
        if part.role == "system":
            yield (
                part.name,
                "may list, query, pause, resume, halt, restart, start and destroy every partition: the counters it "
                "reads are a designed flow from every partition to it (not drawn in the graph)",
                ("partition", facts.index(part.name), "role"),
            )


@rule("info")
def port_never_opened(facts: Facts) -> Iterator[Hit]:
    """A running partition did not open one of its ports during the review's run."""
    for part in facts.system.partitions:
        for j, port in enumerate(part.ports):
            if port.opened is False and port.channel is not None:
                yield (f"{part.name}.{port.name}", f"not opened in {facts.system.ran_until:,} instructions",
                       ("partition", facts.index(part.name), "ports", j))  # fmt: skip


@rule("info")
def channel_idle(facts: Facts) -> Iterator[Hit]:
    """No message went through a channel during the review's run."""
    channels = [c.name for c in facts.config.description.channel]
    seen = set()
    for edge in facts.flow.edges:
        if edge.sent == 0 and edge.channel not in seen:
            seen.add(edge.channel)
            yield (edge.channel, f"no message sent in {facts.system.ran_until:,} instructions",
                   ("channel", channels.index(edge.channel)))  # fmt: skip
