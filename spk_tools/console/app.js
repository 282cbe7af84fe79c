// The SPK web console: sign in with an API token, then follow the running system live
// (GET /api/v1/system, /partitions, /fleet, and the SSE stream /api/v1/events), and manage
// partitions (pause, resume, restart, change a window or quota) when the token's role allows it.
// When the server runs a fleet and no system (spk fleet --serve: /whoami says "serves": "fleet"),
// the fleet view is the page, polled from GET /api/v1/fleet; no route of a system is asked.
// Modules: api.js (requests, the event stream), chart.js (the canvas chart), dom.js (shared
// helpers), feed.js (the events feed), fleet.js (the fleet view); this one holds the state.

import { Api, ApiError } from "./api.js";
import { PALETTE, ShareChart } from "./chart.js";
import { $, el, explain, meter, pct, setMeter, ticks, toast } from "./dom.js";
import { applyFilters, feed, resetFeed } from "./feed.js";
import { renderFleet } from "./fleet.js";

const TOKEN_KEY = "spk-console-token";
const FLEET_POLL_MS = 2000;
/** Polling of a served fleet while it runs (its rounds are paced for a person), then once it has ended. */
const FLEET_WATCH_MS = 500;
const FLEET_ENDED_MS = 5000;
const FLEET_STATES = { starting: "starting", running: "running", finished: "run ended", stopped: "stopped", failed: "run failed" };

const state = {
  api: null,
  role: null, // "read" | "admin" | null (unknown)
  who: null,
  system: null,
  /** @type {Map<string, any>} partitions by name, configuration order */
  partitions: new Map(),
  rows: new Map(),
  colors: new Map(),
  frame: 0, // major frames completed, as far as the console knows
  now: undefined, // virtual time at the end of that frame
  lastPushed: 0, // the last frame the stream gave the chart
  stream: null, // AbortController of the event stream
  fleetTimer: null,
  serves: "system", // what the server serves: "system" (spk serve) or "fleet" (spk fleet --serve)
  fleetWatch: null, // timeout of the next fleet poll, when the server serves a fleet
  fleetFailed: false, // the failed run's error was shown
  busy: new Set(), // partitions with a mutation in flight
};

const chart = new ShareChart($("share-chart"), colorOf, 300);

function colorOf(name) {
  if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(name);
}

// -- sign in / out ------------------------------------------------------------------

function showLogin(message = "") {
  stopLive();
  $("console").hidden = true;
  $("signout").hidden = true;
  $("role").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  setLive("off", "signed out");
  $("token").focus();
}

async function signIn(token, { fromStorage = false } = {}) {
  const api = new Api(token);
  let who;
  try {
    who = await api.get("whoami");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(fromStorage ? "Your saved token is no longer accepted: enter a token." : explain(err));
      return;
    }
    if (err instanceof ApiError && err.status === 404) {
      who = { name: null, role: null }; // an older server: the role shows on the first refusal
    } else {
      showLogin(explain(err));
      return;
    }
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.api = api;
  state.who = who.name ?? null;
  state.serves = who.serves === "fleet" ? "fleet" : "system";
  document.body.dataset.serves = state.serves;
  setRole(who.role ?? null);
  $("login").hidden = true;
  $("console").hidden = false;
  $("signout").hidden = false;
  await start();
}

/** Forget the token and everything shown with it; the sign-in form again, with ``message``. */
function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  stopLive();
  state.api = null;
  state.partitions.clear();
  state.rows.clear();
  $("parts-body").replaceChildren();
  resetFeed();
  chart.clear();
  state.lastPushed = 0;
  state.frame = 0;
  state.colors.clear();
  $("fleet").hidden = true;
  state.serves = "system";
  state.fleetFailed = false;
  delete document.body.dataset.serves;
  $("sys-name-label").textContent = "System";
  $("sys-frame-label").textContent = "Major frame";
  $("token").value = "";
  showLogin(message);
}

