"""``partitions.toml``: parsed with tomllib, validated by pydantic models.

Every error names the file, the line, the field and the rule, so a user can
fix the file without reading code. pydantic reports a field path such as
``partition.1.memory``; :class:`_LineIndex` maps it back to the line of the
TOML source (tomllib keeps no positions).

Errors: :class:`ConfigError` with every problem found, not only the first.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from spk.abi import PAGE_SIZE

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")


def _parse_size(value: Any) -> Any:
    """Accept bytes as an integer or a string like "64MiB"."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise PydanticCustomError(
                "size_syntax", "{value} is not a size (an integer, or a number with B, KiB, MiB or GiB)",
                {"value": repr(value)},
            )  # fmt: skip
        return int(match.group(1)) * _UNITS[match.group(2)]
    return value


Size = Annotated[int, BeforeValidator(_parse_size)]


class SystemConfig(BaseModel):
    """``[system]``: the emulated host."""

    model_config = ConfigDict(extra="forbid")

    name: str = "spk"
    memory: Size = Field(default=64 << 20, description="physical RAM in bytes")
    seed: int = Field(default=0, ge=0, lt=1 << 63)
    max_ticks: int = Field(default=20_000_000, gt=0, description="virtual-time bound of a launch")

    @field_validator("memory")
    @classmethod
    def _memory_range(cls, value: int) -> int:
        if value % PAGE_SIZE or not (1 << 20) <= value <= (1 << 30):
            raise PydanticCustomError("ram_size", "must be a multiple of 4 KiB between 1 MiB and 1 GiB")
        return value


class PartitionConfig(BaseModel):
    """``[[partition]]``: one guest kernel and its apps."""

    model_config = ConfigDict(extra="forbid")

    name: str
    image: str = Field(description="guest kernel: a bundled name (refkernel) or a path to .asm/.bin")
    apps: list[str] = Field(default_factory=list, max_length=8)
    memory: Size = Field(default=1 << 20, description="memory quota in bytes")
    window: int = Field(default=50_000, ge=1_000, le=100_000_000, description="window length (instructions)")

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        if not _NAME.match(value):
            raise PydanticCustomError(
                "partition_name",
                "must be 1-31 characters: lowercase letters, digits, '-' or '_', starting with a letter",
            )
        return value

    @field_validator("memory")
    @classmethod
    def _quota_rule(cls, value: int) -> int:
        if value % PAGE_SIZE or value < 64 * PAGE_SIZE:
            raise PydanticCustomError("quota_size", "must be a multiple of 4 KiB and at least 256 KiB")
        return value


class TrustConfig(BaseModel):
    """``[trust]``: which keys sign images, and what secure boot does."""

    model_config = ConfigDict(extra="forbid")

    secure_boot: Literal["enforce", "warn", "off"] = Field(
        default="off", description="enforce: refuse a partition whose images do not verify; warn: boot it, say why"
    )
    keys: list[str] = Field(default_factory=list, max_length=16, description="trusted public keys (paths)")
    reference_date: date | None = Field(default=None, description="date signature expiry is checked at (today)")


class SystemDescription(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    system: SystemConfig = Field(default_factory=SystemConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    partition: list[PartitionConfig] = Field(min_length=1, max_length=64)


@dataclass(frozen=True)
class Problem:
    """One error: where it is and which rule it breaks."""

    file: str
    line: int | None
    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message} [{self.rule}]"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    description: SystemDescription
    lines: _LineIndex
    digest: bytes  #: SHA-256 of the file's bytes: what measured boot records


class _LineIndex:
    """Maps a field path (``partition.1.memory``) to its line in the TOML text.

    A small line scanner: table headers, array-of-table headers and keys
    (bare or quoted); lines inside multi-line strings are skipped.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
    _KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        counts: dict[str, int] = {}
        table: tuple[str, ...] = ()
        open_quote: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if open_quote is not None:
                if line.count(open_quote) % 2:
                    open_quote = None
                continue
            header = self._HEADER.match(line)
            if header:
                name = header.group(2)
                if header.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    self.lines.setdefault((name,), number)
                    table = (name, str(index))
                else:
                    table = (name,)
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self.lines.setdefault((*table, next(g for g in key.groups() if g)), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    open_quote = quote
                    break

    def find(self, path: tuple[str, ...]) -> int | None:
        for cut in range(len(path), 0, -1):
            found = self.lines.get(path[:cut])
            if found:
                return found
        return None


def load(path: Path) -> LoadedConfig:
    """Read and validate a system description.

    Errors: ConfigError (unreadable file, TOML syntax, or schema rules).
    """
    name = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(name, None, "-", "readable_file", exc.strerror or str(exc))]) from None
    try:
        text = raw_bytes.decode("utf-8-sig")  # TOML is UTF-8; a BOM is tolerated
    except UnicodeDecodeError as exc:
        bad_line = raw_bytes[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(name, bad_line, "-", "utf8_encoding", f"not UTF-8: {exc.reason}")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError([Problem(name, line, "-", "toml_syntax", str(exc))]) from None
    index = _LineIndex(text)
    try:
        description = SystemDescription.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            problems.append(
                Problem(name, index.find(loc), ".".join(loc) or "-", error["type"], error["msg"])
            )
        raise ConfigError(problems) from None
    problems = _cross_checks(name, description, index)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(path, description, index, hashlib.sha256(raw_bytes).digest())


def _cross_checks(name: str, desc: SystemDescription, index: _LineIndex) -> list[Problem]:
    """Rules that span several fields."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, part in enumerate(desc.partition):
        if part.name in seen:
            first = seen[part.name]
            problems.append(
                Problem(
                    name, index.find(("partition", str(i), "name")), f"partition.{i}.name", "duplicate_name",
                    f"{part.name!r} already names partition {first} "
                    f"(line {index.find(('partition', str(first), 'name'))})",
                )
            )  # fmt: skip
        seen.setdefault(part.name, i)
    total = sum(p.memory for p in desc.partition)
    budget = desc.system.memory - (1 << 20)  # ring 0 keeps 1 MiB
    if total > budget:
        problems.append(
            Problem(
                name, index.find(("system", "memory")), "system.memory", "quota_exceeds_ram",
                f"partition quotas total {total >> 10} KiB > {budget >> 10} KiB available to partitions",
            )
        )  # fmt: skip
    return problems
