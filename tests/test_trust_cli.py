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
    assert code == 0 and "signed 12 images" in out
    return tmp_path


def test_walkthrough(world: Path) -> None:
    launch = ["launch", "signed/partitions.toml", "--config-key", "signed/keys/vendor.pub", "--max-ticks", "300000"]
    code, out, _ = spk(*launch)
    assert code == 0 and "refused" not in out and "[alpha] hello from ring 3" in out

    counter = world / "signed/images/apps/counter.bin"
    original = counter.read_bytes()
    counter.write_bytes(original[:5] + bytes([original[5] ^ 0xFF]) + original[6:])
    code, out, _ = spk("verify", str(counter), "--key", "signed/keys/vendor.pub")
    assert code == 1
    code, out, _ = spk(*launch)
    assert code == 0
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
    assert code == 2 and "not a hex-encoded public key" in err


def test_launch_fails_when_nothing_boots(world: Path) -> None:
    code, out, err = spk("launch", "partitions.toml", "--secure-boot", "enforce", "--max-ticks", "100000")
    assert code == 1 and "no partition booted" in err
    assert out.count("refused by secure boot") == 3
