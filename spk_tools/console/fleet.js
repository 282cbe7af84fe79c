// The fleet view: each host with its state, its load against its capacity, its partitions, and the
// fleet's recent events (GET /api/v1/fleet, the status `spk fleet` gives).

import { $, el, fmt, meter, setMeter, ticks } from "./dom.js";

const HOST_KIND = { up: "ok", failed: "bad", left: "idle", "not joined": "idle" };

export function renderFleet(fleet) {
  const section = $("fleet");
  section.hidden = false;
  const hosts = fleet.hosts ?? [];
  const facts = [];
  if (fleet.name) facts.push(fleet.name);
  if (fleet.round !== undefined && fleet.round !== null) facts.push(`round ${ticks.format(fleet.round)}`);
  facts.push(`${hosts.length} host${hosts.length === 1 ? "" : "s"}`);
  if (typeof fleet.imbalance === "number") facts.push(`imbalance ${fleet.imbalance.toFixed(2)}`);
  $("fleet-round").textContent = facts.join(" · ");
  $("hosts").replaceChildren(...hosts.map((h) => {
    const m = meter(`Load of host ${h.name}`);
    const capacity = h.capacity || 0;
    const load = h.load ?? 0;
    setMeter(m, capacity ? load / capacity : (h.utilisation ?? 0),
      capacity ? `${fmt(load)} / ${fmt(capacity)}` : fmt(load));
    const parts = h.partitions ?? [];
    const title = el("h3", {}, h.name);
    if (h.state) title.append(" ", el("span", { class: "state", dataset: { kind: HOST_KIND[h.state] ?? "idle" } }, h.state));
    return el("li", { class: "host", dataset: { host: h.name } },
      title,
      m.node,
      parts.length ? el("ul", { class: "chips", "aria-label": `Partitions on ${h.name}` },
        ...parts.map((p) => el("li", {}, typeof p === "string" ? p : p.name ?? JSON.stringify(p)))) :
        el("p", { class: "hint" }, "no partitions"));
  }));
  const events = (fleet.events ?? []).slice(-8).reverse();
  $("fleet-events").hidden = !events.length;
  $("fleet-events-list").replaceChildren(...events.map((e) => {
    if (typeof e !== "object" || e === null) return el("li", {}, String(e));
    const rest = Object.entries(e).filter(([k]) => !HIDDEN.has(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? fmt(v) : v}`).join(" ");
    const what = [e.event ?? "", e.partition ?? "", e.target ? `→ ${e.target}` : ""].filter(Boolean).join(" ");
    return el("li", {},
      el("span", { class: "t" }, e.round !== undefined ? `round ${e.round}` : e.time !== undefined ? ticks.format(e.time) : ""),
      " ", el("b", {}, e.host ?? ""), ` ${what}`, rest ? el("span", { class: "t" }, ` ${rest}`) : null);
  }));
}

/** Event fields shown otherwise (the round, the host, what happened to which partition, where to) or not at all
 * (the phase of the round it happened in, the engine's details of a copy). */
const HIDDEN = new Set(["event", "host", "round", "time", "partition", "target", "phase", "round_frames",
  "full_copy_ticks", "frames_sent", "final_bytes"]);
