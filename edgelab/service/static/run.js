/* The run page, live: the answer streams in over server-sent events (replayed when
   the page is opened late); TTFT appears with the first token, TPOT and tokens/s
   update while tokens arrive, and the node and link charts grow from the samples
   and link counters the executor publishes during the run. */
"use strict";
(function () {
  const data = EL.json("run-data");
  const urls = EL.json("run-urls");
  const statusEl = document.getElementById("status");
  const answer = document.getElementById("answer");
  const progress = document.getElementById("progress");
  const errorBox = document.getElementById("error-box");
  const cancelForm = document.getElementById("cancel-form");
  let status = data.status;
  let offsets = data.tokens.map((t) => t.offset_ms);
  let lastIndex = data.tokens.length ? data.tokens[data.tokens.length - 1].index : -1;
  let liveTokens = 0;
  let liveSamples = 0;
  let liveLinks = 0;
  let samples = data.samples.slice();
  let links = data.links.slice();
  let ttft = data.metrics.ttft_ms;
  const pending = {};
  const openedTerminal = EL.TERMINAL.includes(status);
  document.body.dataset.liveTokens = "0";
  document.body.dataset.liveSamples = "0";
  document.body.dataset.liveLinks = "0";

  // Redraw at most every 250 ms per chart, however fast events arrive.
  function later(name, fn) {
    if (pending[name]) return;
    pending[name] = setTimeout(() => { pending[name] = null; fn(); }, 250);
  }

  function setStatus(s, error) {
    status = s;
    EL.badge(statusEl, s);
    document.body.dataset.status = s;
    if (EL.TERMINAL.includes(s)) {
      cancelForm.hidden = true;
      progress.hidden = true;
      // A "run N: cancelling" banner from the cancel button follows the state.
      document.querySelectorAll(".flash-pending").forEach((el) => {
        el.textContent = "run " + data.id + ": " + s;
        el.classList.remove("flash-pending");
        el.classList.add("flash-ok");
        el.dataset.followed = s;
      });
    } else {
      progress.hidden = false;
      if (s === EL.STATUS.QUEUED) progress.textContent = "queued: waiting for a worker…";
      else if (s === EL.STATUS.STARTING) progress.textContent = "starting the cluster…";
      else if (s === EL.STATUS.RUNNING) progress.textContent = "generating…";
    }
    if (error) { errorBox.hidden = false; errorBox.textContent = error; }
  }

  function addToken(ev) {
    if (ev.index <= lastIndex) return;
    lastIndex = ev.index;
    const span = document.createElement("span");
    span.dataset.i = ev.index;
    span.textContent = ev.text;
    span.className = "fresh";
    answer.appendChild(span);
    setTimeout(() => span.classList.remove("fresh"), 600);
    offsets.push(ev.offset_ms);
    document.getElementById("token-count").textContent = offsets.length + " tokens";
    if (!ev.replay && !EL.TERMINAL.includes(status)) {
      liveTokens++;
      document.body.dataset.liveTokens = String(liveTokens);
      if (liveTokens === 1) {
        document.body.dataset.firstLiveTokenStatus = status;
        document.body.dataset.firstTokenAt = String(performance.now());
      }
    }
    later("tokens", tokenChart);
  }

  function setMetrics(m) {
    document.querySelectorAll("[data-metric]").forEach((card) => {
      const key = card.dataset.metric;
      if (m[key] !== undefined && m[key] !== null) {
        const p = ELFMT.metricParts(m[key], key);
        document.getElementById("m-" + key).textContent = p[0];
        document.getElementById("u-" + key).textContent = p[1] || "\u00a0";
        card.dataset.live = m.live ? "1" : "0";
      }
    });
    if (m.ttft_ms !== undefined && m.ttft_ms !== null && ttft !== m.ttft_ms) {
      ttft = m.ttft_ms;
      later("nodes", nodeCharts);
    }
    if (m.live && m.ttft_ms !== null && !document.body.dataset.ttftShownAt) {
      document.body.dataset.ttftShownAt = String(performance.now());
    }
  }

  function tokenChart() {
    const gaps = EL.itl(offsets);
    const x = gaps.map((_, i) => i + 1);
    return EL.plot("chart-tokens", gaps.length ? [
      { x: x, y: gaps, type: "scatter", mode: "lines+markers", name: "inter-token latency",
        line: { color: "#2b6cb0" }, marker: { size: 4 } },
    ] : [], {
      xaxis: { title: { text: "token index" } },
      yaxis: { title: { text: "ms since previous token" }, rangemode: "tozero" },
      showlegend: false,
      empty: offsets.length ? "first token after " + ELFMT.ms(offsets[0]) + "; the chart starts with the next tokens"
        : "no tokens yet",
      minDistinctX: 2,
      tooLittle: "first token after " + ELFMT.ms(offsets[0]) + "; one inter-token gap so far, the chart starts with the next",
    });
  }

  function nodeCharts() {
    const byNode = {};
    samples.forEach((s) => {
      (byNode[s.node] = byNode[s.node] || { x: [], cpu: [], mem: [], role: s.role });
      byNode[s.node].x.push(s.offset_ms);
      byNode[s.node].cpu.push(s.cpu_percent);
      byNode[s.node].mem.push(s.rss_bytes / 1e6);
    });
    const names = Object.keys(byNode).sort();
    const xs = samples.map((s) => s.offset_ms).concat(offsets);
    const range = xs.length ? [Math.min(0, ...xs), Math.max(...xs)] : undefined;
    const marker = ttft === null || ttft === undefined ? {} : {
      shapes: [{ type: "line", x0: ttft, x1: ttft, yref: "paper", y0: 0, y1: 1,
                 line: { color: "#c53030", dash: "dot", width: 1.5 } }],
      annotations: [{ x: ttft, yref: "paper", y: 1, text: "first token", showarrow: false,
                      xanchor: "left", font: { color: "#c53030", size: 11 } }],
    };
    const common = (title) => Object.assign({
      xaxis: { title: { text: "ms since the request" }, range: range },
      yaxis: { title: { text: title }, rangemode: "tozero" },
    }, marker);
    const none = EL.TERMINAL.includes(status) ? "no samples were taken" : "no samples yet";
    EL.plot("chart-cpu", names.map((n) => ({ x: byNode[n].x, y: byNode[n].cpu, name: n + " (" + byNode[n].role + ")", type: "scatter", mode: "lines" })),
      Object.assign(common("CPU %"), { empty: none }));
    EL.plot("chart-mem", names.map((n) => ({ x: byNode[n].x, y: byNode[n].mem, name: n, type: "scatter", mode: "lines" })),
      Object.assign(common("RSS MB"), { empty: none }));
    if (names.length && !EL.TERMINAL.includes(status)) document.body.dataset.nodeChartsLive = "1";
  }

  function linkParts() {
    const none = EL.TERMINAL.includes(status) ? "no link statistics (this run has no links)" : "no link statistics yet";
    EL.plot("chart-links", links.length ? [
      { x: links.map((l) => l.link), y: links.map((l) => l.bytes_up), name: "up (root→worker)", type: "bar" },
      { x: links.map((l) => l.link), y: links.map((l) => l.bytes_down), name: "down (worker→root)", type: "bar" },
    ] : [], { barmode: "group", yaxis: { title: { text: "bytes" }, tickformat: ".3s", ticksuffix: "B" },
              height: 240, empty: none });
    const body = document.querySelector("#links-table tbody");
    if (!links.length) return;
    if (!EL.TERMINAL.includes(status)) document.body.dataset.linkChartLive = "1";
    body.replaceChildren();
    const configured = data.config.latency;
    let effective = false;
    const eff = (l, d) => ["p50", "p99", "max"].map((q) => ELFMT.ms(l["eff_delay_" + q + "_ms_" + d])).join(" / ");
    links.forEach((l) => {
      const tr = document.createElement("tr");
      if (l.eff_delay_p50_ms_up !== undefined && l.eff_delay_p50_ms_up !== null) effective = true;
      [l.link, ELFMT.bytes(l.bytes_up), ELFMT.bytes(l.bytes_down),
       ELFMT.num(l.chunks_up) + " / " + ELFMT.num(l.chunks_down), configured, eff(l, "up"), eff(l, "down")]
        .forEach((v, i) => {
          const td = document.createElement("td");
          td.textContent = v;
          if (i && i !== 4) td.className = "num";
          tr.appendChild(td);
        });
      body.appendChild(tr);
    });
    const note = document.getElementById("links-pending");
    // Live rows have counters only; the per-message delays come with the stored rows.
    if (note) note.hidden = effective || !EL.TERMINAL.includes(status);
  }

  function renderAll(d) {
    setMetrics(d.metrics);
    tokenChart();
    nodeCharts();
    linkParts();
  }

  function refreshServerParts() {
    // Provenance and node logs are rendered by the server: take them from a fresh copy.
    return fetch(window.location.pathname).then((r) => r.text()).then((html) => {
      const doc = new DOMParser().parseFromString(html, "text/html");
      ["provenance-card", "node-logs", "breakdown-card"].forEach((id) => {
        const fresh = doc.getElementById(id);
        const old = document.getElementById(id);
        if (fresh && old) old.replaceWith(fresh);
        else if (fresh) document.getElementById("node-logs-slot").appendChild(fresh);
      });
    });
  }

  function finish() {
    fetch(urls.data, { headers: { Accept: "application/json" } })
      .then((r) => r.json())
      .then((d) => {
        d.tokens.forEach((t) => addToken(Object.assign({ replay: true }, t)));
        offsets = d.tokens.map((t) => t.offset_ms);
        setStatus(d.status, d.error);
        // The stored rows are the truth once the run ended (the live ones were a preview).
        samples = d.samples;
        links = d.links;
        ttft = d.metrics.ttft_ms;
        renderAll(d);
        return refreshServerParts();
      })
      .finally(() => { document.body.dataset.finished = "1"; });
  }

  setStatus(status, data.error);
  if (openedTerminal) {
    renderAll(data);
    document.body.dataset.finished = "1";
    return;
  }
  renderAll(data);

  let polling = null;
  function poll() {
    // Without a broker (or with a proxy that drops event streams): ask every 2 s.
    if (polling) return;
    polling = setInterval(() => {
      fetch(urls.data).then((r) => r.json()).then((d) => {
        d.tokens.forEach((t) => addToken(t));
        setStatus(d.status, d.error);
        if (EL.TERMINAL.includes(d.status)) { clearInterval(polling); finish(); }
      });
    }, 2000);
  }

  const es = new EventSource(urls.events);
  es.addEventListener("status", (e) => {
    const ev = JSON.parse(e.data);
    if (!EL.TERMINAL.includes(ev.status)) setStatus(ev.status, ev.error);
  });
  es.addEventListener("progress", (e) => { progress.hidden = false; progress.textContent = JSON.parse(e.data).message; });
  es.addEventListener("token", (e) => addToken(JSON.parse(e.data)));
  es.addEventListener("metrics", (e) => setMetrics(JSON.parse(e.data)));
  es.addEventListener("samples", (e) => {
    const ev = JSON.parse(e.data);
    samples = samples.concat(ev.samples);
    if (!EL.TERMINAL.includes(status)) {
      liveSamples += ev.samples.length;
      document.body.dataset.liveSamples = String(liveSamples);
    }
    later("nodes", nodeCharts);
  });
  es.addEventListener("links", (e) => {
    links = JSON.parse(e.data).links;
    if (!EL.TERMINAL.includes(status)) document.body.dataset.liveLinks = String(++liveLinks);
    later("links", linkParts);
  });
  es.addEventListener("end", () => { es.close(); finish(); });
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) poll(); };
})();
