"""Trust chain: signed images, secure boot, measured boot, attestation (negative spec)."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from spgs.config import load
from spgs.signing import sign_system
from spgs.system import System, plan
from spgs.trust import (
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


def image(tmp_path: Path, keys: Path, data: bytes = b"\x90" * 100, **kwargs: object) -> Path:
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    sign_image(path, load_signing_key(keys / "vendor.key"), name="app", kind="app", **kwargs)  # type: ignore[arg-type]
    return path


def trusted(keys: Path, *names: str) -> dict[str, object]:
    return trusted_keys([keys / f"{n}.pub" for n in names])  # type: ignore[return-value]


# -- keys -------------------------------------------------------------------
def test_private_key_is_owner_only_and_never_overwritten(keys: Path) -> None:
    assert (keys / "vendor.key").stat().st_mode & 0o777 == 0o600
    from spgs.trust import TrustError

    with pytest.raises(TrustError, match="refusing to overwrite"):
        keygen(keys, "vendor")


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


def test_forged_manifest_refused(tmp_path: Path, keys: Path) -> None:
    path = image(tmp_path, keys)
    manifest = path.with_name("app.bin.manifest.json")
    manifest.write_bytes(manifest.read_bytes().replace(b'"version":"1"', b'"version":"2"'))
    assert verify_image(path, trusted(keys, "vendor"), TODAY).code == "bad_signature"  # type: ignore[arg-type]


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


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_enforce_refuses_only_the_partition_with_a_tampered_image(signed: Path) -> None:
    tamper(signed / "images/apps/counter.bin")  # used by alpha only
    system, rec = boot(signed / "partitions.toml")
    assert [r.name for r in system.refused] == ["alpha"]
    assert "tampered" in system.refused[0].reasons[0]
    states = {i.name: i.state for i in system.report(0).partitions}
    assert states == {"beta": "exited", "gamma": "ready"}
    assert rec.lines("beta")[-1] == "refkernel: all apps done"


def test_warn_boots_and_reports(signed: Path) -> None:
    tamper(signed / "images/apps/counter.bin")
    system, rec = boot(signed / "partitions.toml", "warn")
    assert not system.refused
    decisions = {e.partition: e.args["decision"] for e in rec.of("secure_boot")}
    assert decisions == {"alpha": "warned", "beta": "verified", "gamma": "verified"}


def test_off_checks_nothing(signed: Path) -> None:
    tamper(signed / "images/apps/counter.bin")
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
    app = signed / "images/apps/counter.bin"
    tamper(app)
    sign_image(app, load_signing_key(keys / "vendor.key"), name="counter", kind="app")
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

    from spgs.trust import canonical

    quote = json.loads(_quote(signed, keys, b"n"))
    edit(quote)  # type: ignore[operator]
    quote["statement"]["log_digest"] = __import__("hashlib").sha256(canonical(quote["log"])).hexdigest()
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
    tamper(signed / "images/apps/counter.bin")
    refused, refused_rec = boot(signed / "partitions.toml")
    assert [r.name for r in refused.refused] == ["alpha"]

    def windows(rec: Recorder) -> list[tuple[str, int]]:
        return [(e.partition, e.time) for e in rec.of("window") if e.partition != "alpha"]

    assert windows(clean_rec) == windows(refused_rec)
    assert clean_rec.lines("gamma") == refused_rec.lines("gamma")


def test_sign_refuses_two_images_with_one_name(tmp_path: Path, keys: Path) -> None:
    from spgs.trust import TrustError

    (tmp_path / "x").mkdir()
    shutil.copy(ROOT / "apps/counter.asm", tmp_path / "x/hello.asm")
    config = tmp_path / "p.toml"
    config.write_text('[[partition]]\nname = "a"\nimage = "refkernel"\napps = ["hello", "x/hello.asm"]\n')
    with pytest.raises(TrustError, match="both named 'hello'"):
        sign_system(config, keys / "vendor.key", tmp_path / "out")
