// The events feed: health and management events, newest first, repeats counted, filters by kind.

import { $, el, ticks } from "./dom.js";

const FEED_MAX = 300;

function describe(kind, d) {
  const who = el("b", {}, d.partition ?? "system");
  if (kind === "health") {
    const action = d.action && d.action !== "ignore" ? ` → ${d.action}` : "";
    return [who, ` ${d.event ?? "event"}${action}`, d.detail ? `: ${d.detail}` : ""];
  }
  if (kind === "management") {
    return [who, ` ${d.op ?? "?"} by ${d.requester ?? "?"}: ${d.outcome ?? ""}`];
  }
  const rest = Object.entries(d).filter(([k]) => !["t", "partition", "event"].includes(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return [who, ` ${d.event ?? ""} ${rest}`];
}

/** What makes two events "the same again" (then the feed counts them instead of adding a line). */
function sameKey(kind, d) {
  return JSON.stringify([kind, d.partition, d.event, d.action, d.op, d.requester, d.outcome]);
}

let lastFeed = null; // {key, item, count}
/** Every event the feed has shown, by identity (a merged event the stream already brought is skipped). */
const seen = new Set();

/**
 * Show one event; true when it was new. Streamed events go on top (a repeat of the top line is counted
 * on it); ``merge`` events (the server's recent ones) go where their virtual time puts them.
 */
export function feed(kind, data, { merge = false } = {}) {
  const list = $("events");
  const identity = JSON.stringify([kind, data.t, data.partition, data.event, data.op, data.requester]);
  if (data.t !== undefined) {
    if (seen.has(identity)) return false;
    seen.add(identity);
    if (seen.size > 4 * FEED_MAX) seen.delete(seen.values().next().value);
  }
  const key = sameKey(kind, data);
  const stamp = data.t !== undefined ? ticks.format(data.t) : "";
  if (!merge && lastFeed && lastFeed.key === key && lastFeed.item === list.firstElementChild) {
    lastFeed.count += 1;
    lastFeed.item.querySelector(".t").textContent = stamp;
    const badge = lastFeed.item.querySelector(".count");
    badge.textContent = ` ×${ticks.format(lastFeed.count)}`;
    badge.title = `${lastFeed.count} times in a row, the last at ${stamp} ticks`;
    return true;
  }
  const ignored = kind === "health" && data.action === "ignore";
  const item = el("li", { dataset: { kind, ignored: ignored ? "yes" : "no", t: data.t ?? "" } },
    el("span", { class: "t", title: "virtual time (ticks)" }, stamp),
    el("span", { class: "m" }, el("span", { class: "k", dataset: { kind } }, kind), " ", describe(kind, data),
      el("span", { class: "count" })));
  item.classList.toggle("hidden-kind", !isShown(item, shownKinds()));
  if (merge && data.t !== undefined) {
    const later = [...list.children].filter((li) => li.dataset.t !== "" && Number(li.dataset.t) > data.t);
    const after = later.at(-1);
    if (after) after.after(item);
    else list.prepend(item);
  } else {
    list.prepend(item);
    lastFeed = { key, item, count: 1 };
  }
  while (list.childElementCount > FEED_MAX) list.lastElementChild.remove();
  updateEmpty();
  return true;
}

export function updateEmpty() {
  const any = [...$("events").children].some((li) => !li.classList.contains("hidden-kind"));
  $("events-empty").hidden = any;
  $("events-empty").textContent = $("events").childElementCount ? "No events of the kinds shown." : "No events yet.";
}

/** Is a feed line shown under the filters? Ignored health events only with "ignored" checked. */
function isShown(li, shown) {
  return shown.has(li.dataset.kind) && (li.dataset.ignored !== "yes" || shown.has("ignored"));
}

function shownKinds() {
  return new Set([...document.querySelectorAll('input[name="kind"]:checked')].map((i) => i.value));
}

/** Forget every line (signing out). */
export function resetFeed() {
  $("events").replaceChildren();
  lastFeed = null;
  seen.clear();
  updateEmpty();
}

/** Show and hide the lines after the filters changed. */
export function applyFilters() {
  const shown = shownKinds();
  for (const li of $("events").children) li.classList.toggle("hidden-kind", !isShown(li, shown));
  updateEmpty();
}