function setRole(role) {
  state.role = role;
  const badge = $("role");
  badge.hidden = !role;
  badge.textContent = role === "admin" ? `admin${state.who ? ` · ${state.who}` : ""}` :
    `read-only${state.who ? ` · ${state.who}` : ""}`;
  const readOnly = role === "read";
  $("parts").classList.toggle("readonly", readOnly);
  $("readonly-hint").hidden = !readOnly;
  for (const name of state.rows.keys()) updateRow(name);
}

const canManage = () => state.role !== "read";

// -- live data ----------------------------------------------------------------------

function setLive(kind, text) {
  const live = $("live");
  live.dataset.state = kind;
  live.textContent = text;
}

async function start() {
  const api = state.api;
  if (state.serves === "fleet") {
    startFleetOnly();
    return;
  }
  try {
    const [system, parts] = await Promise.all([api.get("system"), api.get("partitions")]);
    if (api !== state.api) return;
    applySystem(system);
    applyPartitions(parts.partitions ?? parts);
  } catch (err) {
    if (handleAuth(err)) return;
    toast("error", "Could not read the system", explain(err));
  }
  startFleet();
  startLive();
}

/** A 401 at any time means the token went away: back to the sign-in form. */
function handleAuth(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut(explain(err));
    return true;
  }
  return false;
}

function stopLive() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  if (state.fleetTimer) clearInterval(state.fleetTimer);
  state.fleetTimer = null;
  if (state.fleetWatch) clearTimeout(state.fleetWatch);
  state.fleetWatch = null;
}

async function startLive() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  const api = state.api;
  let delay = 1000;
  while (!controller.signal.aborted && api === state.api) {
    setLive("wait", "connecting…");
    let seeded = false;
    try {
      await api.stream("events", (ev) => {
        if (state.stream === controller) {
          setLive("on", "live");
          delay = 1000;
          onEvent(ev);
          if (!seeded) {
            // Subscribed: the server's recent events now cover whatever the stream did not send
            // (before this connection, or while it was down); the feed merges them in once.
            seeded = true;
            seedEvents(api);
          }
        }
      }, controller.signal);
    } catch (err) {
      if (controller.signal.aborted) return;
      if (handleAuth(err)) return;
    }
    if (controller.signal.aborted) return;
    // The stream ended: the run is over, or the server went away.
    try {
      const system = await api.get("system");
      applySystem(system);
      if (system.over) {
        // the server stays up after the run ends, and a start or restart revives the run
        setLive("off", "run ended");
        delay = 10000;
      }
    } catch (err) {
      if (handleAuth(err)) return;
    }
    if (!state.system?.over) setLive("wait", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(10000, delay * 2);
  }
}

function onEvent({ event, data }) {
  if (!data || typeof data !== "object") return;
  switch (event) {
    case "qos":
      applyQos(data);
      break;
    case "state":
      applyPartitions(data.partitions ?? []);
      refreshSystemSoon(); // a state change may end the run (or revive it): the header says so
      break;
    case "health":
      markHealth(data);
      feed("health", data);
      break;
    case "management":
      feed("management", data);
      refreshSystemSoon(); // a change of window changes the major frame
      break;
    case "system":
      applySystem(data);
      break;
    default:
      feed("other", { ...data, event });
  }
}

let gapTimer = null;
let gapFrames = 0;
/**
 * The stream sends at most ~10 QoS frames a second (the latest always): at a faster pace the chart
 * asks the server's history for the frames it skipped, at most once a second.
 */
function fillGapsSoon(missing) {
  gapFrames = Math.min(300, gapFrames + missing + 1);
  if (gapTimer !== null) return;
  gapTimer = setTimeout(async () => {
    gapTimer = null;
    const api = state.api;
    const frames = gapFrames;
    gapFrames = 0;
    if (!api) return;
    try {
      const history = await api.get(`qos/history?frames=${frames + 2}`);
      if (api === state.api) mergeHistory(history);
    } catch (err) {
      handleAuth(err);
    }
  }, 1000);
}

