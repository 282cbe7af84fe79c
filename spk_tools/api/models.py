"""The JSON bodies of the management API (what its OpenAPI document describes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["ready", "blocked", "paused", "exited", "faulted", "stopped", "declared", "refused"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="unauthorized, forbidden, not_found, invalid, conflict, refused, unavailable, ...")
    field: str | None = Field(description="the part of the request at fault, dotted (body.mode), when one is")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Counters(BaseModel):
    instructions: int
    hypercalls: int
    syscalls: int
    faults: int


class QoS(BaseModel):
    cpu_share: float = Field(description="instructions run in the last major frame / the frame's length")
    allocated_share: float = Field(description="its window time / the major frame")
    window_use: float = Field(description="fraction of its window time used since boot")
    last_frame_use: float = Field(description="fraction of its window time used in the last major frame")
    overruns: int = Field(description="windows that ended with it still running")
    health_events: int
    windows: int = Field(description="windows it was given so far")
    frames_used: int
    quota_frames: int


class StagedImage(BaseModel):
    kind: Literal["kernel", "app"]
    name: str
    security_version: int
    sha256: str


class Partition(BaseModel):
    name: str
    pid: int | None
    state: State
    role: Literal["guest", "system"]
    boot: bool
    memory: int = Field(description="memory quota (bytes)")
    window: int = Field(description="its window time per major frame (instructions)")
    quota_frames: int
    frames_used: int
    restarts: int
    exit_code: int | None
    fault: str | None
    counters: Counters
    qos: QoS
    staged_image: StagedImage | None = Field(description="a verified image loaded at its next restart")


class PartitionList(BaseModel):
    partitions: list[Partition]


class Window(BaseModel):
    partition: str
    start: int
    duration: int


class SystemInfo(BaseModel):
    name: str
    now: int = Field(description="virtual time (instructions)")
    major_frames: int
    major_frame: int
    max_ticks: int
    over: bool = Field(description="the run has ended (every partition done, or max_ticks reached)")
    pace: float = Field(description="major frames per second of wall time (0: unpaced)")
    windows: list[Window]
    secure_boot: str
    mutations: int = Field(description="mutations applied so far")
    events: list[dict[str, Any]] = Field(description="the latest health and management events")
    fleet: bool = Field(description="GET /fleet answers (spk fleet serves this API)")


class ChannelRate(BaseModel):
    sent: int
    received: int
    rate: float = Field(description="messages sent in the last major frame")


class QosSnapshot(BaseModel):
    now: int
    major_frames: int
    partitions: dict[str, QoS]
    channels: dict[str, ChannelRate]


class FrameShare(BaseModel):
    cpu_share: float
    last_frame_use: float


class QosFrame(BaseModel):
    major_frames: int = Field(description="the frame's number (1: the first)")
    now: int = Field(description="virtual time at its end")
    partitions: dict[str, FrameShare]


class QosHistory(BaseModel):
    history: list[QosFrame] = Field(description="oldest first")


class RestartBody(_Strict):
    mode: Literal["cold", "warm"] = Field(default="cold", description="cold: from scratch; warm: keep its data")


class OperationResult(BaseModel):
    partition: str
    op: str
    outcome: str = Field(description="done (a refusal is a 409 error)")
    t: int = Field(description="virtual time at which it was applied")
    windows: int = Field(description="windows run before it was applied")
    seq: int = Field(description="its place in the order mutations are applied")
    requester: str


class QuoteBody(_Strict):
    nonce: str = Field(description="the verifier's nonce, hex (1 to 64 bytes)", min_length=2, max_length=128,
                       pattern=r"^([0-9a-fA-F]{2})+$")  # fmt: skip


class Quote(BaseModel):
    partition: str
    quote: dict[str, Any] = Field(description="the spk-quote/1 document ring 0 signed (docs/trust.md)")


class TrustedKey(BaseModel):
    id: str
    public_key: str
    path: str


class TrustKeys(BaseModel):
    secure_boot: str
    keys: list[TrustedKey]
    platform_key: str | None = Field(description="the public key quotes verify with (hex), when there is one")


class WhoAmI(BaseModel):
    name: str
    role: Literal["read", "admin"]
    serves: Literal["system", "fleet"] = Field(
        description="what this server serves: one system (spk serve), or a fleet (spk fleet --serve: "
        "GET /fleet answers, the system's routes answer 404)"
    )


class PatchBody(_Strict):
    memory: int | str | None = Field(default=None, description="new quota (bytes or '2MiB'), at its next restart")
    window: int | None = Field(default=None, description="new window length (automatic layout), next major frame")


class CreateBody(_Strict):
    name: str = Field(description="a new partition's name (the description's rules apply)")
    image: str = Field(description="its guest kernel: a bundled name (refkernel)")
    apps: list[str] = Field(default_factory=list, description="bundled apps")
    memory: int | str = Field(default=1 << 20, description="quota (bytes or '1MiB')")
    window: int = Field(default=50_000, description="window length (automatic layout)")
    boot: bool = Field(default=True, description="start it now (else declared: POST .../start)")


class ImageBody(_Strict):
    kind: Literal["kernel", "app"]
    name: str = Field(description="the image's label: its slot is PARTITION/KIND/NAME", min_length=1, max_length=64)
    image: str = Field(description="the image file, base64")
    manifest: str = Field(description="the .manifest.json file, base64")
    signature: str = Field(description="the .sig file, base64")


class Staged(BaseModel):
    partition: str
    staged_image: StagedImage
    verdict: str
