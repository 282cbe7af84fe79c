"""The short summary ``spk review`` prints: the verdict, the headline facts, what to fix first.

Plain :class:`rich.text.Text` everywhere, never markup: names and messages
come from the description and must print as they are.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from spk_review.model import SEVERITIES, Report

_STYLE = {"high": "bold red", "medium": "dark_orange", "low": "yellow", "info": "dim"}


def summary(report: Report, written: list[Path]) -> Group:
    """Verdict line, one line per area, and a table of every finding above ``info``."""
    v, s = report.verdict, report.system
    counts = ", ".join(f"{v.counts[sev]} {sev}" for sev in SEVERITIES)
    head = Text.assemble(
        (f"spk review {s.name}: ", "bold"),
        ("PASS" if v.passed else "FAIL", "bold green" if v.passed else "bold red"),
        f" ({counts})",
    )
    ring0 = next(p for p in report.tcb.packages if p.ring == 0)
    flow = report.flow
    paths = f"{len(flow.violations)} guest → system path(s)" if flow.violations else "no guest → system path"
    quoted = [p for p in report.attestation.partitions if p.quoted]
    adversarial = report.adversarial
    attacks = (
        f"{sum(1 for a in adversarial.attacks if a.contained)} of {len(adversarial.attacks)} attacks contained"
        if adversarial.ran else f"did not run: {adversarial.error}"
    )  # fmt: skip
    fuzz = (
        f"{sum(c.findings for c in report.fuzz.campaigns)} findings in {len(report.fuzz.campaigns)} campaigns, "
        f"{report.fuzz.examples:,} examples, {report.fuzz.executions:,} executions ("
        + ", ".join(f"{c.name}: {c.executions:,}" for c in report.fuzz.campaigns)
        + ")"
        if report.fuzz else "no statistics given"
    )  # fmt: skip
    lines = [
        f"  TCB: ring 0 is {ring0.code:,} lines of code in {len(ring0.modules)} modules",
        f"  run: {s.ran_until:,} instructions, {len(s.partitions)} partition(s)",
        f"  information flow: {len(flow.edges)} flows, {paths}",
        f"  attestation: {sum(1 for p in quoted if p.verified)} of {len(quoted)} quotes verify "
        f"({report.attestation.key_origin} platform key)",
        *(f"  full virtualization: {f.name} ({f.mmu}): {sum(1 for t in f.trapped if t.count)} of "
          f"{len(f.trapped)} trapped operations done, {sum(t.count for t in f.trapped):,} traps; "
          f"{len(f.devices)} devices, {len(f.serial_cables)} serial cable(s)" for f in report.fullvirt),
        f"  adversarial suite: {attacks}",
        f"  fuzz: {fuzz}",
    ]
    parts: list[Text | Table] = [head, *(Text(line) for line in lines)]
    shown = [f for f in report.findings if f.severity != "info"]
    if shown:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("severity", "rule", "subject", "finding"):
            table.add_column(column)
        for f in shown:
            table.add_row(Text(f.severity, _STYLE[f.severity]), Text(f.rule), Text(f.subject), Text(f.message))
        parts.append(table)
    parts.append(Text("report: " + ", ".join(str(p) for p in written)))
    return Group(*parts)
