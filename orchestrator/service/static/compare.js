// Run comparison: the curves of the runs ticked in the runs table, overlaid per metric.
// Loaded before app.js; uses its helpers (el, api, fmt, setupCanvas, axes, line, range) only
// once the page runs. Any runs compare, same base model or not; `?compare=a,b` links a view.
"use strict";

const COMPARE_CHARTS = [
  { id: "cmp-reward", key: "reward/mean" },
  { id: "cmp-accuracy", key: "reward/accuracy" },
  { id: "cmp-tokens", key: "completion/mean_tokens" },
  { id: "cmp-time", key: "time/step", unit: "s" },
];
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777",
  "#65a30d", "#4b5563", "#ca8a04"];

const Compare = {
  ids: [],            // in the order ticked
  colors: new Map(),  // id -> colour, kept while the run stays ticked
  steps: new Map(),   // id -> Map(step -> metrics)
  final: new Set(),   // runs whose metrics were fetched after they ended: no refetch

  has(id) { return this.ids.includes(id); },

  toggle(id, on) {
    if (on && !this.has(id)) {
      const used = new Set(this.colors.values());
      this.colors.set(id, PALETTE.find((c) => !used.has(c)) || PALETTE[this.ids.length % 10]);
      this.ids.push(id);
      this.load(id);
    } else if (!on) {
      this.ids = this.ids.filter((x) => x !== id);
      this.colors.delete(id);
    }
    this.syncUrl();
    render();
  },

  syncUrl() {
    const url = new URL(location.href);
    if (this.ids.length) url.searchParams.set("compare", this.ids.join(","));
    else url.searchParams.delete("compare");
    history.replaceState(history.state, "", url);
  },

  init() {
    const ids = (new URL(location.href).searchParams.get("compare") || "").split(",");
    for (const id of ids.filter(Boolean)) this.toggle(id, true);
  },

  async load(id) {
    const run = S.runs.find((r) => r.id === id);
    try {
      const m = await api(`/runs/${encodeURIComponent(id)}/metrics`);
      this.steps.set(id, new Map(m.steps.map((s) => [s.step, s.metrics])));
      if (run && TERMINAL.has(run.status)) this.final.add(id);
    } catch (e) {
      this.steps.set(id, this.steps.get(id) || new Map());
    }
    renderCompare();
  },

  // After each poll of /runs: refetch the ticked runs that are still going.
  refresh() {
    for (const id of this.ids) if (!this.final.has(id)) this.load(id);
  },
};

function compareBox(r) {
  return el("input", {
    type: "checkbox", class: "cmp", title: "compare this run", "aria-label": "compare",
    ...(Compare.has(r.id) ? { checked: "" } : {}),
    onclick: (e) => e.stopPropagation(), // ticking is not selecting the row
    onchange: (e) => Compare.toggle(r.id, e.target.checked),
  });
}

function renderCompare() {
  const box = $("#compare");
  box.hidden = Compare.ids.length === 0;
  if (box.hidden) return;
  const name = (id) => (S.runs.find((r) => r.id === id) || { name: id }).name;
  $("#compare-runs").replaceChildren(...Compare.ids.map((id) => el("li", { "data-run": id },
    el("span", { class: "swatch", style: `background:${Compare.colors.get(id)}` }),
    el("b", {}, name(id)), el("span", { class: "mono muted" }, id),
    el("a", { href: `/runs/${encodeURIComponent(id)}/metrics?format=csv`, download: "" }, "csv"),
    el("button", { type: "button", title: "stop comparing",
      onclick: () => Compare.toggle(id, false) }, "×"))));
  for (const c of COMPARE_CHARTS) drawOverlay($("#" + c.id), c);
}

function drawOverlay(cv, spec) {
  const { g, w, h } = setupCanvas(cv);
  const series = Compare.ids.map((id) => {
    const steps = Compare.steps.get(id) || new Map();
    const pts = [...steps.entries()].filter(([, m]) => Number.isFinite(m[spec.key]))
      .map(([s, m]) => [s, m[spec.key]]).sort((a, b) => a[0] - b[0]);
    return { id, color: Compare.colors.get(id), pts };
  }).filter((s) => s.pts.length);
  cv.dataset.series = String(series.length);
  cv.dataset.points = String(series.reduce((n, s) => n + s.pts.length, 0));
  if (!series.length) {
    g.fillStyle = "#9ca3af";
    g.textAlign = "center";
    g.fillText("no data yet", w / 2, h / 2);
    return;
  }
  const xs = series.flatMap((s) => s.pts.map((p) => p[0]));
  const xr = [Math.min(...xs), Math.max(...xs)];
  const yr = range(series.flatMap((s) => s.pts.map((p) => p[1])), false);
  const a = axes(g, w, h, { xr, yr, unit: spec.unit });
  g.lineWidth = 2;
  for (const s of series) {
    const pts = s.pts.map(([x, y]) => [a.X(x), a.Y(y)]);
    line(g, s.color, pts);
    g.fillStyle = s.color;
    if (pts.length > 40) continue; // markers only while they don't crowd the line
    for (const [x, y] of pts) { g.beginPath(); g.arc(x, y, 2.5, 0, 2 * Math.PI); g.fill(); }
  }
}