function mergeHistory(history) {
  chart.merge((history.history ?? []).map((h) => ({
    frame: h.major_frames,
    cpu: new Map(Object.entries(h.partitions ?? {}).map(([n, q]) => [n, q.cpu_share ?? 0])),
    use: new Map(Object.entries(h.partitions ?? {}).map(([n, q]) => [n, q.last_frame_use ?? 0])),
  })));
}

let systemTimer = null;
/** Read GET /system again shortly (at most once a second, however many changes come). */
function refreshSystemSoon() {
  if (systemTimer !== null) return;
  systemTimer = setTimeout(async () => {
    systemTimer = null;
    const api = state.api;
    if (!api) return;
    try {
      const system = await api.get("system");
      if (api === state.api) applySystem(system);
    } catch (err) {
      handleAuth(err);
    }
  }, 1000);
}

/**
 * Merge what the server remembers into the console: the recent events (GET /system "events", oldest
 * first) into the feed and the chart's marks, the last major frames (GET /qos/history) into the chart.
 */
async function seedEvents(api) {
  let system;
  let history;
  try {
    [system, history] = await Promise.all([api.get("system"), api.get("qos/history")]);
  } catch (err) {
    handleAuth(err);
    return;
  }
  if (api !== state.api) return;
  mergeHistory(history);
  applySystem(system);
  for (const ev of system.events ?? []) {
    const kind = ["health", "management"].includes(ev.kind) ? ev.kind : "other";
    if (feed(kind, ev, { merge: true }) && kind === "health") markHealth(ev);
  }
}

/**
 * A health event's mark on the chart, under the major frame it happened in: counted back from the last
 * frame the chart has (its end is the virtual time "now"), so a change of the major frame's length
 * never shifts the marks of recent events.
 */
function markHealth(data) {
  if (data.action === "ignore") return; // the health monitor ignores it: no mark either
  const length = state.system && state.system.major_frame;
  const now = state.now;
  let frame = state.frame + 1; // during the frame in progress
  if (length && now !== undefined && data.t !== undefined && data.t < now) {
    frame = state.frame - Math.max(0, Math.ceil((now - data.t) / length) - 1);
  }
  chart.mark(frame, data.partition);
}

function applySystem(system) {
  state.system = { ...(state.system ?? {}), ...system };
  const s = state.system;
  $("sys-name").textContent = s.name ?? "–";
  document.title = s.name ? `${s.name} · SPK console` : "SPK console";
  if (s.now !== undefined) {
    $("sys-now").textContent = `${ticks.format(s.now)} ticks`;
    state.now = s.now;
  }
  if (s.major_frames !== undefined) setFrame(s.major_frames);
  const pace = Number(s.pace);
  $("sys-pace").textContent = !s.pace ? "unpaced" : `${Number.isInteger(pace) ? pace : pace.toFixed(1)} frames/s`;
  $("sys-state").textContent = s.over ? "run ended" : "running";
  if (Array.isArray(s.windows) && !state.partitions.size) {
    chart.setNames([...new Set(s.windows.map((w) => w.partition))]);
  }
}

function setFrame(frame) {
  state.frame = frame;
  const length = state.system && state.system.major_frame;
  $("sys-frame").textContent = length ? `#${ticks.format(frame)} · ${ticks.format(length)} ticks` :
    `#${ticks.format(frame)}`;
}

