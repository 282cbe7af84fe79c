"""``spk ctl``: manage a running system through the management API of ``spk serve``.

``--url`` (or ``SPK_URL``, default http://127.0.0.1:8470) names the server,
``--token`` (or ``SPK_TOKEN``) the token. Exit status: 0 done; 1 when the
server refused the request (its error message is printed: unknown
partition, read-only token, a policy refusal) or could not be reached; 2
for a usage error. Never a traceback.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from spk_tools.launch_status import EXIT_USAGE

if TYPE_CHECKING:  # httpx loads only when a ctl command runs, not with every spk command
    import httpx

DEFAULT_URL = "http://127.0.0.1:8470"
EXIT_REFUSED = 1
TIMEOUT = 35.0

ctl = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Manage a running system (spk serve).")


class _Target:
    url = DEFAULT_URL
    token: str | None = None


_target = _Target()


@ctl.callback()
def _options(
    url: Annotated[str, typer.Option(envvar="SPK_URL", help="the server (spk serve prints it)")] = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="SPK_TOKEN", help="API token (or SPK_TOKEN)")] = None,
) -> None:
    """Manage a running system through its management API (docs/api.md)."""
    _target.url = url.rstrip("/")
    _target.token = token


def _die(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _client() -> httpx.Client:
    import httpx

    if not _target.token:
        _die("a token is needed: --token TOKEN or SPK_TOKEN (spk serve prints them)", EXIT_USAGE)
    headers = {"Authorization": f"Bearer {_target.token}"}
    return httpx.Client(base_url=f"{_target.url}/api/v1", headers=headers, timeout=TIMEOUT)


def _unreachable(exc: httpx.HTTPError) -> NoReturn:
    import httpx

    why = type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        why = "connection refused (is spk serve running there?)"
    elif isinstance(exc, httpx.TimeoutException):
        why = "no answer in time"
    _die(f"cannot reach the SPK server at {_target.url}: {why}")


def _request(method: str, path: str, body: Any = None) -> Any:
    """Send one request; the decoded JSON answer. Errors: exits 1 with the server's error message."""
    import httpx

    try:
        with _client() as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        _unreachable(exc)
    return _answer(response)


