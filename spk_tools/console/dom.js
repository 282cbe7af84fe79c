// Small DOM helpers the console's modules share: building elements, numbers, meters, toasts.

import { ApiError } from "./api.js";

export const $ = (id) => document.getElementById(id);
export const ticks = new Intl.NumberFormat("en-US");
export const pct = (share) => `${(100 * (share ?? 0)).toFixed(1)}%`;

/** Build an element: el("td", {class: "num"}, "text", child, ...). Text is always set as text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A message in the corner: "ok" ones go after 5 s, "error" ones (an alert) after 10 s. */
export function toast(kind, title, detail = "") {
  const node = el("div", { class: "toast", dataset: { kind }, role: kind === "error" ? "alert" : null },
    el("b", {}, title), detail);
  const close = el("button", { type: "button", class: "ghost small", "aria-label": "Dismiss" }, "×");
  close.style.float = "right";
  close.addEventListener("click", () => node.remove());
  node.prepend(close);
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 10000 : 5000);
}

/** How an ApiError reads to a person. */
export function explain(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  const field = err.field ? ` (field ${err.field})` : "";
  switch (err.status) {
    case 0:
      return "The server cannot be reached.";
    case 401:
      return `This token is not accepted: ${err.message}`;
    case 403:
      return `Not allowed: ${err.message}`;
    case 409:
      return `Refused by the system's policy: ${err.message}`;
    default:
      return `${err.message}${field} [${err.code}, HTTP ${err.status}]`;
  }
}

/** A labelled bar (role meter) with its value as text beside it. */
export function meter(label) {
  const fill = el("div", { class: "fill" });
  const text = el("span");
  const node = el("div", { class: "meter" },
    el("div", { class: "track", role: "meter", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100 }, fill),
    text);
  return { node, fill, text, track: node.firstChild };
}

/** Set a meter to ``fraction`` (0..1) with ``text``; amber from 80 %, red when full. */
export function setMeter(m, fraction, text) {
  const value = Math.max(0, Math.min(1, fraction || 0));
  m.fill.style.width = `${(100 * value).toFixed(1)}%`;
  m.fill.classList.toggle("high", value >= 0.8 && value < 0.98);
  m.fill.classList.toggle("full", value >= 0.98);
  m.track.setAttribute("aria-valuenow", (100 * value).toFixed(1));
  m.track.setAttribute("aria-valuetext", text);
  m.text.textContent = text;
}

/** A number as the console shows it: whole numbers grouped, others with two decimals. */
export const fmt = (n) => (Number.isInteger(n) ? ticks.format(n) : Number(n).toFixed(2));
