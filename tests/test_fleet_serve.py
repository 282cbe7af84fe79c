"""``spk fleet FILE --serve``: the fleet's status over the management API while it runs, and after.

A subprocess serves examples/fleet.toml in this process's transport
(``--in-process``: no Ray) at a pace that makes its 30 rounds last a few
seconds; the test polls GET /api/v1/fleet until the round has advanced and
then until the run has ended, checks the final status against the same
run without ``--serve`` (``--json``), the routes of a single system, the
tokens, and that Ctrl-C ends it with a summary line and status 130. Waits
are bounded and nothing is timed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from spgs.fleet.config import load_fleet
from spgs.fleet.runner import LocalTransport, run_fleet
from spk_tools.cli import app
from tests.api_helpers import ADMIN, READER, write_tokens_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fleet.toml"
#: Rounds per second: the example's 30 rounds last at least 3 s of wall time, plenty to see two of them.
PACE = 10
#: Upper bound of any wait (wall seconds): generous, never reached when all is well.
WAIT = 60.0
_SERVING = re.compile(r"^serving fleet (\S+) at (http://\S+/) ")


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]

    def get(self, path: str, token: str | None = ADMIN) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{self.url}api/v1/{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return json.load(answer)

    def refusal(self, path: str, token: str | None = ADMIN, method: str = "GET") -> tuple[int, dict[str, Any]]:
        """The status and JSON body of an answer that must be an error."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{self.url}api/v1/{path}", headers=headers, method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=WAIT)
        return caught.value.code, json.loads(caught.value.read())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    folder = tmp_path
    write_tokens_file(folder)
    command = [sys.executable, "-m", "spk_tools", "fleet", str(EXAMPLE), "--in-process", "--serve", "--port", "0",
               "--tokens", str(folder / "tokens.toml"), "--pace", str(PACE)]  # fmt: skip
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        found = _SERVING.match(first)
        if found is None:
            process.kill()
            _, errors = process.communicate(timeout=WAIT)
            pytest.fail(f"spk fleet --serve did not start: {first!r}\n{errors}")
        assert found.group(1) == "demo"
        yield Served(found.group(2), process)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=WAIT)


def poll(served: Served, done: Any, what: str) -> dict[str, Any]:
    """GET /fleet until ``done(status)``; that status. Bounded by WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        status = served.get("fleet")
        if done(status):
            return status
        assert time.monotonic() < deadline, f"waited {WAIT} s for {what}: {status}"
        time.sleep(0.05)


def demand_at(steps: list[tuple[int, float]], round_: int) -> float:
    return [value for start, value in steps if start <= round_][-1]


def test_the_fleet_runs_served_until_its_end_and_after(served: Served) -> None:
    first = poll(served, lambda s: s["round"] is not None, "the first round")
    assert first["state"] in ("running", "finished") and first["rounds"] == 30 and first["pace"] == PACE
    tokens_and_the_routes_of_a_single_system(served)
    # The round advances while it is served (a machine loaded enough to miss every round but the last
    # sees the run finished at once: nothing to wait for then, never a timeout).
    later = poll(served, lambda s: s["round"] > first["round"] or s["state"] != "running", "the round to advance")
    assert later["round"] > first["round"] or first["state"] == "finished"
    final = poll(served, lambda s: s["state"] != "running", "the end of the run")
    assert final["state"] == "finished" and final["error"] is None and final["round"] == 29, final
    # the same run as without --serve
    expected = json.loads(json.dumps(run_fleet(load_fleet(EXAMPLE), LocalTransport()).metrics))
    assert final["metrics"] == expected
    assert final["imbalance"] == expected["fleet_imbalance_after"]
    # hosts and partitions add up: every partition of the file on exactly one live host, unless declared lost,
    # and each host's load the demand of its partitions in the last round
    desc = load_fleet(EXAMPLE).description
    demands = {p.name: p.demand for p in desc.partition}
    hosted = [p for h in final["hosts"] for p in h["partitions"]]
    assert sorted(hosted + final["metrics"]["fleet_lost_partitions"]) == sorted(demands)
    states = {h["name"]: h["state"] for h in final["hosts"]}
    assert states == {"h0": "up", "h1": "up", "h2": "failed", "h3": "up"}
    for h in final["hosts"]:
        assert h["load"] == pytest.approx(sum(demand_at(demands[p], final["round"]) for p in h["partitions"])), h
        if h["state"] == "failed":
            assert h["partitions"] == [] and h["load"] == 0
    assert any(e["event"] == "restarted" for e in final["events"])
    # the final status stays served, until Ctrl-C
    assert served.get("fleet", READER) == final
    served.process.send_signal(signal.SIGINT)
    out, errors = served.process.communicate(timeout=WAIT)
    assert served.process.returncode == 130, errors
    assert re.fullmatch(r"fleet demo: stopped serving after 30 rounds of 30 \(the run had ended\), "
                        r"imbalance [0-9.]+, \d+ live migrations?", out.strip()), out  # fmt: skip
    assert "Traceback" not in errors


def tokens_and_the_routes_of_a_single_system(served: Served) -> None:
    """While it runs: the tokens as on spk serve, and a clear 404 from every route of a system."""
    assert served.refusal("fleet", token=None)[0] == 401
    assert served.refusal("fleet", token="not-a-token")[0] == 401
    assert served.get("whoami", READER) == {"name": "viewer", "role": "read", "serves": "fleet"}
    assert served.get("whoami") == {"name": "ops", "role": "admin", "serves": "fleet"}
    for method, path in [("GET", "system"), ("GET", "partitions"), ("GET", "partitions/p1"), ("GET", "qos"),
                         ("GET", "events"), ("GET", "trust/keys"), ("POST", "partitions/p1/pause")]:  # fmt: skip
        status, body = served.refusal(path, method=method)
        assert status == 404, (path, body)
        assert body["error"]["code"] == "not_found" and "runs a fleet, not a system" in body["error"]["message"]
    # a mutation with a read token: refused for its role first, as on spk serve
    status, body = served.refusal("partitions/p1/pause", token=READER, method="POST")
    assert status == 403 and body["error"]["code"] == "forbidden"
    # unauthenticated: 401 before anything says there is no system
    assert served.refusal("system", token=None)[0] == 401


def test_bad_options_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args, message in [(["--serve", "--json"], "--serve shows the fleet in the web console: it takes no --json"),
                          (["--serve", "--plot", "p.png"], "it takes no --json or --plot"),
                          (["--tokens", "t.toml"], "--host and --tokens go with --serve"),
                          (["--serve", "--port", "0", "--tokens", "missing.toml"], "missing.toml")]:  # fmt: skip
        result = runner.invoke(app, ["fleet", str(EXAMPLE), "--in-process", *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and message in result.output, (args, result.output)
        assert "serving" not in result.output
