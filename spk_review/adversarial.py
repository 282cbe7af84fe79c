"""The adversarial suite of ``spk review``: attackers run against a system description.

For each attack class (:data:`spk_review.adversarial_attacks.CLASSES`) the suite
runs the configured system with an attacker placed in it (see
:mod:`spk_review.adversarial_lab`) and judges containment from ring 0's facts,
never from the attacker's say-so alone:

* ring 0's invariants (``Machine.check_invariants``: every mapping owned,
  counts recounted from the page tables, no page table writable) held after
  every major frame, and no partition met an ``internal_error``;
* every configured partition observed exactly what it observed in a
  baseline run of the same system with an idle stand-in in the attacker's
  slot: its memory byte for byte, its events (console lines, windows, exits,
  faults, health actions) at the same virtual times, its state and counters,
  the configured channels' traffic; ring 0's own frames are unchanged and
  free RAM is zero (determinism makes this exact);
* the attacker's own facts: the statuses it recorded are the documented
  refusals, its misdeeds trapped where they must, the policy stopped,
  restarted or preempted it as its table says.

An attack is contained when every fact holds; the evidence lists them, a
failed one prefixed ``NOT CONTAINED:``. Removing a check from the SPK turns
the attack that probes it into "not contained" (tests/test_adversarial.py
switches the map path's ownership check off to show it). docs/review.md,
"Adversarial suite", lists the classes.

Errors: :func:`run_suite` raises ConfigError, ImageNotFound or
AssemblyError when the configuration or an image cannot be used, and
InternalError if the baseline run itself breaks; an attack that cannot be
run is reported as not contained, with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from spgs.config import load
from spk import InternalError
from spk_review.adversarial_attacks import CLASSES, AttackClass, Fact
from spk_review.adversarial_full import FULL_CLASSES, FullAttack
from spk_review.adversarial_lab import STAND_IN, AttackerSpec, Lab, Run, Snapshot, nonzero_free_frames

__all__ = ["AttackResult", "class_ids", "full_class_ids", "run_suite"]


@dataclass(frozen=True)
class AttackResult:
    """One attack class, run against one system description."""

    attack_class: str  #: stable id, e.g. "map_own_page_table_writable"
    title: str  #: human title
    attacker: str  #: image(s) used, e.g. "partitions/adversarial/map_own_pagetable.asm"
    contained: bool
    evidence: list[str]  #: concrete facts; a failed one starts with "NOT CONTAINED:"


def class_ids() -> list[str]:
    """The stable ids of every attack class run against any system, in the order the suite runs them."""
    return [c.attack_class for c in CLASSES]


def full_class_ids() -> list[str]:
    """The ids of the full-partition attack classes, run after the others when the system has a full partition."""
    return [c.attack_class for c in FULL_CLASSES]


def run_suite(config_path: Path, *, seed: int | None = None, only: Collection[str] | None = None) -> list[AttackResult]:
    """Run every attack class (or those in ``only``) against the system at ``config_path``.

    The full-partition classes (:data:`spk_review.adversarial_full.FULL_CLASSES`)
    run, after the others, when the description has a full partition: their
    attacker takes that partition's shape, in a lab and baseline of their own.
    ``seed`` overrides ``[system].seed`` (where partitions sit in RAM).
    Errors: ConfigError, ImageNotFound, AssemblyError, BuildError (the
    configuration or an image); ValueError for an unknown class in
    ``only``; InternalError when a baseline run breaks ring 0's invariants.
    """
    unknown = set(only or ()) - set(class_ids()) - set(full_class_ids())
    if unknown:
        raise ValueError(f"unknown attack classes: {', '.join(sorted(unknown))}")
    chosen = [c for c in CLASSES if only is None or c.attack_class in only]
    results = []
    if chosen or only is None:
        results += _run_group(Lab(config_path, [c.spec for c in chosen], seed=seed), chosen)
    full = [c for c in FULL_CLASSES if only is None or c.attack_class in only]
    if full and any(p.full for p in load(config_path).description.partition):
        results += _run_group(Lab(config_path, [c.spec for c in full], seed=seed, full=True), full)
    return results


def _run_group(lab: Lab, attacks: Sequence[AttackClass | FullAttack]) -> list[AttackResult]:
    """A baseline run, then each attack against it."""
    frames = max((c.spec.frames for c in attacks), default=1)
    baseline = lab.run(AttackerSpec(STAND_IN), frames, every_frame=True)
    if baseline.invariant_error is not None:
        raise InternalError(f"the baseline run (no attacker) broke ring 0's invariants {baseline.invariant_error}")
    return [_attack(lab, baseline, c) for c in attacks]


def _attack(lab: Lab, baseline: Run, attack: AttackClass | FullAttack) -> AttackResult:
    """Run one attack and judge it; a host error is a result too (not contained)."""
    try:
        run = lab.run(attack.spec, attack.spec.frames)
        facts = [_placement(lab), *attack.judge(lab, run), *shared_facts(lab, baseline, run)]
    except Exception as exc:  # attack code found a host error: that is a finding, not a crash of the review
        facts = [(False, f"the attack could not be run to its end: {type(exc).__name__}: {exc}")]
    evidence = [text if ok else f"NOT CONTAINED: {text}" for ok, text in facts]
    contained = bool(facts) and all(ok for ok, _ in facts)
    return AttackResult(attack.attack_class, attack.title, attack.attacker, contained, evidence)


def _placement(lab: Lab) -> Fact:
    p = lab.placement
    text = (f"attacker placed as partition {p.name!r} beside {', '.join(lab.victims + lab.observers)}: the quota "
            f"({p.quota >> 10} KiB) and window length of {p.template!r}, window {p.window}; baseline: the same "
            f"system with the idle stand-in {STAND_IN} in that slot")  # fmt: skip
    return (True, "; ".join([text, *p.notes]))


# -- what every attack must leave as it was -------------------------------------------------------
def shared_facts(lab: Lab, baseline: Run, run: Run) -> list[Fact]:
    """Invariants, internal errors, and the configured partitions against the baseline."""
    snap = run.snapshots[-1]
    base = baseline.snapshots[min(snap.frame, len(baseline.snapshots)) - 1]
    facts = [_invariants(run), _internal_errors(run), _free_ram(run)]
    facts += _same_memory(lab, snap, base)
    facts.append(_same_events(lab, baseline, run, base))
    facts.append(_same_partitions(snap, base))
    if snap.channels:
        facts.append((snap.channels == base.channels, f"configured channels (sent, received): {snap.channels}, "
                                                      f"baseline {base.channels}"))  # fmt: skip
    if lab.observers:
        facts.append((True, f"{', '.join(lab.observers)}: role system, may list and query every partition by "
                            "design, so not compared with the baseline"))  # fmt: skip
    return facts


def _invariants(run: Run) -> Fact:
    if run.invariant_error is not None:
        return (False, f"ring 0's invariants broke {run.invariant_error}")
    frames = run.snapshots[-1].frame
    return (
        True,
        f"ring 0's invariants held after each of {frames} major frames (every mapping owned, "
        "map counts recounted from the page tables, no page table writable, each full partition's engine "
        "maps its memory and nothing else)",
    )


def _internal_errors(run: Run) -> Fact:
    errors = [e for e in run.events if e.event == "kernel_fault" and e.args.get("kind") == "internal_error"]
    if errors:
        return (False, f"internal_error in {errors[0].partition}: {errors[0].args.get('detail')}")
    return (True, "no internal_error: no host exception escaped a trap")


def _free_ram(run: Run) -> Fact:
    dirty = nonzero_free_frames(run.machine)
    if dirty:
        return (False, f"free RAM written: frames {', '.join(f'{m:#x}' for m in dirty[:6])} are not zero")
    return (True, "free RAM is all zero")


def _same_memory(lab: Lab, snap: Snapshot, base: Snapshot) -> list[Fact]:
    compared = sorted(name for name in base.memory if name not in lab.observers)
    changed = [name for name in compared if snap.memory.get(name) != base.memory[name]]
    if changed:
        return [(False, f"memory differs from the baseline at t={snap.time}: {', '.join(changed)}")]
    return [(True, f"memory of {', '.join(compared)} byte-identical to the baseline at t={snap.time}")]


def _same_events(lab: Lab, baseline: Run, run: Run, base: Snapshot) -> Fact:
    ignored = {run.name, *lab.observers}
    mine = [e for e in run.events if e.partition not in ignored]
    theirs = [e for e in baseline.events[: base.events] if e.partition not in ignored]
    if mine == theirs:
        return (
            True,
            f"{', '.join(lab.victims)}: {len(mine)} events (console lines, windows, exits, faults) "
            "identical to the baseline, at the same virtual times",
        )
    first = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine), len(theirs)))
    a = mine[first] if first < len(mine) else None
    b = theirs[first] if first < len(theirs) else None
    return (False, f"events differ from the baseline from event {first}: {a} instead of {b}")


def _same_partitions(snap: Snapshot, base: Snapshot) -> Fact:
    changed = [name for name in base.partitions if snap.partitions.get(name) != base.partitions[name]]
    if changed:
        name = changed[0]
        return (
            False,
            f"{', '.join(changed)}: state or counters differ from the baseline: "
            f"{snap.partitions.get(name)} instead of {base.partitions[name]}",
        )
    states = ", ".join(f"{name} {info.get('state')}" for name, info in snap.partitions.items())
    return (True, f"state, exit code, fault, counters and frames in use identical to the baseline ({states})")
