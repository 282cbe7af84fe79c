"""The ``spk`` command: launch, validate, bench.

Expected errors (a bad configuration, a missing image, an image that does
not assemble) are printed as one clear message and exit with code 2; no
traceback reaches the user for them. Console lines of the partitions go to
standard output prefixed by the partition's name; the summary table follows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from spgs.assembler import AssemblyError
from spgs.config import ConfigError
from spgs.images import ImageNotFound
from spgs.system import System, SystemReport, load_and_plan
from spk import MachineEvent, SpkError, TraceWriter

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SPK: a secure partitioning kernel emulator.")
EXIT_USAGE = 2


def _fail(message: str) -> typer.Exit:
    """Print one plain error line (never rich markup: it is user text) and exit 2."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


class _ConsoleAndTrace:
    """Prints console lines as ``[name] text``; forwards every event to the trace."""

    def __init__(self, out: IO[str], trace: TraceWriter | None) -> None:
        self._out = out
        self._trace = trace

    def __call__(self, event: MachineEvent) -> None:
        if self._trace is not None:
            self._trace(event)
        if event.event == "console":
            self._out.write(f"[{event.partition}] {event.args['text']}\n")
        elif event.event == "kernel_fault":
            a = event.args
            self._out.write(
                f"[{event.partition}] !! guest kernel fault: {a['kind']} (vector {a['vector']}) at {a['rip']:#x}\n"
            )
        elif event.event == "health_action":
            args = event.args
            self._out.write(f"[{event.partition}] !! health monitor: {args['action']} after {args['event']}\n")


def _summary(report: SystemReport, name: str) -> Table:
    title = Text(f"{name}: virtual time {report.end_time:,} instructions, {report.major_frames} major frames")
    table = Table(title=title)
    for column in ("partition", "state", "instructions", "hypercalls", "syscalls", "faults", "frames used"):
        table.add_column(column, justify="left" if column in ("partition", "state") else "right")
    for info in report.partitions:
        c = info.counters
        state = info.state if info.exit_code is None else f"{info.state} ({info.exit_code})"
        if info.fault is not None:
            state = f"{info.state}: {info.fault.kind}"
        table.add_row(
            info.name, state, f"{c.instructions:,}", f"{c.hypercalls:,}", f"{c.syscalls:,}",
            f"{c.faults:,}", f"{info.frames_in_use}/{info.quota_frames}",
        )  # fmt: skip
    return table


@app.command()
def launch(
    config: Annotated[Path, typer.Argument(help="the system description (partitions.toml)")],
    max_ticks: Annotated[int | None, typer.Option(help="stop after this much virtual time")] = None,
    seed: Annotated[int | None, typer.Option(help="override [system].seed", min=0, max=(1 << 63) - 1)] = None,
    trace: Annotated[Path | None, typer.Option(help="write every event as JSON lines")] = None,
    trace_hypercalls: Annotated[bool, typer.Option(help="include every hypercall in the trace")] = True,
) -> None:
    """Boot the system a configuration describes and run it."""
    try:
        loaded, plans = load_and_plan(config)
    except (ConfigError, ImageNotFound, AssemblyError) as exc:
        raise _fail(str(exc)) from None
    desc = loaded.description
    if seed is not None:
        desc.system.seed = seed
    bound = max_ticks if max_ticks is not None else desc.system.max_ticks
    if bound <= 0:
        raise _fail("--max-ticks must be positive")
    try:
        stream = trace.open("w", encoding="utf-8") if trace else None
    except OSError as exc:
        raise _fail(f"cannot write the trace {trace}: {exc.strerror or exc}") from None
    try:
        writer = TraceWriter(stream) if stream else None
        listener = _ConsoleAndTrace(sys.stdout, writer)
        if writer is not None:
            header = {"name": desc.system.name, "seed": desc.system.seed, "max_ticks": bound}
            writer(MachineEvent(0, "-", "system", header))
        try:
            system = System(loaded, plans, listener, trace_hypercalls=bool(stream) and trace_hypercalls)
        except SpkError as exc:
            raise _fail(f"{config}: {exc}") from None
        report = system.run(bound)
    finally:
        if stream:
            stream.close()
    sys.stdout.flush()
    Console(width=None if sys.stdout.isatty() else 120).print(_summary(report, desc.system.name))


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="the system description to check")]) -> None:
    """Check a configuration offline: exit 0 when valid, 2 with every error."""
    try:
        load_and_plan(config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (ImageNotFound, AssemblyError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{config}: valid")


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    quick: Annotated[bool, typer.Option(help="small iteration counts (for tests)")] = False,
) -> None:
    """Measure trap and switch costs and the compute ratio against the bare engine."""
    from spgs.bench import run_benchmarks

    results = run_benchmarks(quick=quick)
    if as_json:
        typer.echo(json.dumps(results, sort_keys=True))
        return
    table = Table(title="spk bench")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(results.items()):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def main() -> None:
    """Console-script entry point.

    A closed standard output (``spk launch ... | head``) ends the run
    quietly, as for any Unix filter.
    """
    try:
        app()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
