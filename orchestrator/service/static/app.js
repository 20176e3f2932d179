// mathrl dashboard: runs table (polled) + live charts for the selected run (SSE).
"use strict";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const ORDER = ["queued", "starting", "running", "completed", "failed", "cancelled"];
const POLL_MS = 2000;
const CHARTS = [
  { id: "chart-reward", kind: "line", series: [
    ["reward/mean", "reward mean", "#2563eb"], ["reward/accuracy", "accuracy", "#16a34a"]] },
  { id: "chart-tokens", kind: "line", series: [
    ["completion/mean_tokens", "mean tokens", "#9333ea"]] },
  { id: "chart-loss", kind: "line", dual: true, series: [
    ["loss/kl", "KL", "#ea580c"], ["loss/policy", "policy loss", "#0891b2"]] },
  { id: "chart-time", kind: "stack", unit: "s", series: [
    ["time/generate", "generate", "#2563eb"], ["time/reward", "reward", "#f59e0b"],
    ["time/learn", "learn", "#16a34a"], ["time/sync", "sync", "#db2777"]] },
];

const S = {
  runs: [], sel: null, pinned: false, run: null, status: null, reason: "", err: null,
  steps: new Map(), evals: new Map(), es: null, timer: null,
};
const $ = (sel) => document.querySelector(sel);

function el(tag, props = {}, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") n.className = v;
    else if (k === "style") n.style.cssText = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const kid of kids) if (kid != null) n.append(kid);
  return n;
}

function fmt(v, unit = "") {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  let s;
  if (a === 0) s = "0";
  else if (a >= 1e4) s = (v / 1e3).toFixed(1) + "k";
  else if (a >= 100) s = v.toFixed(0);
  else if (a >= 0.01) s = String(Number(v.toPrecision(3)));
  else s = v.toExponential(1);
  return s + unit;
}
const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");

