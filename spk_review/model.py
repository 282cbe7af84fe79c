"""The review report as data: pydantic models, and the JSON schema made from them.

``report.json`` is :class:`Report` dumped as JSON; ``docs/review.schema.json``
is :func:`schema_json`, committed, and a test keeps the two equal, so the
documented schema is always the one the code writes. Every model forbids
extra keys, so a consumer validating with the schema learns of any new field.

Regenerate the committed schema after changing a model::

    .venv/bin/python -m spk_review.model > docs/review.schema.json
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT: Literal["spk-review/1"] = "spk-review/1"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Severity = Literal["high", "medium", "low", "info"]
#: Severities from the most to the least serious (the order reports use).
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low", "info")
#: The check ring 0 makes on the caller of a hypercall.
Requirement = Literal["any", "system_role", "any_port", "source_port", "destination_port", "attestation_key"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------
# TCB
# ---------------------------------------------------------------------------
class ModuleSize(_Model):
    """Line counts of one source file (see ``TcbFacts.counting``)."""

    module: str
    lines: int = Field(ge=0, description="every line of the file")
    code: int = Field(ge=0, description="lines with a token (Python, or C) that is not a comment or a docstring")
    comments: int = Field(ge=0, description="lines holding only a comment")
    docstrings: int = Field(ge=0, description="lines of module, class and function docstrings")
    blank: int = Field(ge=0)


class PackageSize(_Model):
    """One package of the trusted computing base and its modules."""

    package: str
    ring: int = Field(ge=0, le=1)
    path: str = Field(description="the directory the installed package was read from")
    modules: list[ModuleSize]
    lines: int = Field(ge=0)
    code: int = Field(ge=0)


class Dependency(_Model):
    """A third-party distribution the TCB's code imports, in its process or in a child process it runs."""

    module: str = Field(description="the top-level module imported")
    distribution: str | None = Field(description="the installed distribution that provides it, if known")
    version: str | None
    imported_by: list[str] = Field(
        description="TCB modules that import it ('(in a child process)' when the import is in code it runs there)"
    )
    native: list[str] = Field(description="native libraries the distribution installs (shared objects): machine code")


class HypercallAccess(_Model):
    """Who may issue one hypercall in this system (ring 0's checks, this configuration)."""

    number: int = Field(ge=0)
    name: str
    requires: Requirement
    callers: list[str] = Field(description="partitions that pass ring 0's check (declared ones marked)")
    detail: str


class TcbFacts(_Model):
    counting: str = Field(description="how the lines were counted")
    packages: list[PackageSize]
    dependencies: list[Dependency]
    hypercalls: list[HypercallAccess]


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------
class Mapping(_Model):
    """A run of pages mapped contiguously (virtual and physical) with the same rights."""

    spaces: list[int] = Field(description="address-space handles it is mapped in (the kernel half is in all)")
    va: int = Field(ge=0)
    pages: int = Field(ge=1)
    mfn: int = Field(ge=0, description="first physical frame")
    writable: bool
    user: bool
    region: str = Field(description="what the ABI or the partition's modules say lives there")


class PhysicalRange(_Model):
    first_mfn: int = Field(ge=0)
    frames: int = Field(ge=1)


class SharedMapping(_Model):
    """Where one partition maps a shared region, and with what effective rights."""

    partition: str
    va: int = Field(ge=0, description="where the region's first frame is mapped")
    writable: bool
    user: bool


class SharedRegion(_Model):
    """Frames more than one party can reach (a partition maps what another owns or maps too): one entry,
    every partition that maps them named once."""

    mfn: int = Field(ge=0, description="first physical frame")
    frames: int = Field(ge=1)
    owner: str = Field(description="a partition, 'ring 0' or 'nobody'")
    frame_type: str
    mapped_by: list[SharedMapping] = Field(description="every mapping of the region, by partition")


