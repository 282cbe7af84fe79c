"""The ``spk`` command: launch, validate, bench, the trust commands, review.

Expected errors (a bad configuration, a missing image, an image that does
not assemble) are printed as one clear message and exit with code 2; no
traceback reaches the user for them. Console lines of the partitions go to
standard output prefixed by the partition's name; the summary table follows.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from spgs.assembler import AssemblyError
from spgs.config import ConfigError
from spgs.images import ImageNotFound
from spgs.signing import sign_system
from spgs.system import System, SystemReport, load_and_plan, run_bound
from spgs.trust import (
    TrustError,
    key_id,
    load_public_key,
    load_seed,
    load_signing_key,
    sign_image,
    trusted_keys,
    verify_file,
    verify_image,
    verify_quote,
)
from spgs.trust import keygen as keygen_files
from spk import MachineEvent, SpkError, TraceWriter
from spk.abi import NONCE_MAX
from spk_review.fuzzing import DEFAULT_EXAMPLES
from spk_tools import fuzz_cli

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
        elif event.event == "secure_boot" and event.args["decision"] != "verified":
            for reason in event.args["reasons"]:
                self._out.write(f"[{event.partition}] !! secure boot ({event.args['decision']}): {reason}\n")
        elif event.event == "health_action":
            args = event.args
            self._out.write(f"[{event.partition}] !! health monitor: {args['action']} after {args['event']}\n")
        elif event.event == "management":
            args = event.args
            self._out.write(f"[{event.partition}] -- {args['requester']} asked {args['op']}: {args['outcome']}\n")


def _summary(report: SystemReport, name: str) -> Table:
    title = Text(f"{name}: virtual time {report.end_time:,} instructions, {report.major_frames} major frames")
    table = Table(title=title)
    columns = ("partition", "state", "instructions", "hypercalls", "syscalls", "faults", "window use", "overruns",
               "restarts", "frames used")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("partition", "state") else "right")
    blank = ["-"] * (len(columns) - 2)
    for refused in report.refused:
        table.add_row(refused.name, Text("refused by secure boot"), *blank)
    for declared in report.declared:
        table.add_row(declared, Text("declared, not running"), *blank)
    for info in report.partitions:
        c = info.counters
        state = info.state if info.exit_code is None else f"{info.state} ({info.exit_code})"
        if info.fault is not None and info.state in ("faulted", "stopped"):
            state = f"{info.state}: {info.fault.kind}"
        usage = report.usage.get(info.name)
        table.add_row(
            info.name, Text(state), f"{c.instructions:,}", f"{c.hypercalls:,}", f"{c.syscalls:,}", f"{c.faults:,}",
            f"{usage.use:.0%}" if usage else "-", f"{usage.overruns:,}" if usage else "-", str(info.restarts),
            f"{info.frames_in_use}/{info.quota_frames}",
        )  # fmt: skip
    return table


class SecureBoot(StrEnum):
    """What secure boot does with an image that does not verify."""

    enforce = "enforce"
    warn = "warn"
    off = "off"


@dataclass
class _Booted:
    system: System
    report: SystemReport
    name: str


def _boot(
    config: Path,
    *,
    out: IO[str],
    max_ticks: int | None = None,
    seed: int | None = None,
    trace: Path | None = None,
    trace_hypercalls: bool = True,
    secure_boot: str | None = None,
    config_key: Path | None = None,
    platform_key: Path | None = None,
    today: date | None = None,
    on_frame: Callable[[SystemReport], None] | None = None,
) -> _Booted:
    """Verify, build, boot and run a system (shared by launch and attest)."""
    try:
        verdict = verify_file(config, trusted_keys([config_key])) if config_key is not None else None
        if verdict is not None and not verdict.ok:
            raise _fail(f"{config}: refused: {verdict.code}: {verdict.reason}")
        seed_bytes = load_seed(platform_key) if platform_key is not None else None
        loaded, plans = load_and_plan(config, secure_boot=secure_boot, today=today)
        if verdict is not None and verdict.digest != loaded.digest.hex():
            raise _fail(f"{config}: refused: tampered: changed between verification and loading")
    except (ConfigError, ImageNotFound, AssemblyError, TrustError) as exc:
        raise _fail(str(exc)) from None
    desc = loaded.description
    try:
        bound = run_bound(desc, seed=seed, max_ticks=max_ticks)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    try:
        stream = trace.open("w", encoding="utf-8") if trace else None
    except OSError as exc:
        raise _fail(f"cannot write the trace {trace}: {exc.strerror or exc}") from None
    try:
        writer = TraceWriter(stream) if stream else None
        listener = _ConsoleAndTrace(out, writer)
        if writer is not None:
            header = {"name": desc.system.name, "seed": desc.system.seed, "max_ticks": bound}
            writer(MachineEvent(0, "-", "system", header))
        try:
            system = System(
                loaded, plans, listener, trace_hypercalls=bool(stream) and trace_hypercalls,
                secure_boot=secure_boot, attestation_key=seed_bytes,
            )  # fmt: skip
        except SpkError as exc:
            raise _fail(f"{config}: {exc}") from None
        report = system.run(bound, on_frame)
    finally:
        if stream:
            stream.close()
    return _Booted(system, report, desc.system.name)


_SECURE_BOOT_HELP = "override \\[trust].secure_boot: enforce, warn or off"


@app.command()
def launch(
    config: Annotated[Path, typer.Argument(help="the system description (partitions.toml)")],
    max_ticks: Annotated[int | None, typer.Option(help="stop after this much virtual time")] = None,
    seed: Annotated[int | None, typer.Option(help="override \\[system].seed", min=0, max=(1 << 63) - 1)] = None,
    trace: Annotated[Path | None, typer.Option(help="write every event as JSON lines")] = None,
    trace_hypercalls: Annotated[bool, typer.Option(help="include every hypercall in the trace")] = True,
    secure_boot: Annotated[SecureBoot | None, typer.Option(help=_SECURE_BOOT_HELP)] = None,
    config_key: Annotated[Path | None, typer.Option(help="public key the description must verify with")] = None,
    platform_key: Annotated[Path | None, typer.Option(help="private key ring 0 signs quotes with")] = None,
    date_: Annotated[str | None, typer.Option("--date", help="check expiry at this date (YYYY-MM-DD)")] = None,
    monitor: Annotated[bool, typer.Option(help="show a live table of the partitions while the system runs")] = False,
) -> None:
    """Boot the system a configuration describes and run it."""
    options: dict[str, Any] = {
        "max_ticks": max_ticks, "seed": seed, "trace": trace, "trace_hypercalls": trace_hypercalls,
        "secure_boot": secure_boot.value if secure_boot else None, "config_key": config_key,
        "platform_key": platform_key, "today": _parse_date(date_),
    }  # fmt: skip
    console = Console(width=None if sys.stdout.isatty() else 150)
    if monitor:
        booted = _monitored(config, console, options)
    else:
        booted = _boot(config, out=sys.stdout, **options)
    sys.stdout.flush()
    console.print(_summary(booted.report, booted.name))
    if not booted.report.partitions:
        typer.echo("error: no partition booted", err=True)
        raise typer.Exit(1)


def _monitored(config: Path, console: Console, options: dict[str, Any]) -> _Booted:
    """Run with a live table (state, window use, overruns, faults, restarts), redrawn per major frame.

    Wall time only paces the redrawing (at most ten times a second); it
    never touches the run, which stays deterministic.
    """
    last = [0.0]
    with Live(Text("booting…"), console=console, refresh_per_second=10, transient=True) as live:

        def redraw(report: SystemReport) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.1:
                last[0] = now
                live.update(_summary(report, "live"))

        return _boot(config, out=sys.stdout, on_frame=redraw, **options)


def _parse_date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"--date {text!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def keygen(
    name: Annotated[str, typer.Argument(help="key name: writes NAME.key (private) and NAME.pub")],
    out: Annotated[Path, typer.Option(help="directory for the key files")] = Path("keys"),
) -> None:
    """Create an Ed25519 key pair (the private file is readable by its owner only)."""
    try:
        private, public = keygen_files(out, name)
    except TrustError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{private} (private, keep it out of the repository)\n{public} (key id {key_id_of(public)})")


@app.command()
def sign(
    target: Annotated[Path, typer.Argument(help="an image file, or a system description (.toml)")],
    key: Annotated[Path, typer.Option(help="private key to sign with")],
    out: Annotated[Path | None, typer.Option(help="for a system: directory for the signed system")] = None,
    name: Annotated[str | None, typer.Option(help="for an image: its name (default: file stem)")] = None,
    kind: Annotated[str, typer.Option(help="for an image: kernel or app")] = "app",
    expires: Annotated[str | None, typer.Option(help="signature expiry date (YYYY-MM-DD)")] = None,
) -> None:
    """Sign an image, or a whole system (its images, its description, golden values)."""
    until = _parse_date(expires)
    try:
        if target.suffix == ".toml":
            if out is None:
                raise _fail("signing a system needs --out DIR")
            signed = sign_system(target, key, out, expires=until)
            typer.echo(f"signed {len(signed.images)} images, {signed.config} and {signed.golden}")
        else:
            if kind not in ("kernel", "app"):
                raise _fail("--kind is kernel or app")
            manifest = sign_image(target, load_signing_key(key), name=name or target.stem, kind=kind, expires=until)
            typer.echo(f"signed {target}: {manifest.name}, {target.name}.sig")
    except (ConfigError, ImageNotFound, AssemblyError, TrustError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.filename}: {exc.strerror}") from None


@app.command()
def verify(
    target: Annotated[Path, typer.Argument(help="a signed image, or a signed file (.toml)")],
    key: Annotated[list[Path], typer.Option(help="trusted public key (repeatable)")],
    date_: Annotated[str | None, typer.Option("--date", help="check expiry at this date")] = None,
) -> None:
    """Check a signature: exit 0 when it verifies, 1 with the reason otherwise."""
    try:
        trusted = trusted_keys(key)
    except TrustError as exc:
        raise _fail(str(exc)) from None
    today = _parse_date(date_) or date.today()
    verdict = verify_file(target, trusted) if target.suffix == ".toml" else verify_image(target, trusted, today)
    if verdict.ok:
        typer.echo(f"{target}: OK ({verdict.reason})")
        return
    typer.echo(f"{target}: {verdict.code}: {verdict.reason}", err=True)
    raise typer.Exit(1)


@app.command()
def attest(
    config: Annotated[Path, typer.Argument(help="the system description")],
    nonce: Annotated[str, typer.Option(help="the verifier's nonce (text, up to 64 bytes)")],
    partition: Annotated[str, typer.Option(help="which partition to quote")],
    platform_key: Annotated[Path, typer.Option(help="private key ring 0 signs quotes with")],
    out: Annotated[Path | None, typer.Option(help="write the quote here (default: standard output)")] = None,
    max_ticks: Annotated[int | None, typer.Option(help="run this long before quoting")] = None,
    secure_boot: Annotated[SecureBoot | None, typer.Option(help=_SECURE_BOOT_HELP)] = None,
    config_key: Annotated[Path | None, typer.Option(help="public key the description must verify with")] = None,
    date_: Annotated[str | None, typer.Option("--date", help="check signature expiry at this date")] = None,
) -> None:
    """Boot and run a system, then print a quote of one partition's measurements."""
    raw_nonce = nonce.encode()
    if not raw_nonce or len(raw_nonce) > NONCE_MAX:
        raise _fail(f"--nonce must be 1..{NONCE_MAX} bytes")
    booted = _boot(
        config, out=sys.stderr, max_ticks=max_ticks, secure_boot=secure_boot.value if secure_boot else None,
        config_key=config_key, platform_key=platform_key, today=_parse_date(date_),
    )  # fmt: skip
    pid = booted.system.pid_of(partition)
    if pid is None:
        raise _fail(f"no booted partition named {partition!r}")
    quote = booted.system.machine.quote(pid, raw_nonce)
    if out is None:
        typer.echo(quote.decode())
    else:
        try:
            out.write_bytes(quote + b"\n")
        except OSError as exc:
            raise _fail(f"cannot write the quote {out}: {exc.strerror or exc}") from None
        typer.echo(f"quote of {partition} written to {out}", err=True)


