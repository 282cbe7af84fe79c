"""The fleet's local rules, its file's errors, and its runs in one process (no Ray: see test_fleet_ray.py).

The rules are checked against the property the convergence argument of
docs/fleet.md rests on: whatever hosts offer and accept in a round, applied
in any order, every move lowers Φ = Σ load²/capacity. Config errors name the
file, the line (looked up in the test's own text), the field and the rule.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spgs.config import ConfigError
from spgs.fleet.config import load_fleet
from spgs.fleet.rules import HostLoad, accept_offers, choose_offers, neighbours
from spgs.fleet.runner import LocalTransport, run_fleet, scaling_description

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fleet.toml"

SMALL = """
[fleet]
name = "small"
seed = 3
rounds = 12
round_ticks = 5_000
neighbours = 3
checkpoint_every = 3
host_memory = "8MiB"

[[host]]
name = "a"
capacity = 4

[[host]]
name = "b"
capacity = 4

[[host]]
name = "c"
capacity = 4
fail = 8

[[host]]
name = "d"
capacity = 4

[[partition]]
name = "w0"
host = "a"
demand = [[0, 1.0]]

[[partition]]
name = "w1"
host = "a"
demand = [[0, 1.0]]

[[partition]]
name = "w2"
host = "a"
demand = [[0, 1.0]]

