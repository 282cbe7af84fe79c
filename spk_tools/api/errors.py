"""One error shape for every answer that is not a success, and never a traceback.

``{"error": {"code": "...", "field": "..." | null, "message": "..."}}`` with a
4xx status (500 ``internal`` for a bug, its traceback in the server's log
only). A request the validation refuses (422) names the field as a dotted
path: ``body.mode``, ``path.name``, ``query.token``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from spgs.control import ControlError

log = logging.getLogger("spk.serve")

#: HTTP status of each error code.
STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "refused": 409,
    "too_large": 413,
    "invalid": 422,
    "unavailable": 503,
    "internal": 500,
}
_CODE_OF_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                   409: "conflict", 413: "too_large", 422: "invalid", 503: "unavailable"}  # fmt: skip


class ApiError(Exception):
    """An expected refusal: becomes the error shape with its code's status."""

    def __init__(self, code: str, message: str, field: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "field": field, "message": message}}


def error_response(
    code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=STATUS.get(code, 400), headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the shape above."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(ControlError)
    async def control_error(_request: Request, exc: ControlError) -> JSONResponse:
        field = exc.field
        if exc.code == "not_found" and field == "name":
            field = "path.name"
        elif exc.code == "invalid" and field is not None and not field.startswith(("body.", "path.", "query.")):
            field = f"body.{field}"  # a field of the request; a conflict names the configuration's field
        return error_response(exc.code, str(exc), field)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = tuple(first.get("loc", ()))
        field = _field(loc) if loc else None
        message = str(first.get("msg", "invalid request"))
        if field:
            message = f"{field}: {message}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return error_response("invalid", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_OF_STATUS.get(exc.status_code, "invalid" if exc.status_code < 500 else "internal")
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        response = error_response(code, detail)
        response.status_code = exc.status_code
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response("internal", "internal error (the server's log has the details)")
