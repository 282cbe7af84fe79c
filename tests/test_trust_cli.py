"""The trust walkthrough as a user runs it: keygen, sign, launch, tamper, attest, verify."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spk_tools.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def spk(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "partitions.toml", tmp_path)
    assert spk("keygen", "vendor", "--out", "keys")[0] == 0
    assert spk("keygen", "platform", "--out", "keys")[0] == 0
    code, out, _ = spk("sign", "partitions.toml", "--key", "keys/vendor.key", "--out", "signed")
    assert code == 0 and "signed 15 images" in out
    return tmp_path


def test_walkthrough(world: Path) -> None:
    launch = ["launch", "signed/partitions.toml", "--config-key", "signed/keys/vendor.pub", "--max-ticks", "300000"]
    code, out, _ = spk(*launch)
    assert code == 0 and "refused" not in out and "[alpha] hello from ring 3" in out

    counter = world / "signed/images/alpha/app/counter.bin"
    original = counter.read_bytes()
    middle = len(original) // 2
    counter.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])
    code, out, _ = spk("verify", str(counter), "--key", "signed/keys/vendor.pub")
    assert code == 1
    code, out, err = spk(*launch)
    assert code == 1 and err == "error: alpha: refused by secure boot\n"  # the others ran: not as intended
    assert "[alpha] !! secure boot (refused): counter.bin: tampered" in out
    assert "[beta] refkernel: all apps done" in out and "[alpha] hello" not in out
    counter.write_bytes(original)

    attest = ["attest", "signed/partitions.toml", "--nonce", "n-1", "--partition", "alpha",
              "--platform-key", "keys/platform.key", "--max-ticks", "300000", "--out", "q.json"]  # fmt: skip
    assert spk(*attest)[0] == 0
    verify = ["verify-quote", "q.json", "--platform-key", "keys/platform.pub", "--golden", "signed/golden.json"]
    code, out, _ = spk(*verify, "--nonce", "n-1", "--partition", "alpha")
    assert code == 0 and "verifies" in out
    code, _, err = spk(*verify, "--nonce", "n-2", "--partition", "beta")
    assert code == 1 and "nonce differs" in err and "expected 'beta'" in err


def test_edited_description_is_refused(world: Path) -> None:
    config = world / "signed/partitions.toml"
    config.write_text(config.read_text().replace("max_ticks = 3000000", "max_ticks = 3000001"))
    code, _, err = spk("launch", str(config), "--config-key", "signed/keys/vendor.pub")
    assert code == 2 and "refused: tampered" in err


def test_bad_key_file_is_a_clean_error(world: Path) -> None:
    (world / "bad.pub").write_text("zz\n")
    code, _, err = spk("verify", "signed/partitions.toml", "--key", "bad.pub")
    assert code == 2 and err == "error: bad.pub is not an spk key file: a public key file starts with the line " \
        "'spk-ed25519-public-key v1' (make a new pair with spk keygen)\n"  # fmt: skip


# -- a key of the wrong kind, in every command that reads a key (issue 12) ----------------------
LAUNCH = ["launch", "signed/partitions.toml", "--max-ticks", "1000"]
ATTEST = ["attest", "signed/partitions.toml", "--nonce", "n", "--partition", "alpha", "--max-ticks", "1000"]
QUOTE = ["verify-quote", "q.json", "--nonce", "n", "--partition", "alpha"]
PUBLIC_GIVEN = "is a public key; sign with the private key"
PRIVATE_GIVEN = "is a private key; verify with the public key"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sign", "partitions.toml", "--key", "keys/vendor.pub", "--out", "s2"],
         f"keys/vendor.pub {PUBLIC_GIVEN} keys/vendor.key"),
        (["sign", "signed/images/alpha/app/hello.bin", "--key", "keys/vendor.pub", "--partition", "alpha"],
         f"keys/vendor.pub {PUBLIC_GIVEN} keys/vendor.key"),
        ([*LAUNCH, "--config-key", "keys/vendor.key"], f"keys/vendor.key {PRIVATE_GIVEN} keys/vendor.pub"),
        ([*LAUNCH, "--platform-key", "keys/platform.pub"], f"keys/platform.pub {PUBLIC_GIVEN} keys/platform.key"),
        ([*ATTEST, "--platform-key", "keys/platform.pub"], f"keys/platform.pub {PUBLIC_GIVEN} keys/platform.key"),
        ([*ATTEST, "--platform-key", "keys/platform.key", "--config-key", "keys/vendor.key"],
         f"keys/vendor.key {PRIVATE_GIVEN} keys/vendor.pub"),
        ([*QUOTE, "--platform-key", "keys/platform.key"], f"keys/platform.key {PRIVATE_GIVEN} keys/platform.pub"),
        (["verify", "signed/partitions.toml", "--key", "keys/vendor.key"],
         f"keys/vendor.key {PRIVATE_GIVEN} keys/vendor.pub"),
        (["verify", "signed/images/alpha/app/hello.bin", "--key", "signed/keys/vendor.pub", "--key", "keys/vendor.key"],
         f"keys/vendor.key {PRIVATE_GIVEN} keys/vendor.pub"),
    ],
)  # fmt: skip
def test_a_key_of_the_wrong_kind_is_refused_with_the_file_to_use(world: Path, args: list[str], message: str) -> None:
    (world / "q.json").write_text("{}")
    code, out, err = spk(*args)
    assert (code, err) == (2, f"error: {message}\n"), out
    assert not (world / "s2").exists()


def test_trusting_a_private_key_in_the_description_is_refused(world: Path) -> None:
    config = world / "signed/partitions.toml"
    shutil.copy(world / "keys/vendor.key", world / "signed/keys/vendor.key")
    config.write_text(config.read_text().replace('"keys/vendor.pub"', '"keys/vendor.key"'))
    assert "keys/vendor.key" in config.read_text()
    code, _, err = spk("launch", str(config), "--max-ticks", "1000")
    assert code == 2 and f"signed/keys/vendor.key {PRIVATE_GIVEN} " in err


def test_keygen_writes_typed_keys_and_an_owner_only_private_key(world: Path) -> None:
    assert (world / "keys/vendor.key").read_text().startswith("spk-ed25519-private-key v1\n")
    assert (world / "keys/vendor.pub").read_text().startswith("spk-ed25519-public-key v1\n")
    assert (world / "signed/keys/vendor.pub").read_text() == (world / "keys/vendor.pub").read_text()
    assert (world / "keys/vendor.key").stat().st_mode & 0o777 == 0o600


# -- slots and security versions from the command line ----------------------------------------------
def test_signing_an_image_needs_its_partition(world: Path) -> None:
    code, _, err = spk("sign", "signed/images/alpha/app/hello.bin", "--key", "keys/vendor.key")
    assert code == 2 and "needs --partition" in err


def test_copy_attack_from_the_command_line(world: Path) -> None:
    """A signed image copied with its manifest and signature over another slot's files: refused, the rest boots."""
    for suffix in ("", ".manifest.json", ".sig"):
        shutil.copyfile(f"signed/images/gamma/app/bad_hlt.bin{suffix}", f"signed/images/alpha/app/counter.bin{suffix}")
    code, out, _ = spk("verify", "signed/images/alpha/app/counter.bin", "--key", "signed/keys/vendor.pub")
    assert code == 0 and "for slot gamma/app/bad_hlt" in out  # a good signature: only its slot is wrong
    code, _, err = spk("verify", "signed/images/alpha/app/counter.bin", "--key", "signed/keys/vendor.pub",
                       "--slot", "alpha/app/counter")  # fmt: skip
    assert code == 1 and "wrong_slot: signed for slot gamma/app/bad_hlt, booted in slot alpha/app/counter" in err
    code, out, _ = spk("launch", "signed/partitions.toml", "--config-key", "signed/keys/vendor.pub",
                       "--max-ticks", "300000")  # fmt: skip
    assert code == 1
    assert "[alpha] !! secure boot (refused): counter.bin: wrong_slot: signed for slot gamma/app/bad_hlt, " \
        "booted in slot alpha/app/counter" in out  # fmt: skip
    assert "[beta] refkernel: all apps done" in out and "[alpha] hello" not in out


