"""The management API of ``spk serve``: HTTP and JSON, described by OpenAPI (FastAPI).

:func:`create_app` builds the application around a running
:class:`spgs.control.Controller`; docs/api.md is generated from its OpenAPI
document (``spk serve --openapi``, ``python -m spk_tools.api.docgen``).
:func:`create_fleet_app` builds it around a fleet's status instead
(``spk fleet --serve``).
"""

from spk_tools.api.app import create_app, create_fleet_app
from spk_tools.api.auth import Token, TokenError, Tokens

__all__ = ["Token", "TokenError", "Tokens", "create_app", "create_fleet_app"]