[[partition]]
name = "w3"
host = "a"
demand = [[0, 1.0], [4, 2.0]]
"""


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, nth: int = 0) -> int:
    found = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if needle in line]
    assert len(found) > nth, f"{needle!r} not in the test's file"
    return found[nth]


def problems(path: Path) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    for p in info.value.problems:
        assert p.file == str(path)
    return [(p.line, p.field, p.rule) for p in info.value.problems]


# -- the neighbour graph -------------------------------------------------------------
@pytest.mark.parametrize(("hosts", "k"), [(4, 3), (6, 3), (16, 4), (64, 3), (64, 4), (7, 2)])
def test_every_host_has_exactly_k_neighbours_and_the_graph_is_symmetric(hosts: int, k: int) -> None:
    names = [f"h{i}" for i in range(hosts)]
    graph = neighbours(names, k, seed=11)
    assert all(len(graph[h]) == k and h not in graph[h] for h in names)
    assert all(h in graph[n] for h in names for n in graph[h])
    assert graph == neighbours(list(reversed(names)), k, seed=11)  # a function of the set and the seed
    reached, frontier = {"h0"}, ["h0"]
    while frontier:
        frontier = [n for h in frontier for n in graph[h] if n not in reached]
        reached.update(frontier)
    assert reached == set(names)  # connected: balance can spread everywhere


def test_a_graph_that_cannot_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly 3 neighbours"):
        neighbours(["a", "b", "c"], 3, seed=0)
    with pytest.raises(ValueError, match="exactly 3 neighbours"):
        neighbours([f"h{i}" for i in range(5)], 3, seed=0)


# -- the rules: every accepted move lowers Φ ------------------------------------------------
def phi(loads: dict[str, float], capacity: dict[str, float]) -> float:
    return sum(loads[h] ** 2 / capacity[h] for h in loads)


hosts_strategy = st.lists(
    st.tuples(st.sampled_from([2.0, 4.0, 8.0]), st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), max_size=8)),
    min_size=2, max_size=6,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(hosts_strategy, st.sampled_from([0.0, 0.05, 0.2]))
def test_the_moves_of_a_round_lower_phi(spec: list[tuple[float, list[float]]], hysteresis: float) -> None:
    """All hosts offer and answer at once; the round's moves, taken by source in its order, each lower Φ.

    So the round as a whole lowers Φ by at least the sum of the steps (docs/fleet.md, why it converges).
    """
    names = [f"h{i}" for i in range(len(spec))]
    capacity = {n: c for n, (c, _) in zip(names, spec, strict=True)}
    owned = {n: [(f"{n}p{j}", d) for j, d in enumerate(parts)] for n, (_, parts) in zip(names, spec, strict=True)}
    loads = {n: sum(d for _, d in owned[n]) for n in names}
    view = {n: HostLoad(n, loads[n], capacity[n]) for n in names}
    offers = [o for n in names for o in choose_offers(view[n], owned[n], [view[m] for m in names if m != n],
                                                      band_low=0.1, band_high=0.9, hysteresis=hysteresis)]
    taken_by: dict[tuple[str, str], list[str]] = {}
    for n in names:
        for offer, taken in accept_offers(view[n], [o for o in offers if o.target == n], band_high=0.9,
                                          hysteresis=hysteresis):
            taken_by[(offer.source, offer.target)] = taken
    moves = [(o.source, o.target, d, o.mode) for o in offers for name, d in o.partitions
             if name in taken_by[(o.source, o.target)]]  # offers are by source, each in its own order
    before = phi(loads, capacity)
    for source, target, demand, mode in moves:
        step = dict(loads)
        step[source] -= demand
        step[target] += demand
        margin = 2 * demand * hysteresis if mode == "balance" else 0.0  # Δ = -2·d·gain, gain > what the mode asks
        assert phi(step, capacity) < phi(loads, capacity) - margin + 1e-9
        loads = step
    assert phi(loads, capacity) <= before + 1e-9


def test_a_host_below_its_band_sheds_nothing_and_one_above_it_sheds() -> None:
    me = HostLoad("a", 0.5, 4.0)
    assert choose_offers(me, [("p", 0.5)], [HostLoad("b", 0.0, 4.0)], band_low=0.2, band_high=0.9,
                         hysteresis=0.0) == []  # fmt: skip
    hot = HostLoad("a", 8.0, 4.0)
    offers = choose_offers(hot, [(f"p{i}", 1.0) for i in range(8)], [HostLoad("b", 0.0, 4.0)], band_low=0.2,
                           band_high=0.9, hysteresis=0.05)  # fmt: skip
    assert len(offers) == 1 and offers[0].mode == "shed" and len(offers[0].partitions) == 4  # to even: 4 and 4


# -- the file's errors ----------------------------------------------------------------
def test_the_example_fleet_is_valid() -> None:
    loaded = load_fleet(EXAMPLE)
    assert len(loaded.description.host) == 4
    assert {p.host for p in loaded.description.partition} == {"h0"}  # one host carries everything


def test_field_errors_name_line_field_and_rule(tmp_path: Path) -> None:
    text = SMALL.replace("capacity = 4\n", "capacity = -1\n", 1).replace('demand = [[0, 1.0]]', 'demand = "lots"', 1)
    path = write(tmp_path, text)
    found = problems(path)
    assert (line_of(path, "capacity = -1"), "host.0.capacity", "greater_than") in found
    assert (line_of(path, 'demand = "lots"'), "partition.0.demand", "list_type") in found


@pytest.mark.parametrize(
    ("change", "needle", "field", "rule"),
    [
        (('host = "a"\ndemand = [[0, 1.0]]', 'host = "zz"\ndemand = [[0, 1.0]]'), 'host = "zz"', "partition.0.host",
         "unknown_host"),
        (('name = "b"', 'name = "a"'), 'name = "a"', "host.1.name", "duplicate_name"),
        (("fail = 8", "fail = 99"), "fail = 99", "host.2.fail", "event_round"),
        (("[[0, 1.0], [4, 2.0]]", "[[1, 1.0], [4, 2.0]]"), "[[1, 1.0]", "partition.3.demand", "demand_order"),
        (("neighbours = 3", "neighbours = 5"), "neighbours = 5", "fleet.neighbours", "neighbours_range"),
        (('host_memory = "8MiB"', 'host_memory = "1MiB"'), 'host_memory = "1MiB"', "fleet.host_memory",
         "host_memory_size"),
    ],
)  # fmt: skip
def test_rules_across_fields_name_line_field_and_rule(
    tmp_path: Path, change: tuple[str, str], needle: str, field: str, rule: str
) -> None:
    old, new = change
    assert old in SMALL
    path = write(tmp_path, SMALL.replace(old, new, 1))
    nth = 1 if field == "host.1.name" else 0
    assert (line_of(path, needle, nth), field, rule) in problems(path)


def test_toml_syntax_and_a_missing_file_are_config_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[fleet\nname = 1\n")
    assert problems(path)[0][2] == "toml_syntax"
    assert problems(tmp_path / "absent.toml") == [(None, "-", "readable_file")]


# -- runs in this process -------------------------------------------------------------------
def test_the_same_file_and_seed_give_the_same_report_and_another_seed_other_decisions(tmp_path: Path) -> None:
    six = SMALL.replace('name = "d"\ncapacity = 4\n', 'name = "d"\ncapacity = 4\n\n[[host]]\nname = "e"\n'
                        'capacity = 4\n\n[[host]]\nname = "f"\ncapacity = 4\n')  # fmt: skip
    path = write(tmp_path, six)
    first = run_fleet(load_fleet(path), LocalTransport())
    again = run_fleet(load_fleet(path), LocalTransport())
    assert json.dumps(first.as_dict(), sort_keys=True) == json.dumps(again.as_dict(), sort_keys=True)
    other = load_fleet(path)
    other.description.fleet.seed = 4
    changed = run_fleet(other, LocalTransport())
    assert changed.neighbours != first.neighbours  # the seed draws the neighbour graph


def test_messages_per_host_per_round_stay_constant_from_4_to_64_hosts() -> None:
    loaded = load_fleet(EXAMPLE)
    assert loaded.description.scaling is not None
    rates = {}
    for hosts in (4, 64):
        report = run_fleet(loaded, LocalTransport(), description=scaling_description(loaded.description, hosts))
        rates[hosts] = report.metrics["fleet_msgs_per_host_round"]
        assert report.metrics["fleet_lost_partitions"] == []
        assert report.history[0].imbalance >= 2.0  # an uneven start: there is work to move
        assert report.metrics["fleet_migrations"] > 0
        assert len(report.neighbours) == hosts and {len(v) for v in report.neighbours.values()} == {3}
    assert abs(rates[64] - rates[4]) <= 0.1 * rates[4], rates


def test_a_host_that_joins_takes_work_and_one_that_leaves_hands_its_work_on(tmp_path: Path) -> None:
    text = SMALL.replace("fail = 8", "leave = 6")
    text = text.replace('name = "d"\ncapacity = 4\n', 'name = "d"\ncapacity = 4\njoin = 3\n')
    report = run_fleet(load_fleet(write(tmp_path, text)), LocalTransport())
    assert "d" not in report.history[2].hosts and report.history[3].hosts["d"]["load"] == 0
    assert any(e["event"] == "arrived" and e["host"] == "d" for e in report.events)  # the newcomer got work
    left = [e for e in report.events if e["event"] == "left"]
    assert [e["host"] for e in left] == ["c"]
    assert "c" not in report.history[-1].hosts
    everywhere = sorted(p for h in report.history[-1].hosts.values() for p in h["partitions"])
    assert everywhere == ["w0", "w1", "w2", "w3"]  # nothing lost, nothing twice
    assert report.metrics["fleet_lost_partitions"] == []


def test_the_status_for_the_management_api(tmp_path: Path) -> None:
    from spgs.fleet import FleetStatus

    loaded = load_fleet(write(tmp_path, SMALL))
    status = FleetStatus("small", ["a", "b", "c", "d"])
    seen: list[dict[str, object]] = []
    run_fleet(loaded, LocalTransport(), status=status, on_round=lambda s: seen.append(s.status()))
    assert len(seen) == 12 and seen[0]["round"] == 0
    final = status.status()
    assert final["round"] == 11 and final["name"] == "small"
    hosts = {h["name"]: h for h in final["hosts"]}
    assert hosts["c"]["state"] == "failed" and hosts["c"]["partitions"] == []
    assert {h["state"] for n, h in hosts.items() if n != "c"} == {"up"}
    assert sorted(p for h in hosts.values() for p in h["partitions"]) == ["w0", "w1", "w2", "w3"]
    assert all(set(h) >= {"name", "load", "capacity", "partitions"} for h in final["hosts"])
    assert any(e["event"] == "failed" for e in final["events"])
    json.dumps(final)  # plain data, ready to serve


class _KeptHosts(LocalTransport):
    """The in-process transport, its hosts kept after the run (to look at their machines)."""

    def close(self) -> None:
        pass


def test_a_partition_that_moved_in_the_fleet_is_attested_by_its_new_host() -> None:
    from nacl.signing import VerifyKey

    from spgs.trust import key_id, verify_quote

    loaded = load_fleet(EXAMPLE)
    transport = _KeptHosts()
    report = run_fleet(loaded, transport)
    last = {e["partition"]: e for e in report.of_kind("migrated")}
    name, move = sorted(last.items())[0]
    host = transport.hosts[move["target"]]
    pid = next(pid for pid in host.machine.partitions if host.machine.info(pid).name == name)
    quote = host.machine.quote(pid, b"fleet-nonce")
    key = host.machine.attestation_public_key
    assert key is not None
    assert verify_quote(quote, platform_key=VerifyKey(key), nonce=b"fleet-nonce", partition=name) == []
    other = transport.hosts[move["host"]].machine.attestation_public_key
    assert other is not None and other != key  # each host signs with its own key
    assert verify_quote(quote, platform_key=VerifyKey(other), nonce=b"fleet-nonce", partition=name) != []
    moves = [e["description"] for e in json.loads(quote)["log"] if e["type"] == "migrated"]
    assert moves and f"to platform {key_id(key)} " in moves[-1]  # the move, in its measurement log


PAIR = """
[fleet]
name = "pair"
rounds = 8
round_ticks = 5_000
neighbours = 1
suspect_after = 1
max_precopy_rounds = MAX_ROUNDS
stop_frames = STOP_FRAMES
host_memory = "8MiB"