function applyQos(qos) {
  if (qos.now !== undefined) {
    $("sys-now").textContent = `${ticks.format(qos.now)} ticks`;
    state.now = qos.now;
  }
  const frame = qos.major_frames ?? state.frame + 1;
  setFrame(frame);
  const cpu = new Map();
  const use = new Map();
  for (const [name, q] of Object.entries(qos.partitions ?? {})) {
    cpu.set(name, q.cpu_share ?? 0);
    use.set(name, q.last_frame_use ?? 0);
    const part = state.partitions.get(name);
    if (part) {
      part.qos = { ...(part.qos ?? {}), ...q };
      if (q.frames_used !== undefined) part.frames_used = q.frames_used;
      if (q.quota_frames !== undefined) part.quota_frames = q.quota_frames;
      updateRow(name);
    }
  }
  if (frame < state.lastPushed) {
    // time went back: another run (the server was restarted); its chart starts afresh
    chart.clear();
    state.lastPushed = 0;
  }
  if (frame > state.lastPushed + 1 && state.lastPushed > 0) fillGapsSoon(frame - state.lastPushed);
  if (frame > 0) {
    chart.push(frame, cpu, use);
    state.lastPushed = Math.max(state.lastPushed, frame);
  }
  const parts = [...cpu].map(([name, share]) => `${name} ${pct(share)}`).join(", ");
  $("share-chart").setAttribute("aria-label", `CPU share in major frame ${frame}: ${parts || "no partitions"}`);
}

// -- partitions table ---------------------------------------------------------------

const STATE_KIND = {
  ready: "ok", blocked: "ok", paused: "warn", exited: "idle", declared: "idle",
  faulted: "bad", stopped: "bad", refused: "bad", destroyed: "idle",
};

function applyPartitions(list) {
  const seen = new Set();
  for (const p of list) {
    seen.add(p.name);
    colorOf(p.name);
    state.partitions.set(p.name, { ...(state.partitions.get(p.name) ?? {}), ...p });
    if (!state.rows.has(p.name)) addRow(p.name);
    updateRow(p.name);
  }
  for (const name of [...state.rows.keys()]) {
    if (!seen.has(name)) {
      state.rows.get(name).tr.remove();
      state.rows.delete(name);
      state.partitions.delete(name);
    }
  }
  chart.setNames([...state.partitions.keys()]);
  renderLegend();
}

function addRow(name) {
  const cpu = meter(`CPU share of ${name}`);
  const mem = meter(`Frames used by ${name}`);
  const stateBadge = el("span", { class: "state" });
  // data-label: the column's name, shown beside the value when narrow screens stack a row as a card
  const cells = {
    name: el("th", { scope: "row", class: "name" }, swatch(name), name),
    state: el("td", { dataset: { label: "State" } }, stateBadge),
    window: el("td", { class: "num", dataset: { label: "Window" } }),
    cpu: el("td", { dataset: { label: "CPU share" } }, cpu.node),
    mem: el("td", { dataset: { label: "Frames used / quota" } }, mem.node),
    health: el("td", { class: "num", dataset: { label: "Health events" } }),
    restarts: el("td", { class: "num", dataset: { label: "Restarts" } }),
    actions: el("td", { class: "actions-col", dataset: { label: "Actions" } }),
  };
  const toggle = el("button", { type: "button", class: "small", dataset: { action: "toggle" } });
  const restart = el("button", { type: "button", class: "small ghost", dataset: { action: "restart" },
    "aria-label": `Restart ${name}` }, "Restart…");
  toggle.addEventListener("click", () => {
    const paused = state.partitions.get(name)?.state === "paused";
    mutate(name, paused ? "resume" : "pause");
  });
  const edit = el("button", { type: "button", class: "small ghost", dataset: { action: "edit" },
    "aria-label": `Change the window or quota of ${name}` }, "Edit…");
  restart.addEventListener("click", () => askRestart(name));
  edit.addEventListener("click", () => askEdit(name));
  cells.actions.append(el("div", { class: "actions" }, toggle, restart, edit));
  const tr = el("tr", { dataset: { partition: name } }, ...Object.values(cells));
  $("parts-body").append(tr);
  state.rows.set(name, { tr, cells, cpu, mem, stateBadge, toggle, restart, edit });
}

