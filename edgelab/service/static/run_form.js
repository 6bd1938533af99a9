/* Run form: picking a model picks the engine that can run it (the catalog's format
   decides: GGUF -> llama.cpp, .m -> distributed-llama). */
"use strict";
(function () {
  const engines = JSON.parse(document.getElementById("model-engines").textContent);
  const model = document.getElementById("model");
  const engine = document.getElementById("engine");
  model.addEventListener("change", () => {
    const e = engines[model.value];
    if (e && engine.value !== e) {
      engine.value = e;
      engine.dispatchEvent(new Event("change", { bubbles: true }));
    }
  });
})();
