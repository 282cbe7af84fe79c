"""``partitions.toml``: parsed with tomllib, validated by pydantic models.

Every error names the file, the line, the field and the rule, so a user can
fix the file without reading code. pydantic checks each field on its own and
reports a field path such as ``partition.1.memory``; the rules that span
several fields are in :mod:`spgs.rules`, run once every field has passed.
:class:`_LineIndex` maps a path back to the line of the TOML source
(tomllib keeps no positions). docs/config.md documents every field and rule.

Errors: :class:`ConfigError` with every problem found, not only the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from spk.abi import PAGE_SIZE

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
#: Longest major frame, window, period or refresh (instructions).
MAX_TIME = 10_000_000_000
#: Channel limits: bytes per message, messages queued per destination.
MAX_MESSAGE_SIZE = 4096
MAX_DEPTH = 256
#: Most RAM a system has, and so the largest quota and the highest fixed address.
MAX_RAM = 1 << 30
#: Longest run (virtual instructions): beyond any run, and exact in a JSON number (< 2**53).
MAX_TICKS = 10**15
#: Security versions are unsigned 32-bit counters, as TF-A's and UEFI's are (spgs.trust signs them).
MAX_SECURITY_VERSION = (1 << 32) - 1
#: TOML 1.0: an integer is signed 64-bit; a larger one is an error (tomllib accepts it: rule integer_64bit).
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: Most decimal digits a size string may have (20 digits already exceed 64 bits).
_SIZE_DIGITS = 20


def _parse_size(value: Any) -> Any:
    """Accept bytes as an integer or a string like "64MiB"."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise PydanticCustomError(
                "size_syntax", "{value} is not a size (an integer, or a number with B, KiB, MiB or GiB)",
                {"value": repr(value)},
            )  # fmt: skip
        if len(match.group(1).lstrip("0")) > _SIZE_DIGITS:
            raise PydanticCustomError(
                "integer_64bit", "{value}: a size of more than {digits} digits does not fit in 64 bits",
                {"value": _shorten(value.strip()), "digits": _SIZE_DIGITS},
            )  # fmt: skip
        return int(match.group(1)) * _UNITS[match.group(2)]
    return value


def _shorten(text: str) -> str:
    """A long number for a message: its first digits and how many there are."""
    return text if len(text) <= 40 else f"{text[:20]}… ({len(text)} characters)"


def _in_range(value: int, rule: str, low: int, high: int, unit: str = "") -> int:
    """A named range rule: ``low <= value <= high`` or a PydanticCustomError named ``rule``."""
    if not low <= value <= high:
        raise PydanticCustomError(
            rule, "{value}: must be from {low} to {high}{unit} inclusive",
            {"value": _shorten(str(value)), "low": f"{low:,}", "high": f"{high:,}", "unit": unit},
        )  # fmt: skip
    return value


Size = Annotated[int, BeforeValidator(_parse_size)]
#: Every table: unknown keys are errors, and values keep their TOML type (strict:
#: no "40000" for 40 000, no "no" or 0 for false; sizes convert in _parse_size).
_MODEL = ConfigDict(extra="forbid", strict=True)


class SystemConfig(BaseModel):
    """``[system]``: the emulated host."""

    model_config = _MODEL

    name: str = "spk"
    memory: Size = Field(default=64 << 20, description="physical RAM in bytes")
    cpus: int = Field(default=1, ge=1, le=1, description="vCPUs (one is emulated in this version)")
    seed: int = Field(default=0, ge=0, lt=1 << 63)
    clock_rate: int = Field(
        default=100_000_000, ge=1_000, le=MAX_TIME, description="virtual instructions per virtual second"
    )
    major_frame: int | None = Field(
        default=None, ge=1_000, le=MAX_TIME, description="major frame length (instructions)"
    )
    max_ticks: int = Field(default=20_000_000, description="virtual-time bound of a launch, 1 to MAX_TICKS")
    time: Literal["exact", "fast"] = Field(
        default="exact",
        description="virtual time: exact (a tick per instruction byte, deterministic) or fast "
        "(a tick per host nanosecond, NOT deterministic: refused by spk sign)",
    )

    @field_validator("memory")
    @classmethod
    def _memory_range(cls, value: int) -> int:
        if value % PAGE_SIZE or not (1 << 20) <= value <= MAX_RAM:
            raise PydanticCustomError("ram_size", "must be a multiple of 4 KiB between 1 MiB and 1 GiB")
        return value

    @field_validator("max_ticks")
    @classmethod
    def _max_ticks_rule(cls, value: int) -> int:
        return _in_range(value, "max_ticks_range", 1, MAX_TICKS, " instructions")


