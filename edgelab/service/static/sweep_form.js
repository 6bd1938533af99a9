/* Sweep form: the cell count while the axes are typed. The server counts (GET
   /sweeps/count, the same parser as the submit), so bad input reads as an error
   naming the field instead of a made-up number. */
"use strict";
(function () {
  const form = document.getElementById("sweep-form");
  const out = document.getElementById("cell-count");
  const url = form.dataset.countUrl;
  let timer = null;
  let asked = 0;

  function render(d) {
    const names = Object.keys(d.errors || {});
    out.className = "";
    if (names.length) {
      out.textContent = "cannot count the cells yet: " + names.map((k) => k + ": " + d.errors[k]).join("; ");
      out.className = "too-many";
      out.dataset.cells = "";
      out.dataset.error = names.join(",");
      return;
    }
    const sizes = Object.keys(d.axes).filter((k) => d.axes[k] > 1).map((k) => d.axes[k] + " " + k);
    sizes.push(d.repetitions + " repetition" + (d.repetitions === 1 ? "" : "s"));
    out.textContent = d.cells + (d.cells === 1 ? " cell" : " cells") + " = " + sizes.join(" × ");
    if (d.grid && d.cells < d.grid) {
      out.textContent += " (" + d.grid + ") less " + (d.grid - d.cells) +
        " 1-node cells that run once per repetition (no links, so no latency to vary)";
    }
    if (d.cells > d.max_cells) {
      out.className = "too-many";
      out.textContent += " — more than the limit of " + d.max_cells;
    }
    out.dataset.cells = String(d.cells);
    out.dataset.error = "";
  }

  function update() {
    const params = new URLSearchParams();
    new FormData(form).forEach((v, k) => { if (k !== "csrf_token") params.append(k, v); });
    const mine = ++asked;
    out.dataset.cells = "…";
    fetch(url + "?" + params.toString(), { headers: { Accept: "application/json" } })
      .then((r) => r.json())
      .then((d) => { if (mine === asked) render(d); })
      .catch(() => { if (mine === asked) { out.textContent = "…"; out.dataset.cells = ""; } });
  }
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 200); });
  update();
})();
