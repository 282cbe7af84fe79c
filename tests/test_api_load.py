"""Load: 200 concurrent clients poll a live server while the system runs, and a burst of mutations lands.

Bounded in count (200 clients x 3 polls, 60 mutations) and in time (an
overall timeout that only guards against a hang); no assertion on speed.
What is checked: every poll answered 200, every mutation answered (done or
a policy refusal, never a 5xx), the mutations applied one at a time in the
order of their sequence numbers, each traced once, the machine's
invariants intact, and every window of the run where the schedule puts it.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path
from typing import Any

import httpx

from spgs.system import System
from tests.api_helpers import ADMIN, READER, Live, live_server

CLIENTS = 200
POLLS = 3
#: One TLS context for every client (each would load the CA bundle: seconds for 200 of them; the URLs are http).
_TLS = ssl.create_default_context()
MUTATIONS = 60
READS = ["/partitions", "/qos", "/system", "/partitions/alpha", "/metrics"]
SCHEDULE = {"alpha": (0, 10_000), "beta": (10_000, 20_000), "gamma": (30_000, 10_000)}
MAJOR_FRAME = 40_000


async def _poll(base: str, index: int) -> list[int]:
    headers = {"Authorization": f"Bearer {READER}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, verify=_TLS) as client:
        statuses = []
        for i in range(POLLS):
            answer = await client.get(READS[(index + i) % len(READS)])
            statuses.append(answer.status_code)
        return statuses


async def _mutate(base: str, orders: list[tuple[str, str]]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, verify=_TLS) as client:

        async def one(name: str, op: str) -> dict[str, Any]:
            body = {"mode": "warm"} if op == "restart" and name == "beta" else None
            answer = await client.post(f"/partitions/{name}/{op}", json=body)
            return {"name": name, "op": op, "status": answer.status_code, "body": answer.json()}

        return list(await asyncio.gather(*(one(name, op) for name, op in orders)))


async def _load(base: str) -> tuple[list[list[int]], list[dict[str, Any]]]:
    rng = random.Random(17)
    orders = [(rng.choice(["alpha", "beta", "gamma"]), rng.choice(["pause", "resume", "restart", "pause"]))
              for _ in range(MUTATIONS)]  # fmt: skip
    polls = asyncio.gather(*(_poll(base, i) for i in range(CLIENTS)))
    burst = _mutate(base, orders)
    polled, mutated = await asyncio.wait_for(asyncio.gather(polls, burst), 300)
    return list(polled), mutated


def test_200_polling_clients_and_a_burst_of_mutations(tmp_path: Path) -> None:
    with live_server(tmp_path, pace=200) as live:
        start = live.controller.view.system["now"]
        polled, mutated = asyncio.run(_load(f"{live.url}/api/v1"))
        assert live.controller.call("-", "check", _invariants, requester="test").result(30).result == "ok"
        assert live.controller.view.system["now"] > start  # the system ran all along
    assert all(status == 200 for statuses in polled for status in statuses)
    assert sum(len(s) for s in polled) == CLIENTS * POLLS
    _check_mutations(mutated)
    _check_trace(live, mutated)


def _invariants(system: System) -> str:
    system.machine.check_invariants()  # frames, mappings, page tables: InternalError if anything is off
    return "ok"


def _check_mutations(mutated: list[dict[str, Any]]) -> None:
    assert len(mutated) == MUTATIONS
    for m in mutated:
        assert m["status"] in (200, 409), m
        if m["status"] == 409:
            assert m["body"]["error"]["code"] == "conflict" and "ignored" in m["body"]["error"]["message"]
    done = sorted((m["body"] for m in mutated if m["status"] == 200), key=lambda b: b["seq"])
    assert done, "no mutation was applied"
    assert len({b["seq"] for b in done}) == len(done)
    # Applied one after the other in sequence order: virtual time and the window count never go back.
    assert [(b["windows"], b["t"]) for b in done] == sorted((b["windows"], b["t"]) for b in done)


def _check_trace(live: Live, mutated: list[dict[str, Any]]) -> None:
    events = live.trace_events()
    management = [e for e in events if e["event"] == "management"]
    assert len(management) == MUTATIONS  # every mutation traced once, refused or not
    assert all(e["args"]["requester"] == "api:ops" for e in management)
    traced_done = [(e["partition"], e["args"]["op"]) for e in management if e["args"]["outcome"] == "done"]
    answered_done = sorted((m for m in mutated if m["status"] == 200), key=lambda m: m["body"]["seq"])
    assert traced_done == [(m["name"], m["op"]) for m in answered_done]  # the trace order is the sequence order
    windows = [e for e in events if e["event"] == "window"]
    assert len(windows) > 3
    end = 0
    for w in windows:
        start, duration = SCHEDULE[w["partition"]]
        assert w["t"] % MAJOR_FRAME == start, w  # each window where the schedule puts it
        assert w["args"]["end"] - w["t"] == duration, w
        assert w["t"] >= end, w  # windows never overlap
        end = w["args"]["end"]
