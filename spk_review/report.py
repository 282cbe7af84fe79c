"""Build the review report of one system description, and write it out.

:func:`build_report` boots the system (:mod:`spk_review.facts`), reads the TCB,
hypercall table, memory map, full-virtualization partitions
(:mod:`spk_review.fullvirt`), information flow and attestation off the
booted machine, runs the adversarial suite against the same description,
takes the fuzz statistics it is given, and judges it all with the findings
rules. :func:`write_report` writes ``report.json`` (the :class:`Report`)
and ``report.html`` (:mod:`spk_review.render`).

Errors: those of :func:`review.facts.boot`; OSError from
:func:`write_report`. An adversarial suite that raises does not stop the
review: its error is a fact of the report, and a high finding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import spgs
import spk
from spk_review.attestation import attest
from spk_review.facts import boot, channel_traffic, full_partitions, serial_ports, system_facts
from spk_review.findings import Facts, check_all
from spk_review.flow import flow_graph
from spk_review.hypercalls import hypercall_table
from spk_review.memory import memory_map
from spk_review.model import SEVERITIES, AdversarialFacts, Attack, FuzzStats, Report, TcbFacts, Verdict
from spk_review.render import render_html
from spk_review.tcb import COUNTING, dependencies, package_size


class AttackLike(Protocol):
    """What the adversarial suite returns for one attack (review.adversarial.AttackResult)."""

    @property
    def attack_class(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def attacker(self) -> str: ...
    @property
    def contained(self) -> bool: ...
    @property
    def evidence(self) -> list[str]: ...


class Suite(Protocol):
    """The adversarial suite's entry point (review.adversarial.run_suite)."""

    def __call__(self, config_path: Path, *, seed: int | None = None) -> Sequence[AttackLike]: ...


def _default_suite() -> Suite:
    from spk_review.adversarial import run_suite

    return run_suite


def run_adversarial(suite: Suite | None, config_path: Path, seed: int | None) -> AdversarialFacts:
    """Run the suite (default: review.adversarial's); an exception is reported, not raised.

    The review must still say what it found, and a suite that cannot run
    (or cannot even be imported) leaves containment unproven: a high finding.
    """
    start = time.monotonic()
    try:
        results = (suite or _default_suite())(config_path, seed=seed)
    except Exception as exc:  # the suite runs attack code: any failure is a result to report
        return AdversarialFacts(ran=False, error=f"{type(exc).__name__}: {exc}", seed=seed,
                                seconds=time.monotonic() - start, attacks=[])  # fmt: skip
    attacks = [
        Attack(attack_class=r.attack_class, title=r.title, attacker=r.attacker, contained=r.contained,
               evidence=list(r.evidence))
        for r in results
    ]  # fmt: skip
    return AdversarialFacts(ran=True, error=None, seed=seed, seconds=time.monotonic() - start, attacks=attacks)


def build_report(
    config_path: Path,
    *,
    seed: int | None = None,
    max_ticks: int | None = None,
    platform_key: Path | None = None,
    fuzz: FuzzStats | None = None,
    suite: Suite | None = None,
) -> Report:
    """Review one system description.

    ``seed`` overrides ``[system].seed`` for the boot and seeds the
    adversarial suite; ``max_ticks`` bounds the run (default: the
    description's); ``platform_key`` is the private key ring 0 signs quotes
    with (default: an ephemeral one); ``fuzz`` the statistics of a bounded
    fuzz run to include; ``suite`` replaces review.adversarial.run_suite.

    Errors: those of :func:`review.facts.boot`.
    """
    start = time.monotonic()
    booted = boot(config_path, seed=seed, max_ticks=max_ticks, platform_key=platform_key)
    machine = booted.system.machine
    system = system_facts(booted)
    packages = [spk, spgs]
    tcb = TcbFacts(
        counting=COUNTING, packages=[package_size(p, ring) for ring, p in enumerate(packages)],
        dependencies=dependencies(packages), hypercalls=hypercall_table(booted.system),
    )  # fmt: skip
    memory = memory_map(machine)
    full = full_partitions(booted)
    flow = flow_graph(booted.config.description, memory, channel_traffic(booted), serial_ports(booted))
    attestation = attest(booted.system, booted.config, booted.key_origin)
    adversarial = run_adversarial(suite, config_path, seed)
    facts = Facts(booted.config, system, memory, flow, attestation, adversarial, fuzz, full)
    findings = check_all(facts)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    return Report(
        verdict=Verdict(passed=counts["high"] == 0, counts=counts), system=system, tcb=tcb, memory=memory,
        fullvirt=full, flow=flow, findings=findings, attestation=attestation, adversarial=adversarial, fuzz=fuzz,
        seconds=round(time.monotonic() - start, 3),
    )  # fmt: skip


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.html`` (``out`` is created); returns both paths.

    Errors: OSError when the directory or a file cannot be written.
    """
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
