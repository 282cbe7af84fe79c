"""``spk serve CONFIG``: run a system and serve its management API and web console over HTTP.

The system runs on its own thread (:class:`spgs.control.Controller`), paced
at ``--pace`` major frames per second of wall time so a person can watch
(0: as fast as it goes); the API (:mod:`spk_tools.api`) is served by
uvicorn on 127.0.0.1 unless ``--host`` says otherwise (then with a warning:
anyone who can reach the port can try tokens). Tokens come from
``--tokens FILE`` or are generated at start and printed once.

The first line on standard output is ``serving NAME at URL`` (the port
resolved when ``--port 0`` asks for any free one). Ctrl-C (or SIGTERM)
stops the server and the system, closes the trace, prints where the run
stood and exits 130, as ``spk launch`` does when interrupted. Errors: one
``error: ...`` line, exit 2.

``spk fleet --serve`` (:mod:`spk_tools.fleet_serve`) serves a fleet with the
same pieces: :func:`listen_address`, :func:`load_tokens`, :func:`listen`,
:func:`announce` and :func:`run_server`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import socket
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spgs.assembler import AssemblyError
from spgs.cbuild import BuildError
from spgs.config import ConfigError
from spgs.control import Controller
from spgs.images import ImageNotFound
from spgs.system import load_and_plan, run_bound
from spgs.trust import TrustError, load_seed
from spk import MachineEvent, SpkError, TraceWriter
from spk_tools.launch_status import EXIT_INTERRUPTED, EXIT_USAGE
from spk_tools.trace_file import open_trace

if TYPE_CHECKING:
    from spk_tools.api import Tokens

#: Major frames per second of wall time when --pace is not given.
DEFAULT_PACE = 10.0
DEFAULT_PORT = 8470
LOOPBACK = "127.0.0.1"
#: Seconds an idle keep-alive connection stays open: pollers (a console, Prometheus) reuse theirs.
KEEP_ALIVE = 65
TOKENS_HELP = "tokens file (TOML, docs/api.md); default: an admin and a read token, printed once"
_PACE_HELP = "major frames per second of wall time (0: unpaced)"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def listen_address(host: str | None) -> str:
    """The address to serve on (LOOPBACK unless told); warns on standard error when others can reach it."""
    address = host if host is not None else LOOPBACK
    if not is_loopback(address):
        typer.echo(f"warning: serving on {address}: reachable from other machines; "
                   "keep the tokens secret (there is no TLS)", err=True)  # fmt: skip
    return address


def load_tokens(token_file: Path | None) -> tuple[Tokens, dict[str, str]]:
    """The tokens of ``token_file``, or generated ones with their secrets to print once.

    Errors: typer.Exit(2) after an ``error:`` line (a bad tokens file).
    """
    from spk_tools.api import TokenError, Tokens

    try:
        return (Tokens.load(token_file), {}) if token_file else Tokens.generate()
    except TokenError as exc:
        raise _fail(str(exc)) from None


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (see :func:`bind`). Errors: typer.Exit(2) after an ``error:`` line."""
    try:
        return bind(host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def announce(what: str, sock: socket.socket, printed: dict[str, str]) -> None:
    """The first line (``serving WHAT at URL``), then generated tokens, once; flushed for a reader waiting on it."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {what} at http://{shown}:{port}/ (API: /api/v1, Ctrl-C stops)")
    for name, secret in printed.items():
        typer.echo(f"{name} token: {secret}")
    if printed:
        typer.echo("(tokens are printed once: keep them; or pass --tokens FILE)")
    sys.stdout.flush()


def run_server(app: Any, sock: socket.socket) -> bool:
    """Serve ``app`` on ``sock`` until Ctrl-C or SIGTERM; True when interrupted (the caller exits 130)."""
    import uvicorn

    logging.getLogger("spk.serve").addHandler(logging.StreamHandler(sys.stderr))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                                           lifespan="off", timeout_keep_alive=KEEP_ALIVE))  # fmt: skip
    # Ctrl-C stops the server even when the process started with SIGINT ignored (a background job of a
    # shell without job control): uvicorn raises the signal again under the handler it found, as spk launch
    # takes SIGINT whatever it inherited.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the Ctrl-C (or SIGTERM) again once it has shut down
        return True
    finally:
        signal.signal(signal.SIGINT, previous)
    return False


def is_loopback(host: str) -> bool:
    """Is ``host`` an address (or ``localhost``) only this machine reaches?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one). Errors: OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def openapi_json() -> str:
    from spk_tools.api.app import openapi_document

    return json.dumps(openapi_document(), indent=2, sort_keys=True)


