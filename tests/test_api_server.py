"""The management API against a live server: reads, mutations through the policy, the trace, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey

from spgs.control import Controller
from spgs.system import load_and_plan
from spgs.trust import verify_quote
from spk import MachineEvent, TraceWriter
from spk_tools.api import models
from tests.api_helpers import LIVE_CONFIG, Live, live_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with live_server(tmp_path_factory.mktemp("api")) as server:
        yield server


def _state(live: Live, name: str) -> str:
    with live.client() as client:
        return str(client.get(f"/partitions/{name}").json()["state"])


def test_partitions_listed_in_file_order_with_their_qos(live: Live) -> None:
    with live.client() as client:
        answer = client.get("/partitions")
    assert answer.status_code == 200
    listed = models.PartitionList.model_validate(answer.json()).partitions
    assert [p.name for p in listed] == ["alpha", "beta", "gamma"]
    alpha = listed[0]
    assert alpha.memory == 256 * 1024 and alpha.window == 10_000 and alpha.quota_frames == 64
    assert alpha.qos.allocated_share == pytest.approx(10_000 / 40_000)


def test_system_describes_the_schedule(live: Live) -> None:
    with live.client() as client:
        info = models.SystemInfo.model_validate(client.get("/system").json())
    assert info.name == "live" and info.major_frame == 40_000 and not info.fleet
    assert [(w.partition, w.start, w.duration) for w in info.windows] == [
        ("alpha", 0, 10_000), ("beta", 10_000, 20_000), ("gamma", 30_000, 10_000),
    ]  # fmt: skip


def test_unknown_partition_is_404_naming_it(live: Live) -> None:
    with live.client() as client:
        for method, path in (("GET", "/partitions/nope"), ("POST", "/partitions/nope/pause"),
                             ("DELETE", "/partitions/nope")):  # fmt: skip
            answer = client.request(method, path)
            assert answer.status_code == 404, (method, path)
            error = answer.json()["error"]
            assert error["code"] == "not_found" and error["field"] == "path.name" and "'nope'" in error["message"]


def test_pause_resume_through_the_policy_and_into_the_trace(live: Live) -> None:
    with live.client() as client:
        paused = client.post("/partitions/alpha/pause")
        assert paused.status_code == 200, paused.text
        result = models.OperationResult.model_validate(paused.json())
        assert result.outcome == "done" and result.requester == "api:ops"
        assert _state(live, "alpha") == "paused"
        again = client.post("/partitions/alpha/pause")  # the policy ignores it: a conflict, nothing changed
        assert again.status_code == 409
        assert again.json()["error"] == {"code": "conflict", "field": None,
                                         "message": "alpha: pause: ignored: not ready or blocked"}  # fmt: skip
        resumed = client.post("/partitions/alpha/resume")
        assert resumed.status_code == 200 and _state(live, "alpha") == "ready"
        assert resumed.json()["seq"] > result.seq and resumed.json()["t"] >= result.t


def test_restart_cold_and_warm_and_bad_mode(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        cold = client.post("/partitions/beta/restart")
        warm = client.post("/partitions/beta/restart", json={"mode": "warm"})
        assert cold.status_code == 200 and warm.status_code == 200, (cold.text, warm.text)
        assert warm.json()["op"] == "restart (warm)"
        assert client.get("/partitions/beta").json()["restarts"] == 2
        bad = client.post("/partitions/beta/restart", json={"mode": "hot"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid" and bad.json()["error"]["field"] == "body.mode"
        extra = client.post("/partitions/beta/restart", json={"mode": "cold", "force": True})
        assert extra.status_code == 422 and extra.json()["error"]["field"] == "body.force"
        not_json = client.post("/partitions/beta/restart", content=b"{", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and not_json.json()["error"]["code"] == "invalid"
    events = [e for e in live.trace_events() if e["event"] == "management"]
    assert [(e["partition"], e["args"]["op"], e["args"].get("mode"), e["args"]["requester"]) for e in events] == [
        ("beta", "restart", None, "api:ops"), ("beta", "restart", "warm", "api:ops"),
    ]  # fmt: skip


def test_stop_destroy_start(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        assert client.post("/partitions/alpha/stop").status_code == 200
        assert _state(live, "alpha") == "stopped"
        assert client.delete("/partitions/alpha").status_code == 200
        gone = client.get("/partitions/alpha").json()
        assert gone["state"] == "declared" and gone["frames_used"] == 0
        assert client.post("/partitions/alpha/pause").status_code == 409  # not running
        assert client.post("/partitions/alpha/start").status_code == 200
        assert _state(live, "alpha") == "ready"
        assert client.post("/partitions/alpha/start").json()["error"]["message"] == (
            "alpha: start: ignored: already running"
        )


def test_trace_records_every_mutation_with_its_requester(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        outcomes = [client.post(f"/partitions/gamma/{op}").status_code for op in ("pause", "resume", "stop")]
    traced = [e for e in live.trace_events() if e["event"] == "management"]
    assert len(traced) == len(outcomes) == 3
    assert all(e["args"]["requester"] == "api:ops" for e in traced)


def test_quote_verifies_with_the_platform_key(live: Live) -> None:
    with live.client() as client:
        keys = client.get("/trust/keys").json()
        answer = client.post("/partitions/gamma/quote", json={"nonce": b"fresh".hex()})
        assert answer.status_code == 200, answer.text
        bad = client.post("/partitions/gamma/quote", json={"nonce": "xyz"})
    platform = VerifyKey(bytes.fromhex(keys["platform_key"]))
    quote = json.dumps(answer.json()["quote"]).encode()
    assert verify_quote(quote, platform_key=platform, nonce=b"fresh", partition="gamma") == []
    assert verify_quote(quote, platform_key=platform, nonce=b"other", partition="gamma") != []
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "body.nonce"


def test_qos_and_prometheus_metrics(live: Live) -> None:
    with live.client() as client:
        while client.get("/partitions/gamma").json()["state"] != "exited":  # its one app is done in a few frames
            assert client.get("/system").json()["now"] < 50_000_000
        qos = models.QosSnapshot.model_validate(client.get("/qos").json())
        text = client.get("/metrics").text
        root = client.get(f"{live.url}/metrics").text
    assert set(qos.partitions) == {"alpha", "beta", "gamma"}
    assert 'spk_partition_cpu_share{partition="alpha"}' in text and "spk_virtual_time_ticks" in text
    assert 'spk_partition_state{partition="gamma",state="exited"} 1.0' in root


def test_event_stream_sends_qos_state_and_management(live: Live) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    with live.client() as client, client.stream("GET", "/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line[6:])))
                if len(seen) == 2:
                    with live.client() as other:
                        assert other.post("/partitions/beta/pause").status_code == 200
                        assert other.post("/partitions/beta/resume").status_code == 200
                resumed = any(k == "management" and d["op"] == "resume" for k, d in seen)
                if resumed and any(k == "health" and d["event"] == "overrun" for k, d in seen):
                    break
                assert len(seen) < 10_000, "no management or health event in the stream"
    assert [k for k, _ in seen[:2]] == ["qos", "state"]
    management = [d for k, d in seen if k == "management"]
    assert [(d["partition"], d["op"], d["requester"]) for d in management] == [
        ("beta", "pause", "api:ops"), ("beta", "resume", "api:ops"),
    ]  # fmt: skip
    assert any(k == "health" and d["event"] == "overrun" for k, d in seen)


class _Fleet:
    """A fleet as spk fleet would hand it: its status from real placements (a round of a simple balancer)."""

    def __init__(self, partitions: list[str]) -> None:
        self.hosts: dict[str, list[str]] = {"h0": [], "h1": []}
        for i, name in enumerate(partitions):
            self.hosts[f"h{i % 2}"].append(name)

    def status(self) -> dict[str, Any]:
        return {"round": 1, "events": [], "hosts": [
            {"name": h, "load": len(ps) / 4, "capacity": 4, "partitions": ps} for h, ps in self.hosts.items()
        ]}  # fmt: skip


class _BrokenFleet:
    def status(self) -> dict[str, Any]:
        raise RuntimeError("the fleet's status failed")


def test_fleet_when_served_and_404_otherwise(tmp_path: Path, live: Live) -> None:
    with live.client() as client:
        missing = client.get("/fleet")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    with live_server(tmp_path, fleet=_Fleet(["alpha", "beta", "gamma"])) as served, served.client() as client:
        assert client.get("/system").json()["fleet"] is True
        assert client.get("/fleet").json()["hosts"][0]["partitions"] == ["alpha", "gamma"]


def test_a_bug_is_a_500_json_error_without_traceback(tmp_path: Path) -> None:
    with live_server(tmp_path, fleet=_BrokenFleet()) as served, served.client() as client:
        answer = client.get("/fleet")
    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "internal", "field": None,
                                       "message": "internal error (the server's log has the details)"}}  # fmt: skip
    assert "Traceback" not in answer.text


def test_unknown_route_and_method_are_json_errors(live: Live) -> None:
    with live.client() as client:
        route = client.get("/no/such/thing")
        method = client.put("/partitions/alpha/pause")
    assert route.status_code == 404 and route.json()["error"]["code"] == "not_found"
    assert method.status_code in (404, 405) and "error" in method.json()


def test_same_mutations_at_the_same_windows_give_the_same_run(tmp_path: Path) -> None:
    """Virtual time never depends on the wall clock: a mutation applied after window k gives one run."""
    first = _replay(tmp_path / "1")
    second = _replay(tmp_path / "2")
    assert first == second
    assert any('"op":"pause"' in line for line in first)


def _replay(tmp_path: Path) -> list[str]:
    tmp_path.mkdir()
    path = tmp_path / "system.toml"
    path.write_text(LIVE_CONFIG)
    loaded, plans = load_and_plan(path)
    out = tmp_path / "trace.jsonl"
    with out.open("w") as stream:
        writer = TraceWriter(stream)
        writer(MachineEvent(0, "-", "system", {}))
        controller = Controller.boot(loaded, plans, trace=writer, max_ticks=400_000)
        # Queued before the run starts: applied after its first window, whatever the wall clock says.
        futures = [controller.operate("alpha", "pause", requester="api:test"),
                   controller.operate("beta", "restart", requester="api:test", warm=True)]  # fmt: skip
        controller.start()
        applied = [f.result(30) for f in futures]
        assert [a.windows for a in applied] == [1, 1]
        while not controller.view.system["over"]:
            controller.call("-", "wait", lambda _s: None, requester="api:test").result(30)
        controller.close()
    return out.read_text().splitlines()


def test_patch_window_changes_the_schedule_at_the_next_major_frame(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        changed = client.patch("/partitions/alpha", json={"window": 20_000})
        assert changed.status_code == 200, changed.text
        system = client.get("/system").json()
        assert system["major_frame"] == 50_000
        assert system["windows"][:2] == [{"partition": "alpha", "start": 0, "duration": 20_000},
                                         {"partition": "beta", "start": 20_000, "duration": 20_000}]  # fmt: skip
        too_short = client.patch("/partitions/alpha", json={"window": 10})
        nothing = client.patch("/partitions/alpha", json={})
        unknown = client.patch("/partitions/alpha", json={"windows": 3})
    assert too_short.status_code == 422 and too_short.json()["error"]["field"] == "body.window"
    assert nothing.status_code == 422 and unknown.json()["error"]["field"] == "body.windows"
    at = changed.json()["t"]
    assert at % 40_000 == 0  # applied between two major frames
    for w in (e for e in live.trace_events() if e["event"] == "window"):
        frame_start = at + (w["t"] - at) // 50_000 * 50_000 if w["t"] >= at else w["t"] // 40_000 * 40_000
        expected = {"alpha": (0, 20_000), "beta": (20_000, 20_000), "gamma": (40_000, 10_000)} if w["t"] >= at \
            else {"alpha": (0, 10_000), "beta": (10_000, 20_000), "gamma": (30_000, 10_000)}
        start, duration = expected[w["partition"]]
        assert (w["t"] - frame_start, w["args"]["end"] - w["t"]) == (start, duration), w
    traced = [e["args"] for e in live.trace_events() if e["event"] == "management"]
    assert traced[0] == {"requester": "api:ops", "op": "set", "outcome": "done", "window": 20_000}


def test_patch_memory_within_the_rules(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        over = client.patch("/partitions/alpha", json={"memory": "14MiB"})
        assert over.status_code == 409
        assert "[quota_exceeds_ram]" in over.json()["error"]["message"]
        assert over.json()["error"]["field"] == "system.memory"
        odd = client.patch("/partitions/alpha", json={"memory": 5000})
        assert odd.status_code == 422 and odd.json()["error"]["field"] == "body.memory"
        assert client.patch("/partitions/alpha", json={"memory": "512KiB"}).status_code == 200
        assert client.get("/partitions/alpha").json()["memory"] == 512 * 1024
        # Effective when it next starts: destroy, start, and its quota is the new one.
        assert client.delete("/partitions/alpha").status_code == 200
        assert client.post("/partitions/alpha/start").status_code == 200
        assert client.get("/partitions/alpha").json()["quota_frames"] == 128
    outcomes = [e["args"]["outcome"] for e in live.trace_events() if e["event"] == "management"]
    assert outcomes[0].startswith("refused: the configuration does not allow it")
    assert outcomes[1].startswith("refused: memory: must be a multiple of 4 KiB") and outcomes[2:] == ["done"] * 3


def test_create_a_partition_within_the_rules(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        body = {"name": "delta", "image": "bench_compute", "memory": "256KiB", "window": 10_000}
        created = client.post("/partitions", json=body)
        assert created.status_code == 201, created.text
        delta = client.get("/partitions/delta").json()
        assert delta["state"] == "ready" and delta["window"] == 10_000
        assert client.get("/system").json()["windows"][-1] == {"partition": "delta", "start": 40_000,
                                                               "duration": 10_000}  # fmt: skip
        assert client.post("/partitions", json=body).status_code == 409  # the name is taken
        path = client.post("/partitions", json={**body, "name": "eps", "image": "../x.asm"})
        role = client.post("/partitions", json={**body, "name": "eps", "role": "system"})
        big = client.post("/partitions", json={**body, "name": "eps", "memory": "15MiB"})
        bad_name = client.post("/partitions", json={**body, "name": "Eps!"})
    assert path.status_code == 422 and path.json()["error"]["field"] == "body.image"
    assert role.status_code == 422 and role.json()["error"]["field"] == "body.role"
    assert big.status_code == 409 and "[quota_exceeds_ram]" in big.json()["error"]["message"]
    assert bad_name.status_code == 422 and bad_name.json()["error"]["field"] == "body.name"
    windows = [e for e in live.trace_events() if e["event"] == "window" and e["partition"] == "delta"]
    at = created.json()["t"]  # the end of a major frame: the new schedule's frames start there
    assert windows and all((w["t"] - at) % 50_000 == 40_000 for w in windows)


def test_upload_a_signed_image_staged_until_the_restart(tmp_path: Path) -> None:
    from tests.api_helpers import signed_system, signed_upload

    config = signed_system(tmp_path, version=2)
    with live_server(tmp_path, config=config) as live, live.client() as client:
        assert client.get("/partitions/alpha").json()["state"] == "ready"
        rollback = client.post("/partitions/alpha/image", json=signed_upload(tmp_path, "bench_hypercall", version=1))
        assert rollback.status_code == 409 and rollback.json()["error"]["code"] == "refused"
        assert "rollback: security version 1 is below" in rollback.json()["error"]["message"]
        other = client.post("/partitions/alpha/image",
                            json=signed_upload(tmp_path, "bench_hypercall", partition="beta", version=3))
        assert "wrong_slot" in other.json()["error"]["message"]
        tampered = signed_upload(tmp_path, "bench_hypercall", version=4)
        tampered["image"] = signed_upload(tmp_path, "bench_yield", version=4)["image"]
        assert "tampered" in client.post("/partitions/alpha/image", json=tampered).json()["error"]["message"]
        bad = client.post("/partitions/alpha/image", json={**tampered, "manifest": "%%%"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "body.manifest"
        staged = client.post("/partitions/alpha/image", json=signed_upload(tmp_path, "bench_hypercall", version=3))
        assert staged.status_code == 200, staged.text
        assert staged.json()["staged_image"]["security_version"] == 3
        before = client.get("/partitions/alpha").json()
        assert before["staged_image"]["security_version"] == 3 and before["counters"]["hypercalls"] == 0
        assert client.post("/partitions/alpha/restart").status_code == 200
        after = client.get("/partitions/alpha").json()
        assert after["staged_image"] is None
        while client.get("/partitions/alpha").json()["counters"]["hypercalls"] == 0:  # bounded: the run goes on
            assert client.get("/system").json()["now"] < 100_000_000
        # Rollback protection now counts the image it runs: version 2 (the boot image's) is refused.
        again = client.post("/partitions/alpha/image", json=signed_upload(tmp_path, "bench_compute", version=2))
        assert "rollback" in again.json()["error"]["message"]
    traced = [e["args"] for e in live.trace_events() if e["event"] == "management"]
    assert [a["outcome"] for a in traced if a["op"] == "stage_image"] == [
        "refused: rollback", "refused: wrong_slot", "refused: tampered", "done", "refused: rollback",
    ]  # fmt: skip


def test_docs_api_md_is_generated_from_the_openapi_document() -> None:
    """docs/api.md is what docgen makes of the current routes: regenerate it when this fails."""
    from spk_tools.api.docgen import render

    path = Path(__file__).parent.parent / "docs" / "api.md"
    assert path.read_text() == render(), "docs/api.md is stale: python -m spk_tools.api.docgen docs/api.md"


def test_openapi_document_lists_every_route_with_its_role() -> None:
    from spk_tools.api.app import openapi_document

    document = openapi_document()
    routes = {(method.upper(), path): op["tags"] for path, item in document["paths"].items()
              for method, op in item.items()}  # fmt: skip
    assert routes[("GET", "/api/v1/partitions")] == ["read"]
    assert routes[("POST", "/api/v1/partitions/{name}/pause")] == ["admin"]
    assert routes[("PATCH", "/api/v1/partitions/{name}")] == ["admin"]
    assert all(tags in (["read"], ["admin"]) for tags in routes.values())
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_an_oversized_body_is_refused_before_it_is_read(live: Live) -> None:
    import socket

    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/partitions/alpha/image HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n")  # fmt: skip
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "too_large"


def test_qos_history_of_the_last_frames(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        while client.get("/system").json()["major_frames"] < 3:  # bounded by the run's own progress
            pass
        history = models.QosHistory.model_validate(client.get("/qos/history", params={"frames": 2}).json()).history
        too_many = client.get("/qos/history", params={"frames": 301})
    assert len(history) == 2 and history[1].major_frames == history[0].major_frames + 1
    assert history[1].now - history[0].now == 40_000
    assert history[1].partitions["beta"].cpu_share == pytest.approx(0.5)  # 20,000 of 40,000, all used
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "query.frames"


def test_console_and_api_headers(live: Live) -> None:
    from spk_tools.api.app import CSP, console_dir

    with live.client() as client:
        api = client.get("/system")
        page = client.get(f"{live.url}/")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api.headers
    assert console_dir() is not None  # the console is package data of spk_tools
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "text/html" in page.headers["content-type"]


def test_channel_rates_in_qos_and_metrics(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "producer_consumer.toml"
    (tmp_path / "system.toml").write_text(example.read_text())
    with live_server(tmp_path, config=tmp_path / "system.toml", max_ticks=1_000_000) as live, live.client() as c:
        while not c.get("/system").json()["over"]:  # bounded: the run ends at max_ticks
            pass
        channels = c.get("/qos").json()["channels"]
        text = c.get("/metrics").text
    assert set(channels) == {"messages", "readings"}
    messages = channels["messages"]
    assert messages["sent"] > 0 and messages["received"] > 0
    assert f'spk_channel_messages_sent_total{{channel="messages"}} {float(messages["sent"])}' in text
    assert channels["readings"]["sent"] > 0 and channels["readings"]["rate"] >= 0