@app.command("verify-quote")
def verify_quote_command(
    quote: Annotated[Path, typer.Argument(help="the quote file")],
    nonce: Annotated[str, typer.Option(help="the nonce the verifier chose")],
    partition: Annotated[str, typer.Option(help="the partition the quote must be of")],
    platform_key: Annotated[Path, typer.Option(help="the platform's public key")],
    golden: Annotated[Path | None, typer.Option(help="golden values (spk sign writes golden.json)")] = None,
) -> None:
    """Check a quote: signature, nonce, partition, log replay, golden values. Exit 0 or 1."""
    try:
        key = load_public_key(platform_key)
        golden_values = json.loads(golden.read_bytes()) if golden else None
        body = quote.read_bytes()
    except TrustError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.filename}: {exc.strerror}") from None
    except ValueError:
        raise _fail(f"{golden} is not JSON") from None
    problems = verify_quote(body, platform_key=key, nonce=nonce.encode(), partition=partition, golden=golden_values)
    if not problems:
        checked = "signature, nonce, partition, log replay" + (", golden values" if golden else "")
        typer.echo(f"{quote}: quote of {partition} verifies ({checked})")
        return
    for problem in problems:
        typer.echo(f"{quote}: {problem}", err=True)
    raise typer.Exit(1)


def _problems(exc: ConfigError) -> typer.Exit:
    """Print every problem of a description, one line each (file:line: field: message [rule]), and exit 2."""
    for problem in exc.problems:
        typer.echo(str(problem), err=True)
    return typer.Exit(EXIT_USAGE)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="the system description to check")]) -> None:
    """Check a configuration offline: exit 0 when valid, 2 with every error."""
    try:
        load_and_plan(config)
    except ConfigError as exc:
        raise _problems(exc) from None
    except (ImageNotFound, AssemblyError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{config}: valid")


@app.command()
def review(
    config: Annotated[Path, typer.Argument(help="the system description to review")],
    out: Annotated[Path, typer.Option(help="directory for report.html and report.json")],
    seed: Annotated[int | None, typer.Option(help="override \\[system].seed; seeds the adversarial suite",
                                             min=0, max=(1 << 63) - 1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print report.json instead of the summary")] = False,
    max_ticks: Annotated[int | None, typer.Option(help="run this long before attesting", min=1)] = None,
    platform_key: Annotated[Path | None, typer.Option(help="private key ring 0 signs quotes with "
                                                      "(default: an ephemeral one)")] = None,
    fuzz_examples: Annotated[int, typer.Option(help="examples per fuzz campaign in the bounded run (0: none)",
                                               min=0)] = DEFAULT_EXAMPLES,
) -> None:
    """Security review of a system: exit 0, or 1 when anything high-severity is found (see docs/review.md)."""
    # The harness (and the campaigns it runs) load here, not with every other command.
    from spk_review.fuzzing import bounded_run
    from spk_review.report import build_report, write_report
    from spk_review.summary import summary as review_summary

    try:
        fuzz = bounded_run(seed or 0, fuzz_examples) if fuzz_examples else None
        report = build_report(config, seed=seed, max_ticks=max_ticks, platform_key=platform_key, fuzz=fuzz)
    except ConfigError as exc:
        raise _problems(exc) from None
    except (ImageNotFound, AssemblyError, TrustError) as exc:
        raise _fail(str(exc)) from None
    except SpkError as exc:
        raise _fail(f"{config}: {exc}") from None
    try:
        written = write_report(report, out)
    except OSError as exc:
        raise _fail(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        Console(width=None if sys.stdout.isatty() else 150).print(review_summary(report, list(written)))
    if not report.verdict.passed:
        raise typer.Exit(1)


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    quick: Annotated[bool, typer.Option(help="small iteration counts (for tests)")] = False,
) -> None:
    """Measure trap and switch costs and the compute ratio against the bare engine."""
    from spk_tools.bench import run_benchmarks

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


fuzz_cli.register(app)


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


def key_id_of(public: Path) -> str:
    return key_id(bytes(load_public_key(public)))