def register(app: typer.Typer) -> None:
    """Add ``spk serve`` to the command group."""

    @app.command()
    def serve(
        config: Annotated[Path | None, typer.Argument(help="the system description (partitions.toml)")] = None,
        host: Annotated[str | None, typer.Option(help=f"address to listen on (default {LOOPBACK})")] = None,
        port: Annotated[int, typer.Option(help="port (0: any free one)", min=0, max=65535)] = DEFAULT_PORT,
        tokens: Annotated[Path | None, typer.Option(help=TOKENS_HELP)] = None,
        pace: Annotated[float, typer.Option(help=_PACE_HELP, min=0)] = DEFAULT_PACE,
        max_ticks: Annotated[int | None, typer.Option(help="stop the run after this much virtual time")] = None,
        seed: Annotated[int | None, typer.Option(help="override [system].seed", min=0, max=(1 << 63) - 1)] = None,
        trace: Annotated[Path | None, typer.Option(help="write events as JSON lines, hypercalls left out")] = None,
        platform_key: Annotated[Path | None, typer.Option(help="private key ring 0 signs quotes with "
                                                          "(default: an ephemeral one)")] = None,
        date_: Annotated[str | None, typer.Option("--date", help="check signature expiry at this date")] = None,
        openapi: Annotated[bool, typer.Option("--openapi", help="print the OpenAPI document and exit")] = False,
    ) -> None:
        """Run a system and serve its management API and web console (docs/api.md)."""
        if openapi:
            typer.echo(openapi_json())
            return
        if config is None:
            raise _fail("missing argument CONFIG (the system description)")
        address = listen_address(host)
        try:
            today = date.fromisoformat(date_) if date_ else None
        except ValueError:
            raise _fail(f"--date {date_!r} is not a date (YYYY-MM-DD)") from None
        _serve(config, address, port, tokens, pace, max_ticks, seed, trace, platform_key, today)


def _serve(
    config: Path, host: str, port: int, token_file: Path | None, pace: float, max_ticks: int | None,
    seed: int | None, trace: Path | None, platform_key: Path | None, today: date | None,
) -> None:  # fmt: skip
    from nacl.signing import SigningKey

    from spk_tools.api import create_app

    tokens, printed = load_tokens(token_file)
    try:
        seed_bytes = load_seed(platform_key) if platform_key is not None else bytes(SigningKey.generate())
        loaded, plans = load_and_plan(config, today=today)
        bound = run_bound(loaded.description, seed=seed, max_ticks=max_ticks)
    except (TrustError, ImageNotFound, AssemblyError, BuildError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    sock = listen(host, port)
    try:
        stream = open_trace(trace) if trace else None
    except OSError as exc:
        sock.close()
        raise _fail(f"cannot write the trace {trace}: {exc.strerror or exc}") from None
    writer = TraceWriter(stream) if stream else None
    try:
        if writer is not None:
            header: dict[str, Any] = {"name": loaded.description.system.name, "seed": loaded.description.system.seed,
                                      "max_ticks": bound}  # fmt: skip
            writer(MachineEvent(0, "-", "system", header))
        try:
            controller = Controller.boot(loaded, plans, trace=writer, max_ticks=bound, pace=pace,
                                         attestation_key=seed_bytes)  # fmt: skip
        except SpkError as exc:
            raise _fail(f"{config}: {exc}") from None
        app = create_app(controller, tokens=tokens)
        announce(controller.system.name, sock, printed)
        controller.start()
        try:
            interrupted = run_server(app, sock)
        finally:
            controller.close()
        if controller.error is not None:
            typer.echo(f"error: the system stopped: {controller.error}", err=True)
            raise typer.Exit(1)
        view = controller.view.system
        typer.echo(f"stopped at virtual time {view['now']:,} after {view['major_frames']:,} major frames")
        if interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)
    finally:
        sock.close()
        if stream:
            stream.close()