def _answer(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        _die(f"the server answered {response.status_code} without JSON: is {_target.url} an SPK server?")
    if response.is_success:
        return data
    error = data.get("error", {}) if isinstance(data, dict) else {}
    _die(str(error.get("message") or f"HTTP {response.status_code}"))


def _percent(value: float) -> str:
    return f"{value:.0%}"


@ctl.command("list")
def list_partitions(as_json: Annotated[bool, typer.Option("--json", help="print the JSON answer")] = False) -> None:
    """The partitions and their QoS.

    State, CPU share, window use, overruns, frames used, restarts.
    """
    data = _request("GET", "/partitions")
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = [("partition", "state", "cpu share", "window use", "overruns", "frames used", "restarts")]
    for p in data["partitions"]:
        q = p["qos"]
        rows.append((p["name"], p["state"], _percent(q["cpu_share"]), _percent(q["window_use"]),
                     str(q["overruns"]), f"{p['frames_used']}/{p['quota_frames']}", str(p["restarts"])))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        typer.echo("  ".join(cells).rstrip())


def _operation(name: str, op: str, body: Any = None, method: str = "POST", path: str | None = None) -> None:
    result = _request(method, path or f"/partitions/{name}/{op}", body)
    typer.echo(f"{result['partition']}: {result['op']}: {result['outcome']} at virtual time {result['t']:,}")


@ctl.command()
def pause(name: Annotated[str, typer.Argument(help="the partition")]) -> None:
    """Pause a partition (admin token)."""
    _operation(name, "pause")


@ctl.command()
def resume(name: Annotated[str, typer.Argument(help="the partition")]) -> None:
    """Resume a paused partition (admin token)."""
    _operation(name, "resume")


@ctl.command()
def restart(
    name: Annotated[str, typer.Argument(help="the partition")],
    warm: Annotated[bool, typer.Option("--warm", help="keep its data and measurements (default: cold)")] = False,
) -> None:
    """Restart a partition, cold or --warm (admin token).

    A staged image (spk ctl update) is loaded now.
    """
    _operation(name, "restart", {"mode": "warm" if warm else "cold"})


@ctl.command()
def update(
    name: Annotated[str, typer.Argument(help="the partition")],
    image: Annotated[Path, typer.Argument(help="a signed image (beside it: IMAGE.manifest.json and IMAGE.sig)")],
    restart_now: Annotated[bool, typer.Option("--restart", help="restart the partition once it is staged")] = False,
) -> None:
    """Stage a signed image for a partition (admin token).

    The server verifies it for the partition's slot (rollback protection
    included) and loads it at the partition's next restart.
    """
    files = {"image": image, "manifest": image.with_name(image.name + ".manifest.json"),
             "signature": image.with_name(image.name + ".sig")}  # fmt: skip
    try:
        raw = {key: path.read_bytes() for key, path in files.items()}
        manifest = json.loads(raw["manifest"])
        kind, label = manifest["kind"], manifest["name"]
    except OSError as exc:
        _die(f"cannot read {exc.filename}: {exc.strerror or exc} (spk sign writes the manifest and .sig)", EXIT_USAGE)
    except (ValueError, KeyError, TypeError):
        _die(f"{files['manifest']} is not an image manifest (sign the image with spk sign)", EXIT_USAGE)
    body = {"kind": kind, "name": label, **{key: base64.b64encode(data).decode() for key, data in raw.items()}}
    staged = _request("POST", f"/partitions/{name}/image", body)["staged_image"]
    typer.echo(f"{name}: staged {staged['kind']} {staged['name']} (security version {staged['security_version']}), "
               "loaded at its next restart")  # fmt: skip
    if restart_now:
        _operation(name, "restart", {"mode": "cold"})


@ctl.command()
def quote(
    name: Annotated[str, typer.Argument(help="the partition")],
    nonce: Annotated[str, typer.Option(help="the verifier's nonce (text, up to 64 bytes)")],
    out: Annotated[Path | None, typer.Option(help="write the quote here (default: standard output)")] = None,
) -> None:
    """An attestation quote of a partition.

    Check it with spk verify-quote and the platform key (GET /trust/keys).
    """
    raw = nonce.encode()
    if not 0 < len(raw) <= 64:
        _die("--nonce must be 1..64 bytes", EXIT_USAGE)
    answer = _request("POST", f"/partitions/{name}/quote", {"nonce": raw.hex()})
    text = json.dumps(answer["quote"], sort_keys=True, separators=(",", ":"))
    if out is None:
        typer.echo(text)
        return
    try:
        out.write_text(text + "\n")
    except OSError as exc:
        _die(f"cannot write the quote {out}: {exc.strerror or exc}", EXIT_USAGE)
    typer.echo(f"quote of {name} written to {out}", err=True)


def _describe(kind: str, data: dict[str, Any]) -> str:
    if kind == "qos":
        shares = "  ".join(f"{name} {_percent(q['cpu_share'])}" for name, q in data["partitions"].items())
        return f"t={data['now']:,} frame {data['major_frames']}: {shares}"
    if kind == "health":
        return f"t={data['t']:,} [{data['partition']}] health: {data['event']} -> {data['action']} ({data['detail']})"
    if kind == "management":
        return f"t={data['t']:,} [{data['partition']}] {data['requester']} asked {data['op']}: {data['outcome']}"
    if kind == "state":
        return "states: " + "  ".join(f"{p['name']} {p['state']}" for p in data["partitions"])
    return f"{kind}: {json.dumps(data)}"


@ctl.command()
def watch(
    count: Annotated[int, typer.Option(help="stop after this many events (0: until Ctrl-C)", min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
) -> None:
    """Follow the live events.

    QoS per major frame, state changes, health and management events.
    """
    import httpx

    seen = 0
    try:
        with _client() as client, client.stream("GET", "/events", timeout=httpx.Timeout(TIMEOUT, read=None)) as stream:
            if not stream.is_success:
                stream.read()
                _answer(stream)
            kind = "message"
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    typer.echo(json.dumps({"event": kind, "data": data}) if as_json else _describe(kind, data))
                    sys.stdout.flush()
                    seen += 1
                    if count and seen >= count:
                        return
    except httpx.HTTPError as exc:
        _unreachable(exc)
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    """Add ``spk ctl`` to the command group."""
    app.add_typer(ctl, name="ctl")
