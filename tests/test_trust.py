"""Trust chain: signed images, secure boot, measured boot, attestation (negative spec)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from spgs.config import load
from spgs.signing import sign_system, slot_path
from spgs.system import System, plan
from spgs.trust import (
    PRIVATE_KEY_HEADER,
    PUBLIC_KEY_HEADER,
    Slot,
    TrustError,
    canonical,
    key_id,
    keygen,
    load_public_key,
    load_seed,
    load_signing_key,
    replay,
    sign_file,
    sign_image,
    trusted_keys,
    verify_file,
    verify_image,
    verify_quote,
)
from spk.abi import Register
from tests.guests import Recorder

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    for name in ("vendor", "other", "platform"):
        keygen(directory, name)
    return directory


@pytest.fixture(scope="module")
def signed_template(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    out = tmp_path_factory.mktemp("signed")
    sign_system(ROOT / "partitions.toml", keys / "vendor.key", out)
    return out


@pytest.fixture
def signed(signed_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the signed example system, free to tamper with."""
    target = tmp_path / "signed"
    shutil.copytree(signed_template, target)
    return target


#: The slot the loose test image is signed for.
SLOT = Slot("alpha", "app", "app")


def image(tmp_path: Path, keys: Path, data: bytes = b"\x90" * 100, **kwargs: object) -> Path:
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    options: dict[str, object] = {"name": "app", "kind": "app", "partition": "alpha", **kwargs}
    sign_image(path, load_signing_key(keys / "vendor.key"), **options)  # type: ignore[arg-type]
    return path


def trusted(keys: Path, *names: str) -> dict[str, object]:
    return trusted_keys([keys / f"{n}.pub" for n in names])  # type: ignore[return-value]


