/* How numbers read on every page: the same rules as edgelab/units.py
   (tests/unit/test_format.py runs both on one table of cases). Loaded before the
   page scripts; also loadable by node for that test. */
"use strict";
(function (root) {
  const MISSING = "—";
  const METRIC_KINDS = {
    ttft_ms: "ms", e2el_ms: "ms", tpot_ms: "ms", itl_mean_ms: "ms", itl_p50_ms: "ms",
    itl_p90_ms: "ms", itl_p99_ms: "ms", prompt_tokens: "count", output_tokens: "count",
    prefill_tps: "tok/s", decode_tps: "tok/s", load_ms: "ms", net_bytes_per_token: "bytes",
    net_load_bytes: "bytes", net_prefill_bytes: "bytes", net_decode_bytes: "bytes",
    round_trips_per_token: "num",
  };
  function missing(v) {
    return v === null || v === undefined || v === "" || typeof v === "boolean" || Number.isNaN(Number(v));
  }
  function fixed(v, digits) {
    return Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function three(v) { const a = Math.abs(v); return fixed(v, a >= 100 ? 0 : a >= 10 ? 1 : 2); }
  function num(v, digits) {
    if (v === null || v === undefined || v === "") return MISSING;
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    if (Number.isNaN(Number(v))) return String(v);
    return fixed(Number(v), digits ?? 1);
  }
  function bytesParts(v) {
    if (missing(v)) return [MISSING, ""];
    let size = Number(v);
    if (Math.abs(size) < 1000) return [fixed(size, 0), "B"];
    const units = ["kB", "MB", "GB", "TB"];
    for (let i = 0; i < units.length; i++) {
      size /= 1000;
      if (Math.abs(size) < 999.5 || i === units.length - 1) return [three(size), units[i]];
    }
    return [MISSING, ""];
  }
  function msParts(v) {
    if (missing(v)) return [MISSING, ""];
    const ms = Number(v), a = Math.abs(ms);
    if (a >= 600000) return [fixed(ms / 60000, 1), "min"];
    if (a >= 10000) return [fixed(ms / 1000, 1), "s"];
    if (a >= 100) return [fixed(ms, 0), "ms"];
    return [fixed(ms, a >= 10 ? 1 : 2), "ms"];
  }
  function rateParts(v) { return missing(v) ? [MISSING, ""] : [three(Number(v)), "tok/s"]; }
  function countParts(v) { return missing(v) ? [MISSING, ""] : [Math.round(Number(v)).toLocaleString("en-US"), ""]; }
  function parts(kind, v) {
    if (kind === "ms") return msParts(v);
    if (kind === "bytes") return bytesParts(v);
    if (kind === "tok/s") return rateParts(v);
    if (kind === "count") return countParts(v);
    return missing(v) ? [MISSING, ""] : [num(v), ""];
  }
  function kind(v, k) { const p = parts(k, v); return p[1] && p[0] !== MISSING ? p[0] + " " + p[1] : p[0]; }
  function metricParts(v, name) { return parts(METRIC_KINDS[name] || "num", v); }
  function metric(v, name) { return kind(v, METRIC_KINDS[name] || "num"); }
  const api = {
    MISSING, METRIC_KINDS, num, parts, kind, metric, metricParts,
    bytes: (v) => kind(v, "bytes"), ms: (v) => kind(v, "ms"), rate: (v) => kind(v, "tok/s"),
  };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.ELFMT = api;
})(typeof window !== "undefined" ? window : this);
