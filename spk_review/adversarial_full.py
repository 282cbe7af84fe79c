"""The full-partition attacks of the adversarial suite: an unmodified PC kernel against its virtual hardware.

A full partition's kernel believes it runs at ring 0 of a PC; a hostile one
uses that belief. Each class runs the bundled PC kernel ``pc_hostile``
(``partitions/pc_hostile/``, whose first COM1 byte picks its attack: the
class's mode as its ``stdin``) as a full partition placed beside the
configured system exactly as the paravirtual attackers are
(:mod:`spk_review.adversarial_lab`), with the configuration's first full
partition as the template: its quota, window and ``mmu``. The suite runs
these classes when the description has a full partition.

Each is judged on (besides the facts every attack shares: ring 0's
invariants after every major frame, which for a full partition include that
its engine maps its memory and nothing else, and every configured partition
identical to the baseline) the attacker reaching its attack (the line it
prints right before it), never printing the line that would mean it got
through, and ending as its virtual hardware says: the fault ring 0 reports
and the health action ring 1 applied, or the guest's own trap handler.

Errors: none of its own; the lab's and the builder's propagate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spk_review.adversarial_lab import AttackerSpec, Lab, Run

Fact = tuple[bool, str]
#: The hostile PC kernel (bundled) and its source.
HOSTILE, HOSTILE_PATH = "pc_hostile", "partitions/pc_hostile/kernel.c"
#: Major frames a full attacker runs: it boots and attacks within the first few windows.
FULL_FRAMES = 4


@dataclass(frozen=True)
class Outcome:
    """How an attack must end: a fault ring 0 reports (then halted), or its own trap handler's line and exit 0."""

    fault: str | None = None
    handled: str | None = None

    def __str__(self) -> str:
        return f"the fault {self.fault}" if self.fault else f"its own trap handler ({self.handled!r}), exit 0"


@dataclass(frozen=True)
class FullAttack:
    """One full-partition attack class: a mode of the hostile kernel and how it must end under each MMU."""

    attack_class: str
    title: str
    mode: int
    attempt: str  #: the line it prints right before the attack
    breach: str  #: the start of a line it prints only if the attack got through
    outcome: Outcome  #: how it must end
    #: a different ending under one MMU (shadow tables refuse what the nested engine map cannot reach)
    per_mmu: dict[str, Outcome] = field(default_factory=dict)

    @property
    def attacker(self) -> str:
        return f"{HOSTILE_PATH} (stdin {self.mode})"

    @property
    def spec(self) -> AttackerSpec:
        return AttackerSpec(HOSTILE, full=True, stdin=str(self.mode), frames=FULL_FRAMES)

    def judge(self, lab: Lab, run: Run) -> list[Fact]:
        lines = [str(e.args["text"]) for e in run.attacker_events("console")]
        faults = [str(e.args.get("kind")) for e in run.attacker_events("kernel_fault")]
        actions = [(str(e.args["action"]), str(e.args["event"])) for e in run.attacker_events("health_action")]
        info = run.machine.info(run.pid)
        want = self.per_mmu.get(info.mmu, self.outcome)
        kind = f"the attacker is a full partition, mmu {info.mmu}: an unmodified PC kernel at real CPL 1 on an engine"
        last = " | ".join(lines[-3:])
        facts: list[Fact] = [
            (info.virtualization == "full", f"{kind} of its own"),
            (self.attempt in lines, f"it reached its attack: it printed {self.attempt!r}"),
            (not any(line.startswith(self.breach) for line in lines),
             f"it never printed {self.breach!r} (its line if the attack got through); its last lines: {last}"),
        ]
        if want.fault is not None:
            facts.append((faults == [want.fault], f"ring 0 ended it with {want}: kernel faults {faults}, "
                                                  f"state {info.state}"))  # fmt: skip
            facts.append((actions == [("halt", want.fault)],
                          f"ring 1 applied its health table (halt on {want.fault}): actions {actions}"))  # fmt: skip
        else:
            facts.append((not faults and (info.state, info.exit_code) == ("exited", 0) and want.handled in lines,
                          f"it ended by {want}: state {info.state}, exit code {info.exit_code}, kernel faults "
                          f"{faults}"))  # fmt: skip
        traps = run.machine.full_state(run.pid).get("traps")
        done = ", ".join(f"{op} {n}" for op, n in sorted(traps.items())) if isinstance(traps, dict) else "?"
        facts.append((True, f"what ring 0 trapped and emulated for it: {done}"))
        return facts


FULL_CLASSES: list[FullAttack] = [
    FullAttack("full_call_gate_to_cpl0", "Call gate to real CPL 0 in a full guest's own GDT", 1,
               "calling through a gate", "reached ring 0", Outcome("cpl0_tripwire")),
    FullAttack("full_memory_beyond_quota", "Full guest's page tables naming memory beyond its quota", 2,
               "reading beyond my memory", "read 0x", Outcome("machine_check"),
               {"shadow": Outcome(handled="trap 14 error 0x9 cr2 0x800000")}),
    FullAttack("full_cr3_beyond_quota", "Full guest's CR3 naming memory beyond its quota", 3,
               "cr3 beyond my memory", "cr3 accepted", Outcome(handled="trap 13 error 0x0 cr2 0x0")),
    FullAttack("full_triple_fault", "Full guest faulting with no IDT (a triple fault)", 4,
               "no IDT, now a page fault", "survived", Outcome("triple_fault")),
]  # fmt: skip
