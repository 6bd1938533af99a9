/* Compare: overlaid per-token latency, ITL distributions, scaling (one sweep). */
"use strict";
(function () {
  const data = EL.json("compare-data");
  const toggle = document.getElementById("only-diff");
  toggle.addEventListener("change", () => {
    document.querySelectorAll("table.compare").forEach((t) => t.classList.toggle("only-diff", toggle.checked));
  });
  const withTokens = data.runs.filter((r) => r.offsets.length > 1);
  EL.plot("chart-overlay", withTokens.map((r) => {
    const gaps = EL.itl(r.offsets);
    // Short legend entries ("#12"); the hover names the configuration.
    return { x: gaps.map((_, i) => i + 1), y: gaps, name: "#" + r.id, text: r.label, type: "scatter",
             mode: "lines", hovertemplate: "%{text}<br>token %{x}: %{y:.1f} ms<extra></extra>" };
  }), { xaxis: { title: { text: "token index" } }, yaxis: { title: { text: "ms since previous token" }, rangemode: "tozero" },
        empty: "none of these runs has tokens" });
  // Boxes are labelled by run id only ("#12"): ten "#12 3n 10ms..50ms" labels clip;
  // the hover and the tables above give the configuration.
  EL.plot("chart-itl", withTokens.map((r) => ({
    y: EL.itl(r.offsets), x0: "#" + r.id, name: r.label, type: "box", boxpoints: "outliers",
  })), { yaxis: { title: { text: "inter-token latency ms" }, rangemode: "tozero" }, showlegend: false,
         xaxis: { type: "category", tickangle: withTokens.length > 6 ? -45 : 0 },
         empty: "none of these runs has tokens" });
  if (document.getElementById("chart-scaling")) {
    const traces = [];
    let maxNodes = 1, minNodes = Infinity;
    data.scaling.forEach((s) => {
      traces.push({ x: s.nodes, y: s.speedup, name: s.latency, type: "scatter", mode: "lines+markers" });
      maxNodes = Math.max(maxNodes, ...s.nodes);
      minNodes = Math.min(minNodes, ...s.nodes);
    });
    if (traces.length) {
      traces.push({ x: [minNodes, maxNodes], y: [1, maxNodes / minNodes], name: "linear", type: "scatter",
                    mode: "lines", line: { dash: "dot", color: "#a0aec0" } });
    }
    EL.plot("chart-scaling", traces, { xaxis: { title: { text: "nodes" }, dtick: 1 },
      yaxis: { title: { text: "speedup (TPOT ratio)" } }, empty: "no speedup to draw: needs succeeded runs at two or more node counts",
      minDistinctX: 2, tooLittle: "no speedup to draw: needs succeeded runs at two or more node counts" });
  }
})();
