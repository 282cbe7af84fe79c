"""The chain of trust, ring 1's side: keys, signed images, verdicts, quotes.

* Keys are Ed25519 (pynacl). A private key file holds the 32-byte seed in
  hex and is created with mode 0600; a public key file holds the 32-byte
  verify key in hex. A key's id is the first 16 hex digits of the SHA-256
  of its public key.
* A signed image is three files side by side: ``X.bin`` (the image),
  ``X.bin.manifest.json`` (canonical JSON: format, name, kind, version, the
  size and SHA-256 of every part, the signer's key id, an optional expiry
  date) and ``X.bin.sig`` (the Ed25519 signature of the manifest bytes, in
  hex). Any signed file (a system description) can also carry ``.sig``.
* :func:`verify_image` gives one :class:`Verdict`; secure boot in
  :mod:`spgs.system` applies the policy (enforce, warn, off) to them.
* :func:`verify_quote` checks a quote from ring 0 against the platform key,
  the verifier's nonce, the expected partition, the replayed event log and
  golden values, and says exactly what differs.

Errors: :class:`TrustError` for unusable keys and files (a clear message, no
traceback for the user).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

IMAGE_FORMAT = "spk-image/1"
SIGNATURE_FORMAT = "spk-signature/1"
QUOTE_FORMAT = "spk-quote/1"
GOLDEN_FORMAT = "spk-golden/1"
REGISTERS = 3


class TrustError(Exception):
    """A key or a trust file cannot be used."""


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): what is signed and hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------
def key_id(public: bytes) -> str:
    """Short, stable name of a public key."""
    return hashlib.sha256(public).hexdigest()[:16]


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """Create ``NAME.key`` (private, mode 0600) and ``NAME.pub`` in ``directory``.

    Errors: TrustError if either file exists (a key is never overwritten).
    """
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise TrustError(f"{path} exists: refusing to overwrite a key")
    key = SigningKey.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(bytes(key).hex() + "\n")
    public.write_text(bytes(key.verify_key).hex() + "\n")
    return private, public


def _read_hex(path: Path, what: str) -> bytes:
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise TrustError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TrustError(f"{path} is not a hex-encoded {what}") from None
    if len(raw) != 32:
        raise TrustError(f"{path}: a {what} is 32 bytes, found {len(raw)}")
    return raw


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(_read_hex(path, "private key"))


def load_seed(path: Path) -> bytes:
    """The raw 32-byte seed of a private key (ring 0's attestation key)."""
    return _read_hex(path, "private key")


def load_public_key(path: Path) -> VerifyKey:
    return VerifyKey(_read_hex(path, "public key"))


def trusted_keys(paths: list[Path]) -> dict[str, VerifyKey]:
    """Public keys by key id."""
    keys = {}
    for path in paths:
        key = load_public_key(path)
        keys[key_id(bytes(key))] = key
    return keys


# ---------------------------------------------------------------------------
# Signed images and files
# ---------------------------------------------------------------------------
def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def signature_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def sign_image(
    image: Path, key: SigningKey, *, name: str, kind: str, version: str = "1", expires: date | None = None
) -> Path:
    """Write the manifest and signature of ``image``; returns the manifest path."""
    data = image.read_bytes()
    manifest = {
        "format": IMAGE_FORMAT,
        "name": name,
        "kind": kind,
        "version": version,
        "parts": [{"name": "image", "size": len(data), "sha256": sha256(data)}],
        "signer": key_id(bytes(key.verify_key)),
        "expires": expires.isoformat() if expires else None,
    }
    body = canonical(manifest)
    manifest_path(image).write_bytes(body)
    signature_path(image).write_text(key.sign(body).signature.hex() + "\n")
    return manifest_path(image)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one signed object."""

    path: str
    ok: bool
    code: str  #: ok, unsigned, malformed, untrusted_key, bad_signature, truncated, tampered, expired
    reason: str
    digest: str = ""  #: SHA-256 of the image as read (what ring 0 will measure)


def _fail(path: Path, code: str, reason: str, digest: str = "") -> Verdict:
    return Verdict(str(path), False, code, reason, digest)


def _check_signature(
    path: Path, body: bytes, sig_file: Path, signer: str, trusted: dict[str, VerifyKey]
) -> Verdict | None:
    try:
        signature = bytes.fromhex(sig_file.read_text().strip())
    except (OSError, ValueError):
        return _fail(path, "malformed", f"signature file {sig_file.name} is unreadable")
    key = trusted.get(signer)
    if key is None:
        return _fail(path, "untrusted_key", f"signed by key {signer}, which is not among the trusted keys")
    try:
        key.verify(body, signature)
    except (BadSignatureError, CryptoError, ValueError):
        reason = f"signature does not verify with key {signer} (manifest or signature changed)"
        return _fail(path, "bad_signature", reason)
    return None


def verify_image(image: Path, trusted: dict[str, VerifyKey], today: date) -> Verdict:
    """Check a signed image: signature, trusted signer, size, digest, expiry."""
    man, sig = manifest_path(image), signature_path(image)
    if not image.is_file():
        return _fail(image, "unsigned", "image file not found")
    if not man.is_file() or not sig.is_file():
        return _fail(image, "unsigned", f"no manifest and signature beside {image.name}")
    body = man.read_bytes()
    try:
        manifest = json.loads(body)
        part = manifest["parts"][0]
        size, digest, signer = int(part["size"]), str(part["sha256"]), str(manifest["signer"])
        expires = date.fromisoformat(manifest["expires"]) if manifest.get("expires") else None
        if manifest.get("format") != IMAGE_FORMAT:
            raise ValueError(manifest.get("format"))
    except (ValueError, KeyError, IndexError, TypeError):
        return _fail(image, "malformed", f"manifest {man.name} is not a {IMAGE_FORMAT} manifest")
    refused = _check_signature(image, body, sig, signer, trusted)
    if refused is not None:
        return refused
    data = image.read_bytes()
    actual = sha256(data)
    if len(data) < size:
        return _fail(image, "truncated", f"{len(data)} bytes, the manifest says {size}", actual)
    if len(data) != size or actual != digest:
        return _fail(image, "tampered", f"SHA-256 {actual[:16]}… differs from the signed {digest[:16]}…", actual)
    if expires is not None and today > expires:
        return _fail(image, "expired", f"signature expired on {expires.isoformat()} (checked at {today})", actual)
    return Verdict(str(image), True, "ok", f"signed by {signer}", actual)


def sign_file(path: Path, key: SigningKey) -> Path:
    """Sign any file (a system description): ``path.sig`` holds signer and signature."""
    signed = key.sign(path.read_bytes()).signature
    record = {"format": SIGNATURE_FORMAT, "signer": key_id(bytes(key.verify_key)), "signature": signed.hex()}
    signature_path(path).write_bytes(canonical(record))
    return signature_path(path)


def verify_file(path: Path, trusted: dict[str, VerifyKey]) -> Verdict:
    """Check a file signed with :func:`sign_file`."""
    sig = signature_path(path)
    if not sig.is_file():
        return _fail(path, "unsigned", f"no signature {sig.name}")
    try:
        record = json.loads(sig.read_bytes())
        signer, signature = str(record["signer"]), bytes.fromhex(record["signature"])
    except (ValueError, KeyError, TypeError):
        return _fail(path, "malformed", f"{sig.name} is not a {SIGNATURE_FORMAT} record")
    key = trusted.get(signer)
    if key is None:
        return _fail(path, "untrusted_key", f"signed by key {signer}, which is not trusted")
    try:
        key.verify(path.read_bytes(), signature)
    except (BadSignatureError, CryptoError, ValueError):
        return _fail(path, "tampered", "contents do not match the signature")
    return Verdict(str(path), True, "ok", f"signed by {signer}", sha256(path.read_bytes()))


# ---------------------------------------------------------------------------
# Quotes
# ---------------------------------------------------------------------------
def replay(log: list[dict[str, Any]]) -> list[str]:
    """The registers an event log leads to (hex). The log must be well formed."""
    registers = [bytes(32)] * REGISTERS
    for event in log:
        index = int(event["register"])
        registers[index] = hashlib.sha256(registers[index] + bytes.fromhex(event["digest"])).digest()
    return [r.hex() for r in registers]


def _log_problem(log: Any) -> str | None:
    """Why a log (which travels outside the signature) is malformed, or None."""
    if not isinstance(log, list):
        return "event log is not a list"
    for i, event in enumerate(log):
        if not isinstance(event, dict):
            return f"event {i} is not an object"
        register, digest = event.get("register"), event.get("digest")
        if not isinstance(register, int) or not 0 <= register < REGISTERS:
            return f"event {i}: register {register!r} is not 0..{REGISTERS - 1}"
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return f"event {i}: digest is not 64 lowercase hex digits"
        if not isinstance(event.get("type"), str) or not isinstance(event.get("description"), str):
            return f"event {i}: type and description must be strings"
    return None


def golden_values(partitions: dict[str, list[tuple[str, str, str]]]) -> dict[str, Any]:
    """Golden file: per partition, the expected (type, description, digest) events."""
    return {
        "format": GOLDEN_FORMAT,
        "partitions": {
            name: [{"type": t, "description": d, "digest": g} for t, d, g in events]
            for name, events in partitions.items()
        },
    }


def verify_quote(
    quote_bytes: bytes,
    *,
    platform_key: VerifyKey,
    nonce: bytes,
    partition: str,
    golden: Any = None,
) -> list[str]:
    """Every reason to reject a quote; an empty list means it verifies."""
    try:
        quote = json.loads(quote_bytes)
        statement, log = quote["statement"], quote["log"]
        signature = bytes.fromhex(quote["signature"])
        if not isinstance(statement, dict):
            raise TypeError("statement")
    except (ValueError, KeyError, TypeError):
        return [f"not a {QUOTE_FORMAT} quote"]
    problems: list[str] = []
    if quote.get("platform_key") != bytes(platform_key).hex():
        problems.append("quote carries another platform key than the one trusted")
    try:
        platform_key.verify(canonical(statement), signature)
    except (BadSignatureError, CryptoError, ValueError):
        return [*problems, "signature does not verify with the platform key"]
    if statement.get("format") != QUOTE_FORMAT:
        problems.append(f"statement format {statement.get('format')!r}, expected {QUOTE_FORMAT}")
    if statement.get("nonce") != nonce.hex():
        problems.append("nonce differs: a replayed or foreign quote")
    if statement.get("partition") != partition:
        problems.append(f"quote of partition {statement.get('partition')!r}, expected {partition!r}")
    if hashlib.sha256(canonical(log)).hexdigest() != statement.get("log_digest"):
        problems.append("event log does not match the signed log digest")
    malformed = _log_problem(log)
    if malformed is not None:
        return [*problems, f"malformed event log: {malformed}"]
    replayed = replay(log)
    for index, (got, quoted) in enumerate(zip(replayed, statement.get("registers", []), strict=False)):
        if got != quoted:
            problems.append(f"register {index}: log replays to {got[:16]}…, quote says {quoted[:16]}…")
    if golden is not None:
        problems += _compare_golden(log, golden, partition)
    return problems


def _compare_golden(log: list[dict[str, Any]], golden: Any, partition: str) -> list[str]:
    """Compare the log with the golden events, in order: every measurement counts."""
    if not isinstance(golden, dict) or golden.get("format") != GOLDEN_FORMAT:
        return [f"golden values are not a {GOLDEN_FORMAT} document"]
    expected = golden.get("partitions", {}).get(partition)
    if not isinstance(expected, list):
        return [f"no golden values for partition {partition!r}"]
    problems = []
    for i in range(max(len(log), len(expected))):
        got = log[i] if i < len(log) else None
        want = expected[i] if i < len(expected) else None
        if want is None and got is not None:
            problems.append(f"{got['type']} {got['description']!r}: measured, but not among the golden values")
        elif got is None and want is not None:
            problems.append(f"{want['type']} {want['description']!r}: expected in the log, not measured")
        elif got is not None and want is not None:
            if (got["type"], got["description"]) != (want["type"], want["description"]):
                problems.append(
                    f"event {i}: {got['type']} {got['description']!r} measured where the golden values "
                    f"have {want['type']} {want['description']!r}"
                )
            elif got["digest"] != want["digest"]:
                problems.append(
                    f"{got['type']} {got['description']!r}: measured {got['digest'][:16]}…, "
                    f"golden {want['digest'][:16]}…"
                )
    return problems
