"""The SPK's exception hierarchy (public).

Two families, kept apart on purpose (trio's rule):

* :class:`SpkError` and its children are errors a caller handles: a refused
  request from ring 1, a bad image, an exhausted resource. They carry a
  :class:`spk.abi.Status` so the same failure has one name everywhere.
* :class:`InternalError` is a broken SPK invariant: a bug. It is never
  turned into a status code silently; the SPK halts the affected partition,
  records the event, and lets every other partition run on.

A guest never sees a Python exception: hypercalls answer with negative
status codes, faults become trap events.
"""

from __future__ import annotations

from spk.abi import Status


class SpkError(Exception):
    """A request the SPK refuses; ``status`` says which rule."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class OutOfMemory(SpkError):
    """No frame left in the pool the request draws from."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.NO_MEMORY, message)


class ImageError(SpkError):
    """A guest image cannot be loaded (too large, malformed); ``rule`` names which rule it breaks."""

    def __init__(self, message: str, rule: str = "image_invalid") -> None:
        super().__init__(Status.INVALID_ARGUMENT, message)
        self.rule = rule


class EngineError(Exception):
    """The CPU engine failed or its layout was not what the SPK verified."""


class InternalError(Exception):
    """An SPK invariant does not hold: a bug, reported, never hidden."""


class MigrationError(SpkError):
    """A partition cannot leave or enter this machine (a payload refused, a clock behind, ...).

    ``rule`` names the rule broken (``malformed``, ``format``, ``engine``,
    ``clock_behind``, ``page_table``, ``frames``, ``context``, ``ports``,
    ``state``, ``authentication``); nothing on the machine has changed.
    """

    def __init__(self, message: str, rule: str = "malformed") -> None:
        super().__init__(Status.INVALID_ARGUMENT, message)
        self.rule = rule