def test_rollback_from_the_command_line(world: Path) -> None:
    code, out, _ = spk("sign", "signed/images/alpha/app/counter.bin", "--key", "keys/vendor.key",
                       "--partition", "alpha", "--name", "counter", "--security-version", "4")  # fmt: skip
    assert code == 0 and "for slot alpha/app/counter, security version 4" in out
    image = ["verify", "signed/images/alpha/app/counter.bin", "--key", "signed/keys/vendor.pub"]
    assert spk(*image, "--min-security-version", "4")[0] == 0
    code, _, err = spk(*image, "--min-security-version", "5")
    assert code == 1 and "rollback: security version 4 is below the minimum 5" in err


def test_sign_refuses_a_security_version_below_the_minimum(world: Path) -> None:
    text = (
        (world / "partitions.toml").read_text().replace('name = "beta"\n', 'name = "beta"\nmin_security_version = 3\n')
    )
    (world / "p3.toml").write_text(text)
    code, _, err = spk("sign", "p3.toml", "--key", "keys/vendor.key", "--out", "s3", "--security-version", "2")
    assert code == 2 and "security version 2 is below partition beta's min_security_version 3" in err
    code, out, _ = spk("sign", "p3.toml", "--key", "keys/vendor.key", "--out", "s3")
    assert code == 0
    code, out, _ = spk("launch", "s3/p3.toml", "--config-key", "s3/keys/vendor.pub", "--max-ticks", "1000")
    assert code == 0 and "refused" not in out


def test_launch_fails_when_nothing_boots(world: Path) -> None:
    code, out, err = spk("launch", "partitions.toml", "--secure-boot", "enforce", "--max-ticks", "100000")
    assert code == 1 and "no partition booted" in err
    assert out.count("refused by secure boot") == 3
