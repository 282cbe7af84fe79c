"""Draw the information-flow graph as a self-contained SVG (no script, no external asset).

Layout, deterministic for a given graph: partitions connected by a flow are
laid out in columns by their longest distance from a source (edges that
close a cycle, found by a depth-first search in configuration order, do not
count), in configuration order inside a column; data moves left to right.
Edges that go back or stay in their column are drawn as arcs under the
nodes. Partitions no flow touches sit in a row of their own underneath.
Edges and nodes on a path from a guest partition to a system partition are
red and thick; the legend says so. Text is monospace, so its width is known
without a font engine.
"""

from __future__ import annotations

from html import escape

from spk_review.model import FlowEdge, FlowFacts, FlowNode

NODE_H = 48
MARGIN = 24
ROW_GAP = 40
CHAR_W = 6.6  #: width of one character of 11 px monospace
NAME_CHAR_W = 8.4  #: width of one character of 14 px bold monospace
ISOLATED_PER_ROW = 6
ARC_STEP = 24  #: distance between arcs that jump over or go under the nodes
PARALLEL_STEP = 18  #: distance between parallel edges of one pair of partitions
#: A cubic Bézier: start, two control points, end.
Curve = tuple[float, float, float, float, float, float, float, float]
RED, GREY, BLUE, ORANGE = "#c62828", "#546e7a", "#1565c0", "#ef6c00"


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _ranks(nodes: list[str], edges: list[FlowEdge]) -> dict[str, int]:
    """Longest-path layering over the edges that close no cycle (DFS in node order)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        if e.source != e.destination and e.destination not in succ[e.source]:
            succ[e.source].append(e.destination)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    order: list[str] = []
    forward: dict[str, list[str]] = {n: [] for n in nodes}

    def visit(node: str) -> None:
        state[node] = 1
        for nxt in succ[node]:
            if state.get(nxt) == 1:
                continue  # closes a cycle: ignored for the layering
            forward[node].append(nxt)
            if nxt not in state:
                visit(nxt)
        state[node] = 2
        order.append(node)

    for node in nodes:
        if node not in state:
            visit(node)
    rank = dict.fromkeys(nodes, 0)
    for node in reversed(order):  # a topological order of the forward edges
        for nxt in forward[node]:
            rank[nxt] = max(rank[nxt], rank[node] + 1)
    return rank


def _label(edge: FlowEdge) -> str:
    if edge.kind == "shared_frame":
        return f"{edge.channel} · shared frame"
    extra = f" ×{edge.depth}" if edge.kind == "queuing" else ""
    serial = " → ".join(u for u in (edge.source_serial, edge.destination_serial) if u)
    cable = f" · serial {serial}" if serial else ""  # a full partition's end: a UART wired to the channel
    return f"{edge.channel} · {edge.kind} · {edge.message_size} B{extra}{cable}"


def _node(node: FlowNode, x: float, y: float, width: float) -> str:
    fill, stroke = ("#fff3e0", ORANGE) if node.role == "system" else ("#e3f2fd", BLUE)
    stroke_w = 1.5
    if node.on_violation:
        stroke, stroke_w = RED, 3.5
    return (
        f'<g class="node" data-partition="{escape(node.name)}">'
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" height="{NODE_H}" rx="8" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{stroke_w}"/>'
        f'<text x="{_n(x + width / 2)}" y="{_n(y + 20)}" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{escape(node.name)}</text>'
        f'<text x="{_n(x + width / 2)}" y="{_n(y + 37)}" text-anchor="middle" font-size="11" '
        f'fill="#455a64">{node.role}</text></g>'
    )


def _edge(edge: FlowEdge, points: Curve) -> str:
    x0, y0, x1, y1, x2, y2, x3, y3 = points
    colour, width, marker = (RED, 3, "arrow-red") if edge.on_violation else (GREY, 1.6, "arrow")
    dash = ' stroke-dasharray="6 4"' if edge.kind == "shared_frame" else ""
    lx, ly = (x0 + 3 * x1 + 3 * x2 + x3) / 8, (y0 + 3 * y1 + 3 * y2 + y3) / 8
    text = _label(edge)
    w = len(text) * CHAR_W + 8
    return (
        f'<g class="edge{" violation" if edge.on_violation else ""}" data-channel="{escape(edge.channel)}">'
        f'<path d="M{_n(x0)},{_n(y0)} C{_n(x1)},{_n(y1)} {_n(x2)},{_n(y2)} {_n(x3)},{_n(y3)}" fill="none" '
        f'stroke="{colour}" stroke-width="{width}"{dash} marker-end="url(#{marker})"/>'
        f'<rect x="{_n(lx - w / 2)}" y="{_n(ly - 9)}" width="{_n(w)}" height="16" rx="3" fill="#ffffff" '
        f'fill-opacity="0.9" stroke="{colour}" stroke-width="0.6"/>'
        f'<text x="{_n(lx)}" y="{_n(ly + 3)}" text-anchor="middle" font-size="11" fill="{colour}">'
        f"{escape(text)}</text></g>"
    )


def _legend(y: float) -> tuple[str, float]:
    items = [
        (f'<rect width="22" height="14" rx="3" fill="#e3f2fd" stroke="{BLUE}"/>', "guest partition"),
        (f'<rect width="22" height="14" rx="3" fill="#fff3e0" stroke="{ORANGE}"/>', "system partition"),
        (f'<line x1="0" y1="7" x2="22" y2="7" stroke="{GREY}" stroke-width="1.6"/>', "channel (data flows →)"),
        (f'<line x1="0" y1="7" x2="22" y2="7" stroke="{RED}" stroke-width="3"/>', "on a guest → system path"),
        (f'<line x1="0" y1="7" x2="22" y2="7" stroke="{GREY}" stroke-dasharray="6 4"/>', "shared frame"),
    ]
    parts, x = [], float(MARGIN)
    for swatch, text in items:
        parts.append(f'<g transform="translate({_n(x)},{_n(y)})">{swatch}<text x="28" y="11" font-size="11">'
                     f"{escape(text)}</text></g>")  # fmt: skip
        x += 40 + len(text) * CHAR_W
    return "".join(parts), x


def _arc(x0: float, y0: float, x3: float, y3: float, apex: float) -> Curve:
    """A cubic from (x0, y0) to (x3, y3) whose middle (where the label sits) is at height ``apex``."""
    control = (8 * apex - y0 - y3) / 6
    return (x0, y0, x0, control, x3, control, x3, y3)


def _geometry(
    edges: list[FlowEdge], rank: dict[str, int], pos: dict[str, tuple[float, float]], node_w: float,
    bands: tuple[float, float],
) -> list[Curve]:
    """The curve of each edge: neighbours side to side, longer jumps over the top, the rest under the nodes.

    ``bands`` is (top of the nodes, bottom of the nodes); arcs go into the
    bands above and below, ARC_STEP apart, shortest nearest.
    """
    top, bottom = bands
    over = sorted((e for e in edges if rank[e.destination] - rank[e.source] > 1),
                  key=lambda e: rank[e.destination] - rank[e.source])  # fmt: skip
    under = sorted((e for e in edges if e.source != e.destination and rank[e.destination] <= rank[e.source]),
                   key=lambda e: abs(rank[e.destination] - rank[e.source]))  # fmt: skip
    siblings: dict[tuple[str, str], list[FlowEdge]] = {}
    for e in edges:
        siblings.setdefault((e.source, e.destination), []).append(e)
    curves: list[Curve] = []
    for e in edges:
        (sx, sy), (dx, dy) = pos[e.source], pos[e.destination]
        pair = siblings[(e.source, e.destination)]
        k = pair.index(e)
        if e.source == e.destination:
            right = sx + node_w
            curves.append((right, sy + 12, right + 60, sy - 20 - 12 * k, right + 60, sy + NODE_H + 20 + 12 * k,
                           right, sy + NODE_H - 12))  # fmt: skip
        elif e in over:
            apex = top - ARC_STEP * (1 + over.index(e))
            curves.append(_arc(sx + node_w / 2, sy, dx + node_w / 2, dy, apex))
        elif e in under:
            apex = bottom + ARC_STEP * (1 + under.index(e))
            curves.append(_arc(sx + node_w / 2, sy + NODE_H, dx + node_w / 2, dy + NODE_H, apex))
        else:
            shift = (k - (len(pair) - 1) / 2) * min(PARALLEL_STEP, (NODE_H - 8) / max(1, len(pair) - 1))
            y0, y3, x0, x3 = sy + NODE_H / 2 + shift, dy + NODE_H / 2 + shift, sx + node_w, dx
            curves.append((x0, y0, (x0 + x3) / 2, y0, (x0 + x3) / 2, y3, x3, y3))
    return curves


def render_svg(flow: FlowFacts) -> str:
    """The graph as one ``<svg>`` element."""
    names = [n.name for n in flow.nodes]
    by_name = {n.name: n for n in flow.nodes}
    linked = [n for n in names if any(n in (e.source, e.destination) for e in flow.edges)]
    isolated = [n for n in names if n not in linked]
    node_w = max(120.0, max((len(n) for n in names), default=0) * NAME_CHAR_W + 28)
    label_w = max((len(_label(e)) * CHAR_W + 8 for e in flow.edges), default=0.0)
    col_gap = max(90.0, label_w + 40)
    rank = _ranks(linked, flow.edges)
    columns: dict[int, list[str]] = {}
    for n in linked:
        columns.setdefault(rank[n], []).append(n)
    tallest = max((len(c) for c in columns.values()), default=0)
    row_h = NODE_H + ROW_GAP
    jumps = sum(1 for e in flow.edges if rank[e.destination] - rank[e.source] > 1)
    backs = sum(1 for e in flow.edges if e.source != e.destination and rank[e.destination] <= rank[e.source])
    top = MARGIN + ARC_STEP * (jumps + 1 if jumps else 0)
    pos: dict[str, tuple[float, float]] = {}
    for r, column in columns.items():
        offset = (tallest - len(column)) * row_h / 2
        for i, n in enumerate(column):
            pos[n] = (MARGIN + r * (node_w + col_gap), top + offset + i * row_h)
    nodes_bottom = top + tallest * row_h - ROW_GAP
    bottom = nodes_bottom + ARC_STEP * (backs + 1 if backs else 0)
    body = [_edge(e, pts) for e, pts in zip(flow.edges, _geometry(flow.edges, rank, pos, node_w,
                                                                   (top, nodes_bottom)), strict=True)]  # fmt: skip
    for n in linked:  # nodes over edges
        body.append(_node(by_name[n], *pos[n], node_w))
    y = bottom + MARGIN if linked else float(MARGIN)
    width = max((x + node_w for x, _y in pos.values()), default=0.0) + MARGIN
    if linked:
        loops = [len(_label(e)) * CHAR_W for e in flow.edges if e.source == e.destination]
        width += 60 + max(loops) / 2 if loops else 0
    if isolated:
        body.append(f'<text x="{MARGIN}" y="{_n(y + 12)}" font-size="12" fill="#455a64">'
                    f"no channel connects {'these partitions' if len(isolated) > 1 else 'this partition'}:"
                    f"</text>")  # fmt: skip
        y += 24
        for i, n in enumerate(isolated):
            row, col = divmod(i, ISOLATED_PER_ROW)
            body.append(_node(by_name[n], MARGIN + col * (node_w + 24), y + row * row_h, node_w))
        rows = -(-len(isolated) // ISOLATED_PER_ROW)
        width = max(width, MARGIN + min(len(isolated), ISOLATED_PER_ROW) * (node_w + 24))
        y += rows * row_h
    legend, legend_w = _legend(y + 4)
    width = max(width, legend_w + MARGIN)
    height = y + 30
    title = f"information flow between {len(names)} partitions, {len(flow.edges)} flows"
    defs = "".join(
        f'<marker id="{mid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="10" markerHeight="10" '
        f'markerUnits="userSpaceOnUse" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        for mid, colour in (("arrow", GREY), ("arrow-red", RED))
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="flow-graph" role="img" width="{_n(width)}" '
        f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" font-family="monospace" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title><defs>{defs}</defs>'
        f'{"".join(body)}{legend}</svg>'
    )
