"""The FastAPI application: routes under /api/v1, the web console at /.

Reads answer from the controller's latest view (made between windows);
mutations are queued on the controller and answered once the system's
thread has applied them. See docs/api.md (generated from this app's
OpenAPI document) for every route.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spgs.control import HISTORY, Applied, ControlError, Controller
from spgs.system import System
from spgs.trust import TrustError, key_id, load_public_key
from spk import SpkError
from spk.abi import NONCE_MAX
from spk_tools.api import models
from spk_tools.api.auth import Token, Tokens
from spk_tools.api.errors import ApiError, error_response, install
from spk_tools.api.metrics import metrics_text
from spk_tools.api.models import ErrorBody

API = "/api/v1"
#: The role a route needs, as its OpenAPI tag (docs/api.md and the access tests read it).
ADMIN, READ = "admin", "read"
#: The console's content security policy: nothing from elsewhere, no inline script, never in a frame.
CSP = "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
#: Largest request body (an uploaded image is base64 in JSON).
MAX_BODY = 32 << 20
#: How long a request waits for the system's thread to apply its mutation (seconds of wall time).
APPLY_TIMEOUT = 30.0
#: At most this many QoS frames per second go to one event-stream client (the latest is always sent).
QOS_PER_SECOND = 10
#: A comment line keeps an idle event stream open through proxies (seconds).
KEEPALIVE = 15.0


class Fleet(Protocol):
    """What ``spk fleet`` hands the app: its status, a plain JSON-able dict."""

    def status(self) -> dict[str, Any]: ...


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or unknown token"},
    403: {"model": ErrorBody, "description": "a read-only token asked for a mutation"},
    404: {"model": ErrorBody, "description": "no such partition"},
    409: {"model": ErrorBody, "description": "refused by the policy (the message says why)"},
    422: {"model": ErrorBody, "description": "bad input; error.field names the field"},
}


def console_dir() -> Path | None:
    """The web console's files (package data of spk_tools), if installed."""
    folder = Path(str(resources.files("spk_tools") / "console"))
    return folder if (folder / "index.html").is_file() else None


_bearer = HTTPBearer(auto_error=False, description="a token of role read or admin")


def _authenticate(request: Request, secret: str | None) -> Token:
    if not secret:
        raise ApiError("unauthorized", "a token is required (Authorization: Bearer TOKEN)",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    tokens: Tokens = request.app.state.tokens
    token = tokens.find(secret)
    if token is None:
        raise ApiError("unauthorized", "unknown token", headers={"WWW-Authenticate": "Bearer"})
    return token


def _reader(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Token:
    return _authenticate(request, credentials.credentials if credentials else None)


def _admin(token: Annotated[Token, Depends(_reader)]) -> Token:
    if not token.admin:
        raise ApiError("forbidden", f"token {token.name!r} is read-only: this call needs an admin token")
    return token


def _stream_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Query(description="the token, for clients that cannot set headers")] = None,
) -> Token:
    return _authenticate(request, credentials.credentials if credentials else token)


Reader = Annotated[Token, Depends(_reader)]
Admin = Annotated[Token, Depends(_admin)]
StreamReader = Annotated[Token, Depends(_stream_reader)]


def create_app(controller: Controller, *, tokens: Tokens, fleet: Fleet | None = None) -> FastAPI:
    """The management API of ``controller``'s system; ``tokens`` are the tokens it accepts.

    ``fleet``: GET /api/v1/fleet answers its ``status()`` (404 without one).
    """
    return _build(lambda: controller, tokens=tokens, fleet=fleet)


#: What a system's route answers when the server runs a fleet and no system of its own.
NO_SYSTEM = "this server runs a fleet, not a system: its status is GET /api/v1/fleet"


