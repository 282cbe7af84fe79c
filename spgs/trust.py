"""The chain of trust, ring 1's side: keys, signed images, verdicts, quotes.

* Keys are Ed25519 (pynacl). A key file is typed by its first line, as
  OpenSSH and minisign type theirs: ``spk-ed25519-private-key v1`` then the
  32-byte seed in hex (created with mode 0600, never readable by others,
  not even for an instant), or ``spk-ed25519-public-key v1`` then the
  32-byte verify key in hex. Every loader refuses the other kind and names
  the file to use instead, so a public key is never taken for a private
  one. A key's id is the first 16 hex digits of the SHA-256 of its public
  key.
* A signed image is three files side by side: ``X.bin`` (the image),
  ``X.bin.manifest.json`` (canonical JSON: format, the slot it is signed
  for (partition, kind, name), its security version, the size and SHA-256
  of every part, the signer's key id, an optional expiry date) and
  ``X.bin.sig`` (the Ed25519 signature of the manifest bytes, in hex). Any
  signed file (a system description) can also carry ``.sig``.
* :func:`verify_image` gives one :class:`Verdict`; given the slot being
  booted and the minimum security version the description declares, it
  refuses an image signed for another slot (``wrong_slot``) or older than
  the minimum (``rollback``). Secure boot in :mod:`spgs.system` applies the
  policy (enforce, warn, off) to the verdicts.
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

from spgs.config import MAX_SECURITY_VERSION

IMAGE_FORMAT = "spk-image/2"
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


PRIVATE_KEY_HEADER = "spk-ed25519-private-key v1"
PUBLIC_KEY_HEADER = "spk-ed25519-public-key v1"
#: The two kinds of key file, by the first line that types them.
_HEADERS = {"private": PRIVATE_KEY_HEADER, "public": PUBLIC_KEY_HEADER}
#: What each kind of key is for, in the message that refuses the other kind.
_USES = {"private": "sign with the private key", "public": "verify with the public key"}
KEY_BYTES = 32


def key_text(kind: str, raw: bytes) -> str:
    """The content of a key file: its typed first line, then the key in hex."""
    return f"{_HEADERS[kind]}\n{raw.hex()}\n"


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """Create ``NAME.key`` (private, mode 0600) and ``NAME.pub`` in ``directory``.

    The private file is created with mode 0600 by the same call that
    creates it (``O_EXCL``, no symlink followed), so it is never readable
    by others, whatever the umask. Errors: TrustError if either file exists
    (a key is never overwritten) or cannot be written.
    """
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise TrustError(f"{path} exists: refusing to overwrite a key")
    key = SigningKey.generate()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _create(private, key_text("private", bytes(key)), 0o600)
        _create(public, key_text("public", bytes(key.verify_key)), 0o644)
    except FileExistsError as exc:
        raise TrustError(f"{exc.filename} exists: refusing to overwrite a key") from None
    except OSError as exc:
        raise TrustError(f"cannot write the key {exc.filename or directory}: {exc.strerror or exc}") from None
    return private, public


def write_public_key(path: Path, key: VerifyKey) -> Path:
    """Write (or replace) a public key file: a public key is no secret."""
    path.write_text(key_text("public", bytes(key)))
    return path


def _create(path: Path, text: str, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``mode`` from the start, and write ``text``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), mode)  # exactly this mode, whatever the umask left
        out.write(text)


def _counterpart(path: Path, kind: str) -> str:
    """The file of the other kind that ``spk keygen`` wrote beside ``path``, for the message."""
    suffix = ".key" if kind == "private" else ".pub"
    other = path.with_suffix(suffix)
    return str(other) if other != path and other.is_file() else f"(the {suffix} file spk keygen wrote with it)"


def _read_key(path: Path, kind: str) -> bytes:
    """The raw 32 bytes of a key file of ``kind`` ("private" or "public").

    Errors: TrustError for an unreadable file, a key of the other kind
    (naming the file to use instead), an untyped or malformed file.
    """
    what = f"{kind} key"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TrustError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TrustError(f"{path} is not an spk key file (not text)") from None
    first = lines[0].strip() if lines else ""
    other = "public" if kind == "private" else "private"
    if first == _HEADERS[other]:
        raise TrustError(f"{path} is a {other} key; {_USES[kind]} {_counterpart(path, kind)}")
    if first != _HEADERS[kind]:
        untyped = len(first) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in first)
        why = "an untyped hex key of an older spk" if untyped else "not an spk key file"
        raise TrustError(
            f"{path} is {why}: a {what} file starts with the line '{_HEADERS[kind]}' (make a new pair with spk keygen)"
        )
    body = [line.strip() for line in lines[1:] if line.strip()]
    try:
        raw = bytes.fromhex(body[0]) if len(body) == 1 else b""
    except ValueError:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise TrustError(f"{path}: a {what} file holds one line of {2 * KEY_BYTES} hex digits after its header")
    return raw


def load_signing_key(path: Path) -> SigningKey:
    """The private key in ``path``. Errors: TrustError (see :func:`_read_key`)."""
    return SigningKey(_read_key(path, "private"))


def load_seed(path: Path) -> bytes:
    """The raw 32-byte seed of a private key (ring 0's attestation key). Errors: TrustError."""
    return _read_key(path, "private")


def load_public_key(path: Path) -> VerifyKey:
    """The public key in ``path``. Errors: TrustError (see :func:`_read_key`)."""
    return VerifyKey(_read_key(path, "public"))


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


KINDS = ("kernel", "app")


@dataclass(frozen=True)
class Slot:
    """Where an image boots: its partition, its kind and its name (the label the description gives it).

    An image is signed for one slot and boots only in it: a validly signed
    image copied over another image's files is refused (``wrong_slot``).
    Written ``partition/kind/name`` (``alpha/app/counter``).
    """

    partition: str
    kind: str  #: "kernel" or "app"
    name: str

    def __str__(self) -> str:
        return f"{self.partition}/{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> Slot:
        """``alpha/app/counter`` -> Slot. Errors: ValueError for another form."""
        partition, _, rest = text.partition("/")
        kind, _, name = rest.partition("/")
        if not partition or kind not in KINDS or not name:
            raise ValueError(f"{text!r} is not a slot: PARTITION/kernel/NAME or PARTITION/app/NAME")
        return cls(partition, kind, name)


def sign_image(
    image: Path, key: SigningKey, *, name: str, kind: str, partition: str | None = None, security_version: int = 0,
    expires: date | None = None,
) -> Path:  # fmt: skip
    """Write the manifest and signature of ``image`` for its slot; returns the manifest path.

    ``partition``, ``kind`` and ``name`` are the slot the image may boot in
    (an image signed without a partition boots in none); ``security_version``
    is compared with the description's ``min_security_version`` at boot.
    Errors: TrustError for a kind or security version out of range, OSError.
    """
    if kind not in KINDS:
        raise TrustError(f"kind {kind!r}: an image is a kernel or an app")
    if isinstance(security_version, bool) or not 0 <= security_version <= MAX_SECURITY_VERSION:
        raise TrustError(f"security version {security_version}: must be from 0 to {MAX_SECURITY_VERSION}")
    data = image.read_bytes()
    manifest = {
        "format": IMAGE_FORMAT,
        "partition": partition,
        "kind": kind,
        "name": name,
        "security_version": security_version,
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
    #: ok, unsigned, malformed, untrusted_key, bad_signature, truncated, tampered, wrong_slot, rollback, expired
    code: str
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


@dataclass(frozen=True)
class _Manifest:
    signed_slot: Slot | None  #: None: signed for no partition
    security_version: int
    size: int
    digest: str
    signer: str
    expires: date | None


def _parse_manifest(body: bytes) -> _Manifest:
    """The fields of a manifest. Errors: ValueError, KeyError, IndexError, TypeError for any other document."""
    manifest = json.loads(body)
    if manifest.get("format") != IMAGE_FORMAT:
        raise ValueError(manifest.get("format"))
    part = manifest["parts"][0]
    version = manifest["security_version"]
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_SECURITY_VERSION:
        raise ValueError("security_version")
    partition, kind, name = manifest["partition"], manifest["kind"], manifest["name"]
    if not (partition is None or isinstance(partition, str)) or kind not in KINDS or not isinstance(name, str):
        raise ValueError("slot")
    return _Manifest(
        Slot(partition, kind, name) if partition is not None else None, version, int(part["size"]),
        str(part["sha256"]), str(manifest["signer"]),
        date.fromisoformat(manifest["expires"]) if manifest.get("expires") else None,
    )  # fmt: skip


def verify_image(
    image: Path, trusted: dict[str, VerifyKey], today: date, *, slot: Slot | None = None, min_security_version: int = 0
) -> Verdict:
    """Check a signed image: signature, trusted signer, size, digest, slot, security version, expiry.

    ``slot`` is where the image is about to boot: the image must have been
    signed for exactly that slot (``wrong_slot`` otherwise; None checks no
    slot, for ``spk verify`` of a loose image). An image whose signed
    security version is below ``min_security_version`` is a rollback
    (``rollback``). The checks run in that order; the first failure gives
    the verdict's code. Never raises for a bad image: a refusal is a verdict.
    """
    man, sig = manifest_path(image), signature_path(image)
    if not image.is_file():
        return _fail(image, "unsigned", "image file not found")
    if not man.is_file() or not sig.is_file():
        return _fail(image, "unsigned", f"no manifest and signature beside {image.name}")
    body = man.read_bytes()
    try:
        manifest = _parse_manifest(body)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return _fail(image, "malformed", f"manifest {man.name} is not a {IMAGE_FORMAT} manifest (re-sign the image)")
    refused = _check_signature(image, body, sig, manifest.signer, trusted)
    if refused is not None:
        return refused
    data = image.read_bytes()
    actual = sha256(data)
    if len(data) < manifest.size:
        return _fail(image, "truncated", f"{len(data)} bytes, the manifest says {manifest.size}", actual)
    if len(data) != manifest.size or actual != manifest.digest:
        return _fail(image, "tampered", f"SHA-256 {actual[:16]}… differs from the signed {manifest.digest[:16]}…",
                     actual)  # fmt: skip
    if slot is not None and manifest.signed_slot != slot:
        signed_for = f"slot {manifest.signed_slot}" if manifest.signed_slot else "no partition"
        return _fail(image, "wrong_slot", f"signed for {signed_for}, booted in slot {slot}", actual)
    if manifest.security_version < min_security_version:
        whose = f"partition {slot.partition}'s min_security_version" if slot else "the minimum"
        reason = f"security version {manifest.security_version} is below {whose} {min_security_version}"
        return _fail(image, "rollback", reason, actual)
    if manifest.expires is not None and today > manifest.expires:
        return _fail(image, "expired", f"signature expired on {manifest.expires.isoformat()} (checked at {today})",
                     actual)  # fmt: skip
    where = f"slot {manifest.signed_slot}" if manifest.signed_slot else "no partition"
    reason = f"signed by {manifest.signer} for {where}, security version {manifest.security_version}"
    return Verdict(str(image), True, "ok", reason, actual)


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
