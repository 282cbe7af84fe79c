"""The ``spk`` command: launch, validate, bench, the trust commands, review.

Expected errors (a bad configuration, a missing image, an image that does
not assemble, a bad option) are printed as one plain ``error: ...`` line and
exit with code 2; no traceback reaches the user for them. Console lines of
the partitions go to standard output prefixed by the partition's name; the
summary table follows. docs/cli.md is the reference, exit statuses included.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from spgs.assembler import AssemblyError
from spgs.cbuild import BuildError
from spgs.config import MAX_SECURITY_VERSION, ConfigError
from spgs.images import ImageNotFound
from spgs.signing import sign_system
from spgs.system import System, SystemReport, load_and_plan, run_bound
from spgs.trust import (
    Slot,
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
from spk import EventSink, MachineEvent, SpkError, TraceWriter, abi
from spk.abi import NONCE_MAX
from spk_review.fuzzing import DEFAULT_EXAMPLES
from spk_tools import ctl, fleet_cli, fuzz_cli, gdbstub, migrate_cli, serve
from spk_tools.launch_status import EXIT_INTERRUPTED, EXIT_NOT_AS_INTENDED, EXIT_USAGE, HaltCauses, problems
from spk_tools.trace_file import TRACE_EVENTS, TraceOptionError, event_filter, open_trace
from spk_tools.wording import plural


class _Commands(typer.core.TyperGroup):
    """The command group, with one error style for every bad option or argument.

    Click reports a usage error as a framed box or a usage block; here it is
    the same plain ``error: ...`` line, exit 2, as every other expected error.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare ``spk``: the help, as a usage error
                typer.echo(exc.format_message(), err=True)
            else:
                hint = ""
                context = getattr(exc, "ctx", None)
                if context is not None:
                    hint = f" (see '{context.command_path} --help')"
                typer.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
            code = EXIT_USAGE
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="SPK: a secure partitioning kernel emulator.",
)  # fmt: skip


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"spk {package_version('spk')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("spk (not installed)")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """SPK: a secure partitioning kernel emulator (docs/cli.md)."""


def _fail(message: str) -> typer.Exit:
    """Print one plain error line (never rich markup: it is user text) and exit 2."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


class _Lines(Protocol):
    def write(self, text: str, /) -> Any: ...


