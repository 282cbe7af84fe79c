"""``spk migrate``: run a system on two hosts and move partitions between them, live.

``spk migrate FILE --move NAME@TICKS`` boots FILE on host0 (host1 has the
same windows, every partition declared: see :mod:`spgs.hostpair`), runs
both in virtual-time lockstep and moves NAME to the other host at the first
major-frame boundary from TICKS on (repeatable; a partition may move back).
A system partition may ask for the same with PART_CONTROL migrate. Console
lines are printed as ``host [partition] text``; the summary lists each
migration (rounds, bytes, downtime) and where each partition ended. Exit 0,
or 2 for bad usage (one ``error:`` line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from spgs.assembler import AssemblyError
from spgs.cbuild import BuildError
from spgs.config import ConfigError
from spgs.hostpair import HostPair
from spgs.images import ImageNotFound
from spgs.migration import LINK_BYTES_PER_TICK
from spgs.trust import TrustError
from spk import MachineEvent, SpkError

EXIT_USAGE = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def _schedule(moves: list[str]) -> dict[str, int]:
    out = {}
    for item in moves:
        name, sep, when = item.rpartition("@")
        try:
            ticks = int(when.replace("_", ""))
        except ValueError:
            ticks = -1
        if not sep or not name or ticks < 0:
            raise _fail(f"--move {item!r}: write PARTITION@TICKS (TICKS a virtual time, 0 or more)")
        out[name] = ticks
    return out


def migrate_command(
    config: Annotated[Path, typer.Argument(help="system description (TOML)")],
    move: Annotated[
        list[str] | None, typer.Option("--move", help="PARTITION@TICKS: move it to the other host then (repeatable)")
    ] = None,
    max_ticks: Annotated[int | None, typer.Option(help="run bound (default: the description's max_ticks)")] = None,
    link: Annotated[int, typer.Option(help="modelled link, bytes per tick of virtual time")] = LINK_BYTES_PER_TICK,
    max_rounds: Annotated[int, typer.Option(help="pre-copy rounds at most")] = 8,
    stop_frames: Annotated[int, typer.Option(help="stop and copy when this few frames changed")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout, no console lines")] = False,
) -> None:
    """Run a system on two hosts and live-migrate partitions between them (docs/migration.md)."""
    schedule = _schedule(move or [])
    if link < 1 or max_rounds < 1 or stop_frames < 0:
        raise _fail("--link and --max-rounds must be positive, --stop-frames 0 or more")
    lines: list[str] = []

    def listener(host: str, event: MachineEvent) -> None:
        if event.event == "console" and not as_json:
            typer.echo(f"{host} [{event.partition}] {event.args.get('text', '')}")
        elif event.event in ("migrated_in", "migrated_out", "management"):
            lines.append(f"{host} {event.time} {event.partition} {event.event} {json.dumps(event.args)}")

    try:
        pair = HostPair(config, listener, link_bytes_per_tick=link, max_rounds=max_rounds, stop_frames=stop_frames)
    except (ConfigError, ImageNotFound, AssemblyError, BuildError, TrustError) as exc:
        raise _fail(str(exc)) from None
    except SpkError as exc:
        raise _fail(f"{config}: {exc}") from None
    known = {p.name for p in pair.hosts[0].plans}
    unknown = sorted(set(schedule) - known)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise _fail(f"--move: no partition {names} in {config} (it has {', '.join(sorted(known))})")
    bound = max_ticks if max_ticks is not None else pair.hosts[0].config.description.system.max_ticks
    if bound <= 0:
        raise _fail("--max-ticks must be positive")
    pair.run(bound, schedule)
    placement = {name: pair.names[i] if (i := pair.where(name)) is not None else "-" for name in sorted(known)}
    moves = [{"partition": m.partition, "from": m.source, "to": m.dest, "time": m.time, "error": m.error,
              **(m.stats.as_dict() if m.stats else {})} for m in pair.moves]  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"end_time": pair.now, "moves": moves, "placement": placement}, sort_keys=True))
        return
    table = Table(title=f"migrations ({pair.now:,} ticks)")
    for column in ("partition", "from", "to", "stopped at", "rounds", "bytes", "downtime", "full copy"):
        table.add_column(column, justify="left" if column in ("partition", "from", "to") else "right")
    for m in pair.moves:
        s = m.stats
        if s is None:
            table.add_row(m.partition, m.source, m.dest, f"{m.time:,}", "-", "-", f"refused: {m.error}", "-")
        else:
            table.add_row(m.partition, m.source, m.dest, f"{m.time:,}", str(s.rounds), f"{s.bytes:,}",
                          f"{s.downtime_ticks:,}", f"{s.full_copy_ticks:,}")  # fmt: skip
    console = Console(width=120)
    console.print(table)
    console.print("ended on: " + ", ".join(f"{n} {h}" for n, h in placement.items()), markup=False)


def register(app: typer.Typer) -> None:
    """Add the command to the ``spk`` application."""
    app.command("migrate")(migrate_command)
