"""The error of the management controller (:mod:`spgs.control`), in a module of its own so its helpers share it."""

from __future__ import annotations


class ControlError(Exception):
    """A request the controller refuses; ``code`` names why, ``field`` the part of the request at fault.

    Codes: ``not_found``, ``invalid`` (a field's value), ``conflict`` (the
    policy or the configuration's rules refuse it), ``refused`` (an image
    that does not verify), ``unavailable`` (the system is shutting down).
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
