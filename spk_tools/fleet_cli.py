"""``spk fleet FILE``: a self-managing fleet of SPK hosts, on Ray.

Runs the fleet a ``fleet.toml`` describes (docs/fleet.md): each host an SPK
machine in a Ray actor (``--ray ADDRESS`` joins a cluster; by default a local
Ray instance is started for the run; ``--in-process`` runs the same host code
in this process, without Ray). A live table of the hosts is redrawn after
every round when standard output is a terminal; a summary follows: the
hosts, the metrics, every migration and every loss declared. ``--json``
prints the metrics as one JSON object instead; ``--plot PATH`` draws the
load of every host over time (PNG or SVG). With a ``[scaling]`` table the
same rules also run on fleets of each size it names, in this process, for
the messages per host per round.

Exit status: 0 when the fleet ended balanced (imbalance within the goal)
and no partition was lost outright (restarted from a checkpoint is not
lost: its loss is declared); 1 otherwise; 2 for a bad file or option.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from spgs.assembler import AssemblyError
from spgs.cbuild import BuildError
from spgs.config import ConfigError
from spgs.fleet.config import LoadedFleet, load_fleet
from spgs.fleet.report import FleetReport, FleetStatus
from spgs.fleet.runner import LocalTransport, OnRound, Transport, run_fleet, scaling_description
from spgs.images import ImageNotFound
from spk import SpkError
from spk_tools.fleet_serve import DEFAULT_PACE, serve_fleet
from spk_tools.serve import DEFAULT_PORT, LOOPBACK, TOKENS_HELP, listen_address
from spk_tools.wording import plural

EXIT_UNBALANCED = 1
EXIT_USAGE = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def status_table(status: dict[str, Any]) -> Table:
    """The hosts as they stand (the live table)."""
    title = f"fleet {status['name']}: round {status['round']}, imbalance {status['imbalance']}"
    table = Table(title=title)
    for column in ("host", "state", "load", "capacity", "utilisation", "partitions"):
        table.add_column(column, justify="left" if column in ("host", "state", "partitions") else "right")
    recent = [e for e in status["events"] if e["event"] not in ("migration_started", "arrived")][-3:]
    if recent:
        table.caption = "\n".join(f"round {e['round']}: {e['host']} {e['event']} {e.get('partition', '')}".rstrip()
                                  for e in recent)  # fmt: skip
    for h in status["hosts"]:
        bar = "█" * round(10 * min(h["utilisation"], 2.0))
        capacity = f"{h['capacity']:g}" if h["capacity"] is not None else "-"
        table.add_row(h["name"], h["state"], f"{h['load']:g}", capacity, f"{h['utilisation']:.2f} {bar}",
                      " ".join(h["partitions"]))  # fmt: skip
    return table


def migrations_table(report: FleetReport) -> Table:
    """Every live migration of the run: when, what, where, and what it cost."""
    table = Table(title="live migrations")
    for column in ("done in round", "partition", "from", "to", "pre-copy rounds", "bytes", "downtime (ticks)"):
        table.add_column(column, justify="left" if column in ("partition", "from", "to") else "right")
    for e in report.of_kind("migrated"):
        table.add_row(str(e["round"]), e["partition"], e["host"], e["target"], str(e["rounds"]), f"{e['bytes']:,}",
                      f"{e['downtime_ticks']:,}")  # fmt: skip
    return table


def _summary(report: FleetReport, status: FleetStatus, out: Console) -> None:
    """The migrations, the hosts at the end, the metrics, the failures and what they cost."""
    console = _Lines(out)
    if report.of_kind("migrated"):
        console.print(migrations_table(report))
    console.print(status_table(status.status()))
    m = report.metrics
    converge = m["fleet_rounds_to_converge"]
    console.print(
        f"fleet {report.name}: {plural(report.rounds, 'round')} of {report.round_ticks:,} ticks, "
        f"{plural(len(report.hosts), 'host')}, {plural(m['fleet_migrations'], 'live migration')} "
        f"({m['fleet_migration_bytes']:,} bytes, longest downtime {m['fleet_migration_downtime_ticks_max']:,} ticks)"
    )
    console.print(
        f"imbalance (max/mean utilisation): {m['fleet_imbalance_start']} at the start, "
        f"{m['fleet_imbalance_after']} at the end (goal {report.goal}); "
        + (f"balanced after {plural(converge, 'round')}" if converge is not None else "never balanced")
        + f"; {m['fleet_msgs_per_host_round']} control messages per host per round"
    )
    for e in report.of_kind("failed"):
        console.print(f"round {e['round']}: host {e['host']} failed")
    for e in report.of_kind("restarted"):
        console.print(
            f"  {e['partition']}: restarted on {e['host']} from its checkpoint of round {e['checkpoint_round']}; "
            f"lost {e['lost_ticks']:,} ticks of virtual time ({e['lost_instructions']:,} of them its own execution)"
        )
    for e in report.of_kind("lost"):
        console.print(f"  {e['partition']}: LOST ({e['reason']})")
    scaling = {k: v for k, v in m.items() if k.startswith("fleet_msgs_per_host_round_")}
    if scaling:
        sizes = ", ".join(f"{k.rsplit('_', 1)[1]} hosts: {v}" for k, v in scaling.items())
        console.print(f"messages per host per round by fleet size (in-process runs): {sizes}")


class _Lines:
    """Prints text lines whole (never wrapped: a log line stays one line) and tables as they are."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def print(self, item: object) -> None:
        self._console.print(item, soft_wrap=isinstance(item, str))