class EngineRegion(_Model):
    """One region of a full partition's own engine's physical address space (what its vCPU can name at all)."""

    engine_physical: int = Field(ge=0, description="where the region starts in the engine's physical space")
    size: int = Field(ge=0, description="bytes")
    what: str = Field(description="guest memory (quota), or ring 0's shadow pool")


class FullMemory(_Model):
    """A full partition's memory as ring 0 virtualizes it (docs/fullvirt.md): its own engine's memory map."""

    mmu: Literal["nested", "shadow"]
    quota_first_frame: int = Field(ge=0, description="first frame of its quota, one contiguous run of RAM")
    quota_frames: int = Field(ge=0)
    regions: list[EngineRegion] = Field(description="every region its engine maps, from the MMU's description")
    mmu_counts: dict[str, int] = Field(description="what the MMU handled during the run (page faults, CR3 loads..)")
    mmu_stats: dict[str, int] = Field(description="the MMU's other numbers (a shadow MMU: pool frames, tables..)")
    proven: str | None = Field(
        description="what Machine.check_invariants() holding proves about this partition (None: they are broken)"
    )


class PartitionMemory(_Model):
    name: str
    pid: int = Field(ge=1)
    virtualization: Literal["para", "full"] = Field(description="para: ring 0's address spaces; full: its own engine")
    quota_frames: int = Field(ge=0)
    frames_in_use: int = Field(ge=0)
    frame_types: dict[str, int] = Field(description="frames owned by the partition, by frame-table type")
    physical: list[PhysicalRange]
    spaces: int = Field(ge=0)
    mappings: list[Mapping]
    unmapped_data_frames: int = Field(ge=0, description="data frames mapped in no space (e.g. app images not run)")
    full: FullMemory | None = Field(description="a full partition's engine memory map (None: paravirtual)")


class MemoryFacts(_Model):
    ram_frames: int = Field(ge=0)
    owners: dict[str, int] = Field(description="frames of RAM by owner: each partition, ring 0, nobody")
    invariants: str | None = Field(description="None when Machine.check_invariants() holds, else its message")
    partitions: list[PartitionMemory]
    shared: list[SharedRegion] = Field(description="frames two parties can reach, once each with every mapper")


# ---------------------------------------------------------------------------
# Partitions and time
# ---------------------------------------------------------------------------
#: Faults the report keeps per partition (a crash loop would repeat one site).
FAULT_SITES_KEPT = 16


class FaultSite(_Model):
    """One fault during the run, named from its image's symbols when it has them."""

    source: Literal["kernel", "app"]
    module: str | None = Field(description="the app image the faulting code came from (apps only)")
    vector: int = Field(ge=0)
    rip: int = Field(ge=0)
    where: str | None = Field(description="function+offset (file:line) from the image's symbols; None: no symbols")


class PortFacts(_Model):
    name: str
    direction: Literal["source", "destination"]
    channel: str | None = Field(description="the channel it is an end of, if any")
    opened: bool | None = Field(
        description="opened by the guest during the run (None: not running, or a full partition's serial cable, "
        "which ring 1 wires and the guest never opens)"
    )
    serial: str | None = Field(description="a full partition's port: the UART ring 0 wired to the channel (COM2..)")


class PartitionFacts(_Model):
    name: str
    role: Literal["guest", "system"]
    virtualization: Literal["para", "full"]
    mmu: Literal["nested", "shadow"] | None = Field(description="a full partition's memory virtualization")
    boot: bool
    status: str = Field(description="at the end of the run: ring 0's state, 'refused', or 'declared'")
    image: str
    apps: list[str]
    memory: int = Field(ge=0, description="quota in bytes")
    window_time: int = Field(ge=0, description="instructions of its windows per major frame")
    window_share: float = Field(ge=0, le=1, description="its share of the major frame")
    health: dict[str, str | int] = Field(description="its health table (event -> action, restart_limit)")
    health_declared: bool = Field(description="the configuration gives a health table (else: defaults)")
    ports: list[PortFacts]
    instructions: int = Field(ge=0)
    hypercalls: int = Field(ge=0)
    faults: int = Field(ge=0)
    overruns: int = Field(ge=0)
    restarts: int = Field(ge=0)
    health_actions: dict[str, int] = Field(description="health-monitor actions taken during the run, by action")
    restarts_exhausted: str | None = Field(
        description="the health event ring 1 halted it for when its table asked for a restart and restart_limit "
        "was reached (None: it was not)"
    )
    fault_sites: list[FaultSite] = Field(
        default_factory=list, description=f"the first {FAULT_SITES_KEPT} faults of its kernel and apps, in order"
    )


