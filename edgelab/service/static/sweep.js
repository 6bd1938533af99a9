/* The sweep page: progress, cells coloured by status and result charts, refreshed
   every 1.5 s until the sweep ends. */
"use strict";
(function () {
  const urls = EL.json("sweep-urls");
  const STATES = EL.STATUS.ALL;
  let timer = null;
  let lastChartKey = "";

  function runUrl(id) { return urls.run.replace(/0$/, String(id)); }

  function cells(d) {
    const box = document.getElementById("cells");
    box.replaceChildren();
    d.cells.forEach((c) => {
      const a = document.createElement("a");
      a.className = "cell status-" + c.status;
      a.href = runUrl(c.run_id);
      a.dataset.status = c.status;
      a.textContent = c.nodes + "n · " + c.latency + " · r" + c.repetition;
      a.title = "run #" + c.run_id + " · " + c.status + " · " + c.model + " · " + c.threads +
        " threads · max " + c.max_tokens + " tokens" + (c.decode_tps ? " · " + ELFMT.rate(c.decode_tps) : "");
      box.appendChild(a);
    });
  }

  function progress(d) {
    const p = d.progress;
    const pct = p.total ? Math.round((100 * p.done) / p.total) : 0;
    const bar = document.getElementById("progress-bar");
    bar.firstElementChild.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
    document.getElementById("progress-pct").textContent = pct + "%";
    STATES.forEach((s) => { document.querySelector('[data-count="' + s + '"]').textContent = p[s]; });
    document.getElementById("model-loads").textContent = d.model_loads;
    document.body.dataset.progress = String(pct);
  }

  function charts(d) {
    const done = d.cells.filter((c) => c.status === EL.STATUS.SUCCEEDED);
    const key = done.map((c) => c.run_id).join(",");
    if (key === lastChartKey && lastChartKey !== "") return;
    lastChartKey = key;
    const latencies = [];
    d.cells.forEach((c) => { if (!latencies.includes(c.latency)) latencies.push(c.latency); });
    const nodes = [...new Set(d.cells.map((c) => c.nodes))].sort((a, b) => a - b);
    const group = (field) => {
      const g = {};
      done.forEach((c) => {
        if (c[field] === null || c[field] === undefined) return;
        const k = c.nodes + "|" + c.latency;
        (g[k] = g[k] || []).push(c[field]);
      });
      return g;
    };
    // The tokens/s heatmap (with n and CI) is drawn by analysis.js from edgelab.analysis.
    const ttft = group("ttft_ms");
    const traces = latencies.map((l) => {
      const xs = [], ys = [], es = [];
      nodes.forEach((n) => {
        const v = ttft[n + "|" + l];
        if (v) { xs.push(n); ys.push(EL.mean(v)); es.push(EL.std(v)); }
      });
      return { x: xs, y: ys, name: l, type: "scatter", mode: "lines+markers",
               error_y: { type: "data", array: es, visible: true } };
    }).filter((t) => t.x.length);
    EL.plot("ttft-chart", traces, {
      xaxis: { title: { text: "nodes" }, dtick: 1 }, yaxis: { title: { text: "TTFT ms (mean ± sd)" }, rangemode: "tozero" },
      empty: "no succeeded cells yet",
      minDistinctX: 2, tooLittle: "one node count so far: TTFT vs nodes needs two or more",
    });
  }

  function render(d) {
    EL.badge(document.getElementById("status"), d.status);
    progress(d);
    cells(d);
    charts(d);
    document.dispatchEvent(new CustomEvent("edgelab:sweep", { detail: d }));
    const terminal = EL.STATUS.SWEEP_TERMINAL.includes(d.status);
    document.getElementById("cancel").disabled = terminal;
    if (terminal) {
      document.body.dataset.finished = "1";
      if (timer) { clearInterval(timer); timer = null; }
    } else if (!timer) {
      timer = setInterval(() => fetch(urls.data).then((r) => r.json()).then(render), 1500);
    }
  }

  render(EL.json("sweep-data"));
})();