# -- keys -------------------------------------------------------------------
def test_private_key_is_owner_only_and_never_overwritten(keys: Path) -> None:
    assert (keys / "vendor.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(TrustError, match="refusing to overwrite"):
        keygen(keys, "vendor")


def test_private_key_is_created_owner_only_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is born 0600: never a moment where a lax umask leaves it readable (no chmod after the write)."""
    import os

    modes: list[int] = []
    real_open = os.open

    def spying_open(path: object, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".key"):
            modes.append(mode)
        return real_open(path, flags, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spying_open)
    old = os.umask(0)
    try:
        private, _public = keygen(tmp_path, "k")
    finally:
        os.umask(old)
    assert modes == [0o600]
    assert private.stat().st_mode & 0o777 == 0o600


def test_keygen_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "k.key").symlink_to(target)
    with pytest.raises(TrustError, match="refusing to overwrite"):
        keygen(tmp_path, "k")
    assert not target.exists()


def test_key_files_are_typed(keys: Path) -> None:
    assert (keys / "vendor.key").read_text().splitlines()[0] == PRIVATE_KEY_HEADER
    assert (keys / "vendor.pub").read_text().splitlines()[0] == PUBLIC_KEY_HEADER


def test_public_key_is_not_a_private_key(keys: Path) -> None:
    for load_private in (load_signing_key, load_seed):
        with pytest.raises(TrustError) as info:
            load_private(keys / "vendor.pub")
        assert (
            str(info.value) == f"{keys / 'vendor.pub'} is a public key; sign with the private key {keys / 'vendor.key'}"
        )


def test_private_key_is_not_a_public_key(keys: Path) -> None:
    for load_public in (load_public_key, lambda path: trusted_keys([path])):
        with pytest.raises(TrustError) as info:
            load_public(keys / "vendor.key")
        assert (
            str(info.value)
            == f"{keys / 'vendor.key'} is a private key; verify with the public key {keys / 'vendor.pub'}"
        )


def test_wrong_kind_without_its_pair_still_says_what_to_use(tmp_path: Path, keys: Path) -> None:
    lonely = tmp_path / "lonely.pub"
    lonely.write_text((keys / "vendor.pub").read_text())
    with pytest.raises(TrustError, match=r"is a public key; sign with the private key \(the .key file spk keygen"):
        load_signing_key(lonely)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ab" * 32 + "\n", "an untyped hex key of an older spk"),
        ("", "not an spk key file"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n", "not an spk key file"),
        (f"{PRIVATE_KEY_HEADER}\nzz\n", "one line of 64 hex digits"),
        (f"{PRIVATE_KEY_HEADER}\n{'ab' * 31}\n", "one line of 64 hex digits"),
        (f"{PRIVATE_KEY_HEADER}\n{'ab' * 32}\n{'ab' * 32}\n", "one line of 64 hex digits"),
        (f"{PRIVATE_KEY_HEADER}\n", "one line of 64 hex digits"),
    ],
)  # fmt: skip
def test_untyped_or_malformed_key_file_refused(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "k.key"
    path.write_text(text)
    with pytest.raises(TrustError, match=re.escape(words)):
        load_signing_key(path)


def test_binary_or_missing_key_file_refused(tmp_path: Path) -> None:
    (tmp_path / "bin.key").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TrustError, match="not an spk key file"):
        load_seed(tmp_path / "bin.key")
    with pytest.raises(TrustError, match="cannot read public key"):
        load_public_key(tmp_path / "missing.pub")


# -- images: every refusal ---------------------------------------------------
def test_signed_image_verifies(tmp_path: Path, keys: Path) -> None:
    verdict = verify_image(image(tmp_path, keys), trusted(keys, "vendor"), TODAY)  # type: ignore[arg-type]
    assert verdict.ok and verdict.code == "ok"


def test_unsigned_image_refused(tmp_path: Path, keys: Path) -> None:
    path = tmp_path / "raw.bin"
    path.write_bytes(b"\x90")
    assert verify_image(path, trusted(keys, "vendor"), TODAY).code == "unsigned"  # type: ignore[arg-type]


def test_tampered_image_refused(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys)
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))
    assert verify_image(path, trusted(keys, "vendor"), TODAY).code == "tampered"  # type: ignore[arg-type]


def test_truncated_image_refused(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys)
    path.write_bytes(path.read_bytes()[:-1])
    assert verify_image(path, trusted(keys, "vendor"), TODAY).code == "truncated"  # type: ignore[arg-type]


def test_wrong_key_refused(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys)
    assert verify_image(path, trusted(keys, "other"), TODAY).code == "untrusted_key"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"security_version":0', b'"security_version":9'), (b'"partition":"alpha"', b'"partition":"beta"')],
)
def test_forged_manifest_refused(tmp_path: Path, keys: Path, old: bytes, new: bytes) -> None:
    path = image(tmp_path, keys)
    manifest = path.with_name("app.bin.manifest.json")
    assert old in manifest.read_bytes()
    manifest.write_bytes(manifest.read_bytes().replace(old, new))
    assert verify_image(path, trusted(keys, "vendor"), TODAY).code == "bad_signature"  # type: ignore[arg-type]


# -- slots and security versions -----------------------------------------------
def test_image_verifies_in_its_own_slot(tmp_path: Path, keys: Path) -> None:
    verdict = verify_image(image(tmp_path, keys, security_version=3), trusted(keys, "vendor"), TODAY,  # type: ignore[arg-type]
                           slot=SLOT, min_security_version=3)  # fmt: skip
    assert verdict.ok and "for slot alpha/app/app, security version 3" in verdict.reason


@pytest.mark.parametrize(
    "slot", [Slot("beta", "app", "app"), Slot("alpha", "kernel", "app"), Slot("alpha", "app", "counter")]
)
def test_image_in_another_slot_refused(tmp_path: Path, keys: Path, slot: Slot) -> None:
    """Partition, kind and name are each part of the slot."""
    verdict = verify_image(image(tmp_path, keys), trusted(keys, "vendor"), TODAY, slot=slot)  # type: ignore[arg-type]
    assert verdict.code == "wrong_slot"
    assert verdict.reason == f"signed for slot alpha/app/app, booted in slot {slot}"


def test_image_signed_for_no_partition_boots_in_none(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys, partition=None)
    verdict = verify_image(path, trusted(keys, "vendor"), TODAY, slot=SLOT)  # type: ignore[arg-type]
    assert verdict.code == "wrong_slot" and "signed for no partition" in verdict.reason


def test_older_security_version_refused(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys, security_version=1)
    verdict = verify_image(path, trusted(keys, "vendor"), TODAY, slot=SLOT, min_security_version=2)  # type: ignore[arg-type]
    assert verdict.code == "rollback"
    assert verdict.reason == "security version 1 is below partition alpha's min_security_version 2"


@pytest.mark.parametrize("version", [-1, 1 << 32, True])
def test_security_version_out_of_range_is_not_signed(tmp_path: Path, keys: Path, version: int) -> None:
    with pytest.raises(TrustError, match="security version"):
        image(tmp_path, keys, security_version=version)


def test_manifest_of_the_old_format_refused(tmp_path: Path, keys: Path) -> None:
    """spk-image/1 bound no slot and no security version: such an image must be re-signed."""
    path = image(tmp_path, keys)
    key = load_signing_key(keys / "vendor.key")
    old = {"format": "spk-image/1", "name": "app", "kind": "app", "version": "1", "expires": None,
           "parts": [{"name": "image", "size": 100, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}],
           "signer": key_id(bytes(key.verify_key))}  # fmt: skip
    body = canonical(old)
    path.with_name("app.bin.manifest.json").write_bytes(body)
    path.with_name("app.bin.sig").write_text(key.sign(body).signature.hex())
    verdict = verify_image(path, trusted(keys, "vendor"), TODAY, slot=SLOT)  # type: ignore[arg-type]
    assert verdict.code == "malformed" and "spk-image/2" in verdict.reason


def test_expired_image_refused(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys, expires=date(2026, 1, 1))
    verdict = verify_image(path, trusted(keys, "vendor"), TODAY)  # type: ignore[arg-type]
    assert verdict.code == "expired" and "2026-01-01" in verdict.reason
    assert verify_image(path, trusted(keys, "vendor"), date(2025, 12, 31)).ok  # type: ignore[arg-type]


def test_signed_file_tamper_and_key(tmp_path: Path, keys: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("x = 1\n")
    sign_file(path, load_signing_key(keys / "vendor.key"))
    assert verify_file(path, trusted(keys, "vendor")).ok  # type: ignore[arg-type]
    assert verify_file(path, trusted(keys, "other")).code == "untrusted_key"  # type: ignore[arg-type]
    path.write_text("x = 2\n")
    assert verify_file(path, trusted(keys, "vendor")).code == "tampered"  # type: ignore[arg-type]


# -- secure boot -------------------------------------------------------------
def boot(config: Path, mode: str | None = None, key: bytes | None = None) -> tuple[System, Recorder]:
    rec = Recorder()
    loaded = load(config)
    system = System(loaded, plan(loaded, secure_boot=mode, today=TODAY), rec, secure_boot=mode, attestation_key=key)
    system.run(400_000)
    return system, rec


#: alpha's counter app, in the signed system (alpha alone runs counter).
COUNTER = slot_path(Slot("alpha", "app", "counter"))


def tamper(path: Path) -> None:
    """Change one byte in the middle of an image (its code: whatever its format, it still parses)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_enforce_refuses_only_the_partition_with_a_tampered_image(signed: Path) -> None:
    tamper(signed / COUNTER)  # used by alpha only
    system, rec = boot(signed / "partitions.toml")
    assert [r.name for r in system.refused] == ["alpha"]
    assert "tampered" in system.refused[0].reasons[0]
    states = {i.name: i.state for i in system.report(0).partitions}
    assert states == {"beta": "exited", "gamma": "ready"}
    assert rec.lines("beta")[-1] == "refkernel: all apps done"


def test_warn_boots_and_reports(signed: Path) -> None:
    tamper(signed / COUNTER)
    system, rec = boot(signed / "partitions.toml", "warn")
    assert not system.refused
    decisions = {e.partition: e.args["decision"] for e in rec.of("secure_boot")}
    assert decisions == {"alpha": "warned", "beta": "verified", "gamma": "verified"}


def test_off_checks_nothing(signed: Path) -> None:
    tamper(signed / COUNTER)
    system, rec = boot(signed / "partitions.toml", "off")
    assert not system.refused and not rec.of("secure_boot")


def test_enforce_refuses_images_built_from_source() -> None:
    system, _ = boot(ROOT / "partitions.toml", "enforce")
    assert [r.name for r in system.refused] == ["alpha", "beta", "gamma"]
    assert "unsigned" in system.refused[0].reasons[0]


def test_signed_description_verifies_and_detects_edits(signed: Path) -> None:
    config = signed / "partitions.toml"
    key = trusted_keys([signed / "keys/vendor.pub"])
    assert verify_file(config, key).ok
    config.write_text(config.read_text().replace("window = 40000", "window = 40001", 1))
    assert verify_file(config, key).code == "tampered"


# -- measured boot and attestation --------------------------------------------
def test_measurements_are_stable_across_runs(signed: Path) -> None:
    first, _ = boot(signed / "partitions.toml")
    second, _ = boot(signed / "partitions.toml")
    for a, b in zip(first.pids.values(), second.pids.values(), strict=True):
        assert first.machine.measurements(a)[0] == second.machine.measurements(b)[0]


def test_measured_boot_reaches_the_apps(signed: Path) -> None:
    system, _ = boot(signed / "partitions.toml")
    registers, events = system.machine.measurements(system.pid_of("alpha") or 0)
    assert [(e.register, e.type, e.description) for e in events] == [
        (Register.CONFIG, "config", "system description"),
        (Register.KERNEL, "kernel_image", "refkernel"),
        (Register.APPS, "app", "hello"),
        (Register.APPS, "app", "counter"),
    ]
    log = [{"register": e.register, "digest": e.digest.hex()} for e in events]
    assert replay(log) == [r.hex() for r in registers]


def _quote(signed: Path, keys: Path, nonce: bytes, partition: str = "alpha") -> bytes:
    system, _ = boot(signed / "partitions.toml", key=load_seed(keys / "platform.key"))
    return system.machine.quote(system.pid_of(partition) or 0, nonce)


def test_quote_verifies_with_golden_values(signed: Path, keys: Path) -> None:
    quote = _quote(signed, keys, b"nonce-1")
    golden = json.loads((signed / "golden.json").read_bytes())
    platform = load_public_key(keys / "platform.pub")
    assert verify_quote(quote, platform_key=platform, nonce=b"nonce-1", partition="alpha", golden=golden) == []


def test_replayed_quote_rejected(signed: Path, keys: Path) -> None:
    quote = _quote(signed, keys, b"old-nonce")
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(quote, platform_key=platform, nonce=b"fresh-nonce", partition="alpha")
    assert problems == ["nonce differs: a replayed or foreign quote"]


def test_quote_of_another_partition_rejected(signed: Path, keys: Path) -> None:
    quote = _quote(signed, keys, b"n", partition="beta")
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(quote, platform_key=platform, nonce=b"n", partition="alpha")
    assert problems == ["quote of partition 'beta', expected 'alpha'"]


def test_quote_after_an_image_change_rejected(signed: Path, keys: Path) -> None:
    golden = json.loads((signed / "golden.json").read_bytes())
    # The vendor ships a changed counter, signed: secure boot accepts it, attestation does not.
    app = signed / COUNTER
    tamper(app)
    sign_image(app, load_signing_key(keys / "vendor.key"), name="counter", kind="app", partition="alpha")
    quote = _quote(signed, keys, b"n")
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(quote, platform_key=platform, nonce=b"n", partition="alpha", golden=golden)
    assert len(problems) == 1 and problems[0].startswith("app 'counter': measured")


def test_forged_quote_rejected(signed: Path, keys: Path) -> None:
    quote = json.loads(_quote(signed, keys, b"n"))
    quote["statement"]["registers"][0] = "00" * 32
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(json.dumps(quote).encode(), platform_key=platform, nonce=b"n", partition="alpha")
    assert problems == ["signature does not verify with the platform key"]
    other = load_public_key(keys / "other.pub")
    assert "signature does not verify" in verify_quote(_quote(signed, keys, b"n"), platform_key=other,
                                                        nonce=b"n", partition="alpha")[-1]  # fmt: skip


def test_log_edit_detected(signed: Path, keys: Path) -> None:
    quote = json.loads(_quote(signed, keys, b"n"))
    quote["log"][-1]["description"] = "innocent"
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(json.dumps(quote).encode(), platform_key=platform, nonce=b"n", partition="alpha")
    assert problems == ["event log does not match the signed log digest"]


# -- regressions from review ----------------------------------------------------
def _resigned(signed: Path, keys: Path, edit: object) -> bytes:
    """A quote whose statement was re-signed by the platform after ``edit`` (a forger with the key)."""
    from nacl.signing import SigningKey

    quote = json.loads(_quote(signed, keys, b"n"))
    edit(quote)  # type: ignore[operator]
    quote["statement"]["log_digest"] = hashlib.sha256(canonical(quote["log"])).hexdigest()
    key = SigningKey(load_seed(keys / "platform.key"))
    quote["signature"] = key.sign(canonical(quote["statement"])).signature.hex()
    return json.dumps(quote).encode()


@pytest.mark.parametrize(
    "log",
    [[{"register": 7, "digest": "00" * 32, "type": "x", "description": "y"}],
     [{"register": 0, "digest": "zz", "type": "x", "description": "y"}],
     [1],
     "nope"],
)  # fmt: skip
def test_malformed_log_is_a_finding_not_a_crash(signed: Path, keys: Path, log: object) -> None:
    quote = json.loads(_quote(signed, keys, b"n"))
    quote["log"] = log
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(json.dumps(quote).encode(), platform_key=platform, nonce=b"n", partition="alpha")
    assert problems[-1].startswith("malformed event log")


def test_bad_golden_document_is_a_finding(signed: Path, keys: Path) -> None:
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(_quote(signed, keys, b"n"), platform_key=platform, nonce=b"n", partition="alpha", golden=[])
    assert problems == ["golden values are not a spk-golden/1 document"]


def test_golden_counts_every_measurement_in_order(signed: Path, keys: Path) -> None:
    def measure_twice(quote: dict[str, object]) -> None:
        log = quote["log"]
        assert isinstance(log, list)
        bad = dict(log[2], digest="11" * 32)
        log.insert(2, bad)  # a bad hello measured before the good one

    quote = _resigned(signed, keys, measure_twice)
    golden = json.loads((signed / "golden.json").read_bytes())
    platform = load_public_key(keys / "platform.pub")
    problems = verify_quote(quote, platform_key=platform, nonce=b"n", partition="alpha", golden=golden)
    assert any("measured 1111" in p for p in problems)


def test_refused_partition_keeps_its_window_idle(signed: Path) -> None:
    _clean, clean_rec = boot(signed / "partitions.toml")
    tamper(signed / COUNTER)
    refused, refused_rec = boot(signed / "partitions.toml")
    assert [r.name for r in refused.refused] == ["alpha"]

    def windows(rec: Recorder) -> list[tuple[str, int]]:
        return [(e.partition, e.time) for e in rec.of("window") if e.partition != "alpha"]

    assert windows(clean_rec) == windows(refused_rec)
    assert clean_rec.lines("gamma") == refused_rec.lines("gamma")


def test_sign_refuses_two_images_with_one_name(tmp_path: Path, keys: Path) -> None:
    (tmp_path / "x").mkdir()
    shutil.copy(ROOT / "apps/fuzz_app.asm", tmp_path / "x/hello.asm")  # another app, named hello too
    config = tmp_path / "p.toml"
    config.write_text('[[partition]]\nname = "a"\nimage = "refkernel"\napps = ["hello", "x/hello.asm"]\n')
    with pytest.raises(TrustError, match="both named 'hello'"):
        sign_system(config, keys / "vendor.key", tmp_path / "out")


# -- slot binding and rollback at boot (issue 12) --------------------------------
def copy_signed(source: Path, target: Path) -> None:
    """The attack: a validly signed image copied, with its manifest and signature, over another image's files."""
    for suffix in ("", ".manifest.json", ".sig"):
        shutil.copyfile(source.with_name(source.name + suffix), target.with_name(target.name + suffix))


@pytest.mark.parametrize(
    ("source", "target", "victim"),
    [
        (Slot("alpha", "app", "hello"), Slot("alpha", "app", "counter"), "alpha"),  # another app, same partition
        (Slot("gamma", "app", "bad_hlt"), Slot("beta", "app", "sleeper"), "beta"),  # another partition's app
        (Slot("beta", "app", "hello"), Slot("alpha", "app", "hello"), "alpha"),  # same name, other partition
        (Slot("alpha", "kernel", "refkernel"), Slot("beta", "kernel", "refkernel"), "beta"),  # same bytes even
    ],
)  # fmt: skip
def test_signed_image_copied_into_another_slot_is_refused(signed: Path, source: Slot, target: Slot,
                                                          victim: str) -> None:  # fmt: skip
    # (An app copied over a kernel is refused as wrong_slot too: test_image_in_another_slot_refused.)
    copy_signed(signed / slot_path(source), signed / slot_path(target))
    system, rec = boot(signed / "partitions.toml")
    assert [r.name for r in system.refused] == [victim]
    file = Path(slot_path(target)).name
    assert system.refused[0].reasons == [f"{file}: wrong_slot: signed for slot {source}, booted in slot {target}"]
    others = {i.name for i in system.report(0).partitions}
    assert others == {"alpha", "beta", "gamma"} - {victim}
    decisions = {e.partition: e.args["decision"] for e in rec.of("secure_boot")}
    assert decisions == {name: "refused" if name == victim else "verified" for name in ("alpha", "beta", "gamma")}


def _with_minimum(folder: Path, partition: str, minimum: int) -> Path:
    """The example description, in ``folder``, with ``min_security_version`` set on one partition."""
    text = (ROOT / "partitions.toml").read_text()
    head, found, tail = text.partition(f'name = "{partition}"\n')
    assert found
    path = folder / f"partitions-{partition}-{minimum}.toml"
    path.write_text(f"{head}{found}min_security_version = {minimum}\n{tail}")
    return path


def test_rollback_to_an_older_signed_image_is_refused(tmp_path: Path, keys: Path) -> None:
    """Release 1 is signed at security version 1; release 2 declares minimum 2 for alpha.

    Release 1's counter, validly signed for the same slot, no longer boots in release 2.
    """
    release1 = sign_system(ROOT / "partitions.toml", keys / "vendor.key", tmp_path / "r1", security_version=1)
    policy = _with_minimum(tmp_path, "alpha", 2)
    release2 = sign_system(policy, keys / "vendor.key", tmp_path / "r2", security_version=2)
    legit, _ = boot(release2.config)
    assert not legit.refused  # release 2 boots as signed
    copy_signed(release1.config.parent / COUNTER, release2.config.parent / COUNTER)
    system, _ = boot(release2.config)
    assert [r.name for r in system.refused] == ["alpha"]
    assert system.refused[0].reasons == ["counter.bin: rollback: security version 1 is below partition alpha's "
                                         "min_security_version 2"]  # fmt: skip
    assert {i.name for i in system.report(0).partitions} == {"beta", "gamma"}  # no minimum there: version 1 is fine


def test_sign_defaults_to_each_partitions_minimum(tmp_path: Path, keys: Path) -> None:
    policy = _with_minimum(tmp_path, "beta", 7)
    signed = sign_system(policy, keys / "vendor.key", tmp_path / "out")
    versions = {str(p.relative_to(signed.config.parent)): json.loads(p.with_name(p.name + ".manifest.json").read_text())
                ["security_version"] for p in signed.images}  # fmt: skip
    assert versions[slot_path(Slot("beta", "app", "sleeper"))] == 7
    assert versions[slot_path(Slot("alpha", "app", "counter"))] == 0
    system, _ = boot(signed.config)
    assert not system.refused


def test_sign_refuses_a_security_version_below_a_minimum(tmp_path: Path, keys: Path) -> None:
    policy = _with_minimum(tmp_path, "beta", 7)
    with pytest.raises(TrustError, match="security version 6 is below partition beta's min_security_version 7"):
        sign_system(policy, keys / "vendor.key", tmp_path / "out", security_version=6)


def test_every_slot_gets_its_own_signed_image(signed: Path) -> None:
    manifests = sorted(signed.glob("images/*/*/*.bin.manifest.json"))
    assert len(manifests) == 15  # 3 kernels + 2 + 2 + 8 apps
    for manifest in manifests:
        fields = json.loads(manifest.read_text())
        partition, kind = manifest.parent.parent.name, manifest.parent.name
        assert (fields["partition"], fields["kind"], fields["name"] + ".bin.manifest.json") == (
            partition, kind, manifest.name
        )  # fmt: skip