# ---------------------------------------------------------------------------
# Full virtualization
# ---------------------------------------------------------------------------
class TrappedOperation(_Model):
    """One operation a full partition's virtual CPU traps, and how often its guest did it during the run."""

    operation: str = Field(description="ring 0's counter name: an instruction mnemonic, a hook or a delivery")
    how: str = Field(description="how ring 0 gets hold of it ('not in the static table' for a counter the table lacks)")
    count: int = Field(ge=0, description="times the guest did it in the review's run (0: trapped, never done)")


class DeviceFacts(_Model):
    """One emulated device of a full partition, and what went through it."""

    device: str
    ports: list[int] = Field(description="the I/O ports it answers")
    irq: int | None = Field(description="the interrupt line it raises, if any")
    activity: dict[str, int | str | list[int] | None] = Field(
        description="its other facts as ring 0 reports them: role, bytes and messages through a UART, masks.."
    )


class SerialCableFacts(_Model):
    """A UART of a full partition wired to a channel port: an edge of the information flow like a PV port."""

    uart: str = Field(description="COM1..COM4")
    port_base: int = Field(ge=0)
    port: str = Field(description="the channel port (the configured port name)")
    channel: str
    direction: Literal["source", "destination"] = Field(
        description="source: what the guest writes to THR goes out; destination: the channel feeds RBR"
    )
    messages: int | None = Field(description="messages the UART gathered and sent (source ends)")
    dropped: int = Field(ge=0, description="messages dropped because the channel refused them")


class FullPartitionFacts(_Model):
    """A full-virtualization partition: its trapped operations and its devices after the review's run."""

    name: str
    pid: int = Field(ge=1)
    mmu: Literal["nested", "shadow"]
    state: str
    trapped: list[TrappedOperation] = Field(
        description="the static list of what this virtual CPU traps, with the run's counts; then any other "
        "counter ring 0 reported"
    )
    devices: list[DeviceFacts]
    serial_cables: list[SerialCableFacts]
    virtual_registers: dict[str, int] = Field(description="the guest's control registers and MSRs at the end")


# ---------------------------------------------------------------------------
# Information flow
# ---------------------------------------------------------------------------
class FlowNode(_Model):
    name: str
    role: Literal["guest", "system"]
    on_violation: bool = Field(description="on a path from a guest partition to a system partition")


class FlowEdge(_Model):
    """Information moves from ``source`` to ``destination`` through a channel (or a shared frame)."""

    channel: str
    kind: Literal["sampling", "queuing", "shared_frame"]
    source: str
    source_port: str
    destination: str
    destination_port: str
    message_size: int = Field(ge=0, description="bytes (a page for a shared frame)")
    source_serial: str | None = Field(description="the UART of a full partition's source end (a serial cable)")
    destination_serial: str | None = Field(description="the UART of a full partition's destination end")
    depth: int | None = Field(description="queuing: messages per destination")
    refresh: int | None = Field(description="sampling: validity period (instructions)")
    sent: int | None = Field(description="messages sent on the channel during the review's run (None: a frame)")
    on_violation: bool


class FlowFacts(_Model):
    nodes: list[FlowNode]
    edges: list[FlowEdge]
    violations: list[list[str]] = Field(
        description="one shortest path per (guest, system) pair: partition, channel, partition, ..."
    )


# ---------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------
class Finding(_Model):
    rule: str
    severity: Severity
    subject: str = Field(description="what it is about: a partition, a channel, a port, the system")
    message: str
    line: int | None = Field(description="line of the configuration it points at, if any")
    field: str | None = Field(description="field path in the configuration (partition.1.health), if any")


