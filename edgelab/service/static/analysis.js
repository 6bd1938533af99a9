/* The sweep page's analysis section: results table, heatmap (n and CI on hover), speedup,
   efficiency, tokens/s vs latency, per-token breakdown, the fitted model and break-even.
   Every number comes from edgelab.analysis (embedded as #sweep-analysis, refreshed from
   /sweeps/<id>/analysis whenever the set of succeeded runs changes); nothing is
   recomputed here, so the page, the API and the report agree. */
"use strict";
(function () {
  const urls = EL.json("sweep-urls");
  const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];
  const METRICS = [["ttft_ms", 1], ["tpot_ms", 2], ["itl_p50_ms", 2], ["itl_p99_ms", 2], ["decode_tps", 2], ["e2el_ms", 0]];
  let lastKey = null;

  function fmt(v, digits) { return EL.fmt(v, digits); }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => { if (k === "class") e.className = v; else e.setAttribute(k, v); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function alpha(color, a) {
    const n = parseInt(color.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }
  function ciText(s, digits) {
    if (!s || s.mean === null) return "—";
    if (s.half_width === null) return fmt(s.mean, digits);
    return fmt(s.mean, digits) + " ± " + fmt(s.half_width, digits);
  }
  function ciTitle(s) {
    if (!s || s.mean === null) return "no value";
    const parts = ["n = " + s.n, "mean " + fmt(s.mean, 3)];
    if (s.ci_low !== null) parts.push("95 % CI [" + fmt(s.ci_low, 3) + ", " + fmt(s.ci_high, 3) + "]");
    if (s.sd !== null) parts.push("sd " + fmt(s.sd, 3));
    if (s.cv !== null) parts.push("CV " + fmt(100 * s.cv, 1) + " %");
    return parts.join(" · ");
  }
  function oneWay(g) { return g.rtt_delay_ms / 2; }
  function family(g) { return g.key.engine + "|" + g.key.model + "|" + g.key.threads + "|" + g.key.backend; }
  function many(groups, f) { return new Set(groups.map(f)).size > 1; }

  function notes(a) {
    const box = document.getElementById("analysis-notes");
    box.replaceChildren();
    const c = a.counts;
    box.appendChild(el("p", { class: "note", id: "analysis-counts" },
      c.counted + " of " + c.runs + " runs counted" +
      (c.not_succeeded ? " · " + c.not_succeeded + " did not succeed" : "") +
      (c.warmup ? " · " + c.warmup + " warm-up runs excluded" : "")));
    a.notes.forEach((n) => box.appendChild(el("p", { class: "note" }, n)));
  }

  function table(a) {
    const body = document.querySelector("#results-table tbody");
    body.replaceChildren();
    const rows = a.groups.filter((g) => g.n > 0 || g.excluded_runs > 0);
    if (!rows.length) {
      const tr = el("tr"); const td = el("td", { colspan: "9", class: "empty" }, "no succeeded runs yet");
      tr.appendChild(td); body.appendChild(tr); return;
    }
    const showModel = many(rows, family);
    rows.forEach((g) => {
      const tr = el("tr", { "data-nodes": String(g.key.nodes), "data-latency": g.key.latency || "", "data-n": String(g.n) });
      let label = g.label;
      if (showModel) label = g.key.model + " · " + label;
      const th = el("td", {}, label);
      if (g.run_ids.length) th.title = "runs " + g.run_ids.map((i) => "#" + i).join(" ");
      tr.appendChild(th);
      tr.appendChild(el("td", { class: "num" }, String(g.n)));
      METRICS.forEach(([m, digits]) => {
        const s = g.stats[m];
        const td = el("td", { class: "num", "data-metric": m, title: ciTitle(s) }, ciText(s, digits));
        if (g.noisy_metrics.includes(m)) td.classList.add("noisy");
        tr.appendChild(td);
      });
      const flags = el("td", { class: "flags" });
      g.flags.forEach((f) => {
        const span = el("span", { class: "flag flag-" + f.replace(/ /g, "-") }, f);
        if (f === "noisy") span.title = "CV > 5 % in " + g.noisy_metrics.join(", ");
        if (f === "contended") span.title = g.contended_runs + " run(s) measured while other processes used the host";
        if (f === "oversubscribed") span.title = "threads over all nodes exceed the host's " + (g.host_cores || "?") + " cores";
        if (f === "too few") span.title = "n = " + g.n + " (< 3): the CI is missing or wide";
        flags.appendChild(span);
      });
      if (g.excluded_runs) flags.appendChild(el("small", {}, " " + g.excluded_runs + " not counted"));
      tr.appendChild(flags);
      body.appendChild(tr);
    });
  }

  function heatmap(a) {
    const groups = a.groups.filter((g) => g.stats.decode_tps.mean !== null);
    if (!groups.length) { EL.plot("heatmap", [], { empty: "no succeeded cells yet" }); return; }
    const fam = many(groups, family);
    const rowLabel = (g) => g.key.nodes + " node" + (g.key.nodes > 1 ? "s" : "") + (fam ? " · " + g.key.model + " × " + g.key.threads + "t" : "");
    const cols = [];
    groups.filter((g) => g.key.latency !== null).sort((x, y) => x.rtt_delay_ms - y.rtt_delay_ms)
      .forEach((g) => { if (!cols.includes(g.key.latency)) cols.push(g.key.latency); });
    if (!cols.length) cols.push("no links");
    const rows = [];
    groups.slice().sort((x, y) => x.key.nodes - y.key.nodes).forEach((g) => { const r = rowLabel(g); if (!rows.includes(r)) rows.push(r); });
    const z = rows.map(() => cols.map(() => null));
    const text = rows.map(() => cols.map(() => ""));
    groups.forEach((g) => {
      const r = rows.indexOf(rowLabel(g));
      const s = g.stats.decode_tps;
      const hover = g.label + "<br>" + ciTitle(s).replace(/ · /g, "<br>") + (g.flags.length ? "<br>flags: " + g.flags.join(", ") : "");
      // A 1-node configuration has no links: the same value belongs in every latency column.
      const targets = g.key.latency === null ? cols.map((_, i) => i) : [cols.indexOf(g.key.latency)];
      targets.forEach((c) => { z[r][c] = s.mean; text[r][c] = hover; });
    });
    EL.plot("heatmap", [{
      type: "heatmap", x: cols, y: rows, z: z, text: text, colorscale: "Viridis",
      colorbar: { title: { text: "tok/s" } }, texttemplate: "%{z:.1f}", hovertemplate: "%{text}<extra></extra>",
    }], { xaxis: { title: { text: "latency profile" }, type: "category" }, yaxis: { type: "category" } });
  }

  function bandTraces(xs, ys, cis, name, color, group) {
    const lo = [], hi = [], bx = [];
    xs.forEach((x, i) => { if (cis[i]) { bx.push(x); lo.push(cis[i][0]); hi.push(cis[i][1]); } });
    const out = [];
    if (bx.length >= 2) {
      out.push({ x: bx, y: hi, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: group, type: "scatter" });
      out.push({ x: bx, y: lo, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: alpha(color, 0.18),
                 hoverinfo: "skip", showlegend: false, legendgroup: group, type: "scatter" });
    }
    out.push({ x: xs, y: ys, name: name, mode: "lines+markers", line: { color: color }, legendgroup: group, type: "scatter",
               error_y: bx.length < 2 ? { type: "data", symmetric: false, visible: true, color: color,
                 array: ys.map((y, i) => (cis[i] ? cis[i][1] - y : 0)), arrayminus: ys.map((y, i) => (cis[i] ? y - cis[i][0] : 0)) } : undefined,
               hovertemplate: "%{x} nodes: %{y:.2f}<extra>" + name + "</extra>" });
    return out;
  }

  function scalingCharts(a) {
    const notesBox = document.getElementById("speedup-notes");
    notesBox.replaceChildren();
    const speed = [], eff = [];
    const notes = new Map();  // one line per distinct note, naming the profiles it is about
    const addNote = (text, name, warn) => {
      if (!notes.has(text)) notes.set(text, { names: [], warn: warn });
      notes.get(text).names.push(name);
    };
    let maxN = 1, minN = Infinity, drawn = 0;
    const fam = many(a.scaling, (s) => s.engine + s.model + s.threads);
    a.scaling.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = s.points.filter((p) => !p.oversubscribed);
      const name = (fam ? s.model + " × " + s.threads + "t · " : "") + s.latency;
      if (s.baseline_note) addNote(s.baseline_note, name, false);
      if (s.note) addNote(s.note, name, true);
      if (pts.length < 2) return;
      drawn++;
      const xs = pts.map((p) => p.nodes);
      maxN = Math.max(maxN, ...xs); minN = Math.min(minN, ...xs);
      speed.push(...bandTraces(xs, pts.map((p) => p.speedup), pts.map((p) => p.speedup_ci), name, color, "s" + i));
      eff.push(...bandTraces(xs, pts.map((p) => p.efficiency), pts.map((p) => p.efficiency_ci), name, color, "e" + i));
    });
    notes.forEach((v, text) => notesBox.appendChild(el("p", { class: v.warn ? "note warn" : "note" }, v.names.join(", ") + ": " + text)));
    let empty = "needs TPOT at two or more node counts";
    if (a.scaling.length && !drawn) empty = "compute speedup cannot be measured on this host (oversubscribed): see the note below";
    if (drawn) {
      speed.push({ x: [minN, maxN], y: [1, maxN / minN], name: "linear", mode: "lines", type: "scatter", line: { dash: "dot", color: "#a0aec0" } });
      eff.push({ x: [minN, maxN], y: [1, 1], name: "ideal", mode: "lines", type: "scatter", line: { dash: "dot", color: "#a0aec0" } });
    }
    EL.plot("chart-speedup", speed, { xaxis: { title: { text: "nodes" }, dtick: 1 }, yaxis: { title: { text: "speedup" }, rangemode: "tozero" }, empty: empty });
    EL.plot("chart-efficiency", eff, { xaxis: { title: { text: "nodes" }, dtick: 1 }, yaxis: { title: { text: "efficiency" }, rangemode: "tozero" }, empty: empty });
  }

  function tpsLatency(a) {
    const groups = a.groups.filter((g) => g.stats.decode_tps.mean !== null);
    const multi = groups.filter((g) => g.key.nodes > 1);
    const delays = [...new Set(multi.map(oneWay))].sort((x, y) => x - y);
    if (delays.length < 2) {
      EL.plot("chart-tps-latency", [], { empty: "needs runs at two or more latencies" });
      return;
    }
    const byNodes = {};
    groups.forEach((g) => { (byNodes[g.key.nodes] = byNodes[g.key.nodes] || []).push(g); });
    const traces = Object.keys(byNodes).map(Number).sort((x, y) => x - y).map((n, i) => {
      const color = COLORS[i % COLORS.length];
      let gs = byNodes[n].filter((g) => g.key.bandwidth_bps === null || n === 1);
      if (!gs.length) gs = byNodes[n];
      if (n === 1) {  // no links: one value, drawn across the latency range
        const s = gs[0].stats.decode_tps;
        return { x: [delays[0], delays[delays.length - 1]], y: [s.mean, s.mean], name: "1 node (no links)", type: "scatter",
                 mode: "lines", line: { color: color, dash: "dash" }, hovertemplate: ciTitle(s) + "<extra>1 node</extra>" };
      }
      gs = gs.slice().sort((x, y) => x.rtt_delay_ms - y.rtt_delay_ms);
      const ys = gs.map((g) => g.stats.decode_tps.mean);
      return { x: gs.map(oneWay), y: ys, name: n + " nodes", type: "scatter", mode: "lines+markers", line: { color: color },
               text: gs.map((g) => g.key.latency + " · " + ciTitle(g.stats.decode_tps)), hovertemplate: "%{text}<extra>" + n + " nodes</extra>",
               error_y: { type: "data", symmetric: false, visible: true,
                          array: gs.map((g) => (g.stats.decode_tps.ci_high !== null ? g.stats.decode_tps.ci_high - g.stats.decode_tps.mean : 0)),
                          arrayminus: gs.map((g) => (g.stats.decode_tps.ci_low !== null ? g.stats.decode_tps.mean - g.stats.decode_tps.ci_low : 0)) } };
    });
    EL.plot("chart-tps-latency", traces, { xaxis: { title: { text: "mean one-way delay ms" } }, yaxis: { title: { text: "decode tokens/s" }, rangemode: "tozero" } });
  }

  const PART_COLORS = { "root compute": "#2b6cb0", "worker compute": "#2f855a", "injected delay": "#c05621", "transfer": "#6b46c1", "other": "#a0aec0" };

  function breakdown(parts) {
    const el = document.getElementById("chart-breakdown");
    el.dataset.loaded = "1";
    if (!parts.length) {
      EL.plot("chart-breakdown", [], { empty: "no breakdown recorded (the link proxies recorded no per-request timing for these runs)" });
      return;
    }
    const labels = parts.map((p) => p.label);
    const kinds = [];
    parts.forEach((p) => p.parts.forEach((k) => { if (!kinds.includes(k.name)) kinds.push(k.name); }));
    const traces = kinds.map((k, i) => ({
      type: "bar", name: k, x: labels, marker: { color: PART_COLORS[k] || COLORS[i % COLORS.length] },
      y: parts.map((p) => { const f = p.parts.find((q) => q.name === k); return f ? f.ms : 0; }),
      hovertemplate: "%{x}: %{y:.2f} ms<extra>" + k + "</extra>",
    }));
    traces.push({ type: "scatter", mode: "markers", name: "TPOT", x: labels, y: parts.map((p) => p.tpot_ms),
                  marker: { color: "#1d2330", symbol: "line-ew-open", size: 18 }, hovertemplate: "%{x}: TPOT %{y:.2f} ms<extra></extra>" });
    EL.plot("chart-breakdown", traces, { barmode: "stack", xaxis: { type: "category" }, yaxis: { title: { text: "ms per token" } } });
  }

  function loadBreakdown() {
    fetch(urls.breakdown).then((r) => r.json()).then((d) => breakdown(d.breakdowns || []))
      .catch(() => EL.plot("chart-breakdown", [], { empty: "the breakdown could not be loaded" }));
  }

  function r2Text(fit) {
    const f = (v) => (v === null || v === undefined ? "—" : v.toFixed(3));
    return "R² = " + f(fit.r2_means) + " over " + fit.residuals.length + " configuration means (" +
      f(fit.r2) + " over " + fit.n_runs + " runs)";
  }

  function modelChart(a) {
    const r2 = document.getElementById("model-r2");
    const fit = a.fits[0];
    if (!fit) { r2.textContent = ""; EL.plot("chart-model", [], { empty: "no model fitted yet (needs two or more succeeded runs)" }); return; }
    r2.textContent = (a.fits.length > 1 ? fit.model + " × " + fit.threads + "t · " : "") + r2Text(fit);
    r2.dataset.r2 = fit.r2_means === null ? "" : String(fit.r2_means);
    r2.dataset.r2Runs = fit.r2 === null ? "" : String(fit.r2);
    const traces = [];
    const nodes = fit.nodes_tried;
    // Uncapped links when the sweep has them, else the first bandwidth cap it tried.
    const bw = fit.bandwidths_tried.includes(null) ? null : fit.bandwidths_tried[0];
    nodes.forEach((n, i) => {
      const color = COLORS[i % COLORS.length];
      fit.curves.filter((c) => c.nodes === n && (c.bandwidth_bps === bw || n === 1)).forEach((c) => {
        traces.push({ x: c.delay_ms, y: c.tpot_ms, mode: "lines", type: "scatter", name: n + " nodes (model)",
                      line: { color: color, dash: "dot" }, legendgroup: "n" + n, hovertemplate: "model %{x:.1f} ms: %{y:.2f} ms<extra></extra>" });
      });
      const gs = a.groups.filter((g) => g.key.nodes === n && g.key.engine === fit.engine && g.key.model === fit.model &&
        g.key.threads === fit.threads && g.stats.tpot_ms.mean !== null && (g.key.bandwidth_bps === bw || n === 1));
      if (!gs.length) return;
      gs.sort((x, y) => x.rtt_delay_ms - y.rtt_delay_ms);
      traces.push({ x: gs.map(oneWay), y: gs.map((g) => g.stats.tpot_ms.mean), mode: "markers", type: "scatter",
                    name: n + " nodes (measured)", marker: { color: color, size: 8 }, legendgroup: "n" + n,
                    text: gs.map((g) => g.label + " · " + ciTitle(g.stats.tpot_ms)), hovertemplate: "%{text}<extra></extra>",
                    error_y: { type: "data", symmetric: false, visible: true, color: color,
                               array: gs.map((g) => (g.stats.tpot_ms.ci_high !== null ? g.stats.tpot_ms.ci_high - g.stats.tpot_ms.mean : 0)),
                               arrayminus: gs.map((g) => (g.stats.tpot_ms.ci_low !== null ? g.stats.tpot_ms.mean - g.stats.tpot_ms.ci_low : 0)) } });
    });
    EL.plot("chart-model", traces, { xaxis: { title: { text: "mean one-way delay ms" } }, yaxis: { title: { text: "TPOT ms" }, rangemode: "tozero" },
                                      empty: "no model fitted yet" });
  }

  const TERM_TEXT = {
    base_ms: "base (ms): per-token work that does not split",
    compute_ms: "compute (ms): work split over N nodes",
    per_worker_ms: "per worker (ms): fixed cost of each worker per token",
    delay_factor: "delay factor: share of each round trip's injected delay on the critical path",
    transfer_factor: "transfer factor: bytes at the bandwidth cap's rate",
  };

  function modelDetails(a) {
    const box = document.getElementById("model-details");
    box.replaceChildren();
    if (!a.fits.length) { box.appendChild(el("p", { class: "empty" }, "no model fitted yet (needs two or more succeeded runs)")); return; }
    a.fits.forEach((fit) => {
      const card = el("div", { class: "fit", "data-model": fit.model, "data-threads": String(fit.threads) });
      card.appendChild(el("h3", {}, fit.engine + " · " + fit.model + " · " + fit.threads + " thread(s) · " + fit.backend +
        " — " + r2Text(fit) + ", RMSE " + fmt(fit.rmse_ms, 2) + " ms"));
      card.appendChild(el("p", { class: "note" }, fit.formula));
      const params = el("table", { class: "grid fit-params" });
      const head = el("tr"); ["term", "value", "± s.e."].forEach((h) => head.appendChild(el("th", {}, h)));
      params.appendChild(head);
      Object.entries(fit.params).forEach(([k, v]) => {
        const tr = el("tr", { "data-term": k });
        tr.appendChild(el("td", {}, TERM_TEXT[k] || k));
        tr.appendChild(el("td", { class: "num" }, fmt(v, 3)));
        tr.appendChild(el("td", { class: "num" }, fit.stderr[k] === null || fit.stderr[k] === undefined ? "—" : fmt(fit.stderr[k], 3)));
        params.appendChild(tr);
      });
      card.appendChild(params);
      if (fit.dropped.length) card.appendChild(el("p", { class: "note" }, "not identifiable from these runs (left out): " + fit.dropped.join(", ")));
      fit.notes.forEach((n) => card.appendChild(el("p", { class: "note" }, n)));
      const be = el("table", { class: "grid break-even" });
      const bh = el("tr"); ["nodes", "break-even one-way delay", "verdict", "TPOT at 0 ms (model)"].forEach((h) => bh.appendChild(el("th", {}, h)));
      be.appendChild(bh);
      fit.break_even.forEach((b) => {
        const tr = el("tr", { "data-nodes": String(b.nodes), "data-verdict": b.verdict });
        const pred = fit.predictions.find((p) => p.nodes === b.nodes);
        const tried = fit.nodes_tried.includes(b.nodes);
        tr.appendChild(el("td", {}, b.nodes + (tried ? "" : " (predicted)")));
        tr.appendChild(el("td", { class: "num" }, b.delay_ms === null ? "—" : fmt(b.delay_ms, 1) + " ms"));
        tr.appendChild(el("td", { title: b.text }, b.verdict));
        tr.appendChild(el("td", { class: "num" }, pred ? fmt(pred.tpot_ms, 2) + " ms" : "—"));
        be.appendChild(tr);
      });
      card.appendChild(be);
      const worst = fit.residuals.reduce((m, r) => (r.relative !== null && Math.abs(r.relative) > Math.abs(m) ? r.relative : m), 0);
      card.appendChild(el("p", { class: "note" }, "largest residual per configuration: " + fmt(100 * worst, 1) + " % of the measured mean"));
      box.appendChild(card);
    });
  }

  function render(a) {
    document.getElementById("analysis").dataset.groups = String(a.groups.length);
    notes(a); table(a); heatmap(a); scalingCharts(a); tpsLatency(a); modelChart(a); modelDetails(a);
    loadBreakdown();
    document.body.dataset.analysis = "1";
  }

  function succeededKey(d) {
    return d.cells.filter((c) => c.status === EL.STATUS.SUCCEEDED).map((c) => c.run_id).join(",");
  }

  lastKey = succeededKey(EL.json("sweep-data"));
  render(EL.json("sweep-analysis"));
  document.addEventListener("edgelab:sweep", (e) => {
    const key = succeededKey(e.detail);
    if (key === lastKey) return;
    lastKey = key;
    fetch(urls.analysis).then((r) => r.json()).then(render);
  });
})();
