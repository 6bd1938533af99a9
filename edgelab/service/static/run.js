/* The run page: the answer streams in over server-sent events (replayed when the
   page is opened late), the cards and charts fill in when the run ends. */
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
  let chartPending = false;
  const openedTerminal = EL.TERMINAL.includes(status);
  document.body.dataset.liveTokens = "0";

  function setStatus(s, error) {
    status = s;
    EL.badge(statusEl, s);
    document.body.dataset.status = s;
    if (EL.TERMINAL.includes(s)) {
      cancelForm.hidden = true;
      progress.hidden = true;
    } else {
      progress.hidden = false;
      if (s === "queued") progress.textContent = "queued: waiting for a worker…";
      else if (s === "starting") progress.textContent = "starting the cluster…";
      else if (s === "running") progress.textContent = "generating…";
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
      if (liveTokens === 1) document.body.dataset.firstLiveTokenStatus = status;
    }
    if (!chartPending) {
      chartPending = true;
      setTimeout(() => { chartPending = false; tokenChart(); }, 250);
    }
  }

  function setMetrics(m) {
    document.querySelectorAll("[data-metric]").forEach((card) => {
      const key = card.dataset.metric;
      if (m[key] !== undefined && m[key] !== null) {
        document.getElementById("m-" + key).textContent = EL.fmt(m[key], 1);
      }
    });
  }

  function tokenChart() {
    const gaps = EL.itl(offsets);
    const x = gaps.map((_, i) => i + 1);
    const ttft = offsets.length ? offsets[0] : null;
    return EL.plot("chart-tokens", gaps.length ? [
      { x: x, y: gaps, type: "scatter", mode: "lines+markers", name: "inter-token latency",
        line: { color: "#2b6cb0" }, marker: { size: 4 } },
    ] : [], {
      xaxis: { title: { text: "token index" } },
      yaxis: { title: { text: "ms since previous token" }, rangemode: "tozero" },
      showlegend: false,
      empty: ttft === null ? "no tokens yet" : "first token after " + EL.fmt(ttft) + " ms",
    });
  }

  function nodeCharts(d) {
    const byNode = {};
    d.samples.forEach((s) => {
      (byNode[s.node] = byNode[s.node] || { x: [], cpu: [], mem: [], role: s.role });
      byNode[s.node].x.push(s.offset_ms);
      byNode[s.node].cpu.push(s.cpu_percent);
      byNode[s.node].mem.push(s.rss_bytes / 1e6);
    });
    const names = Object.keys(byNode).sort();
    const xs = d.samples.map((s) => s.offset_ms).concat(offsets);
    const range = xs.length ? [Math.min(0, ...xs), Math.max(...xs)] : undefined;
    const ttft = d.metrics.ttft_ms;
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
    EL.plot("chart-cpu", names.map((n) => ({ x: byNode[n].x, y: byNode[n].cpu, name: n + " (" + byNode[n].role + ")", type: "scatter", mode: "lines" })),
      Object.assign(common("CPU %"), { empty: "no samples (yet)" }));
    EL.plot("chart-mem", names.map((n) => ({ x: byNode[n].x, y: byNode[n].mem, name: n, type: "scatter", mode: "lines" })),
      Object.assign(common("RSS MB"), { empty: "no samples (yet)" }));
  }

  function links(d) {
    EL.plot("chart-links", d.links.length ? [
      { x: d.links.map((l) => l.link), y: d.links.map((l) => l.bytes_up), name: "bytes up (root→worker)", type: "bar" },
      { x: d.links.map((l) => l.link), y: d.links.map((l) => l.bytes_down), name: "bytes down (worker→root)", type: "bar" },
    ] : [], { barmode: "group", yaxis: { title: { text: "bytes" } }, height: 240, empty: "no link statistics (yet)" });
    const body = document.querySelector("#links-table tbody");
    if (!d.links.length) return;
    body.replaceChildren();
    d.links.forEach((l) => {
      const tr = document.createElement("tr");
      [l.link, EL.fmtBytes(l.bytes_up), EL.fmtBytes(l.bytes_down), l.chunks_up + "/" + l.chunks_down,
       EL.fmt(l.delay_total_ms_up) + " ms", EL.fmt(l.delay_total_ms_down) + " ms", EL.fmt(l.delay_max_ms) + " ms"]
        .forEach((v, i) => { const td = document.createElement("td"); td.textContent = v; if (i) td.className = "num"; tr.appendChild(td); });
      body.appendChild(tr);
    });
  }

  function renderAll(d) {
    setMetrics(d.metrics);
    tokenChart();
    nodeCharts(d);
    links(d);
  }

  function refreshServerParts() {
    // Provenance and node logs are rendered by the server: take them from a fresh copy.
    return fetch(window.location.pathname).then((r) => r.text()).then((html) => {
      const doc = new DOMParser().parseFromString(html, "text/html");
      ["provenance-card", "node-logs"].forEach((id) => {
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
  es.addEventListener("end", () => { es.close(); finish(); });
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) poll(); };
})();
