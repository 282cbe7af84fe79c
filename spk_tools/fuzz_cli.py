"""``spk fuzz`` and ``spk replay``: isolation campaigns from the command line.

``spk fuzz`` runs campaigns (all by default) for a number of examples
(exactly that many per campaign) or seconds (no example starts after them),
shows a live table per campaign, and ends with a summary: examples,
executions, execs/s, invariant checks, findings, each finding's replay
file. Exit 0 when nothing was found, 1 when something was, 2 for bad usage.

``spk replay FILE`` performs a replay file's actions again, step by step;
exit 1 when the recorded finding shows again, 0 when the run is clean (a
fixed bug: the file can go to ``tests/regressions/``), 2 for a bad file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from spk_tools.wording import plural

if TYPE_CHECKING:  # the campaigns load hypothesis: only the fuzz commands import them, when they run
    from fuzz.runner import CampaignStats, Summary

EXIT_FOUND = 1
EXIT_USAGE = 2
DEFAULT_OUT = Path("fuzz-findings")


def _writable(folder: Path) -> bool:
    """Could replay files be written into ``folder`` (created on the first finding)?"""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    return existing.is_dir() and os.access(existing, os.W_OK)


def _table(rows: dict[str, CampaignStats], title: str) -> Table:
    table = Table(title=title)
    table.add_column("campaign", no_wrap=True, min_width=max(map(len, rows), default=8))
    for column in ("examples", "executions", "execs/s", "invariant checks", "findings"):
        table.add_column(column, justify="right")
    for name, stats in rows.items():
        found = ", ".join(f.invariant for f in stats.findings) or "0"
        table.add_row(
            name, f"{stats.examples:,}", f"{stats.executions:,}", f"{stats.execs_per_s:,.0f}",
            f"{stats.invariant_checks:,}", found,
        )  # fmt: skip
    return table


def _report(summary: Summary, console: Console) -> None:
    data = summary.to_json()
    console.print(
        f"{plural(data['executions'], 'execution')} in {data['seconds']:.1f} s ({data['execs_per_s']:,.0f}/s), "
        f"{plural(data['invariant_checks'], 'invariant check')}, {plural(data['examples'], 'example')}, "
        f"{plural(len(summary.findings), 'finding')}"
    )
    for finding in summary.findings:
        where = finding.replay_file or "(not written)"
        again = "reproduced" if finding.reproduced else "NOT reproduced by its replay"
        console.print(f"  [{finding.campaign}] {finding.invariant}: {finding.message}", markup=False)
        console.print(f"      {plural(finding.steps, 'step')}, {again}: {where}", markup=False)


def fuzz(
    campaign: Annotated[
        list[str] | None, typer.Option("--campaign", "-c", help="Campaign (repeatable); all by default.")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Time budget for the whole run: no example starts after it.")
    ] = None,
    examples: Annotated[
        int | None, typer.Option(help="Examples per campaign, exactly (split among workers; instead of --seconds).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and budget in examples repeat a run exactly.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes, each on its own seed range.")] = 1,
    ray: Annotated[
        str | None, typer.Option("--ray", help="Run the workers on this Ray cluster ('local': start one).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where replay files of findings go.")] = DEFAULT_OUT,
    mutate: Annotated[
        bool, typer.Option(help="With --seconds, follow each hypothesis batch with a mutation round.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run isolation campaigns; every finding is shrunk and written as a replay file."""
    from fuzz.campaigns.base import REGISTRY
    from fuzz.runner import CampaignStats, run

    if seconds is None and examples is None:
        seconds = 60.0
    names = campaign or sorted(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        typer.echo(f"error: unknown campaign {unknown[0]!r} (known: {', '.join(sorted(REGISTRY))})", err=True)
        raise typer.Exit(EXIT_USAGE)
    if (seconds is not None and examples is not None) or (seconds is not None and seconds <= 0):
        typer.echo("error: give either --seconds (> 0) or --examples", err=True)
        raise typer.Exit(EXIT_USAGE)
    if (examples is not None and examples < 1) or workers < 1:
        typer.echo("error: --examples and --workers must be at least 1", err=True)
        raise typer.Exit(EXIT_USAGE)
    if not _writable(out):  # checked now: a finding must not be lost after the run
        typer.echo(f"error: cannot write replay files to {out}", err=True)
        raise typer.Exit(EXIT_USAGE)
    console = Console(stderr=as_json)
    rows: dict[str, CampaignStats] = {name: CampaignStats(name) for name in names}
    where = f"on Ray ({ray})" if ray else f"in {workers} worker processes" if workers > 1 else "in this process"
    budget = f"{seconds:g} s" if seconds else f"{plural(examples or 0, 'example')} per campaign"
    title = f"spk fuzz: seed {seed}, {budget}, {where}"
    try:
        with Live(_table(rows, title), console=console, refresh_per_second=4, transient=as_json) as live:

            def progress(stats: CampaignStats) -> None:
                rows[stats.name] = stats
                live.update(_table(rows, title))

            summary = run(
                names, seed=seed, examples=examples, seconds=seconds, workers=workers, ray_address=ray,
                out_dir=out, on_progress=progress, mutate=mutate,
            )  # fmt: skip
            rows.update(summary.campaigns)
            live.update(_table(rows, title))
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=1))
    else:
        console.print()
        _report(summary, console)
    if summary.findings:
        raise typer.Exit(EXIT_FOUND)


def replay_command(file: Annotated[Path, typer.Argument(help="A replay file written by spk fuzz.")]) -> None:
    """Re-run a finding's actions deterministically; exit 1 if it shows again, 0 if clean."""
    from fuzz.replay import ReplayError, load, replay

    try:
        recorded = load(file)
        result = replay(recorded)
    except ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    console = Console()
    table = Table(title=f"{file.name}: campaign {recorded.campaign}, world {recorded.world}")
    for column in ("step", "action", "result"):
        table.add_column(column)
    for index, (action, value) in enumerate(result.steps, 1):
        table.add_row(str(index), json.dumps(list(action)), repr(value))
    console.print(table)
    if result.violation is None:
        console.print(f"clean: {plural(len(result.steps), 'step')}, every invariant held", markup=False)
        return
    if result.violation.invariant == "campaign_error" != recorded.invariant:
        typer.echo(f"error: {file}: action {len(result.steps)} cannot run: {result.violation.message}", err=True)
        raise typer.Exit(EXIT_USAGE)
    same = result.violation.invariant == recorded.invariant
    console.print(f"finding {'reproduced' if same else 'changed'}: {result.violation}", markup=False)
    raise typer.Exit(EXIT_FOUND)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``spk`` application."""
    app.command("fuzz")(fuzz)
    app.command("replay")(replay_command)
