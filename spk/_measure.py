"""Measured boot and attestation: registers, event log, signed quotes.

Each partition has three SHA-256 measurement registers (see
:class:`spk.abi.Register`), extended as a TPM's PCRs are:
``reg = SHA-256(reg || digest)``, starting from 32 zero bytes. Every
extension is also appended to the partition's event log (register, digest,
event type, description), so a verifier can replay the log and must land on
the quoted registers.

A quote is ring 0's signed statement, with the platform's attestation key
(Ed25519), over one partition's name, its registers, the digest of its
event log and the verifier's nonce. The log travels beside the statement;
its digest inside the statement binds it.

Quotes are canonical JSON (sorted keys, no spaces), so the same state and
nonce give the same bytes (Ed25519 signatures are deterministic too).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from spk.abi import Register

QUOTE_FORMAT = "spk-quote/1"
ZERO = bytes(32)
#: Events one partition's log may hold (it lives in ring 0's memory and in every quote).
LOG_MAX = 1024


def extend(register: bytes, digest: bytes) -> bytes:
    """The extend operation: SHA-256(register || digest)."""
    return hashlib.sha256(register + digest).digest()


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: what is hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class MeasurementEvent:
    register: int
    digest: bytes
    type: str
    description: str

    def as_json(self) -> dict[str, Any]:
        return {
            "register": self.register,
            "digest": self.digest.hex(),
            "type": self.type,
            "description": self.description,
        }


@dataclass
class Measurements:
    """The registers and event log of one partition."""

    registers: list[bytes] = field(default_factory=lambda: [ZERO] * len(Register))
    events: list[MeasurementEvent] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.events) >= LOG_MAX

    def extend(self, register: Register, digest: bytes, event_type: str, description: str) -> None:
        """Extend a register and log it. The caller checks :attr:`full` first (guests get NO_MEMORY)."""
        self.registers[register] = extend(self.registers[register], digest)
        self.events.append(MeasurementEvent(int(register), digest, event_type, description))

    def log_json(self) -> list[dict[str, Any]]:
        return [e.as_json() for e in self.events]

    def log_digest(self) -> bytes:
        return hashlib.sha256(canonical(self.log_json())).digest()


class AttestationKey:
    """The platform's attestation key, held by ring 0 for the life of a machine."""

    def __init__(self, seed: bytes) -> None:
        self._key = SigningKey(seed)
        self.public = bytes(self._key.verify_key)

    def quote(self, partition: str, measurements: Measurements, nonce: bytes) -> bytes:
        """A signed quote of one partition's measurements (canonical JSON bytes)."""
        statement = {
            "format": QUOTE_FORMAT,
            "partition": partition,
            "registers": [r.hex() for r in measurements.registers],
            "log_digest": measurements.log_digest().hex(),
            "nonce": nonce.hex(),
        }
        signature = self._key.sign(canonical(statement)).signature
        return canonical(
            {
                "statement": statement,
                "signature": signature.hex(),
                "platform_key": self.public.hex(),
                "log": measurements.log_json(),
            }
        )
