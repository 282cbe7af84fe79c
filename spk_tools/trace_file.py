"""Where ``spk launch --trace`` writes: which events, and plain or gzip-compressed.

A trace of the example grows by megabytes per million virtual ticks, most
of it hypercalls and windows (docs/cli.md has the numbers), so a user may
keep only the kinds of event they need and compress the file. Both keep the
trace deterministic: the same configuration and seed give the same bytes,
the gzip header included (no file name, modification time 0).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from pathlib import Path
from typing import IO

#: Every kind of event a run reports, in the order docs/cli.md lists them.
#: ``system`` is the trace's first record (the run's name, seed and bound).
TRACE_EVENTS = (
    "system",
    "secure_boot",
    "created",
    "window",
    "console",
    "hypercall",
    "app_fault",
    "kernel_fault",
    "health_event",
    "health_action",
    "restarted",
    "management_request",
    "management",
    "destroyed",
)

#: zlib's own default: most of level 9's ratio on a trace, at a fraction of its time.
GZIP_LEVEL = 6


class TraceOptionError(ValueError):
    """A ``--trace-events``/``--trace-exclude`` value names no known event."""


def _names(values: Iterable[str], option: str) -> set[str]:
    """The event names of a repeatable, comma-separated option.

    Errors: TraceOptionError naming the unknown event and the known ones.
    """
    names = {name.strip() for value in values for name in value.split(",") if name.strip()}
    for name in sorted(names):
        if name not in TRACE_EVENTS:
            raise TraceOptionError(f"{option}: unknown event {name!r} (known: {', '.join(TRACE_EVENTS)})")
    return names


def event_filter(include: Iterable[str], exclude: Iterable[str]) -> frozenset[str]:
    """The kinds of event to write: those of ``include`` (all when empty) less those of ``exclude``.

    The ``system`` record always stays: it says which run the trace is of.
    Errors: TraceOptionError for an unknown event name.
    """
    kept = _names(include, "--trace-events") or set(TRACE_EVENTS)
    return frozenset((kept - _names(exclude, "--trace-exclude")) | {"system"})


def open_trace(path: Path) -> IO[str]:
    """Open ``path`` for a trace: gzip when it ends in ``.gz``, plain UTF-8 text otherwise.

    The gzip stream is deterministic: no file name and a zero modification
    time in its header. Errors: OSError when the file cannot be created.
    """
    if path.suffix != ".gz":
        return path.open("w", encoding="utf-8", newline="\n")
    raw = path.open("wb")
    try:
        packed = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0)
    except BaseException:
        raw.close()
        raise
    return _GzipText(packed, raw)


class _GzipText(io.TextIOWrapper):
    """UTF-8 text into a gzip stream; closing it ends the stream, then closes the file under it."""

    def __init__(self, packed: gzip.GzipFile, raw: IO[bytes]) -> None:
        super().__init__(packed, encoding="utf-8", newline="\n")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()
