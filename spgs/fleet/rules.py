"""The local rules every host follows: whom it talks to, what it offers, what it accepts.

Pure functions of what one host knows (its own load and capacity, the loads
its neighbours gossiped, the fleet file and the seed): no clock, no Ray, no
shared state, so the same inputs give the same decisions on every run and
every machine. docs/fleet.md explains why they converge; in short, every
accepted move lowers ``Φ = Σ load² / capacity`` over the fleet by at least a
fixed amount (the hysteresis), and Φ is bounded below, so moves stop.

The neighbour graph (:func:`neighbours`) gives every host exactly ``k``
neighbours whatever the fleet's size: a host's messages per round depend on
``k``, never on the number of hosts.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLoad:
    """What one host says of itself in its gossip."""

    name: str
    load: float  #: demand it is committed to serve (its partitions, minus those leaving, plus those coming)
    capacity: float
    leaving: bool = False

    @property
    def utilisation(self) -> float:
        return self.load / self.capacity


@dataclass(frozen=True)
class Offer:
    """A host proposes to move some of its partitions to one neighbour (one message, whatever their number)."""

    source: str
    target: str
    partitions: tuple[tuple[str, float], ...]  #: (name, demand), in the order the source chose them
    source_load: float  #: the source's load before these moves, as if its earlier offers were taken
    source_capacity: float
    #: ``balance`` (inside the band: each move's gain must beat the hysteresis), ``shed`` (above the
    #: band: any gain), ``evacuate`` (the source is leaving: its partitions go wherever they fit)
    mode: str


def neighbours(hosts: list[str], k: int, seed: int) -> dict[str, list[str]]:
    """A k-regular neighbour graph over ``hosts`` drawn from ``seed`` (sorted neighbour lists).

    ``k // 2`` Hamiltonian cycles over seed-drawn orders of the hosts, plus a
    perfect matching when ``k`` is odd; draws that would repeat an edge are
    drawn again (a bounded number of times, then the first simple graph
    reachable by a deterministic repair is kept). A union of random cycles is
    an expander with high probability: its diameter grows as log(hosts), so
    balance spreads in few rounds. Errors: ValueError when no k-regular graph
    exists (k >= hosts, or k odd with an odd number of hosts).
    """
    n = len(hosts)
    if k >= n or (k % 2 == 1 and n % 2 == 1):
        raise ValueError(f"no graph where each of {n} hosts has exactly {k} neighbours")
    digest = hashlib.sha256(f"spk-fleet-topology/{seed}/{k}/{','.join(sorted(hosts))}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    for _attempt in range(1000):
        edges: set[frozenset[str]] = set()
        simple = True
        for _cycle in range(k // 2):
            order = sorted(hosts)
            rng.shuffle(order)
            for i, host in enumerate(order):
                edge = frozenset((host, order[(i + 1) % n]))
                if len(edge) < 2 or edge in edges:
                    simple = False
                edges.add(edge)
        if k % 2 == 1:
            order = sorted(hosts)
            rng.shuffle(order)
            for i in range(0, n, 2):
                edge = frozenset((order[i], order[i + 1]))
                if edge in edges:
                    simple = False
                edges.add(edge)
        if simple and (n > 2 or k == 1):
            graph: dict[str, list[str]] = {h: [] for h in hosts}
            for edge in edges:
                a, b = sorted(edge)
                graph[a].append(b)
                graph[b].append(a)
            return {h: sorted(v) for h, v in graph.items()}
    raise ValueError(f"no simple {k}-regular graph found over {n} hosts")  # pragma: no cover - tiny fleets only


def gain(demand: float, source: float, source_capacity: float, target: float, target_capacity: float) -> float:
    """How much moving ``demand`` closes the utilisation gap: Φ's decrease divided by 2·demand.

    ``Φ = Σ load²/capacity``; moving d from a to b changes it by
    ``-2d(u_a - u_b) + d²(1/c_a + 1/c_b)``, so the move helps when
    ``u_a - u_b - d(1/c_a + 1/c_b)/2`` (this function) is positive.
    """
    gap = source / source_capacity - target / target_capacity
    return gap - demand * (1 / source_capacity + 1 / target_capacity) / 2


def _mode(me: HostLoad, load: float, band_low: float, band_high: float, hysteresis: float) -> tuple[str, float]:
    """The rule that applies at ``load``, and the least gain it asks of a move (None: no move)."""
    utilisation = load / me.capacity
    if me.leaving:
        return "evacuate", float("-inf")
    if utilisation <= band_low:
        return "none", float("inf")
    if utilisation > band_high:
        return "shed", 0.0
    return "balance", hysteresis


def choose_offers(
    me: HostLoad,
    movable: list[tuple[str, float]],
    view: list[HostLoad],
    *,
    band_low: float,
    band_high: float,
    hysteresis: float,
) -> list[Offer]:
    """What a host offers this round: at most one offer to each neighbour, of one or more partitions.

    A host at or below its band's low edge never sheds; above the high edge
    it moves whatever lowers Φ (mode ``shed``); inside the band a move must
    close the gap by more than ``hysteresis`` (``balance``); a leaving host
    offers every partition (``evacuate``). Neighbours are taken from the
    least utilised (ties by name); to each the host offers, one at a time,
    the partition whose move lowers Φ most (ties by name), counting on every
    earlier move being taken, while a move still qualifies and the target is
    below the neighbourhood's mean utilisation (this host's and its
    neighbours': the load spreads over all of them, not onto the first). A move judged so
    uses a source load that is a lower bound of the true one (a refusal only
    leaves it higher) and a target load that is exact for this host's
    offers, so every move the target then takes lowers Φ at least as much
    as judged. ``view`` holds the live neighbours as last heard; leaving
    ones get nothing.
    """
    load = me.load
    offers: list[Offer] = []
    remaining = sorted(movable)
    targets = sorted((h for h in view if not h.leaving), key=lambda h: (h.utilisation, h.name))
    # The neighbourhood's mean utilisation (this host and the neighbours it heard): a batch fills a
    # target up to it, not beyond, so an overloaded host spreads its load over all its neighbours at
    # once instead of piling it on the first (local averaging, as in diffusion load balancing).
    mean = (me.load + sum(h.load for h in targets)) / (me.capacity + sum(h.capacity for h in targets))
    for target in targets:
        mode, _needed = _mode(me, load, band_low, band_high, hysteresis)
        if mode == "none":
            break
        start, target_load = load, target.load
        batch: list[tuple[str, float]] = []
        while remaining:
            mode_now, needed = _mode(me, load, band_low, band_high, hysteresis)
            if mode_now != mode:
                break
            best: tuple[float, str, float] | None = None
            if mode != "evacuate" and target_load / target.capacity >= mean:
                break  # the target is at the neighbourhood's mean: the rest is for others
            for name, demand in remaining:
                if demand <= 0 and mode != "evacuate":
                    continue  # moving nothing lowers nothing
                g = gain(demand, load, me.capacity, target_load, target.capacity)
                if mode == "evacuate" and (target_load + demand) / target.capacity > band_high:
                    continue
                if g > needed and (best is None or g > best[0]):
                    best = (g, name, demand)
            if best is None:
                break
            _g, name, demand = best
            batch.append((name, demand))
            load -= demand
            target_load += demand
            remaining = [(n, d) for n, d in remaining if n != name]
        if batch:
            offers.append(Offer(me.name, target.name, tuple(batch), start, me.capacity, mode))
    return offers


def accept_offers(
    me: HostLoad, offers: list[Offer], *, band_high: float, hysteresis: float
) -> list[tuple[Offer, list[str]]]:
    """Which partitions of each offer a host takes; offers in the order of their source's name.

    Each move is judged in turn with this host's load after the moves it
    already took this round (its own outgoing offers are not subtracted:
    an upper bound) and the source's load after the earlier moves of the
    same offer. A ``balance`` or ``shed`` move is taken when it still lowers
    Φ by the gain its mode requires and the host stays inside its band, or
    at least below the source's utilisation after the move (a host takes
    work beyond its band only from one worse off). An ``evacuate`` move is
    taken when the host stays inside its band. A leaving host takes nothing.
    """
    load = me.load
    answers: list[tuple[Offer, list[str]]] = []
    for offer in sorted(offers, key=lambda o: (o.source, o.partitions)):
        taken: list[str] = []
        source_load = offer.source_load
        for name, demand in offer.partitions if not me.leaving else ():
            after = (load + demand) / me.capacity
            if offer.mode == "evacuate":
                ok = after <= band_high
            else:
                needed = hysteresis if offer.mode == "balance" else 0.0
                g = gain(demand, source_load, offer.source_capacity, load, me.capacity)
                source_after = (source_load - demand) / offer.source_capacity
                ok = g > needed and (after <= band_high or after < source_after)
            if ok:
                taken.append(name)
                load += demand
                source_load -= demand
        answers.append((offer, taken))
    return answers