def _check_name(value: str, rule: str) -> str:
    if not _NAME.match(value):
        raise PydanticCustomError(
            rule, "must be 1-31 characters: lowercase letters, digits, '-' or '_', starting with a letter"
        )
    return value


HealthAction = Literal["ignore", "log", "halt", "cold_restart", "warm_restart", "propagate"]
#: Events after which the guest kernel cannot go on by itself.
FATAL_EVENTS = (
    "memory_violation", "illegal_instruction", "privileged_instruction", "unexpected_trap", "internal_error",
    "triple_fault", "kernel_panic", "cpl0_tripwire", "machine_check", "unsupported",
)  # fmt: skip
#: Events the partition survives.
NONFATAL_EVENTS = ("overrun", "guest_error")
#: The events only a paravirtual kernel raises (its traps and its RAISE_ERROR hypercall).
PARA_EVENTS = ("memory_violation", "illegal_instruction", "privileged_instruction", "unexpected_trap", "guest_error")
#: The events only a full partition raises (docs/fullvirt.md): a triple fault, a kernel's
#: own panic (isa-debug-exit status other than 0), anything reaching real CPL 0, an access
#: beyond its memory (nested MMU), an operation ring 0 does not emulate (leaving long mode).
FULL_EVENTS = ("triple_fault", "kernel_panic", "cpl0_tripwire", "machine_check", "unsupported")
#: The serial ports a full partition's channel port may name, and their I/O bases (COM1 is the console).
SERIAL_PORTS = {"com2": 0x2F8, "com3": 0x3E8, "com4": 0x2E8}


#: An environment entry: a name, ``=``, anything.
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=", re.DOTALL)
#: Largest ``stdin`` of a Linux partition (bytes).
MAX_STDIN = 64 << 10


def _no_nul(value: str) -> None:
    """Command, env and paths are C strings for the kernel: no NUL inside."""
    if "\0" in value:
        raise PydanticCustomError("linux_nul_byte", "{value}: a NUL byte ends a C string early", {"value": repr(value)})


class HealthConfig(BaseModel):
    """``[partition.health]``: the health monitor's table, event -> action."""

    model_config = _MODEL

    memory_violation: HealthAction = "halt"
    illegal_instruction: HealthAction = "halt"
    privileged_instruction: HealthAction = "halt"
    unexpected_trap: HealthAction = "halt"
    internal_error: HealthAction = "halt"
    triple_fault: HealthAction = "halt"
    kernel_panic: HealthAction = "halt"
    cpl0_tripwire: HealthAction = "halt"
    machine_check: HealthAction = "halt"
    unsupported: HealthAction = "halt"
    overrun: HealthAction = "ignore"
    guest_error: HealthAction = "log"
    restart_limit: int = Field(default=3, ge=0, le=1000, description="restarts before the partition is halted")

    def action(self, event: str) -> str:
        return str(getattr(self, event))


class WindowConfig(BaseModel):
    """One window of a partition inside the major frame."""

    model_config = _MODEL

    start: int = Field(ge=0, le=MAX_TIME, description="offset from the start of the major frame (instructions)")
    duration: int = Field(ge=1_000, le=MAX_TIME, description="length (instructions)")
    cpu: int = Field(default=0, ge=0, le=63, description="vCPU (rule window_cpu: below [system].cpus)")


class PortConfig(BaseModel):
    """A port of a partition: one end of a channel."""

    model_config = _MODEL

    name: str
    direction: Literal["source", "destination"]
    serial: Literal["com2", "com3", "com4"] | None = Field(
        default=None, description="full partitions only: the UART this channel end is wired to"
    )

    @field_validator("name")
    @classmethod
    def _port_name(cls, value: str) -> str:
        return _check_name(value, "port_name")


