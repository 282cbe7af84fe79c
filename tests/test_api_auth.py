"""Access to the management API: tokens, the two roles, the loopback default, the tokens file."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from spk_tools.api import TokenError, Tokens
from spk_tools.api.app import openapi_document as _openapi
from spk_tools.api.auth import digest
from spk_tools.serve import is_loopback
from tests.api_helpers import ADMIN, READER, Live, live_server

openapi_document = cache(_openapi)
#: POST routes that only read (an attestation quote changes nothing).
READ_POSTS = {"/api/v1/partitions/{name}/quote"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with live_server(tmp_path_factory.mktemp("auth")) as server:
        yield server


def _mutations() -> list[tuple[str, str]]:
    """Every route the OpenAPI document tags admin (so a new one is covered without editing this test)."""
    paths = openapi_document()["paths"]
    found = [(method.upper(), path) for path, item in paths.items() for method, op in item.items()
             if "admin" in op["tags"]]  # fmt: skip
    untagged = [(method, path) for path, item in paths.items() for method, op in item.items()
                if method != "get" and "admin" not in op["tags"] and path not in READ_POSTS]  # fmt: skip
    assert untagged == [], "a route that changes something must be tagged admin"
    assert len(found) >= 9
    return found


def _reads() -> list[str]:
    paths = openapi_document()["paths"]
    return [path for path, item in paths.items() if "get" in item and path not in ("/api/v1/events", "/api/v1/fleet")]


def test_a_read_only_token_is_refused_every_mutation(live: Live) -> None:
    before = live.controller.view.system["mutations"]
    with live.client(READER) as client:
        for method, path in _mutations():
            answer = client.request(method, path.removeprefix("/api/v1").replace("{name}", "alpha"), json={})
            assert answer.status_code == 403, (method, path, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "forbidden" and "read-only" in error["message"], (method, path)
    assert live.controller.view.system["mutations"] == before
    assert not any(e["event"] == "management" for e in live.trace_events())


@pytest.mark.parametrize("token", [None, "not-a-token", ADMIN + "x"])
def test_missing_or_unknown_token_is_401_everywhere(live: Live, token: str | None) -> None:
    with live.client(token) as client:
        for path in _reads():
            answer = client.get(path.removeprefix("/api/v1").replace("{name}", "alpha"))
            assert answer.status_code == 401, path
            assert answer.json()["error"]["code"] == "unauthorized"
            assert answer.headers["www-authenticate"] == "Bearer"
        for method, path in _mutations():
            answer = client.request(method, path.removeprefix("/api/v1").replace("{name}", "alpha"))
            assert answer.status_code == 401, (method, path)


def test_a_read_token_reads_everything(live: Live) -> None:
    with live.client(READER) as client:
        for path in _reads():
            answer = client.get(path.removeprefix("/api/v1").replace("{name}", "alpha"))
            assert answer.status_code == 200, (path, answer.text)
        assert client.get("/whoami").json() == {"name": "viewer", "role": "read", "serves": "system"}
        assert client.post("/partitions/alpha/quote", json={"nonce": "00ff"}).status_code == 200


def test_event_stream_takes_the_token_as_a_query_parameter(live: Live) -> None:
    with live.client(None) as client:
        assert client.get("/events").status_code == 401
        assert client.get("/events", params={"token": "wrong"}).status_code == 401
        with client.stream("GET", "/events", params={"token": READER}) as stream:
            assert stream.status_code == 200
            first = next(line for line in stream.iter_lines() if line)
    assert first == "event: qos"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_a_non_loopback_host_is_served_only_when_asked_and_warned(tmp_path: Path) -> None:
    """--host 0.0.0.0 warns before anything else; here the description is missing, so nothing listens."""
    result = subprocess.run(
        [sys.executable, "-m", "spk_tools", "serve", str(tmp_path / "missing.toml"), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: serving on 0.0.0.0: reachable from other machines")
    assert result.returncode == 2 and "missing.toml" in lines[1] and "Traceback" not in result.stderr


def test_default_host_is_loopback() -> None:
    from spk_tools.serve import LOOPBACK

    assert LOOPBACK == "127.0.0.1"


def _tokens_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    return path


def test_tokens_file_by_secret_or_digest(tmp_path: Path) -> None:
    path = _tokens_file(tmp_path, f"""
[[token]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[token]]
name = "dash"
role = "read"
sha256 = "{digest(READER)}"
""")
    tokens = Tokens.load(path)
    ops, dash = tokens.find(ADMIN), tokens.find(READER)
    assert ops is not None and ops.name == "ops" and ops.admin
    assert dash is not None and dash.role == "read" and not dash.admin
    assert tokens.find("guess") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[token]]\nname = "a"\nrole = "root"\ntoken = "0123456789abcdef"\n', "token.0.role: 'root' is not"),
        ('[[token]]\nname = "a"\nrole = "read"\n', "token.0: give exactly one of sha256"),
        ('[[token]]\nname = "a"\nrole = "read"\ntoken = "short"\n', "token.0.token: a string of at least 16"),
        ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "abc"\n', "token.0.sha256: 64 lowercase hex digits"),
        ('[[token]]\nname = "a b"\nrole = "read"\nsha256 = "abc"\n', "token.0.name: 1 to 40 letters"),
        ('[[token]]\nname = "a"\nrole = "read"\ntoken = "0123456789abcdef"\nextra = 1\n', "unknown field 'extra'"),
        ("token = 3\n", "expected one or more [[token]] tables"),
        ("[[token\n", "not TOML"),
    ],
)
def test_bad_tokens_file_is_named(tmp_path: Path, body: str, message: str) -> None:
    path = _tokens_file(tmp_path, body)
    with pytest.raises(TokenError) as caught:
        Tokens.load(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_generated_tokens_are_distinct_and_typed() -> None:
    tokens, secrets = Tokens.generate()
    admin, read = tokens.find(secrets["admin"]), tokens.find(secrets["read"])
    assert admin is not None and admin.role == "admin" and read is not None and read.role == "read"
    assert secrets["admin"] != secrets["read"] and len(secrets["admin"]) >= 32