class _ConsoleAndTrace:
    """Prints console lines as ``[name] text``; forwards the kept kinds of event to the trace.

    ``watch`` sees every event (the launch's exit status is decided from it).
    """

    def __init__(
        self, out: _Lines, trace: TraceWriter | None, *, kept: frozenset[str] | None = None,
        watch: EventSink | None = None,
    ) -> None:  # fmt: skip
        self._out = out
        self._trace = trace
        self._kept = kept
        self._watch = watch

    def __call__(self, event: MachineEvent) -> None:
        if self._watch is not None:
            self._watch(event)
        if self._trace is not None and (self._kept is None or event.event in self._kept):
            self._trace(event)
        if event.event == "console":
            self._out.write(f"[{event.partition}] {event.args['text']}\n")
        elif event.event == "kernel_fault":
            a = event.args
            where = f" {a['where']}" if "where" in a else ""
            self._out.write(
                f"[{event.partition}] !! guest kernel fault: {a['kind']} (vector {a['vector']}) at {a['rip']:#x}"
                f"{where}\n"
            )
        elif event.event == "app_fault" and "where" in event.args:
            # Ring 1 knows the app's image: name the code its kernel is about to hear about.
            a = event.args
            self._out.write(
                f"[{event.partition}] !! app {a['module']} trapped: vector {a['vector']} at {a['rip']:#x}"
                f" {a['where']}\n"
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
    title = Text(
        f"{name}: virtual time {plural(report.end_time, 'tick')}, {plural(report.major_frames, 'major frame')}"
    )
    table = Table(title=title)
    # A system with a full partition says how each partition is virtualized (and with which MMU).
    kinds = report.virtualization if any(v != "para" for v in report.virtualization.values()) else {}
    columns = ("partition", *(("virtualization",) if kinds else ()), "state", "ticks", "hypercalls", "syscalls",
               "faults", "window use", "overruns", "restarts", "frames used")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("partition", "virtualization", "state") else "right")
    blank = ["-"] * (len(columns) - 2 - bool(kinds))

    def lead(name: str) -> list[str]:
        return [name, kinds.get(name, "-")] if kinds else [name]

    for refused in report.refused:
        table.add_row(*lead(refused.name), Text("refused by secure boot"), *blank)
    for declared in report.declared:
        table.add_row(*lead(declared), Text("declared, not running"), *blank)
    for info in report.partitions:
        c = info.counters
        state = info.state if info.exit_code is None else f"{info.state} ({info.exit_code})"
        if info.fault is not None and info.state in ("faulted", "stopped"):
            state = f"{info.state}: {info.fault.kind}"
        usage = report.usage.get(info.name)
        # A full partition's kernel makes no hypercall and takes its apps' system calls itself: not counted.
        calls = ["-", "-"] if info.virtualization == "full" else [f"{c.hypercalls:,}", f"{c.syscalls:,}"]
        table.add_row(
            *lead(info.name), Text(state), f"{c.instructions:,}", *calls, f"{c.faults:,}",
            f"{usage.use:.0%}" if usage else "-", f"{usage.overruns:,}" if usage else "-",
            str(info.restarts), f"{info.frames_in_use}/{info.quota_frames}",
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
    out: _Lines,
    max_ticks: int | None = None,
    seed: int | None = None,
    trace: Path | None = None,
    trace_hypercalls: bool = True,
    trace_events: frozenset[str] | None = None,
    secure_boot: str | None = None,
    config_key: Path | None = None,
    platform_key: Path | None = None,
    today: date | None = None,
    on_frame: Callable[[str, SystemReport], None] | None = None,
    watch: EventSink | None = None,
    gdb: str | None = None,
) -> _Booted:
    """Verify, build, boot and run a system (shared by launch and attest).

    ``trace_events`` keeps only those kinds of event in the trace (all when
    None); ``on_frame`` gets the system's name and its report after each
    major frame, and may end the run by raising (the trace is closed first).
    Errors: typer.Exit(2) for every expected error, its message printed.
    """
    try:
        verdict = verify_file(config, trusted_keys([config_key])) if config_key is not None else None
        if verdict is not None and not verdict.ok:
            raise _fail(f"{config}: refused: {verdict.code}: {verdict.reason}")
        seed_bytes = load_seed(platform_key) if platform_key is not None else None
        loaded, plans = load_and_plan(config, secure_boot=secure_boot, today=today)
        if verdict is not None and verdict.digest != loaded.digest.hex():
            raise _fail(f"{config}: refused: tampered: changed between verification and loading")
    except (ConfigError, ImageNotFound, AssemblyError, BuildError, TrustError) as exc:
        raise _fail(str(exc)) from None
    desc = loaded.description
    try:
        bound = run_bound(desc, seed=seed, max_ticks=max_ticks)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    try:
        stream = open_trace(trace) if trace else None
    except OSError as exc:
        raise _fail(f"cannot write the trace {trace}: {exc.strerror or exc}") from None
    kept = trace_events if trace_events is not None and set(trace_events) != set(TRACE_EVENTS) else None
    try:
        writer = TraceWriter(stream) if stream else None
        listener = _ConsoleAndTrace(out, writer, kept=kept, watch=watch)
        if writer is not None:
            header: dict[str, Any] = {"name": desc.system.name, "seed": desc.system.seed, "max_ticks": bound}
            if desc.system.time != "exact":
                header["time"] = desc.system.time  # a trace of a fast run says it cannot be replayed
            if kept is not None:
                header["events"] = [name for name in TRACE_EVENTS if name in kept]
            writer(MachineEvent(0, "-", "system", header))
        hypercalls = bool(stream) and trace_hypercalls and (kept is None or "hypercall" in kept)
        try:
            system = System(
                loaded, plans, listener, trace_hypercalls=hypercalls, secure_boot=secure_boot,
                attestation_key=seed_bytes,
            )  # fmt: skip
        except SpkError as exc:
            raise _fail(f"{config}: {exc}") from None
        if gdb is not None:  # --gdb PARTITION[:PORT]: stop it before its first instruction, serve gdb
            try:
                gdbstub.attach(system, gdb, log=sys.stderr)
            except (ValueError, gdbstub.GdbStubError) as exc:
                raise _fail(f"--gdb {gdb}: {exc}") from None
        name = desc.system.name
        if desc.system.time == "fast":  # say so before anything runs: this run cannot be replayed
            print(f"{name}: time = \"fast\": host-clock preemption, NOT deterministic (docs/performance.md)",
                  file=sys.stderr)  # fmt: skip
        report = system.run(bound, None if on_frame is None else lambda frame: on_frame(name, frame))
    finally:
        if stream:
            stream.close()
    return _Booted(system, report, desc.system.name)


