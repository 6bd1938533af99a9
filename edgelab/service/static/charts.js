/* Shared helpers of the viewer's charts (plotly.js is served by edgelab itself). */
"use strict";
window.EL = (function () {
  // The states come from edgelab.store.status through base.html, never spelled here.
  const STATUS = window.EDGELAB_STATUS;
  const TERMINAL = STATUS.TERMINAL;
  // Legends sit above the plot, so an axis title below never runs into them; axis
  // titles and tick labels get the margin they need (automargin), whatever their length.
  const base = {
    margin: { l: 54, r: 14, t: 10, b: 42 }, height: 290, font: { size: 12 },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" },
  };
  function placeholder(el, text) {
    Plotly.purge(el);
    el.replaceChildren();
    const p = document.createElement("div");
    p.className = "placeholder";
    p.textContent = text;
    el.appendChild(p);
    el.dataset.rendered = "0";
    return Promise.resolve(null);
  }
  function distinctX(traces) {
    const xs = new Set();
    traces.forEach((t) => (t.x || []).forEach((x) => xs.add(String(x))));
    return xs.size;
  }
  /* layout.empty: what to say without traces; layout.minDistinctX: fewer distinct x
     values than this (a scaling chart with one node count) is "too little data",
     said as layout.tooLittle instead of one dot on a made-up axis. */
  function plot(id, traces, layout) {
    const el = document.getElementById(id);
    if (!el || typeof Plotly === "undefined") return Promise.resolve(null);
    const opts = layout || {};
    if (!traces.length) return placeholder(el, opts.empty || "no data yet");
    if (opts.minDistinctX && distinctX(traces) < opts.minDistinctX) {
      el.dataset.tooLittle = "1";
      return placeholder(el, opts.tooLittle || "too little data to draw: needs " + opts.minDistinctX + " or more x values");
    }
    el.dataset.tooLittle = "0";
    const ph = el.querySelector(".placeholder");
    if (ph) ph.remove();
    const full = Object.assign({}, base, opts);
    ["empty", "minDistinctX", "tooLittle"].forEach((k) => delete full[k]);
    ["xaxis", "yaxis"].forEach((k) => { full[k] = Object.assign({ automargin: true }, full[k] || {}); });
    const legendItems = traces.filter((t) => t.showlegend !== false && t.name).length;
    if (full.showlegend !== false && legendItems > 3 && !(layout && layout.height)) {
      full.height = base.height + 22 * Math.ceil(legendItems / 4);  // room for legend rows
    }
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
  return { STATUS, TERMINAL, plot, itl, mean, std, fmt, fmtBytes, badge, json };
})();
