// Benchmark curves of the selected run (eval/<benchmark>/<metric> at each evaluated step) and
// the "ask the policy" box. Uses app.js's chart helpers and state (S); loaded before it.
"use strict";

const Evals = (() => {
  const COLORS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#ca8a04"];
  // Accuracy-like metrics share one 0-1 axis; sizes, timings and token counts stay off it.
  const CURVE = /^eval\/[^/]+\/(pass@\d+|mean@\d+|maj@\d+|boxed)$/;

  function series(evals) {
    const keys = new Set();
    for (const e of evals) for (const k of Object.keys(e)) if (CURVE.test(k)) keys.add(k);
    return [...keys].sort().map((k, i) => [k, k.slice(5), COLORS[i % COLORS.length]]);
  }

  function draw(cv) {
    // The run's own evaluations make the curve; those asked for later are in the table.
    const rows = [...S.evals.values()].filter((e) => Number.isFinite(e.step) && !e.requested)
      .sort((a, b) => a.step - b.step);
    const ser = series(rows);
    $("#evals-chart-card").hidden = ser.length === 0;
    cv.dataset.points = String(rows.length);
    cv.dataset.series = String(ser.length);
    if (!ser.length) return;
    const { g, w, h } = setupCanvas(cv);
    const lastOf = (k) => rows.findLast((e) => Number.isFinite(e[k]))?.[k];
    legend(g, w, ser.map(([k, label, color]) => [label, color, pct(lastOf(k))]));
    const xr = [rows[0].step, rows[rows.length - 1].step];
    const a = axes(g, w, h, { xr, yr: [0, 1] });
    g.lineWidth = 2;
    for (const [k, , color] of ser) {
      const pts = rows.filter((e) => Number.isFinite(e[k])).map((e) => [a.X(e.step), a.Y(e[k])]);
      line(g, color, pts);
      g.fillStyle = color;
      for (const [x, y] of pts) { g.beginPath(); g.arc(x, y, 3, 0, 2 * Math.PI); g.fill(); }
    }
  }

  // POST /policy/ask: the generator answers under the alias of the policy being trained.
  async function ask(e) {
    e.preventDefault();
    const q = $("#ask-q").value.trim();
    if (!q) return;
    const out = $("#ask-out");
    out.textContent = "…";
    try {
      const r = await Auth.fetch("/policy/ask", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question: q, max_tokens: 256 }),
      });
      const body = await r.json();
      if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : r.statusText);
      out.replaceChildren(el("div", { class: "muted" }, `${body.model}` +
        (body.extracted != null ? ` · answer: ${body.extracted}` : "")), body.answer);
    } catch (err) {
      out.textContent = "error: " + err.message;
    }
  }

  function init() {
    $("#ask-form").addEventListener("submit", ask);
  }

  return { draw, init, series };
})();
