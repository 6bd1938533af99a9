/* History: enable "Compare selected" when 2-10 runs are ticked. */
"use strict";
(function () {
  const form = document.getElementById("compare-form");
  const button = document.getElementById("compare-button");
  const label = document.getElementById("compare-count");
  function update() {
    const n = form.querySelectorAll("input[name=ids]:checked").length;
    button.disabled = n < 2 || n > 10;
    label.textContent = n ? n + " selected" + (n > 10 ? " (at most 10)" : n < 2 ? " (at least 2)" : "") : "select 2–10 runs";
  }
  form.addEventListener("change", update);
  update();
})();