class _LiveView:
    """Redraws the host table after each round (at most ten times a second of wall time; the run never waits)."""

    def __init__(self, live: Live | None) -> None:
        self._live = live
        self._last = 0.0

    def __call__(self, status: FleetStatus) -> None:
        now = time.monotonic()
        if self._live is not None and now - self._last >= 0.1:
            self._last = now
            self._live.update(status_table(status.status()), refresh=True)


def _transport(ray: str, in_process: bool) -> Transport:
    if in_process:
        return LocalTransport()
    from spgs.fleet.ray_transport import RayTransport

    return RayTransport(ray)


def fleet(
    config: Annotated[Path, typer.Argument(help="the fleet description (fleet.toml)")],
    ray: Annotated[str, typer.Option(help="Ray cluster address ('local': start one for the run)")] = "local",
    in_process: Annotated[
        bool, typer.Option("--in-process", help="run the hosts in this process, without Ray")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option(help="draw the load of every host over time (.png or .svg)")] = None,
    seed: Annotated[int | None, typer.Option(help="override [fleet].seed", min=0, max=(1 << 63) - 1)] = None,
    scaling: Annotated[bool, typer.Option(help="also run the [scaling] experiment when the file has one")] = True,
    serve: Annotated[bool, typer.Option("--serve", help="serve the fleet's status and the web console while it "
                                        "runs, paced (docs/fleet.md, Watching a fleet)")] = False,
    host: Annotated[str | None, typer.Option(help=f"with --serve: address to listen on (default {LOOPBACK})")] = None,
    port: Annotated[int, typer.Option(help="with --serve: port (0: any free one)", min=0, max=65535)] = DEFAULT_PORT,
    tokens: Annotated[Path | None, typer.Option(help=f"with --serve: {TOKENS_HELP}")] = None,
    pace: Annotated[float, typer.Option(help="with --serve: rounds per second of wall time (0: unpaced)",
                                        min=0)] = DEFAULT_PACE,
) -> None:
    """Run a self-managing fleet of SPK hosts; exit 0 when it ends balanced with nothing lost (docs/fleet.md)."""
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise _fail(f"--plot {plot}: the plot is .png or .svg")
    if serve and (as_json or plot is not None):
        raise _fail("--serve shows the fleet in the web console: it takes no --json or --plot")
    if not serve and (host is not None or tokens is not None):
        raise _fail("--host and --tokens go with --serve")
    try:
        loaded = load_fleet(config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if seed is not None:
        loaded.description.fleet.seed = seed
    if serve:

        def transport_or_fail() -> Transport:
            try:
                return _transport(ray, in_process)
            except RuntimeError as exc:
                raise _fail(str(exc)) from None

        serve_fleet(loaded, transport_or_fail, listen_address(host), port, tokens, pace)
        return
    console = Console(markup=False, highlight=False)
    live_wanted = not as_json and sys.stdout.isatty()
    try:
        transport = _transport(ray, in_process)
        if live_wanted:
            with Live(Text("starting the hosts…"), console=console, auto_refresh=False, transient=True) as live:
                report, status = _run(loaded, transport, _LiveView(live))
        else:
            report, status = _run(loaded, transport, None)
        if scaling and loaded.description.scaling is not None:
            for hosts in loaded.description.scaling.hosts:
                sized = scaling_description(loaded.description, hosts)
                small = run_fleet(loaded, LocalTransport(), description=sized)
                report.metrics[f"fleet_msgs_per_host_round_{hosts}"] = small.metrics["fleet_msgs_per_host_round"]
                report.metrics[f"fleet_scaling_imbalance_after_{hosts}"] = small.metrics["fleet_imbalance_after"]
    except (ImageNotFound, AssemblyError, BuildError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    except SpkError as exc:
        raise _fail(f"{config}: {exc}") from None
    if plot is not None:
        from spk_tools.fleet_plot import plot_report

        band = loaded.description.fleet.band
        try:
            plot_report(report, plot, band=(band.low, band.high))
        except (OSError, RuntimeError) as exc:
            raise _fail(f"cannot draw the plot {plot}: {exc}") from None
        report.metrics["fleet_plot"] = str(plot)
    if as_json:
        out = dict(report.metrics)
        out["fleet_migration_list"] = [{k: v for k, v in e.items() if k != "phase"} for e in report.of_kind("migrated")]
        out["fleet_losses"] = report.of_kind("restarted") + report.of_kind("lost")
        typer.echo(json.dumps(out, sort_keys=True))
    else:
        _summary(report, status, console)
        if plot is not None:
            console.print(f"plot of the load per host: {plot}")
    after = report.metrics["fleet_imbalance_after"]
    if report.metrics["fleet_lost_partitions"] or after is None or after > report.goal:
        raise typer.Exit(EXIT_UNBALANCED)


def _run(loaded: LoadedFleet, transport: Transport, on_round: OnRound | None) -> tuple[FleetReport, FleetStatus]:
    desc = loaded.description
    status = FleetStatus(desc.fleet.name, [h.name for h in desc.host])
    return run_fleet(loaded, transport, on_round=on_round, status=status), status


def register(app: typer.Typer) -> None:
    """Add ``spk fleet`` to the ``spk`` application."""
    app.command("fleet")(fleet)
