"""Sign a whole system: its images, its description, its golden values.

``spk sign partitions.toml --key vendor.key --out signed/`` builds every
image the description names and writes, under ``signed/``:

* ``images/PARTITION/kernel/NAME.bin`` and ``images/PARTITION/app/NAME.bin``:
  one copy per slot, each with its manifest and signature (a Linux
  partition's packed root file system is ``images/PARTITION/app/rootfs.bin``,
  its host ``files`` inside it)
  (:mod:`spgs.trust`), signed for that slot (partition, kind, name) and
  with a security version, so that an image copied over another slot's
  files, or an older one, does not boot;
* ``keys/KEY.pub``, the signer's public key (never the private one);
* the description itself, rewritten to name those signed images, to trust
  that key and to boot with ``secure_boot = "enforce"``, and signed (a full
  partition's kernel is signed in its kernel slot like any kernel, and its
  ``stdin_file`` is inlined as ``stdin``, so the signature covers it);
* ``golden.json``: the digests measured boot must record for each
  partition (config, kernel image, each app), for ``spk verify-quote``.

Errors: those of loading and building the system, and TrustError (a key of
the wrong kind, two different images for one slot, a security version
below a partition's ``min_security_version``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import tomli_w

from spgs.system import image_label, load_and_plan
from spgs.trust import (
    Slot,
    TrustError,
    canonical,
    golden_values,
    key_id,
    load_signing_key,
    sha256,
    sign_file,
    sign_image,
    write_public_key,
)


@dataclass(frozen=True)
class SignedSystem:
    config: Path
    golden: Path
    images: list[Path]
    public_key: Path


def slot_path(slot: Slot) -> str:
    """Where ``spk sign`` puts the image of a slot, relative to its output: ``images/alpha/app/counter.bin``."""
    return f"images/{slot.partition}/{slot.kind}/{slot.name}.bin"


def sign_system(
    config_path: Path, key_path: Path, out: Path, *, expires: date | None = None, security_version: int | None = None
) -> SignedSystem:
    """Sign every image of a system, each for its slot, and the system itself, into ``out``.

    ``security_version`` goes into every manifest; by default each image
    gets its partition's ``min_security_version``, so that the signed
    system boots. Errors: see the module.
    """
    key = load_signing_key(key_path)
    loaded, plans = load_and_plan(config_path, secure_boot="off")
    if loaded.description.system.time != "exact":
        raise TrustError(
            f"{config_path}: system.time: golden values are generated for exact (deterministic) time only, "
            f"not {loaded.description.system.time!r} [time_not_exact]"
        )
    raw = tomllib.loads(config_path.read_text(encoding="utf-8-sig"))

    contents: dict[Slot, bytes] = {}
    images: list[Path] = []

    def place(partition: str, minimum: int, kind: str, ref: str, data: bytes) -> str:
        # The name is the label's last part: a bundled "adversarial/crash" or a folder "c_hello/" gives one file.
        slot = Slot(partition, kind, image_label(ref).rstrip("/").rpartition("/")[2])
        if contents.setdefault(slot, data) != data:
            raise TrustError(
                f"partition {partition}: two different {kind} images are both named {slot.name!r}: "
                "rename one before signing"
            )
        relative = slot_path(slot)
        if (out / relative) not in images:
            version = minimum if security_version is None else security_version
            if version < minimum:
                raise TrustError(
                    f"security version {version} is below partition {partition}'s min_security_version {minimum}: "
                    "the signed system would not boot"
                )
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            sign_image(target, key, name=slot.name, kind=kind, partition=partition, security_version=version,
                       expires=expires)  # fmt: skip
            images.append(target)
        return relative

    for section, p in zip(raw["partition"], plans, strict=True):
        minimum = p.config.min_security_version
        section["image"] = place(p.name, minimum, "kernel", p.config.image, p.kernel)
        apps = p.apps[: len(p.config.apps)]  # a Linux partition's modules follow (rootfs, cmdline, stdin)
        section["apps"] = [
            place(p.name, minimum, "app", ref, data) for ref, (_label, data) in zip(p.config.apps, apps, strict=True)
        ]
        if p.config.stdin_file is not None and p.stdin is not None:
            # A full partition's COM1 input, inlined: the signed description (measured as CONFIG) then covers it.
            try:
                section["stdin"] = p.stdin.decode()
            except UnicodeDecodeError:
                raise TrustError(
                    f"partition {p.name}: stdin_file {p.config.stdin_file!r} is not UTF-8: it cannot be inlined "
                    "into the signed description (give it as stdin, or as UTF-8 text)"
                ) from None
            section.pop("stdin_file")
        if p.config.command:  # the packed rootfs, signed for slot PARTITION/app/rootfs; host files are in it now
            section["rootfs"] = place(p.name, minimum, "app", "rootfs", dict(p.apps)["rootfs"])
            section.pop("files", None)
    (out / "keys").mkdir(parents=True, exist_ok=True)
    public = write_public_key(out / "keys" / f"{key_path.stem}.pub", key.verify_key)
    trust = raw.setdefault("trust", {})
    trust["secure_boot"] = "enforce"
    trust["keys"] = [f"keys/{public.name}"]
    signed_config = out / config_path.name
    banner = f"# Signed by key {key_id(bytes(key.verify_key))} with `spk sign`: edit, re-sign, or it fails.\n"
    signed_config.write_text(banner + tomli_w.dumps(raw))
    sign_file(signed_config, key)

    config_digest = sha256(signed_config.read_bytes())
    partitions = {}
    for section, p in zip(raw["partition"], plans, strict=True):
        events = [("config", "system description", config_digest)]
        events.append(("kernel_image", image_label(section["image"]), sha256(p.kernel)))
        apps = p.apps[: len(p.config.apps)]
        events += [
            ("app", image_label(ref), sha256(data)) for ref, (_l, data) in zip(section["apps"], apps, strict=True)
        ]
        events += [("app", name, sha256(data)) for name, data in p.apps[len(p.config.apps) :]]  # Linux modules
        partitions[p.name] = events
    golden = out / "golden.json"
    golden.write_bytes(canonical(golden_values(partitions)) + b"\n")
    del loaded
    return SignedSystem(signed_config, golden, images, public)


__all__ = ["SignedSystem", "image_label", "sign_system", "slot_path"]