_SECURE_BOOT_HELP = "override [trust].secure_boot: enforce, warn or off"
_GDB_HELP = "stop PARTITION before its first instruction and serve gdb on 127.0.0.1:PORT (docs/debugging.md)"
_EVENTS_HELP = "trace only these kinds of event (comma-separated, repeatable; see docs/cli.md)"


@app.command()
def launch(
    config: Annotated[Path, typer.Argument(help="the system description (partitions.toml)")],
    max_ticks: Annotated[int | None, typer.Option(help="stop after this much virtual time")] = None,
    seed: Annotated[int | None, typer.Option(help="override [system].seed", min=0, max=(1 << 63) - 1)] = None,
    trace: Annotated[Path | None, typer.Option(help="write events as JSON lines (gzip when it ends in .gz)")] = None,
    trace_events: Annotated[list[str] | None, typer.Option(help=_EVENTS_HELP, metavar="EVENTS")] = None,
    trace_exclude: Annotated[
        list[str] | None, typer.Option(help="leave these kinds of event out of the trace", metavar="EVENTS")
    ] = None,
    trace_hypercalls: Annotated[bool, typer.Option(help="include every hypercall in the trace")] = True,
    secure_boot: Annotated[SecureBoot | None, typer.Option(help=_SECURE_BOOT_HELP)] = None,
    config_key: Annotated[Path | None, typer.Option(help="public key the description must verify with")] = None,
    platform_key: Annotated[Path | None, typer.Option(help="private key ring 0 signs quotes with")] = None,
    date_: Annotated[str | None, typer.Option("--date", help="check expiry at this date (YYYY-MM-DD)")] = None,
    monitor: Annotated[bool, typer.Option(help="show a live table of the partitions while the system runs")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when any partition ended halted, by anyone")] = False,
    gdb: Annotated[str | None, typer.Option(help=_GDB_HELP, metavar="PARTITION[:PORT]")] = None,
) -> None:
    """Boot the system a configuration describes and run it.

    Exit status: 0 when every partition ended as its configuration intended;
    1 when one did not (refused by secure boot, faulted, or with --strict
    halted); 2 on a usage or configuration error; 130 when interrupted (the
    summary so far is printed). See docs/cli.md.
    """
    try:
        kept = event_filter(trace_events or [], trace_exclude or []) if trace_events or trace_exclude else None
    except TraceOptionError as exc:
        raise _fail(str(exc)) from None
    causes = HaltCauses()
    options: dict[str, Any] = {
        "max_ticks": max_ticks, "seed": seed, "trace": trace, "trace_hypercalls": trace_hypercalls,
        "trace_events": kept, "secure_boot": secure_boot.value if secure_boot else None, "config_key": config_key,
        "platform_key": platform_key, "today": _parse_date(date_), "watch": causes, "gdb": gdb,
    }  # fmt: skip
    console = _console()
    with _interruptible() as interrupt, _view(console, monitor) as view:
        try:
            booted = _boot(config, out=view.out, on_frame=interrupt.checked(view.frame), **options)
            name, report = booted.name, booted.report
        except _Interrupted as exc:
            name, report = exc.name, exc.report
        view.final(_summary(report, name))
    if interrupt.requested:
        typer.echo(f"interrupted at virtual time {report.end_time:,}: the summary is of the run so far", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    found = problems(report, causes, strict=strict)
    for problem in found:
        typer.echo(f"error: {problem}", err=True)
    if found:
        raise typer.Exit(EXIT_NOT_AS_INTENDED)


def _console() -> Console:
    """The console of the summary and the live table: the terminal's width, or 150 columns into a file."""
    return Console(width=None if sys.stdout.isatty() else 150)


class _Interrupted(Exception):
    """Ctrl-C was pressed: the run ends after this major frame, with its report."""

    def __init__(self, name: str, report: SystemReport) -> None:
        super().__init__(name)
        self.name, self.report = name, report


class _Interrupt:
    """Ctrl-C during a launch: noted by the signal handler, acted on at the end of the next major frame.

    The handler only sets a flag: raising KeyboardInterrupt inside the engine
    would be swallowed by its callbacks; at a frame's end the report is whole.
    """

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def checked(self, on_frame: Callable[[str, SystemReport], None]) -> Callable[[str, SystemReport], None]:
        def frame(name: str, report: SystemReport) -> None:
            on_frame(name, report)
            if self.requested:
                raise _Interrupted(name, report)

        return frame


@contextmanager
def _interruptible() -> Iterator[_Interrupt]:
    """SIGINT sets the flag while the block runs (in the main thread only: elsewhere Python has no handler)."""
    interrupt = _Interrupt()
    try:
        previous = signal.signal(signal.SIGINT, interrupt.handle)
    except ValueError:  # not the main thread
        yield interrupt
        return
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


class _View(Protocol):
    out: _Lines

    def frame(self, name: str, report: SystemReport) -> None: ...

    def final(self, table: Table) -> None: ...


class _Plain:
    """Console lines to standard output as they come (each flushed: a pipe sees it at once), then the summary."""

    def __init__(self, console: Console) -> None:
        self.out: _Lines = self
        self._console = console

    def write(self, text: str) -> int:
        sys.stdout.write(text)
        sys.stdout.flush()
        return len(text)

    def frame(self, name: str, report: SystemReport) -> None:
        pass

    def final(self, table: Table) -> None:
        sys.stdout.flush()
        self._console.print(table)


class _ConsoleText:
    """Console lines printed through rich (above a live table), each whole: never wrapped."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.print(Text(line), soft_wrap=True)
        return len(text)


class _Monitor:
    """A live table of the partitions, redrawn after major frames; it ends as the summary table.

    Wall time only paces the redrawing (at most ten times a second); it
    never touches the run, which stays deterministic. The last drawing is
    the summary itself, so what stays on the screen is the final state.
    """

    def __init__(self, live: Live) -> None:
        self._live = live
        self._last = 0.0
        self.out: _Lines = _ConsoleText(live.console)

    def frame(self, name: str, report: SystemReport) -> None:
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._live.update(_summary(report, name), refresh=True)

    def final(self, table: Table) -> None:
        self._live.update(table, refresh=True)


@contextmanager
def _view(console: Console, monitor: bool) -> Iterator[_View]:
    if not monitor:
        yield _Plain(console)
        return
    with Live(Text("booting…"), console=console, auto_refresh=False, redirect_stdout=False) as live:
        yield _Monitor(live)


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
    name: Annotated[str | None, typer.Option(help="for an image: its name in its slot (default: file stem)")] = None,
    kind: Annotated[str, typer.Option(help="for an image: kernel or app")] = "app",
    partition: Annotated[str | None, typer.Option(help="for an image: the partition whose slot it boots in")] = None,
    security_version: Annotated[
        int | None,
        typer.Option(
            help="security version (rollback protection); default: each partition's min_security_version, "
            "0 for an image",
            min=0,
            max=MAX_SECURITY_VERSION,
        ),
    ] = None,
    expires: Annotated[str | None, typer.Option(help="signature expiry date (YYYY-MM-DD)")] = None,
) -> None:
    """Sign an image for its slot, or a whole system (its images, its description, golden values)."""
    until = _parse_date(expires)
    try:
        if target.suffix == ".toml":
            if out is None:
                raise _fail("signing a system needs --out DIR")
            signed = sign_system(target, key, out, expires=until, security_version=security_version)
            typer.echo(f"signed {plural(len(signed.images), 'image')}, {signed.config} and {signed.golden}")
        else:
            if kind not in ("kernel", "app"):
                raise _fail("--kind is kernel or app")
            if partition is None:
                raise _fail("signing an image needs --partition: an image is signed for one slot")
            slot = Slot(partition, kind, name or target.stem)
            version = security_version or 0
            manifest = sign_image(
                target, load_signing_key(key), name=slot.name, kind=kind, partition=partition,
                security_version=version, expires=until,
            )  # fmt: skip
            typer.echo(
                f"signed {target} for slot {slot}, security version {version}: {manifest.name}, {target.name}.sig"
            )
    except (ConfigError, ImageNotFound, AssemblyError, BuildError, TrustError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.filename}: {exc.strerror}") from None


@app.command()
def verify(
    target: Annotated[Path, typer.Argument(help="a signed image, or a signed file (.toml)")],
    key: Annotated[list[Path], typer.Option(help="trusted public key (repeatable)")],
    date_: Annotated[str | None, typer.Option("--date", help="check expiry at this date")] = None,
    slot: Annotated[
        str | None, typer.Option(help="for an image: the slot it must be signed for (PARTITION/app/NAME)")
    ] = None,
    min_security_version: Annotated[
        int, typer.Option(help="for an image: refuse a lower security version", min=0, max=MAX_SECURITY_VERSION)
    ] = 0,
) -> None:
    """Check a signature: exit 0 when it verifies, 1 with the reason otherwise."""
    try:
        trusted = trusted_keys(key)
        expected = Slot.parse(slot) if slot is not None else None
    except TrustError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(f"--slot {exc}") from None
    today = _parse_date(date_) or date.today()
    if target.suffix == ".toml":
        verdict = verify_file(target, trusted)
    else:
        verdict = verify_image(target, trusted, today, slot=expected, min_security_version=min_security_version)
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


@app.command("sdk-header")
def sdk_header() -> None:
    """Print the C SDK's ABI header (spk_sdk/include/spk/abi.h), generated from spk/abi.py."""
    sys.stdout.write(abi.c_header())


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="the system description to check")]) -> None:
    """Check a configuration offline: exit 0 when valid, 2 with every error."""
    try:
        load_and_plan(config)
    except ConfigError as exc:
        raise _problems(exc) from None
    except (ImageNotFound, AssemblyError, BuildError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{config}: valid")


@app.command()
def review(
    config: Annotated[Path, typer.Argument(help="the system description to review")],
    out: Annotated[Path, typer.Option(help="directory for report.html and report.json")],
    seed: Annotated[int | None, typer.Option(help="override [system].seed; seeds the adversarial suite",
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
    except (ImageNotFound, AssemblyError, BuildError, TrustError) as exc:
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
serve.register(app)
ctl.register(app)
migrate_cli.register(app)
fleet_cli.register(app)


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