class PartitionConfig(BaseModel):
    """``[[partition]]``: one guest kernel and its apps."""

    model_config = _MODEL

    name: str
    image: str = Field(description="guest kernel: a bundled name (refkernel) or a path to .asm/.bin")
    apps: list[str] = Field(default_factory=list, max_length=8)
    memory: Size = Field(default=1 << 20, description="memory quota in bytes")
    address: Size | None = Field(default=None, description="fixed physical base of the quota (bytes)")
    role: Literal["guest", "system"] = Field(default="guest", description="system: may use management hypercalls")
    boot: bool = Field(default=True, description="start at boot; false: declared, started by a system partition")
    window: int = Field(default=50_000, ge=1_000, le=100_000_000, description="window length, when no `windows`")
    windows: list[WindowConfig] = Field(default_factory=list, max_length=64)
    period: int | None = Field(default=None, ge=1_000, le=MAX_TIME, description="the windows repeat every period")
    ports: list[PortConfig] = Field(default_factory=list, max_length=16)
    health: HealthConfig = Field(default_factory=HealthConfig)
    min_security_version: int = Field(
        default=0, description="secure boot refuses an image signed with a lower security version (rollback)"
    )
    # -- full virtualization (docs/fullvirt.md) --
    virtualization: Literal["para", "full"] = Field(
        default="para", description="para: a kernel of the SPK's ABI at CPL 2; full: an unmodified PC kernel"
    )
    mmu: Literal["nested", "shadow"] | None = Field(
        default=None, description="full partitions only: nested (the default) or shadow page tables"
    )
    stdin_file: str | None = Field(
        default=None, description="full partitions only: a file (config-relative) fed to COM1's receive buffer"
    )
    # -- a Linux partition (image = "linux", docs/linux.md) --
    rootfs: str | None = Field(default=None, description="root file system: a folder or a .tar (config-relative)")
    files: dict[str, str] = Field(
        default_factory=dict, max_length=256, description="host files laid over the rootfs: path inside = host path"
    )
    command: list[str] = Field(default_factory=list, max_length=256, description="executable (absolute) and argv")
    env: list[str] = Field(default_factory=list, max_length=256, description="environment, NAME=value each")
    stdin: str | None = Field(default=None, description="bytes on the first process's fd 0 (UTF-8), then EOF")

    @property
    def full(self) -> bool:
        """A full-virtualization partition (an unmodified PC kernel)?"""
        return self.virtualization == "full"

    @property
    def effective_mmu(self) -> str:
        """The memory virtualization of a full partition ("nested" unless set), "" for a paravirtual one."""
        return (self.mmu or "nested") if self.full else ""

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _check_name(value, "partition_name")

    @field_validator("command")
    @classmethod
    def _command_rule(cls, value: list[str]) -> list[str]:
        for arg in value:
            _no_nul(arg)
            if not arg:
                raise PydanticCustomError(
                    "linux_empty_arg", "an argument is never empty (the kernel's cmdline ends argv with one)"
                )
        if value and not value[0].startswith("/"):
            raise PydanticCustomError(
                "linux_command_path", "{value}: the executable is an absolute path inside the rootfs",
                {"value": repr(value[0])},
            )  # fmt: skip
        return value

    @field_validator("env")
    @classmethod
    def _env_rule(cls, value: list[str]) -> list[str]:
        for var in value:
            _no_nul(var)
            if not _ENV.match(var):
                raise PydanticCustomError(
                    "linux_env_syntax", "{value}: an environment entry is NAME=value (NAME: letters, digits, _)",
                    {"value": repr(var)},
                )  # fmt: skip
        return value

    @field_validator("files")
    @classmethod
    def _files_rule(cls, value: dict[str, str]) -> dict[str, str]:
        for inside, host in value.items():
            _no_nul(inside)
            _no_nul(host)
            parts = inside.split("/")
            if not inside.startswith("/") or inside == "/" or ".." in parts or "." in parts or "" in parts[1:]:
                raise PydanticCustomError(
                    "linux_file_path", "{value}: a path inside the rootfs is absolute and plain (no '.', '..', '//')",
                    {"value": repr(inside)},
                )  # fmt: skip
            if not host:
                raise PydanticCustomError("linux_file_missing", "{value}: the host file's path is empty",
                                          {"value": repr(inside)})  # fmt: skip
        return value

    @field_validator("stdin")
    @classmethod
    def _stdin_rule(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > MAX_STDIN:
            raise PydanticCustomError(
                "linux_stdin_size", "{size} bytes: stdin is at most {limit} bytes",
                {"size": len(value.encode()), "limit": MAX_STDIN},
            )  # fmt: skip
        return value

    @field_validator("memory")
    @classmethod
    def _quota_rule(cls, value: int) -> int:
        if value % PAGE_SIZE or not 64 * PAGE_SIZE <= value <= MAX_RAM:
            raise PydanticCustomError("quota_size", "must be a multiple of 4 KiB, at least 256 KiB and at most 1 GiB")
        return value

    @field_validator("address")
    @classmethod
    def _address_rule(cls, value: int | None) -> int | None:
        return None if value is None else _in_range(value, "address_range", 0, MAX_RAM, " bytes")

    @field_validator("min_security_version")
    @classmethod
    def _security_version_rule(cls, value: int) -> int:
        return _in_range(value, "security_version_range", 0, MAX_SECURITY_VERSION)


class ChannelConfig(BaseModel):
    """``[[channel]]``: a one-way channel from one source port to destination ports."""

    model_config = _MODEL

    name: str
    kind: Literal["sampling", "queuing"]
    source: str = Field(description='"partition.port"')
    destinations: list[str] = Field(min_length=1, max_length=8, description='["partition.port", ...]')
    message_size: int = Field(description="largest message (bytes), 1 to 4096")
    depth: int = Field(default=8, description="queuing only: messages held per destination, 1 to 256")
    refresh: int = Field(
        default=1_000_000, ge=1, le=MAX_TIME, description="sampling only: validity period of a message (instructions)"
    )

    @field_validator("name")
    @classmethod
    def _channel_name(cls, value: str) -> str:
        return _check_name(value, "channel_name")

    @field_validator("message_size")
    @classmethod
    def _message_size_rule(cls, value: int) -> int:
        if not 1 <= value <= MAX_MESSAGE_SIZE:
            raise PydanticCustomError(
                "message_size_range", "{value} bytes: must be from 1 to {limit} bytes",
                {"value": value, "limit": MAX_MESSAGE_SIZE},
            )  # fmt: skip
        return value

    @field_validator("depth")
    @classmethod
    def _depth_rule(cls, value: int) -> int:
        if not 1 <= value <= MAX_DEPTH:
            raise PydanticCustomError(
                "depth_range", "{value} messages: must be from 1 to {limit} messages",
                {"value": value, "limit": MAX_DEPTH},
            )  # fmt: skip
        return value


class TrustConfig(BaseModel):
    """``[trust]``: which keys sign images, and what secure boot does."""

    model_config = _MODEL

    secure_boot: Literal["enforce", "warn", "off"] = Field(
        default="off", description="enforce: refuse a partition whose images do not verify; warn: boot it, say why"
    )
    keys: list[str] = Field(default_factory=list, max_length=16, description="trusted public keys (paths)")
    reference_date: date | None = Field(default=None, description="date signature expiry is checked at (today)")


class SystemDescription(BaseModel):
    """The whole file."""

    model_config = _MODEL

    system: SystemConfig = Field(default_factory=SystemConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    partition: list[PartitionConfig] = Field(min_length=1, max_length=64)
    channel: list[ChannelConfig] = Field(default_factory=list, max_length=64)


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

    tomllib keeps no positions, so :class:`_Scanner` reads the text again
    (text tomllib already accepted) and records the line where each path
    is defined. :meth:`find` falls back to the nearest enclosing path that
    has a line: a missing key points at its table.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = _Scanner(text).scan()

    def find(self, path: tuple[str | int, ...]) -> int | None:
        key = tuple(str(part) for part in path)
        for cut in range(len(key), 0, -1):
            found = self.lines.get(key[:cut])
            if found:
                return found
        return None


class _Scanner:
    """The positions tomllib does not keep: which line defines which path.

    Understands what the paths need: table headers ``[a.b]`` and array of
    tables headers ``[[a.b]]``, resolved as TOML does (``[partition.health]``
    and ``[[partition.windows]]`` belong to the last ``[[partition]]``);
    keys, bare, quoted or dotted; arrays, each element on the line where it
    starts (``windows.1``, ``destinations.0``); inline tables, each key on
    its line; strings of all four kinds and comments, skipped. A path keeps
    the first line that defines it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.found: dict[tuple[str, ...], int] = {}
        self.arrays: dict[tuple[str, ...], int] = {}  #: array of tables -> elements so far

    def scan(self) -> dict[tuple[str, ...], int]:
        with contextlib.suppress(ValueError, IndexError):  # not what tomllib accepts: keep the lines found so far
            self._document()
        return self.found

    # -- characters --
    def _peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def _advance(self, n: int = 1) -> None:
        chunk = self.text[self.pos : self.pos + n]
        if not chunk:
            raise ValueError("unexpected end of text")
        self.line += chunk.count("\n")
        self.pos += len(chunk)

    def _expect(self, token: str) -> None:
        if self._peek(len(token)) != token:
            raise ValueError(f"expected {token!r} on line {self.line}")
        self._advance(len(token))

    def _blank(self, newlines: bool) -> None:
        """Skip spaces, tabs and comments; line ends too when ``newlines``."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.pos += 1
                self.line += char == "\n"
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def _mark(self, path: tuple[str, ...]) -> None:
        self.found.setdefault(path, self.line)

    # -- grammar --
    def _document(self) -> None:
        table: tuple[str, ...] = ()
        while True:
            self._blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self._peek(2) == "[[":
                self._advance(2)
                keys = self._key()
                self._expect("]]")
                array = (*self._resolve(keys[:-1]), keys[-1])
                index = self.arrays.get(array, 0)
                self.arrays[array] = index + 1
                self._mark(array)
                table = (*array, str(index))
                self._mark(table)
            elif self._peek() == "[":
                self._advance()
                table = self._resolve(self._key())
                self._expect("]")
                self._mark(table)
            else:
                self._pair(table)
            self._blank(newlines=False)
            if self._peek() not in ("", "\n"):
                raise ValueError(f"unexpected {self._peek()!r} on line {self.line}")

    def _resolve(self, keys: list[str]) -> tuple[str, ...]:
        """A header's path: a prefix that is an array of tables means its last element."""
        path: tuple[str, ...] = ()
        for key in keys:
            path = (*path, key)
            if path in self.arrays:
                path = (*path, str(self.arrays[path] - 1))
            self._mark(path)
        return path

    def _pair(self, table: tuple[str, ...]) -> None:
        """``key = value``, the key possibly dotted."""
        path = table
        for key in self._key():
            path = (*path, key)
            self._mark(path)
        self._expect("=")
        self._blank(newlines=False)
        self._value(path)

    def _key(self) -> list[str]:
        parts = []
        while True:
            self._blank(newlines=False)
            start = self.pos
            if self._peek() in ('"', "'"):
                self._string()
                raw = self.text[start : self.pos]
                if raw.startswith('"') and "\\" in raw:  # escapes: let tomllib decode them
                    parts.append(str(tomllib.loads(f"k = {raw}")["k"]))
                else:
                    parts.append(raw[1:-1])
            else:
                while self._peek() and ((self._peek().isascii() and self._peek().isalnum()) or self._peek() in "_-"):
                    self.pos += 1
                if self.pos == start:
                    raise ValueError(f"no key on line {self.line}")
                parts.append(self.text[start : self.pos])
            self._blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance()

    def _value(self, path: tuple[str, ...]) -> None:
        self._mark(path)
        char = self._peek()
        if char == "[":
            self._advance()
            index = 0
            while True:
                self._blank(newlines=True)
                if self._peek() == "]":
                    self._advance()
                    return
                self._value((*path, str(index)))
                index += 1
                self._blank(newlines=True)
                if self._peek() == ",":
                    self._advance()
                elif self._peek() != "]":
                    raise ValueError(f"unexpected {self._peek()!r} in an array on line {self.line}")
        elif char == "{":
            self._advance()
            while True:
                self._blank(newlines=True)
                if self._peek() == "}":
                    self._advance()
                    return
                self._pair(path)
                self._blank(newlines=True)
                if self._peek() == ",":
                    self._advance()
                elif self._peek() != "}":
                    raise ValueError(f"unexpected {self._peek()!r} in an inline table on line {self.line}")
        elif char in ('"', "'"):
            self._string()
        else:  # number, boolean, date: up to the next delimiter
            start = self.pos
            while self._peek() not in ("", ",", "]", "}", "#", "\n"):
                self.pos += 1
            if self.pos == start:
                raise ValueError(f"no value on line {self.line}")

    def _string(self) -> None:
        quote = self._peek()
        basic = quote == '"'
        delimiter = quote * 3 if self._peek(3) == quote * 3 else quote
        self._advance(len(delimiter))
        while True:
            if basic and self._peek() == "\\":
                self._advance(2)
            elif self._peek(len(delimiter)) == delimiter:
                self._advance(len(delimiter))
                if len(delimiter) == 3:  # up to two more quotes belong to the content
                    for _ in range(2):
                        if self._peek() == quote:
                            self._advance()
                return
            else:
                self._advance()


#: A decimal integer literal, underscores allowed (what int() may refuse for its length).
_LONG_DECIMAL = re.compile(r"[+-]?\d[\d_]{4299,}")


def _integers_beyond_64_bits(
    node: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], int]]:
    """Every integer of a parsed document outside TOML's signed 64 bits, with its path.

    TOML 1.0 makes such an integer an error; tomllib returns it as a Python
    int, so the loader checks what tomllib does not.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _integers_beyond_64_bits(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _integers_beyond_64_bits(value, (*path, i))
    elif isinstance(node, int) and not isinstance(node, bool) and not INT64_MIN <= node <= INT64_MAX:
        yield path, node


_Model = TypeVar("_Model", bound=BaseModel)


def _huge_literal(name: str, text: str, exc: ValueError) -> Problem:
    """The problem for tomllib's ValueError: a decimal literal too long for int(), at its line."""
    match = _LONG_DECIMAL.search(text)
    if match is None:
        return Problem(name, None, "-", "toml_syntax", str(exc))
    line = text.count("\n", 0, match.start()) + 1
    on_line: list[tuple[str, ...]] = [path for path, found in _LineIndex(text).lines.items() if found == line]
    deepest: tuple[str, ...] = max(on_line, key=len, default=())
    field = ".".join(deepest) or "-"
    digits = len(match.group(0).replace("_", "").lstrip("+-"))
    message = f"an integer of {digits} digits does not fit in 64 bits (TOML integers are from -2**63 to 2**63-1)"
    return Problem(name, line, field, "integer_64bit", message)


