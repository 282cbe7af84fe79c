"""Ring 1: the changes the management API makes to a running system, and the policy they pass.

Each function runs on the system's thread between major frames (the
controller queues it) and checks the change against the system as it is
then, so concurrent requests are judged one after the other, in order:

* :func:`patch` changes a partition's window (the schedule is laid out
  again for the next major frame) or its memory quota (effective when it
  is next started). The changed description must pass every field rule and
  every rule of :mod:`spgs.rules`, exactly as ``spk validate`` would judge
  the file, so nothing the configuration would refuse can be reached here.
* :func:`create` adds a partition from a fragment (bundled images only, as
  secure boot cannot verify a source build), judged the same way.
* :func:`stage_image` verifies an uploaded signed image as secure boot
  does (trusted key, the partition's slot, expiry) with rollback
  protection (its security version may not be below the partition's
  ``min_security_version`` nor below the image it replaces), and stages it:
  the partition's next start or restart (the API's or its health
  monitor's) loads it.

Every change is traced as a ``management`` event (``requester``, ``op``,
``outcome``). Errors: :class:`spgs.control.ControlError`.
"""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spgs.config import ConfigError, PartitionConfig, SystemDescription
from spgs.control_errors import ControlError
from spgs.images import ImageNotFound, build, is_path
from spgs.rules import Context, check_all
from spgs.system import PartitionPlan, System, image_label
from spgs.trust import Slot, manifest_path, signature_path, trusted_keys, verify_image
from spk import ImageError, Machine, check_app_image, load_image
from spk.abi import PAGE_SIZE


def _judge(system: System, raw: dict[str, Any], index: int) -> SystemDescription:
    """A changed description, judged by the field rules and spgs.rules. Errors: ControlError(invalid|conflict).

    A problem in partition ``index`` (the one being changed) is named by
    its own field (``window``), as the request names it.
    """
    config = system.config
    prefix = f"partition.{index}."

    def own(field: str) -> str:
        return field.removeprefix(prefix)

    try:
        desc = SystemDescription.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = own(".".join(str(part) for part in error["loc"]))
        raise ControlError("invalid", f"{field}: {error['msg']} [{error['type']}]", field) from None
    problems = check_all(Context(desc, str(config.path), config.path.parent, config.lines))
    if problems:
        words = "; ".join(f"{own(p.field)}: {p.message} [{p.rule}]" for p in problems)
        raise ControlError("conflict", f"the configuration does not allow it: {words}", own(problems[0].field))
    return desc


def _raw(system: System) -> dict[str, Any]:
    return system.config.description.model_dump(exclude_unset=True)


def _index(system: System, name: str) -> int:
    return next(i for i, p in enumerate(system.config.description.partition) if p.name == name)


def patch(system: System, name: str, *, memory: int | str | None, window: int | None, requester: str) -> str:
    """Change a partition's window and/or memory quota (see the module's docstring)."""
    desc = system.config.description
    i = _index(system, name)
    part = desc.partition[i]
    if window is not None and part.windows:
        raise ControlError("conflict", f"{name} lists explicit windows: its window length is not one number",
                           "window")  # fmt: skip
    raw = _raw(system)
    if window is not None:
        raw["partition"][i]["window"] = window
    if memory is not None:
        raw["partition"][i]["memory"] = memory
    judged = _judge(system, raw, i).partition[i]
    plan = system.plan_of(name)
    needed = Machine.frames_to_boot(plan.kernel, [len(data) for _label, data in plan.apps])
    if judged.memory // PAGE_SIZE < needed:
        raise ControlError("conflict", f"{name}: a quota of {judged.memory >> 10} KiB < {needed * PAGE_SIZE >> 10} KiB "
                           "its images need to boot [quota_below_boot_size]", "memory")  # fmt: skip
    changes: dict[str, object] = {}
    if window is not None and judged.window != part.window:
        part.window = judged.window
        changes["window"] = judged.window
        system.reschedule()
    if memory is not None and judged.memory != part.memory:
        part.memory = judged.memory
        plan.quota_frames = judged.memory // PAGE_SIZE
        changes["memory"] = judged.memory
    system.record(name, "management", {"requester": requester, "op": "set", "outcome": "done", **changes})
    return "done"


def _bundled(refs: list[str], field: str) -> None:
    for j, ref in enumerate(refs):
        if is_path(ref):
            raise ControlError("invalid", f"{ref!r}: a created partition uses bundled images only (a name, "
                               "not a path)", f"{field}.{j}" if field == "apps" else field)  # fmt: skip


def check_fragment(fragment: dict[str, Any]) -> PartitionConfig:
    """A partition fragment, checked field by field (before it is queued). Errors: ControlError(invalid)."""
    try:
        part = PartitionConfig.model_validate(fragment)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ControlError("invalid", f"{field}: {error['msg']} [{error['type']}]", field) from None
    if part.role != "guest":
        raise ControlError("invalid", "role: a partition created through the API is a guest", "role")
    if part.full:  # its kernel, cables and MMU are the description's business (docs/config.md)
        raise ControlError("invalid", "virtualization: a partition created through the API is paravirtual; "
                           "describe a full partition in the configuration", "virtualization")  # fmt: skip
    if part.ports:
        raise ControlError("invalid", "ports: a created partition has no channels (the configuration wires them)",
                           "ports")  # fmt: skip
    _bundled([part.image], "image")
    _bundled(part.apps, "apps")
    return part


