"""``spk ctl`` against a real ``spk serve`` process (tokens file, platform key, trace, Ctrl-C)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spgs.trust import keygen
from spk_tools.cli import app
from tests.api_helpers import ADMIN, LIVE_CONFIG, READER


@dataclass
class Served:
    url: str
    folder: Path
    process: subprocess.Popen[str]


def _serve(folder: Path) -> Served:
    """Start ``spk serve`` on the live system in ``folder`` (tokens file, platform key, trace)."""
    (folder / "system.toml").write_text(LIVE_CONFIG)
    (folder / "tokens.toml").write_text(
        f'[[token]]\nname = "ops"\nrole = "admin"\ntoken = "{ADMIN}"\n\n'
        f'[[token]]\nname = "viewer"\nrole = "read"\ntoken = "{READER}"\n'
    )
    keygen(folder / "keys", "platform")
    process = subprocess.Popen(
        [sys.executable, "-m", "spk_tools", "serve", "system.toml", "--port", "0", "--tokens", "tokens.toml",
         "--pace", "100", "--platform-key", "keys/platform.key", "--trace", "trace.jsonl"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()
    found = re.search(r"^serving live at (http://127\.0\.0\.1:\d+)/ ", first)
    if found is None:
        process.kill()
        pytest.fail(f"spk serve did not start: {first!r} {process.communicate()[1]!r}")
    return Served(found.group(1), folder, process)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = _serve(tmp_path_factory.mktemp("ctl"))
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.communicate()


def ctl(served: Served, *args: str, token: str | None = ADMIN) -> tuple[int, str, str]:
    options = ["--url", served.url] + (["--token", token] if token else [])
    result = CliRunner().invoke(app, ["ctl", *options, *args], env={"SPK_TOKEN": "", "SPK_URL": ""})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_list(served: Served) -> None:
    code, out, _err = ctl(served, "list", token=READER)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["partition", "state"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "beta", "gamma"]
    code, out, _err = ctl(served, "list", "--json", token=READER)
    assert code == 0 and [p["name"] for p in json.loads(out)["partitions"]] == ["alpha", "beta", "gamma"]


def test_pause_resume_restart(served: Served) -> None:
    code, out, _ = ctl(served, "pause", "alpha")
    assert code == 0 and re.fullmatch(r"alpha: pause: done at virtual time [\d,]+\n", out)
    code, _, err = ctl(served, "pause", "alpha")
    assert code == 1 and err == "error: alpha: pause: ignored: not ready or blocked\n"
    assert ctl(served, "resume", "alpha")[0] == 0
    code, out, _ = ctl(served, "restart", "beta", "--warm")
    assert code == 0 and out.startswith("beta: restart (warm): done")


def test_refusals_are_one_error_line(served: Served) -> None:
    code, _, err = ctl(served, "pause", "alpha", token=READER)
    assert code == 1 and err == "error: token 'viewer' is read-only: this call needs an admin token\n"
    code, _, err = ctl(served, "pause", "nope")
    assert code == 1 and err.startswith("error: no partition named 'nope' (partitions: alpha, beta, gamma)")
    code, _, err = ctl(served, "list", token="wrong-token")
    assert code == 1 and err == "error: unknown token\n"
    code, _, err = ctl(served, "list", token=None)
    assert code == 2 and err.startswith("error: a token is needed")


def test_quote_verifies_with_spk_verify_quote(served: Served) -> None:
    out = served.folder / "quote.json"
    code, _, err = ctl(served, "quote", "gamma", "--nonce", "n-42", "--out", str(out))
    assert code == 0, err
    result = CliRunner().invoke(app, ["verify-quote", str(out), "--nonce", "n-42", "--partition", "gamma",
                                      "--platform-key", str(served.folder / "keys" / "platform.pub")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "quote of gamma verifies" in result.stdout


def test_watch_follows_the_events(served: Served) -> None:
    code, out, _ = ctl(served, "watch", "--count", "3", token=READER)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert re.match(r"t=[\d,]+ frame \d+: alpha \d+%  beta \d+%  gamma \d+%$", lines[0])
    assert lines[1].startswith("states: alpha ")
    code, out, _ = ctl(served, "watch", "--count", "2", "--json", token=READER)
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["qos", "state"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_a_clear_error_without_traceback() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = subprocess.run([sys.executable, "-m", "spk_tools", "ctl", "--url", url, "--token", ADMIN, "list"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (f"error: cannot reach the SPK server at {url}: connection refused "
                             "(is spk serve running there?)\n")  # fmt: skip


def test_ctrl_c_stops_the_server_and_closes_the_trace(tmp_path: Path) -> None:
    served = _serve(tmp_path)
    try:
        assert ctl(served, "pause", "alpha")[0] == 0
        assert ctl(served, "pause", "alpha", token=READER)[0] == 1
        assert ctl(served, "restart", "beta")[0] == 0
        served.process.send_signal(signal.SIGINT)
        out, err = served.process.communicate(timeout=60)
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.communicate()
    assert served.process.returncode == 130, err  # interrupted, as spk launch says it
    assert "Traceback" not in err
    assert re.search(r"stopped at virtual time [\d,]+ after [\d,]+ major frames", out)
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    traced = [(e["partition"], e["args"]["op"], e["args"]["requester"]) for e in events if e["event"] == "management"]
    assert traced == [("alpha", "pause", "api:ops"), ("beta", "restart", "api:ops")]  # the read token changed nothing


def test_update_stages_a_signed_image_and_restarts(tmp_path: Path) -> None:
    from spgs.images import build
    from spgs.trust import load_signing_key, sign_image
    from tests.api_helpers import live_server, signed_system

    config = signed_system(tmp_path, version=2)
    image = tmp_path / "new" / "kernel.bin"
    image.parent.mkdir()
    image.write_bytes(build([("kernel", "bench_hypercall")], tmp_path)[("kernel", "bench_hypercall")])
    key = load_signing_key(tmp_path / "keys" / "vendor.key")
    with live_server(tmp_path, config=config) as live:
        target = Served(live.url, tmp_path, None)  # type: ignore[arg-type]
        sign_image(image, key, name="kernel", kind="kernel", partition="alpha", security_version=1)
        code, _, err = ctl(target, "update", "alpha", str(image))
        assert code == 1 and "rollback: security version 1 is below" in err
        sign_image(image, key, name="kernel", kind="kernel", partition="alpha", security_version=5)
        code, out, err = ctl(target, "update", "alpha", str(image), "--restart")
        assert code == 0, err
        assert out.splitlines() == [
            "alpha: staged kernel kernel (security version 5), loaded at its next restart",
            out.splitlines()[1],
        ]
        assert re.fullmatch(r"alpha: restart: done at virtual time [\d,]+", out.splitlines()[1])
        code, _, err = ctl(target, "update", "alpha", str(tmp_path / "missing.bin"))
        assert code == 2 and "missing.bin" in err
