/* Shared helpers of the viewer's charts (plotly.js is served by edgelab itself). */
"use strict";
window.EL = (function () {
  const TERMINAL = ["succeeded", "failed", "cancelled"];
  const base = {
    margin: { l: 54, r: 14, t: 10, b: 42 }, height: 290, font: { size: 12 },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff", legend: { orientation: "h", y: -0.22 },
  };
  function plot(id, traces, layout) {
    const el = document.getElementById(id);
    if (!el || typeof Plotly === "undefined") return Promise.resolve(null);
    if (!traces.length) {
      Plotly.purge(el);
      el.replaceChildren();
      const p = document.createElement("div");
      p.className = "placeholder";
      p.textContent = (layout && layout.empty) || "no data yet";
      el.appendChild(p);
      el.dataset.rendered = "0";
      return Promise.resolve(null);
    }
    const ph = el.querySelector(".placeholder");
    if (ph) ph.remove();
    const full = Object.assign({}, base, layout || {});
    delete full.empty;
    return Plotly.react(el, traces, full, { displaylogo: false, responsive: true }).then(function () {
      el.dataset.rendered = "1";
      return el;
    });
  }
  function itl(offsets) {
    const out = [];
    for (let i = 1; i < offsets.length; i++) out.push(offsets[i] - offsets[i - 1]);
    return out;
  }
  function mean(xs) { return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN; }
  function std(xs) {
    if (xs.length < 2) return 0;
    const m = mean(xs);
    return Math.sqrt(xs.reduce((a, b) => a + (b - m) * (b - m), 0) / (xs.length - 1));
  }
  // Numbers go through format.js, the same rules as the templates' filters.
  function fmt(v, digits) { return ELFMT.num(v, digits); }
  function fmtBytes(v) { return ELFMT.bytes(v); }
  function badge(holder, status) {
    holder.dataset.status = status;
    let b = holder.querySelector(".badge");
    if (!b) { b = document.createElement("span"); holder.appendChild(b); }
    b.className = "badge status-" + status;
    b.textContent = status;
  }
  function json(id) { return JSON.parse(document.getElementById(id).textContent); }
  return { TERMINAL, plot, itl, mean, std, fmt, fmtBytes, badge, json };
})();
