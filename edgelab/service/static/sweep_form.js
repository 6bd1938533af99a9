/* Sweep form: count the cells while the axes are typed. */
"use strict";
(function () {
  const form = document.getElementById("sweep-form");
  const out = document.getElementById("cell-count");
  const max = parseInt(form.dataset.maxCells, 10);
  function values(el) {
    const parts = el.dataset.lines ? el.value.split("\n") : el.value.split(/[,;\n]/);
    return parts.map((s) => s.trim()).filter((s) => s.length).length;
  }
  function update() {
    const sizes = [];
    let cells = 1;
    form.querySelectorAll("[data-axis]").forEach((el) => {
      const n = values(el);
      const counted = n || (["nodes", "max_tokens", "prompts"].includes(el.dataset.axis) ? 0 : 1);
      cells *= counted;
      if (counted !== 1) sizes.push(counted + " " + el.dataset.axis);
    });
    const reps = parseInt(document.getElementById("repetitions").value || "1", 10);
    const r = Number.isFinite(reps) && reps > 0 ? reps : 0;
    cells *= r;
    out.textContent = cells + " cells" + (sizes.length || r !== 1 ? " = " + sizes.concat([r + " repetition" + (r === 1 ? "" : "s")]).join(" × ") : "");
    out.className = cells > max ? "too-many" : "";
    if (cells > max) out.textContent += " — more than the limit of " + max;
    out.dataset.cells = String(cells);
  }
  form.addEventListener("input", update);
  update();
})();