function updateRow(name) {
  const row = state.rows.get(name);
  const p = state.partitions.get(name);
  if (!row || !p) return;
  const q = p.qos ?? {};
  row.stateBadge.textContent = p.state ?? "?";
  row.stateBadge.dataset.kind = STATE_KIND[p.state] ?? "idle";
  row.stateBadge.title = p.fault ? `fault: ${p.fault}` : p.exit_code !== null && p.exit_code !== undefined ?
    `exit code ${p.exit_code}` : "";
  row.cells.window.textContent = p.window !== undefined ? ticks.format(p.window) : "–";
  const allocated = q.allocated_share;
  setMeter(row.cpu, q.cpu_share, allocated ? `${pct(q.cpu_share)} of ${pct(allocated)}` : pct(q.cpu_share));
  const used = p.frames_used ?? q.frames_used ?? 0;
  const quota = p.quota_frames ?? q.quota_frames ?? 0;
  setMeter(row.mem, quota ? used / quota : 0, `${ticks.format(used)} / ${ticks.format(quota)}`);
  const health = q.health_events ?? 0;
  row.cells.health.textContent = ticks.format(health);
  row.cells.health.classList.toggle("health-nonzero", health > 0);
  row.cells.restarts.textContent = ticks.format(p.restarts ?? 0);
  // Actions: none at all for a read-only token; otherwise what the state allows.
  const manage = canManage();
  row.cells.actions.hidden = !manage;
  row.toggle.hidden = !manage;
  row.restart.hidden = !manage;
  row.edit.hidden = !manage;
  const paused = p.state === "paused";
  row.toggle.textContent = paused ? "Resume" : "Pause";
  row.toggle.dataset.op = paused ? "resume" : "pause";
  row.toggle.setAttribute("aria-label", `${paused ? "Resume" : "Pause"} ${name}`);
  const busy = state.busy.has(name);
  row.toggle.disabled = !manage || busy || !(paused || p.state === "ready" || p.state === "blocked");
  row.restart.disabled = !manage || busy || p.pid === null || ["declared", "refused"].includes(p.state);
  row.edit.disabled = !manage || busy;
}

/** A partition's colour square; coloured through the CSSOM (no inline style attribute: CSP-friendly). */
function swatch(name) {
  const node = el("span", { class: "swatch", "aria-hidden": "true" });
  node.style.background = colorOf(name);
  return node;
}

function renderLegend() {
  $("legend").replaceChildren(...[...state.partitions.keys()].map((name) =>
    el("li", {}, swatch(name), name)));
}

// -- management ---------------------------------------------------------------------

async function mutate(name, op, body = {}) {
  if (!state.api || state.busy.has(name)) return;
  state.busy.add(name);
  updateRow(name);
  try {
    const result = await state.api.post(`partitions/${encodeURIComponent(name)}/${op}`, body);
    const when = result && result.t !== undefined ? ` at ${ticks.format(result.t)} ticks` : "";
    toast("ok", `${name}: ${op} ${result?.outcome ?? "accepted"}`, `Applied between windows${when}.`);
  } catch (err) {
    if (handleAuth(err)) return;
    if (err instanceof ApiError && err.status === 403) setRole("read");
    toast("error", `${name}: ${op} refused`, explain(err));
  } finally {
    state.busy.delete(name);
  }
  await refreshPartition(name);
}

async function refreshPartition(name) {
  try {
    const part = await state.api.get(`partitions/${encodeURIComponent(name)}`);
    state.partitions.set(name, { ...(state.partitions.get(name) ?? {}), ...part });
  } catch (err) {
    if (handleAuth(err)) return;
  }
  updateRow(name);
}

function askRestart(name) {
  const dialog = $("restart-dialog");
  $("restart-name").textContent = name;
  $("restart-form").reset();
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue !== "restart") return;
    const mode = new FormData($("restart-form")).get("mode") ?? "cold";
    mutate(name, "restart", { mode });
  };
  dialog.showModal();
}

