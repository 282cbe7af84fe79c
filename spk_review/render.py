"""The report as one self-contained HTML page: inline CSS and SVG, no script, no external asset.

Every value shown comes from the :class:`review.model.Report` (the same
facts as report.json), escaped; sections carry stable ids (``findings``,
``tcb``, ``hypercalls``, ``partitions``, ``memory``, ``fullvirt``, ``flow``,
``attestation``, ``adversarial``, ``fuzz``) that docs/review.md names and
the tests look for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from spk_review.model import SEVERITIES, FullMemory, Report
from spk_review.svg import render_svg

SECTIONS = (
    ("findings", "Findings"),
    ("tcb", "Trusted computing base"),
    ("hypercalls", "Hypercalls"),
    ("partitions", "Partitions"),
    ("memory", "Memory map"),
    ("fullvirt", "Full virtualization"),
    ("flow", "Information flow"),
    ("attestation", "Measurements and attestation"),
    ("adversarial", "Adversarial suite"),
    ("fuzz", "Fuzz campaigns"),
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2731; margin: 0;
       background: #f4f6f8; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px;
border-bottom: 2px solid #cfd8dc; } h3 { font-size: 15px; margin: 20px 0 6px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d5dde2; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eceff1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
nav a { margin-right: 12px; } .muted { color: #607d8b; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px;
         color: #fff; }
.high { background: #c62828; } .medium { background: #ef6c00; } .low { background: #f9a825; color: #222; }
.info { background: #78909c; } .pass { background: #2e7d32; } .fail { background: #c62828; }
.verdict { font-size: 18px; padding: 4px 14px; }
details ul { margin: 4px 0; padding-left: 18px; } summary { cursor: pointer; color: #37474f; }
.figure { overflow-x: auto; border: 1px solid #d5dde2; padding: 8px; background: #fcfdfd; }
"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are already escaped HTML, columns in ``numeric`` right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value: object) -> str:
    return escape(str(value))


def _yes(flag: bool | None, yes: str = "yes", no: str = "no") -> str:
    return "-" if flag is None else (yes if flag else f"<strong>{no}</strong>")


def _badge(severity: str) -> str:
    return f'<span class="badge {severity}">{severity}</span>'


def _summary(r: Report) -> str:
    v = r.verdict
    verdict = (
        '<span class="badge verdict pass">PASS: nothing high-severity</span>' if v.passed
        else f'<span class="badge verdict fail">FAIL: {v.counts["high"]} high-severity finding(s)</span>'
    )  # fmt: skip
    counts = " ".join(f"{_badge(s)} {v.counts[s]}" for s in SEVERITIES)
    s = r.system
    contained = sum(1 for a in r.adversarial.attacks if a.contained)
    verified = sum(1 for p in r.attestation.partitions if p.quoted and p.verified)
    quoted = sum(1 for p in r.attestation.partitions if p.quoted)
    facts = [
        ("description", f"<code>{_e(s.config)}</code> (system <strong>{_e(s.name)}</strong>), SHA-256 "
                        f"<code>{_e(s.digest)}</code>"),
        ("run", f"{s.ran_until:,} instructions of virtual time, {s.major_frames} major frames of "
                f"{s.major_frame:,}, seed {s.seed}"),
        ("findings", counts),
        ("adversarial suite", f"{contained} of {len(r.adversarial.attacks)} attacks contained"
                              if r.adversarial.ran else "<strong>did not run</strong>"),
        ("attestation", f"{verified} of {quoted} quotes verify"),
        ("review time", f"{r.seconds:.2f} s"),
    ]  # fmt: skip
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in SECTIONS)
    return (
        f'<section id="summary"><h1>SPK security review: {_e(s.name)}</h1><p>{verdict}</p>'
        f"<table>{rows}</table><nav>{nav}</nav></section>"
    )


def _findings(r: Report) -> str:
    if not r.findings:
        return "<p>No finding.</p>"
    rows = [
        (_badge(f.severity), f"<code>{_e(f.rule)}</code>", _e(f.subject), _e(f.message),
         f"{_e(f.field)} (line {f.line})" if f.line else _e(f.field or "-"))
        for f in r.findings
    ]  # fmt: skip
    return _table(("severity", "rule", "subject", "finding", "configuration"), rows)


def _tcb(r: Report) -> str:
    out = []
    for pkg in r.tcb.packages:
        rows = [(f"<code>{_e(m.module)}</code>", f"{m.lines:,}", f"{m.code:,}", f"{m.comments:,}",
                 f"{m.docstrings:,}", f"{m.blank:,}") for m in pkg.modules]  # fmt: skip
        rows.append(("<strong>total</strong>", f"<strong>{pkg.lines:,}</strong>", f"<strong>{pkg.code:,}</strong>",
                     f"{sum(m.comments for m in pkg.modules):,}", f"{sum(m.docstrings for m in pkg.modules):,}",
                     f"{sum(m.blank for m in pkg.modules):,}"))  # fmt: skip
        out.append(
            f"<h3>Ring {pkg.ring}: <code>{_e(pkg.package)}</code>, {len(pkg.modules)} modules, {pkg.code:,} lines "
            f'of code</h3><p class="muted">from <code>{_e(pkg.path)}</code></p>'
            + _table(("module", "lines", "code", "comments", "docstrings", "blank"), rows, numeric=(1, 2, 3, 4, 5))
        )
    deps = [(f"<code>{_e(d.module)}</code>", _e(d.distribution or "?"), _e(d.version or "?"),
             ", ".join(f"<code>{_e(u)}</code>" for u in d.imported_by),
             ", ".join(f"<code>{_e(n)}</code>" for n in d.native) or "none") for d in r.tcb.dependencies]  # fmt: skip
    return (
        f'<p class="muted">Counted: {_e(r.tcb.counting)}.</p>{"".join(out)}'
        "<h3>Third-party code the TCB imports</h3>"
        + _table(("module", "distribution", "version", "imported by", "native libraries"), deps)
    )


def _hypercalls(r: Report) -> str:
    rows = [(str(h.number), f"<code>{_e(h.name)}</code>", _e(h.requires),
             ", ".join(_e(c) for c in h.callers) or "<strong>nobody</strong>", _e(h.detail))
            for h in r.tcb.hypercalls]  # fmt: skip
    return _table(("#", "hypercall", "ring 0 checks", "who may call it here", "why"), rows, numeric=(0,))


def _partitions(r: Report) -> str:
    rows = []
    for p in r.system.partitions:
        ports = ", ".join(
            f"{_e(q.name)} {'→' if q.direction == 'source' else '←'} {_e(q.channel) if q.channel else '(no channel)'}"
            + (f" ({_e(q.serial)})" if q.serial else "")
            for q in p.ports
        ) or "-"  # fmt: skip
        actions = ", ".join(f"{_e(a)} ×{n}" for a, n in p.health_actions.items()) or "-"
        kind = f"full ({_e(p.mmu)})" if p.virtualization == "full" else "para"
        rows.append((f"<strong>{_e(p.name)}</strong>", _e(p.role), kind, _e(p.status), _e(p.image),
                     _e(", ".join(p.apps)) or "-", f"{p.memory >> 10:,} KiB", f"{p.window_share:.0%}",
                     _yes(p.health_declared), ports, f"{p.instructions:,}", f"{p.faults:,}", f"{p.overruns:,}",
                     f"{p.restarts}", actions))  # fmt: skip
    headers = ("partition", "role", "virtualization", "state", "kernel", "apps", "quota", "time", "health table",
               "ports", "instructions", "faults", "overruns", "restarts", "health actions")  # fmt: skip
    sites = [(f"<strong>{_e(p.name)}</strong>", _e(f.source if f.module is None else f"app {f.module}"),
              str(f.vector), f"<code>{f.rip:#x}</code>", f"<code>{_e(f.where)}</code>" if f.where else "(no symbols)")
             for p in r.system.partitions for f in p.fault_sites]  # fmt: skip
    faults = ""
    if sites:
        faults = ("<p>Where the faults happened, named from each image's symbols and line table:</p>"
                  + _table(("partition", "in", "vector", "rip", "code"), sites, numeric=(2,)))  # fmt: skip
    return _table(headers, rows, numeric=(6, 7, 10, 11, 12, 13)) + faults


def _memory(r: Report) -> str:
    m = r.memory
    owners = ", ".join(f"{_e(k)}: {v:,}" for k, v in m.owners.items())
    inv = ("<strong>hold</strong> (frame table and page tables agree; no page table is writable)"
           if m.invariants is None else f'<span class="badge high">broken</span> {_e(m.invariants)}')  # fmt: skip
    out = [f"<p>{m.ram_frames:,} frames of 4 KiB; by owner: {owners}. Ring 0's invariants: {inv}.</p>"]
    for p in m.partitions:
        phys = ", ".join(f"<code>{q.first_mfn:#x}</code>+{q.frames}" for q in p.physical)
        types = ", ".join(f"{_e(k)} {v}" for k, v in p.frame_types.items())
        if p.full is not None:
            out.append(_full_memory(p.name, p.pid, p.full, f"{types}; physical frames {phys}"))
            continue
        maps = [(", ".join(str(s) for s in mp.spaces), f"<code>{mp.va:#x}</code>", str(mp.pages),
                 f"<code>{mp.mfn:#x}</code>", ("rw" if mp.writable else "r-") + (" user" if mp.user else " kernel"),
                 _e(mp.region)) for mp in p.mappings]  # fmt: skip
        out.append(
            f"<h3>{_e(p.name)} (pid {p.pid})</h3><p>{p.frames_in_use} of {p.quota_frames} quota frames in use "
            f"({types}); physical frames {phys}; {p.spaces} address space(s); {p.unmapped_data_frames} data "
            "frame(s) mapped nowhere.</p>"
            + _table(("spaces", "virtual", "pages", "first frame", "rights", "region"), maps, numeric=(2,))
        )
    shared = [(f"<code>{s.mfn:#x}</code>", str(s.frames), _e(s.owner), _e(s.frame_type),
               "<br>".join(f"{_e(m.partition)} at <code>{m.va:#x}</code> "
                           + ("rw" if m.writable else "r-") + (" user" if m.user else " kernel") for m in s.mapped_by))
              for s in m.shared]  # fmt: skip
    out.append(
        "<h3>Shared frames</h3><p>Frames more than one party can reach, each region once with every partition "
        "that maps it.</p>" + _table(("first frame", "frames", "owner", "type", "mapped by"), shared, numeric=(1,))
    )
    return "".join(out)


def _full_memory(name: str, pid: int, f: FullMemory, frames: str) -> str:
    """A full partition's memory: its engine's regions, its quota run, what the invariant check proves."""
    regions = [(f"<code>{x.engine_physical:#x}</code>", f"<code>{x.engine_physical + x.size:#x}</code>",
                f"{x.size >> 10:,} KiB", _e(x.what)) for x in f.regions]  # fmt: skip
    counts = ", ".join(f"{_e(k)} {v:,}" for k, v in {**f.mmu_counts, **f.mmu_stats}.items()) or "-"
    broken = '<p><span class="badge high">not proven</span> ring 0\'s invariants are broken (above).</p>'
    proven = f"<p>{_e(f.proven)}.</p>" if f.proven is not None else broken
    return (
        f"<h3>{_e(name)} (pid {pid}, full virtualization, <code>mmu = \"{_e(f.mmu)}\"</code>)</h3>"
        f"<p>Its own engine; no address space of ring 0's (its page tables are its own, inside its quota). "
        f"Quota: frames <code>{f.quota_first_frame:#x}</code>+{f.quota_frames:,} of RAM ({frames}). "
        f"MMU: {counts}.</p>"
        + _table(("engine-physical start", "end", "size", "what"), regions, numeric=(2,)) + proven
    )


def _fullvirt(r: Report) -> str:
    if not r.fullvirt:
        return "<p>No full-virtualization partition runs in this system.</p>"
    out = []
    for f in r.fullvirt:
        done = [t for t in f.trapped if t.count]
        trapped = [(f"<code>{_e(t.operation)}</code>", f"{t.count:,}" if t.count else '<span class="muted">0</span>',
                    _e(t.how)) for t in f.trapped]  # fmt: skip
        devices = [(_e(d.device), _port_list(d.ports), "-" if d.irq is None else str(d.irq),
                    ", ".join(f"{_e(k)} {_e(_value(v))}" for k, v in d.activity.items()) or "-")
                   for d in f.devices]  # fmt: skip
        cables = [(_e(c.uart), f"<code>{c.port_base:#x}</code>", _e(c.port), _e(c.channel),
                   "guest → channel (THR)" if c.direction == "source" else "channel → guest (RBR)",
                   "-" if c.messages is None else f"{c.messages:,}", str(c.dropped))
                  for c in f.serial_cables]  # fmt: skip
        out.append(
            f"<h3>{_e(f.name)} (pid {f.pid}, <code>mmu = \"{_e(f.mmu)}\"</code>, {_e(f.state)})</h3>"
            f"<p>Trapped operations: {len(f.trapped)} kinds this virtual CPU traps, {len(done)} done by the guest "
            f"in this run ({sum(t.count for t in f.trapped):,} traps).</p>"
            + _table(("operation", "count", "how ring 0 gets it"), trapped, numeric=(1,))
            + "<p>Emulated devices:</p>"
            + _table(("device", "ports", "IRQ", "what went through it"), devices)
            + ("<p>Serial cables (who can reach it; drawn in the information flow):</p>"
               + _table(("UART", "base", "port", "channel", "direction", "messages", "dropped"), cables, numeric=(5, 6))
               if cables else "<p>No serial cable: no partition can reach it, and it reaches none.</p>")
        )  # fmt: skip
    return "".join(out)


def _value(v: object) -> str:
    if isinstance(v, list):
        return "(" + ", ".join(f"{x:#x}" for x in v) + ")"
    return "-" if v is None else str(v)


def _port_list(ports: Sequence[int]) -> str:
    """Ports as runs: 0x3f8-0x3ff, 0x20, 0x21."""
    runs: list[list[int]] = []
    for port in ports:
        if runs and runs[-1][1] + 1 == port:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ", ".join(f"<code>{a:#x}</code>" if a == b else f"<code>{a:#x}-{b:#x}</code>" for a, b in runs)


def _flow(r: Report) -> str:
    f = r.flow
    if f.violations:
        items = "".join(
            "<li>" + " → ".join(f"[{_e(s)}]" if i % 2 else f"<strong>{_e(s)}</strong>" for i, s in enumerate(v))
            + "</li>"
            for v in f.violations
        )
        paths = f'<p><span class="badge high">guest → system</span> paths (red in the graph):</p><ul>{items}</ul>'
    else:
        paths = "<p>No path from a guest partition to a system partition.</p>"
    rows = [(_e(e.channel), _e(e.kind), f"{_e(e.source)}.{_e(e.source_port)}" + _serial(e.source_serial),
             f"{_e(e.destination)}.{_e(e.destination_port)}" + _serial(e.destination_serial), f"{e.message_size:,} B",
             "-" if e.depth is None else str(e.depth), "-" if e.refresh is None else f"{e.refresh:,}",
             "-" if e.sent is None else str(e.sent), _yes(not e.on_violation, "no", "YES"))
            for e in f.edges]  # fmt: skip
    table = _table(("channel", "kind", "from", "to", "message", "depth", "refresh", "sent", "guest → system"),
                   rows) if rows else "<p>No channel and no shared frame: partitions exchange nothing.</p>"  # fmt: skip
    return f'<div class="figure">{render_svg(f)}</div>{paths}{table}'


def _serial(uart: str | None) -> str:
    return f" (serial {_e(uart)})" if uart else ""


def _attestation(r: Report) -> str:
    a = r.attestation
    decisions = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in a.secure_boot_decisions.items())
    out = [
        _table(("fact", "value"), [
            ("platform key", f"<code>{_e(a.platform_key)}</code> ({_e(a.key_origin)})"),
            ("nonce", f"<code>{_e(a.nonce)}</code>"),
            ("description digest", f"<code>{_e(a.config_digest)}</code>"),
            ("secure boot", f"{_e(a.secure_boot)}: {decisions}"),
        ])
    ]  # fmt: skip
    for p in a.partitions:
        if not p.quoted:
            out.append(f"<h3>{_e(p.name)}</h3><p>No quote: {_e('; '.join(p.problems))}.</p>")
            continue
        status = "quote verifies" if p.verified else f"<strong>quote fails</strong>: {_e('; '.join(p.problems))}"
        loaded = "log matches what was loaded" if p.expected else (
            "<strong>log differs from what was loaded</strong>: " + _e("; ".join(p.differences)))  # fmt: skip
        regs = "".join(f"<li>register {i}: <code>{_e(v)}</code></li>" for i, v in enumerate(p.registers))
        events = [(str(e.register_), _e(e.type), _e(e.description), f"<code>{_e(e.digest)}</code>") for e in p.events]
        out.append(f"<h3>{_e(p.name)}</h3><p>{status}; {loaded}.</p><ul>{regs}</ul>"
                   + _table(("register", "type", "description", "SHA-256"), events))  # fmt: skip
    return "".join(out)


def _evidence(lines: list[str], contained: bool) -> str:
    """The facts behind a verdict, folded (a <details> element: no script); open, failures first, when it failed."""
    failed = [line for line in lines if not contained and "NOT CONTAINED" in line]
    items = "".join(f"<li><strong>{_e(line)}</strong></li>" for line in failed)
    items += "".join(f"<li>{_e(line)}</li>" for line in lines if line not in failed)
    return f"<details{'' if contained else ' open'}><summary>{len(lines)} facts</summary><ul>{items}</ul></details>"


def _adversarial(r: Report) -> str:
    a = r.adversarial
    if not a.ran:
        return f'<p><span class="badge high">not run</span> {_e(a.error)}</p>'
    rows = [(f"<code>{_e(x.attack_class)}</code><br>{_e(x.title)}", f"<code>{_e(x.attacker)}</code>",
             '<span class="badge pass">contained</span>' if x.contained else _badge("high") + " NOT contained",
             _evidence(x.evidence, x.contained)) for x in a.attacks]  # fmt: skip
    seed = a.seed if a.seed is not None else "the description's"
    contained = sum(1 for x in a.attacks if x.contained)
    header = f"<p>{contained} of {len(a.attacks)} attacks contained; seed {seed}; {a.seconds:.2f} s.</p>"
    return header + _table(("attack class", "attacker", "result", "evidence"), rows)


def _fuzz(r: Report) -> str:
    if r.fuzz is None:
        return "<p>No fuzz statistics were given to this review (<code>make fuzz</code> runs the campaigns).</p>"
    f = r.fuzz
    rows = [(_e(c.name), f"{c.examples:,}", f"{c.executions:,}", f"{c.execs_per_s:,.1f}",
             f"{c.invariant_checks:,}", str(c.findings)) for c in f.campaigns]  # fmt: skip
    rows.append(("<strong>total</strong>", f"<strong>{f.examples:,}</strong>", f"<strong>{f.executions:,}</strong>",
                 f"{f.executions / f.seconds if f.seconds else 0.0:,.1f}",
                 f"{sum(c.invariant_checks for c in f.campaigns):,}",
                 str(sum(c.findings for c in f.campaigns))))  # fmt: skip
    return (f"<p>Seed {f.seed}, {f.seconds:.1f} s: {f.examples:,} examples, {f.executions:,} executions in "
            f"{len(f.campaigns)} campaigns.</p>"
            + _table(("campaign", "examples", "executions", "exec/s", "invariant checks", "findings"), rows,
                     numeric=(1, 2, 3, 4, 5)))  # fmt: skip


def render_html(r: Report) -> str:
    """The whole page."""
    parts = {
        "findings": _findings, "tcb": _tcb, "hypercalls": _hypercalls, "partitions": _partitions,
        "memory": _memory,
        "fullvirt": _fullvirt, "flow": _flow, "attestation": _attestation, "adversarial": _adversarial, "fuzz": _fuzz,
    }  # fmt: skip
    sections = "".join(f'<section id="{sid}"><h2>{title}</h2>{parts[sid](r)}</section>' for sid, title in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>SPK review: {_e(r.system.name)}</title><style>{_CSS}</style></head>"
        f"<body><main>{_summary(r)}{sections}</main></body></html>\n"
    )
