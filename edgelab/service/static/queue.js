/* Queue panel: workers online, queued and running runs; refreshed every 3 s. */
"use strict";
(function () {
  const urls = JSON.parse(document.getElementById("queue-urls").textContent);
  function link(base, id) { const a = document.createElement("a"); a.href = base.replace(/0$/, String(id)); a.textContent = "#" + id; return a; }
  function cell(tr, content, cls) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "";
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  function rows(id, runs) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    if (!runs.length) { const tr = document.createElement("tr"); cell(tr, "none", "empty"); tr.firstChild.colSpan = 7; body.appendChild(tr); return; }
    runs.forEach((r) => {
      const tr = document.createElement("tr");
      cell(tr, link(urls.run, r.id));
      const b = document.createElement("span"); b.className = "badge status-" + r.status; b.textContent = r.status; cell(tr, b);
      cell(tr, r.config.model); cell(tr, String(r.config.nodes), "num"); cell(tr, r.config.latency);
      cell(tr, r.sweep_id ? link(urls.sweep, r.sweep_id) : "");
      cell(tr, (r.started_at || r.created_at || "").replace("T", " ").slice(0, 19));
      body.appendChild(tr);
    });
  }
  function render(d) {
    document.getElementById("q-workers").textContent = d.broker ? d.workers.length : "—";
    window.EDGELAB_STATUS.OPEN.forEach((s) => { document.getElementById("q-" + s).textContent = d.counts[s]; });
    const msgs = d.messages || {};
    document.getElementById("q-messages").textContent = d.broker ? Object.values(msgs).reduce((a, b) => a + b, 0) : "—";
    const err = document.getElementById("q-error");
    err.hidden = !d.error; err.textContent = d.error || "";
    const list = document.getElementById("q-worker-list");
    list.replaceChildren();
    (d.workers.length ? d.workers : [d.broker ? "no worker answered (start one with `edgelab worker`)" : "broker unreachable"])
      .forEach((w) => { const li = document.createElement("li"); li.textContent = w; list.appendChild(li); });
    rows("q-active", d.active);
    rows("q-waiting", d.waiting);
    document.body.dataset.loaded = "1";
  }
  function tick() { fetch(urls.data).then((r) => r.json()).then(render).catch(() => {}); }
  tick();
  setInterval(tick, 3000);
})();