def build_fragment(system: System, part: PartitionConfig) -> dict[tuple[str, str], bytes]:
    """Build a fragment's images (a C build may take a while: done before it is queued). Errors: ControlError."""
    wanted = [("kernel", part.image)] + [("app", a) for a in part.apps]
    try:
        images = build(wanted, system.config.path.parent)
    except (ImageNotFound, ConfigError) as exc:
        raise ControlError("invalid", str(exc), "image") from None
    except Exception as exc:  # AssemblyError, BuildError: the image does not build
        raise ControlError("invalid", f"{part.image}: does not build: {exc}", "image") from None
    try:
        load_image(images[("kernel", part.image)])
        for ref in part.apps:
            check_app_image(images[("app", ref)])
    except ImageError as exc:
        raise ControlError("invalid", str(exc), "image") from None
    return images


def create(
    system: System, fragment: dict[str, Any], images: dict[tuple[str, str], bytes], *, requester: str
) -> str:  # fmt: skip
    """Add the partition ``fragment`` describes (checked by :func:`check_fragment`, built by :func:`build_fragment`)."""
    mode = system.config.description.trust.secure_boot
    if mode != "off":
        raise ControlError("conflict", f"secure boot is {mode}: a partition built from bundled sources would not "
                           "verify; create it in the description with signed images")  # fmt: skip
    raw = _raw(system)
    raw["partition"].append(fragment)
    judged = _judge(system, raw, len(raw["partition"]) - 1)
    part = judged.partition[-1]
    kernel = images[("kernel", part.image)]
    apps = [(image_label(a), images[("app", a)]) for a in part.apps]
    needed = Machine.frames_to_boot(kernel, [len(data) for _label, data in apps])
    if part.memory // PAGE_SIZE < needed:
        raise ControlError("conflict", f"{part.name}: a quota of {part.memory >> 10} KiB < "
                           f"{needed * PAGE_SIZE >> 10} KiB its images need to boot [quota_below_boot_size]",
                           "memory")  # fmt: skip
    system.config.description.partition.append(part)
    plan = PartitionPlan(part.name, image_label(part.image), kernel, apps, part.memory // PAGE_SIZE, part)
    system.add_partition(plan)
    system.record(part.name, "management", {"requester": requester, "op": "create", "outcome": "done",
                                            "memory": part.memory, "window": part.window})  # fmt: skip
    return "done"


def signed_version(image: Path) -> int:
    """The security version an image was signed with (0 for an image with no readable manifest)."""
    try:
        version = json.loads(manifest_path(image).read_bytes())["security_version"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def stage_image(
    system: System, name: str, *, kind: str, label: str, files: dict[str, bytes], current: int, requester: str,
) -> dict[str, Any]:  # fmt: skip
    """Verify an uploaded image for its slot and stage it; returns what was staged.

    ``current`` is the security version of the image it replaces (rollback
    protection). Errors: ControlError(refused) with the verdict's code and
    reason; ControlError(conflict) for a slot the partition does not have.
    """
    desc = system.config.description
    plan = system.plan_of(name)
    labels = [plan.kernel_label] if kind == "kernel" else [app for app, _data in plan.apps]
    if label not in labels:
        which = ", ".join(labels) or "none"
        message = f"{name} has no {kind} named {label!r} ({kind} images: {which}): an update replaces an image"
        raise ControlError("conflict", message, "name")
    if not desc.trust.keys:
        raise ControlError("refused", "no trusted keys ([trust].keys is empty): an uploaded image cannot be verified")
    trusted = trusted_keys([system.config.path.parent / k for k in desc.trust.keys])
    minimum = max(system.config_of(name).min_security_version, current)
    with tempfile.TemporaryDirectory(prefix="spk-upload-") as folder:
        image = Path(folder) / f"{label}.bin"
        image.write_bytes(files["image"])
        manifest_path(image).write_bytes(files["manifest"])
        signature_path(image).write_bytes(files["signature"])
        today = desc.trust.reference_date or date.today()
        verdict = verify_image(image, trusted, today, slot=Slot(name, kind, label), min_security_version=minimum)
        version = signed_version(image)
    if not verdict.ok:
        outcome = f"refused: {verdict.code}"
        slot = f"{name}/{kind}/{label}"
        system.record(name, "management", {"requester": requester, "op": "stage_image", "outcome": outcome,
                                           "slot": slot})  # fmt: skip
        raise ControlError("refused", f"{name}/{kind}/{label}: {verdict.code}: {verdict.reason}")
    data = files["image"]
    try:
        if kind == "kernel":
            kernel_image = load_image(data)
            sizes = [len(d) for _l, d in plan.apps]
        else:
            check_app_image(data)
            kernel_image = load_image(plan.kernel)
            sizes = [len(data if app == label else d) for app, d in plan.apps]
    except ImageError as exc:
        raise ControlError("refused", f"{name}/{kind}/{label}: verified, but ring 0 would not load it: {exc}") from None
    needed = Machine.frames_to_boot(kernel_image, sizes)
    if plan.quota_frames < needed:
        quota, wanted = plan.quota_frames * PAGE_SIZE >> 10, needed * PAGE_SIZE >> 10
        message = f"{name}: its quota of {quota} KiB < {wanted} KiB the updated images need [quota_below_boot_size]"
        raise ControlError("refused", message)
    if kind == "kernel":
        plan.kernel = data
    else:
        plan.apps = [(app, data if app == label else d) for app, d in plan.apps]
    staged = {"kind": kind, "name": label, "security_version": version, "sha256": verdict.digest}
    system.record(name, "management", {"requester": requester, "op": "stage_image", "outcome": "done",
                                       "slot": f"{name}/{kind}/{label}", "security_version": version,
                                       "sha256": verdict.digest})  # fmt: skip
    return staged