[[host]]
name = "a"
capacity = 2

[[host]]
name = "b"
capacity = 2
fail = 2

[[partition]]
name = "w0"
host = "a"
demand = [[0, 1.0]]

[[partition]]
name = "w1"
host = "a"
demand = [[0, 1.0]]
"""


@pytest.mark.parametrize(("max_rounds", "stop_frames", "stopped"), [(1, 0, True), (8, 0, False)])
def test_when_the_destination_dies_mid_migration_the_partition_runs_on_at_its_source(
    tmp_path: Path, max_rounds: int, stop_frames: int, stopped: bool
) -> None:
    """Stopped and copied but never acknowledged: it comes back as it left; still in pre-copy: it never left."""
    text = PAIR.replace("MAX_ROUNDS", str(max_rounds)).replace("STOP_FRAMES", str(stop_frames))
    report = run_fleet(load_fleet(write(tmp_path, text)), LocalTransport())
    aborted = [e for e in report.events if e["event"] == "migration_aborted"]
    assert aborted and all(e["host"] == "a" and e["target"] == "b" and e["stopped"] is stopped for e in aborted)
    assert report.of_kind("migrated") == [] and report.metrics["fleet_lost_partitions"] == []
    last = report.history[-1].hosts
    assert list(last) == ["a"] and last["a"]["partitions"] == ["w0", "w1"]
    # Back on its source, it goes on from where it stopped: its count never goes back.
    counts = [r.hosts["a"]["instructions"].get("w0") for r in report.history]
    known = [c for c in counts if c is not None]
    assert known == sorted(known) and known[-1] > known[0]