def read_toml_model(path: Path, model: type[_Model]) -> tuple[bytes, _Model, _LineIndex]:
    """Read ``path`` as UTF-8 TOML and validate it against ``model``: the file's bytes, the model, its line index.

    The one reader of every description file (partitions.toml, fleet.toml),
    so each reports its problems alike: file, line, field and rule.
    Errors: ConfigError (unreadable file ``readable_file``, not UTF-8
    ``utf8_encoding``, TOML syntax ``toml_syntax``, an integer beyond 64 bits
    ``integer_64bit``, or a field's own rule from the model).
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
    except ValueError as exc:  # tomllib lets int()'s limit on digits through (a decimal of 4300 digits or more)
        raise ConfigError([_huge_literal(name, text, exc)]) from None
    index = _LineIndex(text)
    too_large = list(_integers_beyond_64_bits(raw))
    if too_large:
        raise ConfigError([
            Problem(name, index.find(path), ".".join(map(str, path)), "integer_64bit",
                    f"{_shorten(str(value))} does not fit in 64 bits (TOML integers are from -2**63 to 2**63-1)")
            for path, value in too_large
        ])  # fmt: skip
    try:
        description = model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            problems.append(Problem(name, index.find(loc), ".".join(loc) or "-", error["type"], error["msg"]))
        raise ConfigError(problems) from None
    return raw_bytes, description, index


def load(path: Path) -> LoadedConfig:
    """Read and validate a system description.

    Errors: ConfigError (unreadable file, TOML syntax, or schema rules).
    """
    name = str(path)
    raw_bytes, description, index = read_toml_model(path, SystemDescription)
    from spgs.rules import Context, check_all  # the rules read these models

    problems = check_all(Context(description, name, path.parent, index))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(path, description, index, hashlib.sha256(raw_bytes).digest())
