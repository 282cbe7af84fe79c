"""Sign a whole system: its images, its description, its golden values.

``spk sign partitions.toml --key vendor.key --out signed/`` builds every
image the description names and writes, under ``signed/``:

* ``images/kernels/NAME.bin`` and ``images/apps/NAME.bin``, each with its
  manifest and signature (:mod:`spgs.trust`);
* ``keys/KEY.pub``, the signer's public key (never the private one);
* the description itself, rewritten to name those signed images, to trust
  that key and to boot with ``secure_boot = "enforce"``, and signed;
* ``golden.json``: the digests measured boot must record for each
  partition (config, kernel image, each app), for ``spk verify-quote``.

Errors: those of loading and building the system, and TrustError.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import tomli_w

from spgs.system import image_label, load_and_plan
from spgs.trust import TrustError, canonical, golden_values, key_id, load_signing_key, sha256, sign_file, sign_image


@dataclass(frozen=True)
class SignedSystem:
    config: Path
    golden: Path
    images: list[Path]
    public_key: Path


def sign_system(config_path: Path, key_path: Path, out: Path, *, expires: date | None = None) -> SignedSystem:
    """Sign every image of a system and the system itself, into ``out``."""
    key = load_signing_key(key_path)
    loaded, plans = load_and_plan(config_path, secure_boot="off")
    raw = tomllib.loads(config_path.read_text(encoding="utf-8-sig"))
    (out / "images" / "kernels").mkdir(parents=True, exist_ok=True)
    (out / "images" / "apps").mkdir(parents=True, exist_ok=True)
    (out / "keys").mkdir(parents=True, exist_ok=True)

    written: dict[tuple[str, str], str] = {}
    images: list[Path] = []

    contents: dict[tuple[str, str], bytes] = {}

    def place(kind: str, label: str, data: bytes) -> str:
        if contents.setdefault((kind, label), data) != data:
            raise TrustError(f"two different {kind} images are both named {label!r}: rename one before signing")
        if (kind, label) not in written:
            relative = f"images/{kind}s/{label}.bin"
            target = out / relative
            target.write_bytes(data)
            sign_image(target, key, name=label, kind=kind, expires=expires)
            written[(kind, label)] = relative
            images.append(target)
        return written[(kind, label)]

    for section, p in zip(raw["partition"], plans, strict=True):
        section["image"] = place("kernel", p.kernel_label, p.kernel)
        section["apps"] = [place("app", label, data) for label, data in p.apps]
    public = out / "keys" / f"{key_path.stem}.pub"
    public.write_text(bytes(key.verify_key).hex() + "\n")
    trust = raw.setdefault("trust", {})
    trust["secure_boot"] = "enforce"
    trust["keys"] = [f"keys/{public.name}"]
    signed_config = out / config_path.name
    banner = f"# Signed by key {key_id(bytes(key.verify_key))} with `spk sign`: edit, re-sign, or it fails.\n"
    signed_config.write_text(banner + tomli_w.dumps(raw))
    sign_file(signed_config, key)

    config_digest = sha256(signed_config.read_bytes())
    partitions = {}
    for p in plans:
        events = [("config", "system description", config_digest), ("kernel_image", p.kernel_label, sha256(p.kernel))]
        events += [("app", label, sha256(data)) for label, data in p.apps]
        partitions[p.name] = events
    golden = out / "golden.json"
    golden.write_bytes(canonical(golden_values(partitions)) + b"\n")
    del loaded
    return SignedSystem(signed_config, golden, images, public)


__all__ = ["SignedSystem", "image_label", "sign_system"]