/** A quota as the configuration writes it: 2MiB, 512KiB, or bytes. */
function quotaText(bytes) {
  if (!Number.isInteger(bytes)) return "";
  if (bytes && bytes % (1 << 20) === 0) return `${bytes >> 20}MiB`;
  if (bytes && bytes % 1024 === 0) return `${bytes >> 10}KiB`;
  return String(bytes);
}

const editing = { name: null, window: "", memory: "" };

function askEdit(name) {
  const p = state.partitions.get(name) ?? {};
  editing.name = name;
  editing.window = p.window !== undefined ? String(p.window) : "";
  editing.memory = quotaText(p.memory);
  $("edit-name").textContent = name;
  $("edit-window").value = editing.window;
  $("edit-memory").value = editing.memory;
  showEditErrors();
  $("edit-apply").disabled = false;
  $("edit-dialog").showModal();
}

/** Errors under the fields (``field`` is the server's name of the field at fault) or under the form. */
function showEditErrors(field = null, message = "") {
  const which = field ? (field.split(".").at(-1) ?? "") : "";
  for (const name of ["window", "memory"]) {
    const hit = which === name;
    $(`edit-${name}-error`).textContent = hit ? message : "";
    $(`edit-${name}`).setAttribute("aria-invalid", hit ? "true" : "false");
    if (hit) $(`edit-${name}`).focus();
  }
  $("edit-error").textContent = message && !["window", "memory"].includes(which) ? message : "";
}

async function submitEdit(ev) {
  ev.preventDefault();
  const name = editing.name;
  const body = {};
  const windowText = $("edit-window").value.trim();
  const memory = $("edit-memory").value.trim();
  if (windowText !== editing.window) {
    if (!/^\d+$/.test(windowText)) {
      showEditErrors("window", "A window is a whole number of ticks.");
      return;
    }
    body.window = Number(windowText);
  }
  if (memory !== editing.memory) body.memory = /^\d+$/.test(memory) ? Number(memory) : memory;
  if (!Object.keys(body).length) {
    showEditErrors(null, "Nothing changed.");
    return;
  }
  showEditErrors();
  $("edit-apply").disabled = true;
  state.busy.add(name);
  updateRow(name);
  try {
    const result = await state.api.request("PATCH", `partitions/${encodeURIComponent(name)}`, body);
    $("edit-dialog").close();
    const what = Object.entries(body).map(([k, v]) => `${k} ${typeof v === "number" ? ticks.format(v) : v}`).join(", ");
    toast("ok", `${name}: ${what}: ${result?.outcome ?? "accepted"}`,
      body.memory !== undefined ? "The new quota applies from its next start." : "Applied at the end of a major frame.");
  } catch (err) {
    if (handleAuth(err)) return;
    if (err instanceof ApiError && err.status === 403) {
      setRole("read");
      $("edit-dialog").close();
      toast("error", `${name}: change refused`, explain(err));
    } else {
      // a field the form has: the server's message under it; anything else under the form
      const field = err instanceof ApiError ? err.field : null;
      const ours = field && ["window", "memory"].includes(field.split(".").at(-1));
      showEditErrors(field, ours ? err.message : explain(err));
    }
  } finally {
    state.busy.delete(name);
    $("edit-apply").disabled = false;
  }
  await refreshPartition(name);
}

// -- fleet (its view: fleet.js) -------------------------------------------------------

async function startFleet() {
  const has = state.system && state.system.fleet;
  if (has === false) return; // this server serves no fleet: never ask (no 404 in the log)
  if (!(await refreshFleet())) return;
  state.fleetTimer = setInterval(refreshFleet, FLEET_POLL_MS);
}

