"""``spk fleet FILE --serve``: run a fleet and serve its status and the web console over HTTP.

The fleet runs exactly as without ``--serve`` (same file, same seed, same
report), on a background thread, its rounds paced at ``--pace`` rounds per
second of wall time so a person can watch (0: as fast as it goes; the pace
only delays the start of a round, never what it computes). The management
API (:func:`spk_tools.api.create_fleet_app`) answers ``GET /api/v1/fleet``
with :meth:`WatchedFleet.status`; the routes of a single system answer a
JSON 404, as there is none. Binding, tokens, the first line and the server
loop are ``spk serve``'s (:mod:`spk_tools.serve`).

When the run ends the server keeps serving its final status until Ctrl-C
(or SIGTERM): then a summary line and exit 130, as ``spk serve``. A run
that fails (an image that does not build, a host that crashes the run) is
reported on standard error at once, its status says ``failed`` with the
message, and the exit status is 1.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import typer

from spgs.assembler import AssemblyError
from spgs.cbuild import BuildError
from spgs.config import ConfigError
from spgs.fleet.config import LoadedFleet
from spgs.fleet.report import FleetReport, FleetStatus
from spgs.fleet.runner import Transport, run_fleet
from spgs.images import ImageNotFound
from spk import SpkError
from spk_tools.launch_status import EXIT_INTERRUPTED
from spk_tools.serve import announce, listen, load_tokens, run_server
from spk_tools.wording import plural

#: Rounds per second of wall time when --pace is not given: a 30-round fleet takes 15 s to watch.
DEFAULT_PACE = 2.0
#: How long Ctrl-C waits for the round in progress to end (seconds of wall time; the thread is a daemon).
STOP_WAIT = 10.0
_ERRORS = (ImageNotFound, AssemblyError, BuildError, ConfigError, SpkError, RuntimeError, OSError)


class _Stopped(Exception):
    """Raised in the run's thread, between rounds, when the server stops before the run ends."""


class WatchedFleet:
    """A fleet run on its own thread, paced; :meth:`status` is what the API serves, safe from any thread.

    ``status()`` is :class:`spgs.fleet.FleetStatus`'s dict after the last
    round, plus ``"state"`` (``starting``, ``running``, ``finished``,
    ``stopped`` or ``failed``), ``"rounds"`` (how many the file asks for),
    ``"pace"`` (rounds per second, 0: unpaced), ``"error"`` (the message of
    a failed run, else null) and, once finished, ``"metrics"`` (the
    report's, as ``spk fleet --json`` prints them).
    """

    def __init__(self, loaded: LoadedFleet, transport: Transport, pace: float) -> None:
        settings = loaded.description.fleet
        self._loaded = loaded
        self._transport = transport
        self._pace = pace
        self._rounds = settings.rounds
        self._live = FleetStatus(settings.name, [h.name for h in loaded.description.host])
        self._lock = threading.Lock()
        self._snapshot = self._live.status()
        self._state = "starting"
        self._stop = threading.Event()
        self._first: float | None = None
        self.report: FleetReport | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="spk-fleet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the run between two rounds (if it is still going) and wait for its thread, bounded."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)

    def status(self) -> dict[str, Any]:
        with self._lock:
            out = dict(self._snapshot, state=self._state, rounds=self._rounds, pace=self._pace, error=self.error)
            if self.report is not None:
                out["metrics"] = dict(self.report.metrics)
            return out

    def _on_round(self, status: FleetStatus) -> None:
        snapshot = status.status()
        with self._lock:
            self._snapshot, self._state = snapshot, "running"
        now = time.monotonic()
        if self._first is None:
            self._first = now  # the first round's hosts booted: pace from here
        wait = 0.0
        if self._pace > 0 and snapshot["round"] is not None:
            wait = self._first + (snapshot["round"] + 1) / self._pace - now
        if self._stop.wait(max(0.0, wait)):  # True once close() asked: stop between rounds
            raise _Stopped

    def _run(self) -> None:
        try:
            report = run_fleet(self._loaded, self._transport, on_round=self._on_round, status=self._live)
        except _Stopped:
            with self._lock:
                self._state = "stopped"
            return
        except _ERRORS as exc:
            with self._lock:
                self._state, self.error = "failed", str(exc)
            typer.echo(f"error: the fleet run stopped: {exc}", err=True)
            return
        except Exception as exc:  # a bug: the status says so, the traceback goes to standard error
            with self._lock:
                self._state, self.error = "failed", f"internal error: {exc!r}"
            raise
        with self._lock:
            self.report, self._state = report, "finished"
            self._snapshot = self._live.status()

    def summary(self) -> str:
        """One line: where the run stood when the server stopped."""
        s = self.status()
        done = s["round"] + 1 if s["round"] is not None else 0
        where = f"{plural(done, 'round')} of {s['rounds']}"
        line = f"fleet {s['name']}: stopped serving after {where} (the run {_STATE_WORDS[s['state']]})"
        if s["imbalance"] is not None:
            line += f", imbalance {s['imbalance']}"
        if self.report is not None:
            line += f", {plural(self.report.metrics['fleet_migrations'], 'live migration')}"
        return line


_STATE_WORDS = {"starting": "had not started", "running": "was stopped", "stopped": "was stopped",
                "finished": "had ended", "failed": "failed"}  # fmt: skip


def serve_fleet(
    loaded: LoadedFleet, make_transport: Any, host: str, port: int, token_file: Path | None, pace: float
) -> None:
    """Serve the fleet's status and the console on host:port while the fleet runs; until Ctrl-C.

    ``make_transport()`` gives the hosts' transport (Ray starts there: after
    the tokens and the port are known good). Errors: typer.Exit(2) for a bad
    tokens file or a port that cannot be had, or what ``make_transport``
    raises; typer.Exit(1) when the run failed; typer.Exit(130) on Ctrl-C.
    """
    from spk_tools.api import create_fleet_app

    tokens, printed = load_tokens(token_file)
    sock = listen(host, port)
    try:
        watched = WatchedFleet(loaded, make_transport(), pace)
        app = create_fleet_app(watched, tokens=tokens)
        announce(f"fleet {loaded.description.fleet.name}", sock, printed)
        watched.start()
        try:
            interrupted = run_server(app, sock)
        finally:
            watched.close()
        typer.echo(watched.summary())
        if watched.error is not None:
            raise typer.Exit(1)
        if interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)
    finally:
        sock.close()
