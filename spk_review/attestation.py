"""Measurements and attestation of the booted system, verified as a remote verifier would.

Each running partition is quoted by ring 0 over a fresh random nonce, then the
quote is checked with :func:`spgs.trust.verify_quote` (signature with the
platform key, nonce, partition, log replay) exactly as ``spk verify-quote``
does. A second check compares the log with what ring 1 actually loaded: the
description's digest, the kernel image and every app in order, the same
values ``spk sign`` writes to golden.json. A kernel that does not measure its
apps shows up there ("expected in the log, not measured").

The platform key is the one given (``spk review --platform-key``), or an
ephemeral one the review generates and throws away: the review then attests
to itself that ring 0's measurements and signatures are consistent, not to a
remote party.

Errors: none of its own (a quote that does not verify is a fact of the report).
"""

from __future__ import annotations

import json
import secrets
from typing import Literal

from nacl.signing import VerifyKey

from spgs.config import LoadedConfig
from spgs.system import System
from spgs.trust import golden_values, sha256, verify_quote
from spk.abi import Register
from spk_review.model import AttestationFacts, MeasurementEvent, PartitionAttestation

#: Bytes of the random nonce each review draws (ATTEST takes at most 64).
NONCE_BYTES = 32


def _decisions(system: System, mode: str) -> dict[str, str]:
    """What secure boot decided for each partition ("not checked" when it is off)."""
    refused = {r.name for r in system.refused}
    decisions = {}
    for plan in system.plans:
        if mode == "off":
            decisions[plan.name] = "not checked"
        elif plan.name in refused:
            decisions[plan.name] = "refused"
        else:
            decisions[plan.name] = "warned" if plan.refusals else "verified"
    return decisions


def attest(system: System, config: LoadedConfig, key_origin: Literal["ephemeral", "file"]) -> AttestationFacts:
    """Quote and verify every running partition of ``system``.

    Errors: ValueError when the machine was started without an attestation key
    (the review always starts it with one).
    """
    machine = system.machine
    public = machine.attestation_public_key
    if public is None:
        raise ValueError("the machine has no attestation key")
    key = VerifyKey(public)
    nonce = secrets.token_bytes(NONCE_BYTES)
    config_digest = config.digest.hex()
    results = []
    for plan in system.plans:
        pid = system.pid_of(plan.name)
        if pid is None:
            why = "refused by secure boot" if plan.name in {r.name for r in system.refused} else "not running"
            results.append(
                PartitionAttestation(name=plan.name, quoted=False, registers=[], events=[], loaded=[],
                                     verified=False, problems=[why], expected=False, differences=[])
            )
            continue
        quote = machine.quote(pid, nonce)
        problems = verify_quote(quote, platform_key=key, nonce=nonce, partition=plan.name)
        loaded = [
            MeasurementEvent(register=Register.CONFIG, type="config", description="system description",
                             digest=config_digest),
            MeasurementEvent(register=Register.KERNEL, type="kernel_image", description=plan.kernel_label,
                             digest=sha256(plan.kernel)),
            *(MeasurementEvent(register=Register.APPS, type="app", description=label, digest=sha256(data))
              for label, data in plan.apps),
        ]  # fmt: skip
        golden = golden_values({plan.name: [(e.type, e.description, e.digest) for e in loaded]})
        differences = [
            p for p in verify_quote(quote, platform_key=key, nonce=nonce, partition=plan.name, golden=golden)
            if p not in problems
        ]  # fmt: skip
        body = json.loads(quote)
        results.append(
            PartitionAttestation(
                name=plan.name, quoted=True, registers=list(body["statement"]["registers"]),
                events=[MeasurementEvent(**event) for event in body["log"]], loaded=loaded, verified=not problems,
                problems=problems, expected=not differences, differences=differences,
            )
        )
    mode = config.description.trust.secure_boot
    return AttestationFacts(
        platform_key=public.hex(), key_origin=key_origin, nonce=nonce.hex(), config_digest=config_digest,
        secure_boot=mode, secure_boot_decisions=_decisions(system, mode), partitions=results,
    )  # fmt: skip
