"""The information-flow graph: who can send data to whom, and the paths a guest must not have.

Nodes are the partitions of the description; an edge is a channel from its
source partition to each destination partition (ring 0 copies messages one
way, so the edge's direction is the only way data moves; a full partition's
end is a serial cable, a UART ring 0 wired to the channel, and the edge is
the same), plus one edge per
frame that two partitions could both reach in the booted system (a frame
mapped by several partitions, or mapped by one and owned by another: the
writer's data reaches the others). Ring 0 shares no data frame, so on a
sound system the second kind never appears.

The security property checked is SPA's: a ``guest`` partition must not be
able to send information to a ``system`` partition, directly or through
other partitions (a transitive path), since the system partition controls
every other partition. Every edge and node on such a path is marked, and
one shortest path per (guest, system) pair is listed.
"""

from __future__ import annotations

from collections import deque

from spgs.config import SystemDescription
from spk.abi import PAGE_SIZE
from spk_review.model import FlowEdge, FlowFacts, FlowNode, MemoryFacts


def _channel_edges(
    desc: SystemDescription, sent: dict[str, int], serial: dict[str, dict[str, str]]
) -> list[FlowEdge]:
    edges = []
    for ch in desc.channel:
        source, _, source_port = ch.source.partition(".")
        for end in ch.destinations:
            destination, _, destination_port = end.partition(".")
            edges.append(
                FlowEdge(
                    channel=ch.name, kind=ch.kind, source=source, source_port=source_port, destination=destination,
                    destination_port=destination_port, message_size=ch.message_size,
                    source_serial=serial.get(source, {}).get(source_port),
                    destination_serial=serial.get(destination, {}).get(destination_port),
                    depth=ch.depth if ch.kind == "queuing" else None,
                    refresh=ch.refresh if ch.kind == "sampling" else None, sent=sent.get(ch.name), on_violation=False,
                )
            )
    return edges


def _frame_edges(memory: MemoryFacts, names: set[str]) -> list[FlowEdge]:
    """Edges for frames two partitions can reach: from each writer to each other party.

    The owner counts as a writer: it may map its own data frame writable at will.
    """
    edges = []
    for region in memory.shared:
        parties: dict[str, bool] = {}
        for m in region.mapped_by:
            parties[m.partition] = parties.get(m.partition, False) or m.writable
        if region.owner in names:
            parties[region.owner] = True
        if len(set(parties) & names) < 2:
            continue
        mfn = region.mfn
        for writer in sorted(p for p, w in parties.items() if w):
            for reader in sorted(set(parties) - {writer}):
                edges.append(
                    FlowEdge(
                        channel=f"frame {mfn:#x}", kind="shared_frame", source=writer, source_port="-",
                        destination=reader, destination_port="-", message_size=region.frames * PAGE_SIZE,
                        source_serial=None, destination_serial=None, depth=None,
                        refresh=None, sent=None, on_violation=False,
                    )
                )
    return edges


def _reach(starts: list[str], step: dict[str, list[str]]) -> set[str]:
    seen = set(starts)
    todo = deque(starts)
    while todo:
        for nxt in step.get(todo.popleft(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _shortest(start: str, edges: list[FlowEdge]) -> dict[str, list[str]]:
    """Breadth-first from ``start``: the path to every reachable node (partition, channel, ...)."""
    paths = {start: [start]}
    todo = deque([start])
    while todo:
        here = todo.popleft()
        for edge in edges:
            if edge.source == here and edge.destination not in paths:
                paths[edge.destination] = [*paths[here], edge.channel, edge.destination]
                todo.append(edge.destination)
    return paths


def flow_graph(
    desc: SystemDescription, memory: MemoryFacts, sent: dict[str, int], serial: dict[str, dict[str, str]] | None = None
) -> FlowFacts:
    """The graph of the description's channels and the booted system's shared frames, with violations marked.

    ``sent`` counts the messages each channel carried during the run (by
    channel name); ``serial`` names, per full partition, the UART ring 0 wired
    to each of its ports (a serial cable is an edge like a paravirtual port).
    """
    roles = {p.name: p.role for p in desc.partition}
    edges = _channel_edges(desc, sent, serial or {}) + _frame_edges(memory, set(roles))
    forward: dict[str, list[str]] = {}
    backward: dict[str, list[str]] = {}
    for edge in edges:
        forward.setdefault(edge.source, []).append(edge.destination)
        backward.setdefault(edge.destination, []).append(edge.source)
    guests = [n for n, r in roles.items() if r == "guest"]
    systems = [n for n, r in roles.items() if r == "system"]
    tainted = _reach(guests, forward)  # a guest can put data there
    exposed = _reach(systems, backward)  # data put there reaches a system partition
    marked = [e.model_copy(update={"on_violation": e.source in tainted and e.destination in exposed}) for e in edges]
    violations = []
    for guest in guests:
        paths = _shortest(guest, edges)
        violations += [paths[s] for s in systems if s in paths and s != guest]
    nodes = [
        FlowNode(name=n, role=r, on_violation=n in tainted and n in exposed)
        for n, r in roles.items()
    ]
    return FlowFacts(nodes=nodes, edges=marked, violations=violations)