# ---------------------------------------------------------------------------
# Measurements and attestation
# ---------------------------------------------------------------------------
class MeasurementEvent(_Model):
    """One event of a measurement log, with the quote format's keys (``register`` is a reserved name here)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True)

    register_: int = Field(ge=0, le=2, alias="register")
    type: str
    description: str
    digest: str


class PartitionAttestation(_Model):
    name: str
    quoted: bool = Field(description="a quote was taken (the partition is running)")
    registers: list[str]
    events: list[MeasurementEvent] = Field(description="the quoted event log")
    loaded: list[MeasurementEvent] = Field(
        description="what ring 1 loaded, as measured boot should log it: the description, the kernel, each app"
    )
    verified: bool = Field(description="signature, nonce, partition and log replay verify")
    problems: list[str] = Field(description="why the quote does not verify")
    expected: bool = Field(description="the log equals what ring 1 loaded: config, kernel, each app in order")
    differences: list[str] = Field(description="how the log differs from what was loaded")


class AttestationFacts(_Model):
    platform_key: str = Field(description="public key, hex")
    key_origin: Literal["ephemeral", "file"]
    nonce: str = Field(description="hex")
    config_digest: str
    secure_boot: Literal["enforce", "warn", "off"]
    secure_boot_decisions: dict[str, str] = Field(description="partition -> verified, warned or refused")
    partitions: list[PartitionAttestation]


# ---------------------------------------------------------------------------
# Adversarial suite and fuzzing
# ---------------------------------------------------------------------------
class Attack(_Model):
    attack_class: str
    title: str
    attacker: str
    contained: bool
    evidence: list[str]


class AdversarialFacts(_Model):
    ran: bool
    error: str | None = Field(description="why the suite did not run, if it did not")
    seed: int | None
    seconds: float = Field(ge=0)
    attacks: list[Attack]


class FuzzCampaign(_Model):
    name: str
    examples: int = Field(ge=0)
    executions: int = Field(ge=0)
    execs_per_s: float = Field(ge=0)
    invariant_checks: int = Field(ge=0)
    findings: int = Field(ge=0)


class FuzzStats(_Model):
    """Statistics of a bounded fuzz run (fuzz/), handed to the report builder."""

    campaigns: list[FuzzCampaign]
    examples: int = Field(ge=0, description="examples of every campaign")
    executions: int = Field(ge=0, description="actions performed and checked, in every campaign")
    seconds: float = Field(ge=0)
    seed: int


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
class SystemFacts(_Model):
    config: str = Field(description="the description's path as given")
    name: str
    digest: str = Field(description="SHA-256 of the description's bytes")
    seed: int
    ran_until: int = Field(ge=0, description="virtual time the system ran for the review")
    major_frame: int = Field(ge=0)
    major_frames: int = Field(ge=0)
    partitions: list[PartitionFacts]


class Verdict(_Model):
    passed: bool = Field(description="no high-severity finding: `spk review` exits 0")
    counts: dict[Severity, int]


class Report(_Model):
    """Everything ``spk review`` found about one system description."""

    format: Literal["spk-review/1"] = FORMAT
    verdict: Verdict
    system: SystemFacts
    tcb: TcbFacts
    memory: MemoryFacts
    fullvirt: list[FullPartitionFacts] = Field(description="every running full-virtualization partition")
    flow: FlowFacts
    findings: list[Finding]
    attestation: AttestationFacts
    adversarial: AdversarialFacts
    fuzz: FuzzStats | None = Field(description="bounded fuzz-campaign statistics, when a run was plugged in")
    seconds: float = Field(ge=0, description="wall time the review took")


def schema() -> dict[str, Any]:
    """The JSON schema of ``report.json`` (what docs/review.schema.json holds)."""
    generated = Report.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, **generated}


def schema_json() -> str:
    """The schema as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_json(), end="")