async function api(path) {
  const r = await Auth.fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// ---- state -------------------------------------------------------------------------------

function mergeStatus(st) {
  if (!st) return;
  if (!S.status || ORDER.indexOf(st) >= ORDER.indexOf(S.status)) S.status = st;
}

// One row per evaluation: those asked for after the run (`requested`: the job id) sit beside
// the run's own at the same step instead of replacing them.
function evalKey(e, step) {
  return `${e.step ?? step}:${e.requested || ""}`;
}

function mergeRun(run) {
  if (!run || run.id !== S.sel) return;
  S.run = run;
  mergeStatus(run.status);
  for (const e of run.evals || []) S.evals.set(evalKey(e), e);
}

function addMetrics(step, metrics) {
  S.steps.set(step, { ...(S.steps.get(step) || {}), ...metrics });
}

function schedule() {
  if (S.timer) return;
  S.timer = setTimeout(() => { S.timer = null; render(); }, 40);
}

function setConn(cls, text) {
  const title = "event stream: " + text;
  Object.assign($("#conn"), { className: "conn " + cls, textContent: text, title });
}

function select(id, pinned) {
  const url = new URL(location.href);
  if (pinned && url.searchParams.get("run") !== id) {
    url.searchParams.set("run", id);
    history.pushState({ run: id }, "", url);
  }
  S.pinned ||= pinned;
  if (id === S.sel) return;
  if (S.es) S.es.close();
  Object.assign(S, { sel: id, pinned, run: null, status: null, reason: "", err: null, es: null });
  S.steps = new Map();
  S.evals = new Map();
  mergeRun(S.runs.find((r) => r.id === id));
  const lost = (e) => { if (S.sel === id) S.err = e.message; };
  api(`/runs/${encodeURIComponent(id)}`).then(mergeRun, lost).finally(schedule);
  api(`/runs/${encodeURIComponent(id)}/metrics`).then((m) => {
    if (m.run_id !== S.sel) return;
    for (const s of m.steps) addMetrics(s.step, s.metrics);
    schedule();
  }).catch(() => {});
  connect(id);
  render();
}

function connect(id) {
  const es = new EventSource(Auth.streamUrl(`/runs/${encodeURIComponent(id)}/events`));
  S.es = es;
  const mine = (fn) => (e) => { if (S.es === es) { fn(JSON.parse(e.data)); schedule(); } };
  es.onopen = () => { if (S.es === es) setConn("live", "live"); };
  es.addEventListener("metrics", mine((ev) => addMetrics(ev.step, ev.data)));
  es.addEventListener("eval", mine((ev) => S.evals.set(evalKey(ev.data, ev.step), ev.data)));
  es.addEventListener("status", mine((ev) => {
    mergeStatus(ev.data.status);
    if (S.status === ev.data.status) S.reason = ev.data.reason || "";
    // The run's `error` (why it failed / was cancelled) comes with the run itself.
    if (TERMINAL.has(ev.data.status)) api(`/runs/${encodeURIComponent(id)}`).then(mergeRun);
  }));
  es.onerror = () => {
    if (S.es !== es) return;
    if (TERMINAL.has(S.status)) { es.close(); return setConn("", "ended"); }
    setConn("retry", "reconnecting");
    // EventSource gives up for good on an HTTP error (e.g. a 502 while the API restarts).
    if (es.readyState === EventSource.CLOSED) setTimeout(() => S.es === es && connect(id), 3000);
  };
}

async function poll() {
  try {
    const { runs } = await api("/runs");
    S.runs = runs;
    Compare.refresh();
    if (!S.pinned && runs.length) {
      // Default: newest running run, else newest. Once shown, a run stays selected until it
      // ends and a newer run is running (then the page follows the new one).
      const def = runs.find((r) => r.status === "running") || runs[0];
      const cur = runs.find((r) => r.id === S.sel);
      const follow = !cur || (TERMINAL.has(cur.status) && def.status === "running"
        && def.created_at > cur.created_at);
      if (def.id !== S.sel && follow) select(def.id, false);
    }
    mergeRun(runs.find((r) => r.id === S.sel));
    render();
  } catch (e) {
    setConn("retry", "API unreachable");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// ---- rendering ---------------------------------------------------------------------------

function badge(status) {
  return el("span", { class: "badge s-" + status }, status);
}

function progress(step, total) {
  const f = total > 0 ? Math.min(1, step / total) : 0;
  return el("div", { class: "progress" },
    el("div", { class: "bar" }, el("div", { style: `width:${(100 * f).toFixed(1)}%` })),
    el("span", { class: "txt" }, `${step} / ${total}`));
}

// The selected run's step and status as the stream has them (ahead of the 2 s poll).
const lastStep = () => (S.steps.size ? Math.max(...S.steps.keys()) : 0);
const live = (r) => (r.id === S.sel
  ? { ...r, step: Math.max(r.step, lastStep()), status: S.status || r.status } : r);

function renderRuns() {
  const when = (t) => new Date(t * 1000).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  $("#runs tbody").replaceChildren(...S.runs.map(live).map((r) => el("tr",
    { class: r.id === S.sel ? "selected" : "", "data-run": r.id,
      onclick: () => select(r.id, true) },
    el("td", { class: "pick" }, compareBox(r)), el("td", { class: "mono" }, r.id), el("td", { class: "name", title: r.name }, r.name),
    el("td", {}, badge(r.status)), el("td", {}, progress(r.step, r.total_steps)),
    el("td", {}, when(r.created_at)))));
  $("#runs-empty").hidden = S.runs.length > 0;
}

function renderStatus() {
  const box = $("#status");
  const r = S.run || { id: S.sel, name: S.sel, step: 0, total_steps: 0 };
  const last = S.steps.size ? S.steps.get(lastStep()) : r.latest_metrics || {};
  const step = Math.max(r.step || 0, lastStep());
  const status = S.status || "";
  const kv = (k, v) => el("span", { class: "kv" }, k + " ", el("b", {}, v));
  box.dataset.status = status;
  box.replaceChildren(...[
    el("span", { class: "title" }, r.name || r.id), badge(status || "loading"),
    S.reason ? el("span", { class: "muted" }, S.reason) : null,
    kv("step", `${step} / ${r.total_steps || "?"}`),
    kv("adapter", r.adapter || "–"),
    kv("reward", fmt(last["reward/mean"])), kv("accuracy", pct(last["reward/accuracy"])),
    kv("tok/s", fmt(last["perf/rollout_tokens_per_s"])),
    kv("step time", fmt(last["time/step"], "s")),
    el("a", { class: "csv", href: `/runs/${encodeURIComponent(r.id)}/metrics?format=csv`,
      download: "" }, "metrics CSV"),
    r.error || S.err ? el("div", { class: "error" }, r.error || S.err) : null].filter(Boolean));
}

function renderEvals() {
  const rows = [...S.evals.values()].sort((a, b) => a.step - b.step);
  $("#evals-card").hidden = rows.length === 0;
  $("#evals tbody").replaceChildren(...rows.map((e) => el("tr", {},
    el("td", {}, String(e.step)),
    el("td", {}, e.requested ? `on request (${e.protocol || "mathrl"})` : "during the run"),
    el("td", {}, pct(e.accuracy)), el("td", {}, pct(e.format)),
    el("td", {}, e.n == null ? "–" : String(e.n)))));
}

function render() {
  renderRuns();
  renderCompare();
  $("#detail").hidden = !S.sel;
  if (!S.sel) return;
  renderStatus();
  renderEvals();
  const steps = [...S.steps.keys()].sort((a, b) => a - b);
  for (const c of CHARTS) drawChart($("#" + c.id), c, steps);
  Evals.draw($("#chart-evals"));
}

// ---- charts ------------------------------------------------------------------------------

const PAD = { l: 52, r: 14, t: 30, b: 24 };

function setupCanvas(cv) {
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth, h = cv.clientHeight;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
    cv.width = Math.round(w * dpr);
    cv.height = Math.round(h * dpr);
  }
  const g = cv.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  g.lineJoin = "round";
  return { g, w, h };
}

function line(g, color, pts, dash = []) {
  g.strokeStyle = color;
  g.setLineDash(dash);
  g.beginPath();
  pts.forEach(([x, y], i) => (i ? g.lineTo(x, y) : g.moveTo(x, y)));
  g.stroke();
  g.setLineDash([]);
}

// Frame, grid, min/max labels. `o`: {xr, yr, unit, inset?, yr2?, c1?, c2?} (yr2: right axis).
function axes(g, w, h, o) {
  const pl = PAD.l, pr = w - (o.yr2 ? PAD.l : PAD.r), pt = PAD.t, pb = h - PAD.b;
  const { xr } = o;
  const X = (x) => (xr[1] === xr[0] ? (pl + pr) / 2
    : pl + ((x - xr[0]) / (xr[1] - xr[0])) * (pr - pl));
  const inset = o.inset ?? 6; // keeps extreme points off the frame
  const ph = pb - pt - 2 * inset;
  const Yof = (r) => r && ((y) => pb - inset - ((y - r[0]) / (r[1] - r[0])) * ph);
  const Y = Yof(o.yr);
  g.lineWidth = 1;
  for (const f of [0.25, 0.5, 0.75]) {
    const y = Math.round(pt + f * (pb - pt)) + 0.5;
    line(g, "#eef0f3", [[pl, y], [pr, y]]);
  }
  if (o.yr[0] < 0 && o.yr[1] > 0) line(g, "#9ca3af", [[pl, Y(0)], [pr, Y(0)]], [3, 3]);
  const frame = [[pl + 0.5, pt], [pl + 0.5, pb + 0.5], [pr - 0.5, pb + 0.5]];
  line(g, "#9ca3af", o.yr2 ? [...frame, [pr - 0.5, pt]] : frame);
  g.textBaseline = "middle";
  const ylabels = (r, x, align, color) => {
    g.fillStyle = color || "#4b5563";
    g.textAlign = align;
    g.fillText(fmt(r[1], o.unit), x, Yof(r)(r[1]));
    g.fillText(fmt(r[0], o.unit), x, Yof(r)(r[0]));
  };
  ylabels(o.yr, pl - 6, "right", o.c1);
  if (o.yr2) ylabels(o.yr2, pr + 6, "left", o.c2);
  g.fillStyle = "#4b5563";
  g.textBaseline = "top";
  g.textAlign = "left";
  g.fillText("step " + xr[0], pl, pb + 6);
  g.textAlign = "right";
  g.fillText("step " + xr[1], pr, pb + 6);
  return { X, Y, Y2: Yof(o.yr2), pl, pr, pt, pb };
}

function legend(g, w, items) {
  let x = PAD.l;
  g.textAlign = "left";
  g.textBaseline = "middle";
  let texts = items.map(([label, , value]) => `${label} ${value}`);
  const width = texts.reduce((acc, t) => acc + 30 + g.measureText(t).width, PAD.l);
  if (width > w) texts = items.map(([label]) => label); // narrow canvas: drop the values
  items.forEach(([, color], i) => {
    g.fillStyle = color;
    g.fillRect(x, 9, 10, 10);
    g.fillStyle = "#1f2328";
    g.fillText(texts[i], x + 14, 14);
    x += 30 + g.measureText(texts[i]).width;
  });
}

function range(vals, zero) {
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (zero) lo = Math.min(lo, 0);
  const d = Math.abs(hi) * 0.1 || 1;
  if (hi - lo < 1e-12) [lo, hi] = [zero && lo === 0 ? 0 : lo - d, hi + d];
  return [lo, hi];
}

function drawChart(cv, spec, allSteps) {
  const { g, w, h } = setupCanvas(cv);
  const val = (s, k) => S.steps.get(s)[k];
  const has = (s, k) => Number.isFinite(val(s, k));
  const keys = spec.series.map((s) => s[0]);
  const steps = allSteps.filter((s) => keys.some((k) => has(s, k)));
  cv.dataset.points = String(steps.length);
  const lastOf = (k) => {
    const s = steps.findLast((t) => has(t, k));
    return s == null ? null : val(s, k);
  };
  legend(g, w, spec.series.map(([k, label, color]) => [label, color, fmt(lastOf(k), spec.unit)]));
  if (!steps.length) {
    g.fillStyle = "#9ca3af";
    g.textAlign = "center";
    g.fillText(TERMINAL.has(S.status) ? "no data" : "waiting for data…", w / 2, h / 2);
    return;
  }
  const xr = [steps[0], steps[steps.length - 1]];
  if (spec.kind === "stack") return drawStack(g, w, h, spec, steps, xr, val);
  // `dual`: the second series gets its own scale on the right (e.g. KL vs policy loss).
  const groups = spec.dual ? [[keys[0]], [keys[1]]] : [keys];
  const [yr, yr2] = groups.map((ks) => {
    const vals = steps.flatMap((s) => ks.filter((k) => has(s, k)).map((k) => val(s, k)));
    return vals.length ? range(vals, false) : [0, 1];
  });
  const c = spec.series.map((s) => s[2]);
  const a = axes(g, w, h, { xr, yr, yr2, unit: spec.unit, c1: spec.dual && c[0], c2: c[1] });
  g.lineWidth = 2;
  spec.series.forEach(([k, , color], i) => {
    const Y = spec.dual && i === 1 ? a.Y2 : a.Y;
    const pts = steps.filter((s) => has(s, k)).map((s) => [a.X(s), Y(val(s, k))]);
    line(g, color, pts);
    g.fillStyle = color;
    if (pts.length > 40) return; // markers only while they don't crowd the line
    for (const [x, y] of pts) { g.beginPath(); g.arc(x, y, 2.5, 0, 2 * Math.PI); g.fill(); }
  });
}

function drawStack(g, w, h, spec, steps, xr, val) {
  const v = (s, k) => (Number.isFinite(val(s, k)) ? Math.max(0, val(s, k)) : 0);
  const totals = steps.map((s) => spec.series.reduce((acc, [k]) => acc + v(s, k), 0));
  const a = axes(g, w, h, { xr, yr: range(totals, true), unit: spec.unit, inset: 0 });
  const span = Math.max(1, xr[1] - xr[0] + 1);
  const bw = Math.max(1, ((a.pr - a.pl) / span) * 0.75);
  const X = (s) => a.pl + ((s - xr[0] + 0.5) / span) * (a.pr - a.pl) - bw / 2;
  for (const s of steps) {
    let acc = 0;
    for (const [k, , color] of spec.series) {
      const y0 = a.Y(acc), y1 = a.Y(acc + v(s, k));
      acc += v(s, k);
      g.fillStyle = color;
      g.fillRect(X(s), y1, bw, y0 - y1);
    }
  }
}

// ---- boot --------------------------------------------------------------------------------

window.addEventListener("resize", schedule);
window.addEventListener("popstate", () => {
  const id = new URL(location.href).searchParams.get("run");
  if (id) return select(id, true);
  if (S.es) S.es.close();
  Object.assign(S, { sel: null, pinned: false, es: null });
  render(); // the next poll selects the default run again
});
const initial = new URL(location.href).searchParams.get("run");
if (initial) select(initial, true);
Compare.init();
Evals.init();
poll();