let fleetInFlight = false;
async function refreshFleet() {
  if (fleetInFlight || !state.api) return true;
  fleetInFlight = true;
  try {
    renderFleet(await state.api.get("fleet"));
    return true;
  } catch (err) {
    if (handleAuth(err)) return false;
    if (err instanceof ApiError && err.status === 404) {
      $("fleet").hidden = true;
      if (state.fleetTimer) clearInterval(state.fleetTimer);
      state.fleetTimer = null;
      return false;
    }
    return true; // a passing failure: try again at the next tick
  } finally {
    fleetInFlight = false;
  }
}

// -- a served fleet (spk fleet --serve): the fleet view is the page ----------------------

function startFleetOnly() {
  $("sys-name-label").textContent = "Fleet";
  $("sys-frame-label").textContent = "Rounds done";
  setLive("wait", "connecting…");
  watchFleet(state.api);
}

async function watchFleet(api) {
  state.fleetWatch = null;
  if (api !== state.api) return;
  let fleet;
  try {
    fleet = await api.get("fleet");
  } catch (err) {
    if (handleAuth(err) || api !== state.api) return;
    setLive("wait", "reconnecting…");
    state.fleetWatch = setTimeout(() => watchFleet(api), FLEET_POLL_MS);
    return;
  }
  if (api !== state.api) return;
  renderFleet(fleet);
  applyFleetHeader(fleet);
  const going = fleet.state === "starting" || fleet.state === "running";
  state.fleetWatch = setTimeout(() => watchFleet(api), going ? FLEET_WATCH_MS : FLEET_ENDED_MS);
}

/** The header for a fleet: its name, virtual time, rounds done of the rounds asked for, pace and state. */
function applyFleetHeader(fleet) {
  $("sys-name").textContent = fleet.name ?? "–";
  document.title = fleet.name ? `${fleet.name} · SPK console` : "SPK console";
  $("sys-now").textContent = `${ticks.format(fleet.time ?? 0)} ticks`;
  const done = fleet.round === null || fleet.round === undefined ? 0 : fleet.round + 1;
  $("sys-frame").textContent = fleet.rounds ? `${ticks.format(done)} of ${ticks.format(fleet.rounds)}` : ticks.format(done);
  const pace = Number(fleet.pace);
  $("sys-pace").textContent = !fleet.pace ? "unpaced" : `${Number.isInteger(pace) ? pace : pace.toFixed(1)} rounds/s`;
  $("sys-state").textContent = FLEET_STATES[fleet.state] ?? "running";
  if (fleet.state === "starting" || fleet.state === "running" || fleet.state === undefined) setLive("on", "live");
  else setLive("off", FLEET_STATES[fleet.state]);
  if (fleet.state === "failed" && !state.fleetFailed) {
    state.fleetFailed = true;
    toast("error", "The fleet run failed", fleet.error ?? "");
  }
}

// -- wiring -------------------------------------------------------------------------

function init() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      $("login-error").textContent = "Enter a token.";
      return;
    }
    $("login-error").textContent = "";
    const submit = $("login-form").querySelector("button[type=submit]");
    submit.disabled = true; // one sign-in at a time
    signIn(token).finally(() => {
      submit.disabled = false;
    });
  });
  $("signout").addEventListener("click", () => signOut());
  $("edit-form").addEventListener("submit", submitEdit);
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  for (const box of document.querySelectorAll('input[name="kind"]')) {
    box.addEventListener("change", applyFilters);
  }
  for (const radio of document.querySelectorAll('input[name="chart-mode"]')) {
    radio.addEventListener("change", () => {
      chart.setMode(radio.value);
      $("chart-title").textContent = radio.value === "cpu" ? "CPU share per major frame" :
        "Use of its windows per major frame";
      $("chart-hint").textContent = radio.value === "cpu" ?
        "Stacked: each band is the time a partition ran in a major frame; the rest was idle. Marks under the axis are health events." :
        "Each line is the share of its own window time a partition used. Marks under the axis are health events.";
    });
  }
  chart.schedule();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, { fromStorage: true });
  else showLogin();
}

init();
