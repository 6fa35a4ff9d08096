// Pushline's operator console: read-only, plain JS, no build step. Everything it shows
// comes from /v1/console/… with the admin key the operator signed in with.
"use strict";

const KEY_SLOT = "pushline-console-key";
const ORDER = ["SENT", "RECEIVED", "CONSUMED", "CONFIRMED", "ERROR", "CANCELLED", "QUEUED"];
const LANE_COLOURS = { priority: "#8250df", bulk: "#0969da" };
const $ = (id) => document.getElementById(id);

let openMessage = null;
let openDelivery = null;
let timers = [];

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const answer = await fetch(path, { headers: { "X-API-Key": sessionStorage.getItem(KEY_SLOT) || "" } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new ApiError(answer.status, body.message || answer.statusText);
  return body;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "";
    tr.append(td);
  }
  return tr;
}

function when(iso) {
  if (!iso) return "";
  const t = new Date(iso.endsWith("Z") || iso.includes("+") ? iso : iso + "Z");
  return t.toISOString().replace("T", " ").slice(0, 19);
}

// --- a Message's progress: one segment per status, the codes in each segment's title ----
function bar(m) {
  const counted = Object.values(m.by_status).reduce((a, b) => a + b, 0);
  const whole = Math.max(m.total || 0, counted, 1);
  const outer = el("div", null, {
    class: "bar",
    "data-total": String(m.total || 0),
    "data-final": String(counted - (m.by_status.QUEUED || 0)),
    "data-sent": String(["SENT", "RECEIVED", "CONSUMED", "CONFIRMED"].reduce((a, s) => a + (m.by_status[s] || 0), 0)),
  });
  for (const status of ORDER) {
    const n = m.by_status[status] || 0;
    if (!n) continue;
    const seg = el("div", null, { class: `seg seg-${status}`, "data-status": status, title: `${status} ${n}` });
    seg.style.width = `${(100 * n) / whole}%`;
    outer.append(seg);
  }
  return outer;
}

function counts(m) {
  const parts = ORDER.filter((s) => m.by_status[s]).map((s) => `${s} ${m.by_status[s]}`);
  const codes = Object.entries(m.by_code).map(([c, n]) => `code ${c}: ${n}`);
  const why = m.code !== null && m.code !== undefined ? ` · code ${m.code}${m.detail ? ": " + m.detail : ""}` : "";
  return `${parts.join(" · ") || "no deliveries"}${codes.length ? " (" + codes.join(", ") + ")" : ""} of ${m.total}${why}`;
}

// --- small SVG line charts --------------------------------------------------------------
function chart(svg, series) {
  const W = 360, H = 90, pad = 4;
  svg.replaceChildren();
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  for (const s of series) {
    const step = (W - 2 * pad) / Math.max(1, s.values.length - 1);
    const points = s.values.map((v, i) => `${(pad + i * step).toFixed(1)},${(H - pad - ((H - 2 * pad) * v) / top).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.colour);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("data-series", s.name);
    line.setAttribute("data-sum", String(s.values.reduce((a, b) => a + b, 0)));
    svg.append(line);
  }
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "6"); label.setAttribute("y", "12"); label.setAttribute("font-size", "10");
  label.textContent = `max ${top}`;
  svg.append(label);
}

async function refreshOverview() {
  const o = await api("/v1/console/overview");
  const lanes = Object.keys(o.queued);
  chart($("chart-queued"), lanes.map((lane) => ({ name: lane, values: o.queued[lane], colour: LANE_COLOURS[lane] || "#57606a" })));
  $("queued-legend").replaceChildren(...lanes.map((lane) => {
    const s = el("span", `${lane} ${o.queued[lane][o.queued[lane].length - 1]}`);
    s.style.color = LANE_COLOURS[lane] || "#57606a";
    return s;
  }));
  chart($("chart-sent"), [{ name: "sent", values: o.sent, colour: "#2da44e" }]);
  const queues = Object.entries(o.queues).map(([q, n]) => `${q}: ${n ?? "?"}`);
  $("queues").textContent = queues.length ? `Tasks waiting now: ${queues.join(", ")}` : "Redis did not answer.";
}

async function refreshMessages() {
  const page = await api("/v1/console/messages?limit=20");
  $("message-rows").replaceChildren(...page.items.map((m) => {
    const tr = row(
      [when(m.created_at), m.name || m.id, m.target_type, m.lane, m.state, bar(m), counts(m)],
      { class: "clickable", "data-message": m.id, "data-state": m.state },
    );
    if (m.id === openMessage) tr.classList.add("selected");
    tr.addEventListener("click", () => { openMessage = m.id; openDelivery = null; $("delivery").hidden = true; refreshMessage(); });
    return tr;
  }));
}

async function refreshMessage() {
  if (!openMessage) return;
  const d = await api(`/v1/console/messages/${encodeURIComponent(openMessage)}?limit=100`);
  $("message").hidden = false;
  $("message-id").textContent = d.message.id;
  $("message-bar").replaceChildren(bar(d.message));
  $("message-counts").textContent = `${d.message.state}: ${counts(d.message)}`;
  $("delivery-rows").replaceChildren(...d.deliveries.items.map((x) => {
    const tr = row([x.id, x.provider, x.status, x.code ?? "", x.attempts, when(x.updated_at)], { class: "clickable", "data-delivery": x.id });
    tr.addEventListener("click", () => { openDelivery = x.id; refreshDelivery(); });
    return tr;
  }));
}

async function refreshDelivery() {
  if (!openDelivery) return;
  const d = await api(`/v1/console/deliveries/${encodeURIComponent(openDelivery)}`);
  $("delivery").hidden = false;
  $("delivery-id").textContent = d.delivery.id;
  $("attempt-rows").replaceChildren(...(d.delivery.history || []).map((a, i) =>
    row([i + 1, when(a.at), a.code ?? "", a.answer, a.ms ?? "", a.worker ?? ""], { class: "attempt" })));
  $("story").replaceChildren(...d.story.map((e) => el("li", `${when(e.at)}  ${e.what}${e.detail ? ": " + e.detail : ""}`)));
}

async function refreshSchedules() {
  const items = await api("/v1/console/schedules?limit=50");
  $("schedule-rows").replaceChildren(...items.map((s) =>
    row([s.id, s.app_id, s.cron ? `cron ${s.cron} (${s.timezone || "UTC"})` : s.kind, s.state, when(s.next_run_at), s.runs], { "data-schedule": s.id })));
}

// --- polling: fast for live progress, slower for the hour's charts -----------------------
function every(ms, fn) {
  const tick = () => fn().catch(failed);
  tick();
  timers.push(setInterval(tick, ms));
}

function failed(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) signOut(err.message);
  else console.warn(err);
}

async function signIn(key) {
  sessionStorage.setItem(KEY_SLOT, key);
  try {
    await api("/v1/console/overview");
  } catch (err) {
    signOut(err.message);
    return;
  }
  $("sign-in").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `signed in as ${key.slice(0, 10)}…`;
  every(1000, async () => { await refreshMessages(); await refreshMessage(); await refreshDelivery(); });
  every(5000, refreshOverview);
  every(5000, refreshSchedules);
}

function signOut(reason) {
  timers.forEach(clearInterval);
  timers = [];
  sessionStorage.removeItem(KEY_SLOT);
  openMessage = openDelivery = null;
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("who").textContent = "";
  $("sign-in-error").textContent = reason || "";
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  signIn($("key").value.trim());
});
$("sign-out").addEventListener("click", () => signOut(""));
if (sessionStorage.getItem(KEY_SLOT)) signIn(sessionStorage.getItem(KEY_SLOT));