def create_fleet_app(fleet: Fleet, *, tokens: Tokens) -> FastAPI:
    """The management API of a fleet (``spk fleet --serve``): GET /api/v1/fleet answers ``fleet.status()``.

    There is no single system: every route of one (``/system``, ``/partitions``, ``/qos``, ``/events``,
    ...) answers 404 ``not_found`` with :data:`NO_SYSTEM`, after the token is checked as usual.
    """

    def no_system() -> Controller:
        raise ApiError("not_found", NO_SYSTEM)

    return _build(no_system, tokens=tokens, fleet=fleet, serves="fleet")


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (what docs/api.md is generated from); no system needed."""

    def no_system() -> Controller:
        raise ApiError("unavailable", "no system")

    return _build(no_system, tokens=Tokens([]), fleet=None).openapi()


def _build(
    system_controller: Callable[[], Controller], *, tokens: Tokens, fleet: Fleet | None, serves: str = "system"
) -> FastAPI:
    app = FastAPI(
        title="SPK management API",
        version="1",
        description="Manage a running SPK system: partitions, QoS, trust. Token authentication "
        "(Authorization: Bearer TOKEN), roles read and admin. Errors: "
        '{"error": {"code", "field", "message"}}.',
        docs_url=None, redoc_url=None,
    )  # fmt: skip
    install(app)

    app.add_middleware(_Guard)
    app.state.tokens = tokens

    def view_of(name: str) -> dict[str, Any]:
        found = system_controller().view.partition(name)
        if found is None:
            known = ", ".join(p["name"] for p in system_controller().view.partitions)
            raise ApiError("not_found", f"no partition named {name!r} (partitions: {known})", "path.name")
        return found

    async def applied(future: Future[Applied]) -> Applied:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), APPLY_TIMEOUT)
        except TimeoutError:
            raise ApiError("unavailable", "the system did not reach the end of a window in time") from None

    async def operate(name: str, op: str, token: Token, *, warm: bool = False) -> dict[str, Any]:
        view_of(name)
        result = await applied(system_controller().operate(name, op, requester=f"api:{token.name}", warm=warm))
        return result_of(name, result)

    def result_of(name: str, result: Applied) -> dict[str, Any]:
        if not result.done:
            raise ApiError("conflict", f"{name}: {result.op}: {result.outcome}")
        return {"partition": name, "op": result.op, "outcome": result.outcome, "t": result.t,
                "windows": result.windows, "seq": result.seq, "requester": result.requester}  # fmt: skip

    router = APIRouter(prefix=API, responses=_ERRORS)

    @router.get("/whoami", tags=[READ], response_model=models.WhoAmI, summary="The token's name and role")
    async def whoami(token: Reader) -> dict[str, Any]:
        return {"name": token.name, "role": token.role, "serves": serves}

    @router.get("/system", tags=[READ], response_model=models.SystemInfo,
                summary="The system: time, schedule, recent events")  # fmt: skip
    async def system_info(_token: Reader) -> dict[str, Any]:
        return {**system_controller().view.system, "fleet": fleet is not None}

    @router.get("/partitions", tags=[READ], response_model=models.PartitionList,
                summary="Every partition, in file order")  # fmt: skip
    async def partitions(_token: Reader) -> dict[str, Any]:
        return {"partitions": system_controller().view.partitions}

    @router.get("/partitions/{name}", tags=[READ], response_model=models.Partition, summary="One partition")
    async def partition(name: str, _token: Reader) -> dict[str, Any]:
        return view_of(name)

    def op_route(op: str, doc: str) -> None:
        async def run_op(name: str, token: Admin) -> dict[str, Any]:
            return await operate(name, op, token)

        run_op.__name__ = f"{op}_partition"
        router.post(f"/partitions/{{name}}/{op}", tags=[ADMIN], response_model=models.OperationResult,
                    summary=doc)(run_op)  # fmt: skip

    op_route("pause", "Pause a ready or blocked partition")
    op_route("resume", "Resume a paused partition")
    op_route("start", "Start a declared or destroyed partition")
    op_route("stop", "Halt a partition for good")

    @router.post("/partitions/{name}/restart", tags=[ADMIN], response_model=models.OperationResult,
                 summary="Restart a partition, cold or warm")  # fmt: skip
    async def restart(name: str, token: Admin, body: Annotated[models.RestartBody | None, Body()] = None) -> Any:
        return await operate(name, "restart", token, warm=body is not None and body.mode == "warm")

    @router.delete("/partitions/{name}", tags=[ADMIN], response_model=models.OperationResult,
                   summary="Destroy a partition: its frames go back to RAM; it may be started again")  # fmt: skip
    async def destroy(name: str, token: Admin) -> Any:
        return await operate(name, "destroy", token)

    @router.patch("/partitions/{name}", tags=[ADMIN], response_model=models.OperationResult,
                  summary="Change a window (next major frame) or a quota (its next start)")  # fmt: skip
    async def patch_partition(name: str, body: models.PatchBody, token: Admin) -> dict[str, Any]:
        view_of(name)
        future = system_controller().patch(name, memory=body.memory, window=body.window,
                                           requester=f"api:{token.name}")  # fmt: skip
        return result_of(name, await applied(future))

    @router.post("/partitions", tags=[ADMIN], response_model=models.OperationResult, status_code=201,
                 summary="Create a partition from a fragment of the description, within its rules")  # fmt: skip
    async def create_partition(body: models.CreateBody, token: Admin) -> dict[str, Any]:
        fragment = body.model_dump(exclude_unset=True)
        controller = system_controller()
        future = await run_in_threadpool(controller.create, fragment, requester=f"api:{token.name}")
        return result_of(body.name, await applied(future))

    @router.post("/partitions/{name}/image", tags=[ADMIN], response_model=models.Staged,
                 summary="Upload a signed image: verified, staged for its next restart")  # fmt: skip
    async def upload_image(name: str, body: models.ImageBody, token: Admin) -> dict[str, Any]:
        view_of(name)
        files = {}
        for key in ("image", "manifest", "signature"):
            try:
                files[key] = base64.b64decode(getattr(body, key), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError("invalid", f"body.{key}: not base64", f"body.{key}") from None
        future = system_controller().stage_image(name, kind=body.kind, label=body.name, files=files,
                                                 requester=f"api:{token.name}")  # fmt: skip
        result = await applied(future)
        return {"partition": name, "staged_image": result.result, "verdict": "ok"}

    @router.post("/partitions/{name}/quote", tags=[READ], response_model=models.Quote,
                 summary="An attestation quote of a partition's measurements over a nonce")  # fmt: skip
    async def quote(name: str, body: models.QuoteBody, token: Reader) -> dict[str, Any]:
        view_of(name)
        nonce = bytes.fromhex(body.nonce)
        if len(nonce) > NONCE_MAX:
            raise ApiError("invalid", f"body.nonce: at most {NONCE_MAX} bytes", "body.nonce")

        def sign(system: System) -> bytes | str:
            pid = system.pid_of(name)
            if pid is None:
                return f"{name} is not running"
            try:
                return system.machine.quote(pid, nonce)
            except SpkError as exc:
                return str(exc)

        result = await applied(system_controller().call(name, "quote", sign, requester=f"api:{token.name}"))
        if isinstance(result.result, str):
            raise ApiError("conflict", f"{name}: no quote: {result.result}")
        return {"partition": name, "quote": json.loads(result.result)}

    @router.get("/trust/keys", tags=[READ], response_model=models.TrustKeys,
                summary="Trusted image keys and the platform key")  # fmt: skip
    async def trust_keys(_token: Reader) -> dict[str, Any]:
        system = system_controller().system
        desc = system.config.description
        keys = []
        for ref in desc.trust.keys:
            path = system.config.path.parent / ref
            try:
                raw = bytes(load_public_key(path))
            except TrustError as exc:
                raise ApiError("unavailable", str(exc)) from None
            keys.append({"id": key_id(raw), "public_key": raw.hex(), "path": ref})
        platform = system.machine.attestation_public_key
        return {"secure_boot": desc.trust.secure_boot, "keys": keys,
                "platform_key": platform.hex() if platform else None}  # fmt: skip

    @router.get("/qos", tags=[READ], response_model=models.QosSnapshot,
                summary="QoS now: CPU share, window use, channel rates")  # fmt: skip
    async def qos(_token: Reader) -> dict[str, Any]:
        return system_controller().view.qos

    @router.get("/qos/history", tags=[READ], response_model=models.QosHistory,
                summary="The QoS of the last major frames (at most 300), oldest first")  # fmt: skip
    async def qos_history(
        _token: Reader, frames: Annotated[int, Query(ge=1, le=HISTORY, description="how many frames")] = HISTORY,
    ) -> dict[str, Any]:
        return {"history": system_controller().history(frames)}

    @router.get("/metrics", response_class=PlainTextResponse, tags=[READ],
                summary="QoS as Prometheus metrics (text format)")  # fmt: skip
    async def metrics(_token: Reader) -> PlainTextResponse:
        return PlainTextResponse(metrics_text(system_controller().view), media_type="text/plain; version=0.0.4")

    @router.get("/events", tags=[READ], summary="Server-sent events: qos, state, health, management",
                responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
                response_class=StreamingResponse)  # fmt: skip
    async def events(_token: StreamReader) -> StreamingResponse:
        return StreamingResponse(_event_stream(system_controller()), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    @router.get("/fleet", tags=[READ], summary="The fleet's status, when spk fleet --serve serves")
    async def fleet_status(_token: Reader) -> dict[str, Any]:
        if fleet is None:
            raise ApiError("not_found", "this server manages one system, not a fleet (spk fleet --serve serves one)")
        return fleet.status()

    app.include_router(router)

    @app.get("/metrics", include_in_schema=False)
    async def root_metrics(_token: Reader) -> PlainTextResponse:
        return PlainTextResponse(metrics_text(system_controller().view), media_type="text/plain; version=0.0.4")

    @app.api_route(f"{API}/{{rest:path}}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"], include_in_schema=False)
    async def unknown_route(rest: str) -> None:
        raise ApiError("not_found", f"no route {API}/{rest}")

    folder = console_dir()
    if folder is not None:
        app.mount("/console", StaticFiles(directory=folder), name="console-files")
        app.mount("/", StaticFiles(directory=folder, html=True), name="console")
    return app


class _Guard:
    """Plain ASGI middleware (it does not buffer an event stream): refuses a body over MAX_BODY before it
    is read (413), and adds the security headers: nosniff everywhere, the CSP on the console's files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            refusal = error_response("too_large", f"a request body is at most {MAX_BODY >> 20} MiB")
            await refusal(scope, receive, send)
            return
        console = not str(scope["path"]).startswith(API)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff")]
                if console:  # its own files only, never in a frame
                    extra.append((b"content-security-policy", CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _event_stream(controller: Controller) -> AsyncIterator[str]:
    """One client's event stream: a qos and a state event at once, then events as they come.

    QoS frames are thinned to QOS_PER_SECOND (the latest one is always
    sent); a client too slow to keep up loses events rather than slowing
    the system (its queue is bounded).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=4096)

    def offer(item: tuple[str, Any]) -> None:
        if not queue.full():
            queue.put_nowait(item)

    def push(kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is going away
            loop.call_soon_threadsafe(offer, (kind, data))

    unsubscribe: Callable[[], None] = controller.subscribe(push)
    try:
        view = controller.view
        yield _sse("qos", view.qos)
        yield _sse("state", {"partitions": view.partitions})
        pending_qos: Any = None
        last_qos = time.monotonic()
        while True:
            wait = max(0.0, 1.0 / QOS_PER_SECOND - (time.monotonic() - last_qos)) if pending_qos else KEEPALIVE
            try:
                kind, data = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if pending_qos is not None:
                    yield _sse("qos", pending_qos)
                    pending_qos, last_qos = None, time.monotonic()
                else:
                    yield ": keep-alive\n\n"
                continue
            if kind == "qos":
                pending_qos = data
                if time.monotonic() - last_qos >= 1.0 / QOS_PER_SECOND:
                    yield _sse("qos", pending_qos)
                    pending_qos, last_qos = None, time.monotonic()
                continue
            yield _sse(kind, data)
    finally:
        unsubscribe()


__all__ = ["API", "NO_SYSTEM", "ControlError", "create_app", "create_fleet_app"]
