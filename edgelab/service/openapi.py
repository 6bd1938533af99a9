"""The OpenAPI 3.1 document of ``/api``, written by hand next to the API it describes.

A unit test checks that every route of the ``api`` blueprint is described here and
nothing else is, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from edgelab import __version__
from edgelab.models import RUN_STATUSES
from edgelab.service.history import DEFAULT_PER_PAGE, MAX_PER_PAGE, SORTABLE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("ValidationError"), "Invalid input: one message per field"),
    "404": _json(_ref("Error"), "Unknown id"),
}
BROKER = {"503": _json(_ref("Error"), "No broker configured or reachable")}


def _id_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


RUN_CONFIG = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "minLength": 1},
        "model": {"type": "string", "default": "smollm2-135m", "description": "Catalog name"},
        "nodes": {
            "type": "integer",
            "minimum": 1,
            "default": 1,
            "description": "Devices incl. the root",
        },
        "threads": {"type": "integer", "minimum": 1, "default": 1},
        "latency": {
            "type": "string",
            "default": "0ms",
            "description": "Per-link one-way delay: 20ms, 10ms..50ms (uniform), 20ms~5ms (normal)",
        },
        "bandwidth": {"type": ["string", "null"], "description": "Per-link cap, e.g. 100mbit"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 64},
        "seed": {"type": "integer", "default": 0},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0},
        "engine": {"type": "string", "enum": ["llamacpp", "dllama"]},
        "backend": {"type": "string", "enum": ["local", "docker"]},
        "devices": {
            "type": ["object", "null"],
            "additionalProperties": {"type": ["string", "object"]},
            "description": "Per node (root, worker1, ...): a device preset name, "
            "'key:value,...' text or an object with threads, cpus (CPU quota in cores), "
            "mem; nodes not named keep threads and the options' cpus/mem",
        },
        "links": {
            "type": ["object", "null"],
            "additionalProperties": {"type": ["string", "object"]},
            "description": "Per worker: 'PROFILE,bandwidth:RATE,loss:P%,trace:FILE,"
            "queue:SIZE' text or an object with latency, bandwidth, loss, trace, queue; "
            "a missing profile is the run's latency. loss, trace and queue are refused "
            "(not supported yet)",
        },
        "options": {
            "type": "object",
            "description": "Backend extras (docker: cpus, mem) and engine options "
            "(dllama_mode: api = warm dllama-api root, the default; inference = one "
            "dllama inference per run)",
        },
    },
}

AXIS = {"description": "One value or a list of values"}
SWEEP_SPEC = {
    "type": "object",
    "required": ["prompts"],
    "properties": {
        "name": {"type": "string"},
        "engine": AXIS,
        "model": {
            "description": "One value or a list of values; with several engines, a mapping "
            "of each engine to its model(s), e.g. {llamacpp: smollm2-135m, dllama: tiny}"
        },
        "nodes": AXIS,
        "threads": AXIS,
        "latency": AXIS,
        "bandwidth": AXIS,
        "devices": {
            "description": "One value or a list: a named topology (uniform, "
            "one-slow-worker, see `edgelab devices list`) or a per-node map as in a run"
        },
        "links": {"description": "One value or a list of per-worker link maps (as in a run)"},
        "max_tokens": AXIS,
        "prompts": {"type": "array", "items": {"type": "string"}},
        "repetitions": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
        "seed": {"type": "integer"},
        "temperature": {"type": "number"},
        "backend": AXIS,
        "options": {"type": "object"},
    },
    "description": "The full grid of all axes times repetitions; "
    "at most EDGELAB_MAX_SWEEP_CELLS cells",
}


NUM = {"type": ["number", "null"]}
INTERVAL = {
    "type": ["array", "null"],
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 2,
    "description": "[low, high] of a 95 % confidence interval; null when not computable",
}
SUMMARY = {
    "type": "object",
    "description": "n, mean, sample sd, CV and a 95 % Student-t CI of the mean",
    "properties": {
        "n": {"type": "integer", "minimum": 0},
        "mean": NUM,
        "sd": NUM,
        "cv": NUM,
        "ci_low": NUM,
        "ci_high": NUM,
        "half_width": NUM,
        "confidence": {"type": "number"},
    },
    "required": ["n", "mean", "sd", "cv", "ci_low", "ci_high", "half_width", "confidence"],
}
GROUP = {
    "type": "object",
    "description": "The counted runs of one configuration (1-node runs ignore latency)",
    "properties": {
        "key": {"type": "object", "description": "The configuration (latency null for 1 node)"},
        "label": {"type": "string"},
        "n": {"type": "integer", "minimum": 0},
        "run_ids": {"type": "array", "items": {"type": "integer"}},
        "stats": {
            "type": "object",
            "description": "Metric name (ttft_ms, tpot_ms, itl_p50_ms, itl_p99_ms, "
            "decode_tps, e2el_ms) -> Summary",
            "additionalProperties": _ref("Summary"),
        },
        "flags": {
            "type": "array",
            "items": {"enum": ["too few", "noisy", "contended", "oversubscribed"]},
        },
        "noisy_metrics": {"type": "array", "items": {"type": "string"}},
        "rtt_delay_ms": {"type": "number"},
        "latencies": {"type": "array", "items": {"type": "string"}},
        "contended_runs": {"type": "integer"},
        "excluded_runs": {"type": "integer"},
        "oversubscribed": {"type": "boolean"},
        "round_trips_per_token": NUM,
        "net_bytes_per_token": NUM,
        "host_cores": {"type": ["integer", "null"]},
    },
    "required": ["key", "label", "n", "run_ids", "stats", "flags"],
}
COUNTS = {
    "type": "object",
    "properties": {k: {"type": "integer"} for k in ("runs", "counted", "failed", "warmup")},
}
BREAK_EVEN = {
    "type": "object",
    "properties": {
        "nodes": {"type": "integer"},
        "verdict": {
            "enum": [
                "break-even",
                "never",
                "always within the range tried",
                "not delay-sensitive",
                "unknown",
            ]
        },
        "delay_ms": NUM,
        "text": {"type": "string"},
    },
    "required": ["nodes", "verdict", "delay_ms", "text"],
}
VERDICT = {"enum": ["faster", "slower", "no significant difference", "too few runs"]}
METRIC_TEST = {
    "type": "object",
    "description": "Welch's t-test of B vs A on one metric; diff = mean(B) - mean(A)",
    "properties": {
        "metric": {"type": "string"},
        "n_a": {"type": "integer"},
        "n_b": {"type": "integer"},
        "mean_a": NUM,
        "mean_b": NUM,
        "diff": NUM,
        "relative": NUM,
        "diff_ci": INTERVAL,
        "t": NUM,
        "df": NUM,
        "p_value": NUM,
        "effect_size": {**NUM, "description": "Hedges' g of B - A"},
        "verdict": VERDICT,
        "significant": {"type": "boolean"},
    },
    "required": ["metric", "p_value", "verdict"],
}


def document() -> dict[str, Any]:
    run_id = _id_param("run_id")
    sweep_id = _id_param("sweep_id")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgelab API",
            "version": __version__,
            "description": "Queue distributed LLM-inference experiments and read their results. "
            "If EDGELAB_API_TOKEN is set, send it as X-Edgelab-Token or Authorization: Bearer.",
        },
        "paths": {
            "/api/runs": {
                "post": {
                    "summary": "Queue a run",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": RUN_CONFIG}},
                    },
                    "responses": {"202": _json(_ref("Accepted"), "Queued"), **ERRORS, **BROKER},
                },
                "get": {
                    "summary": "List runs (history)",
                    "parameters": [
                        _query(
                            "status",
                            {"type": "string"},
                            f"Comma-separated: {', '.join(RUN_STATUSES)}",
                        ),
                        _query("model", {"type": "string"}, "Catalog name"),
                        _query("nodes", {"type": "integer"}, "Exact node count"),
                        _query("threads", {"type": "integer"}, "Exact threads per node"),
                        _query(
                            "latency", {"type": "string"}, "Latency profile label, e.g. 10ms..50ms"
                        ),
                        _query("sweep", {"type": "integer"}, "Sweep id"),
                        _query(
                            "since", {"type": "string"}, "Created at or after (ISO date/date-time)"
                        ),
                        _query(
                            "until",
                            {"type": "string"},
                            "Created up to (ISO date-time; a bare date includes that whole day)",
                        ),
                        _query(
                            "sort",
                            {"type": "string", "default": "-id"},
                            f"One of {', '.join(SORTABLE)}; prefix - for descending",
                        ),
                        _query(
                            "page", {"type": "integer", "minimum": 1, "default": 1}, "Page number"
                        ),
                        _query(
                            "per_page",
                            {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PER_PAGE,
                                "default": DEFAULT_PER_PAGE,
                            },
                            "Page size",
                        ),
                    ],
                    "responses": {
                        "200": _json(_ref("RunPage"), "A page of runs"),
                        "400": ERRORS["400"],
                    },
                },
            },
            "/api/runs/{run_id}": {
                "get": {
                    "summary": "A run: config, metrics, provenance, tokens, samples, link stats",
                    "parameters": [run_id],
                    "responses": {"200": _json(_ref("Run"), "The run"), "404": ERRORS["404"]},
                }
            },
            "/api/runs/{run_id}/events": {
                "get": {
                    "summary": "Server-sent events: replay from the database, then live",
                    "description": "Events: status, progress, token {index, offset_ms, text}, "
                    "metrics, end. Works when joined late.",
                    "parameters": [run_id],
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {}},
                        },
                        "404": ERRORS["404"],
                        **BROKER,
                    },
                }
            },
            "/api/runs/{run_id}/cancel": {
                "post": {
                    "summary": "Cancel a queued or running run",
                    "parameters": [run_id],
                    "responses": {
                        "202": _json(_ref("Accepted"), "Cancelled or cancelling"),
                        "404": ERRORS["404"],
                        "409": _json(_ref("Error"), "The run already ended"),
                        **BROKER,
                    },
                }
            },
            "/api/sweeps": {
                "post": {
                    "summary": "Queue a sweep",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": SWEEP_SPEC},
                            "application/yaml": {"schema": SWEEP_SPEC},
                        },
                    },
                    "responses": {"202": _json(_ref("Accepted"), "Queued"), **ERRORS, **BROKER},
                },
                "get": {
                    "summary": "List sweeps",
                    "parameters": [
                        _query("page", {"type": "integer", "minimum": 1}, "Page number"),
                        _query(
                            "per_page",
                            {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
                            "Page size",
                        ),
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "A page of sweeps"),
                        "400": ERRORS["400"],
                    },
                },
            },
            "/api/sweeps/{sweep_id}": {
                "get": {
                    "summary": "A sweep with progress and one entry per cell",
                    "parameters": [sweep_id],
                    "responses": {"200": _json(_ref("Sweep"), "The sweep"), "404": ERRORS["404"]},
                }
            },
            "/api/sweeps/{sweep_id}/cancel": {
                "post": {
                    "summary": "Cancel queued cells and stop the running one",
                    "parameters": [sweep_id],
                    "responses": {
                        "202": _json(_ref("Accepted"), "Cancelled"),
                        "404": ERRORS["404"],
                        "409": _json(_ref("Error"), "The sweep already ended"),
                        **BROKER,
                    },
                }
            },
            "/api/sweeps/{sweep_id}/resume": {
                "post": {
                    "summary": "Re-queue only the cells without a succeeded run",
                    "parameters": [sweep_id],
                    "responses": {
                        "202": _json(_ref("Accepted"), "Re-queued"),
                        "404": ERRORS["404"],
                        **BROKER,
                    },
                }
            },
            "/api/sweeps/{sweep_id}/analysis": {
                "get": {
                    "summary": "Statistics of a sweep: configurations with CIs and flags, "
                    "speedup/efficiency, the fitted TPOT model and break-even latencies",
                    "parameters": [sweep_id],
                    "responses": {
                        "200": _json(_ref("SweepAnalysis"), "The analysis"),
                        "404": ERRORS["404"],
                    },
                }
            },
            "/api/sweeps/{sweep_id}/breakdown": {
                "get": {
                    "summary": "Mean per-token time breakdown per configuration: root compute, "
                    "worker compute, injected delay, transfer (from the link proxies' timing)",
                    "parameters": [sweep_id],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "sweep_id": {"type": "integer"},
                                    "breakdowns": {
                                        "type": "array",
                                        "description": "Configurations without recorded "
                                        "link timing are left out",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "label": {"type": "string"},
                                                "nodes": {"type": "integer"},
                                                "latency": {"type": ["string", "null"]},
                                                "n": {"type": "integer"},
                                                "tpot_ms": {"type": "number"},
                                                "parts": {
                                                    "type": "array",
                                                    "items": {
                                                        "type": "object",
                                                        "properties": {
                                                            "name": {"type": "string"},
                                                            "ms": {"type": "number"},
                                                        },
                                                    },
                                                },
                                                "round_trips_per_token": NUM,
                                                "bytes_per_token": NUM,
                                                "source": {"enum": ["proxy", "dllama"]},
                                            },
                                        },
                                    },
                                },
                                "required": ["sweep_id", "breakdowns"],
                            },
                            "Breakdowns",
                        ),
                        "404": ERRORS["404"],
                    },
                }
            },
            "/api/sweeps/{sweep_id}/predict": {
                "get": {
                    "summary": "TPOT predicted by each fitted model at any node count, "
                    "one-way delay and bandwidth (also beyond what ran)",
                    "parameters": [
                        sweep_id,
                        {
                            **_query(
                                "nodes",
                                {"type": "integer", "minimum": 1, "maximum": 1024},
                                "Node count, root included",
                            ),
                            "required": True,
                        },
                        _query(
                            "delay_ms",
                            {"type": "number", "minimum": 0, "maximum": 60000, "default": 0},
                            "One-way delay on every link, ms",
                        ),
                        _query(
                            "bandwidth",
                            {"type": "string"},
                            "Per-link cap, e.g. 100mbit (none: uncapped)",
                        ),
                    ],
                    "responses": {
                        "200": _json(_ref("Prediction"), "One prediction per fitted model"),
                        **ERRORS,
                    },
                }
            },
            "/api/compare": {
                "get": {
                    "summary": "Runs grouped by configuration, the configuration fields that "
                    "differ, and Welch verdicts (TPOT, TTFT) for every pair of groups",
                    "parameters": [
                        {
                            **_query(
                                "ids",
                                {"type": "string", "pattern": "^[0-9, ]+$"},
                                "Comma-separated run ids (or repeated ids=), each 1 to 2147483647; "
                                "2 to 200 distinct runs",
                            ),
                            "required": True,
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("CompareAnalysis"), "Groups and verdicts"),
                        "400": ERRORS["400"],
                        "404": _json(_ref("Error"), "A run id does not exist"),
                    },
                }
            },
            "/api/models": {
                "get": {
                    "summary": "Models in the catalog",
                    "responses": {"200": _json({"type": "object"}, "The catalog")},
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Database, broker and workers",
                    "responses": {
                        "200": _json(_ref("Health"), "Healthy"),
                        "503": _json(_ref("Health"), "Database or broker unavailable"),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
                "ValidationError": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "status": {"type": "string"},
                        "url": {"type": "string"},
                    },
                },
                "Run": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "sweep_id": {"type": ["integer", "null"]},
                        "status": {"type": "string", "enum": list(RUN_STATUSES)},
                        "error": {"type": ["string", "null"]},
                        "config": {"type": "object"},
                        "metrics": {"type": "object"},
                        "provenance": {"type": "object"},
                        "tokens": {"type": "array"},
                        "samples": {"type": "array"},
                        "links": {"type": "array"},
                    },
                },
                "RunPage": {
                    "type": "object",
                    "properties": {
                        "runs": {"type": "array", "items": _ref("Run")},
                        "total": {"type": "integer"},
                        "page": {"type": "integer"},
                        "per_page": {"type": "integer"},
                    },
                },
                "Summary": SUMMARY,
                "Group": GROUP,
                "SweepAnalysis": {
                    "type": "object",
                    "properties": {
                        "sweep_id": {"type": "integer"},
                        "metrics": {"type": "array", "items": {"type": "string"}},
                        "counts": COUNTS,
                        "notes": {"type": "array", "items": {"type": "string"}},
                        "groups": {"type": "array", "items": _ref("Group")},
                        "scaling": {
                            "type": "array",
                            "description": "Speedup TPOT(baseline)/TPOT(N) and efficiency per "
                            "latency profile; measurable=false (with a note) when oversubscribed",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "latency": {"type": "string"},
                                    "baseline_nodes": {"type": "integer"},
                                    "baseline_note": {"type": ["string", "null"]},
                                    "measurable": {"type": "boolean"},
                                    "note": {"type": ["string", "null"]},
                                    "points": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "nodes": {"type": "integer"},
                                                "n": {"type": "integer"},
                                                "tpot_ms": {"type": "number"},
                                                "speedup": {"type": "number"},
                                                "speedup_ci": INTERVAL,
                                                "efficiency": {"type": "number"},
                                                "efficiency_ci": INTERVAL,
                                                "oversubscribed": {"type": "boolean"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                        "fits": {
                            "type": "array",
                            "description": "One TPOT(N, d, bw) model per engine x model x "
                            "threads x backend",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "formula": {"type": "string"},
                                    "params": {
                                        "type": "object",
                                        "additionalProperties": {"type": "number"},
                                    },
                                    "stderr": {"type": "object"},
                                    "dropped": {"type": "array", "items": {"type": "string"}},
                                    "r2": NUM,
                                    "rmse_ms": {"type": "number"},
                                    "n_runs": {"type": "integer"},
                                    "residuals": {"type": "array", "items": {"type": "object"}},
                                    "notes": {"type": "array", "items": {"type": "string"}},
                                    "break_even": {"type": "array", "items": BREAK_EVEN},
                                },
                            },
                        },
                    },
                    "required": ["counts", "groups", "scaling", "fits"],
                },
                "Prediction": {
                    "type": "object",
                    "properties": {
                        "sweep_id": {"type": "integer"},
                        "nodes": {"type": "integer"},
                        "delay_ms": {"type": "number"},
                        "bandwidth_bps": {"type": ["integer", "null"]},
                        "predictions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "engine": {"type": "string"},
                                    "model": {"type": "string"},
                                    "threads": {"type": "integer"},
                                    "backend": {"type": "string"},
                                    "r2": NUM,
                                    "tpot_ms": {"type": "number"},
                                    "decode_tps": NUM,
                                    "extrapolated": {"type": "boolean"},
                                    "break_even": {"oneOf": [BREAK_EVEN, {"type": "null"}]},
                                },
                            },
                        },
                    },
                },
                "CompareAnalysis": {
                    "type": "object",
                    "properties": {
                        "ids": {"type": "array", "items": {"type": "integer"}},
                        "counts": COUNTS,
                        "differing": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Configuration fields that differ between groups",
                        },
                        "groups": {"type": "array", "items": _ref("Group")},
                        "comparisons": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "a": {"type": "object"},
                                    "b": {"type": "object"},
                                    "verdict": VERDICT,
                                    "tests": {
                                        "type": "object",
                                        "additionalProperties": METRIC_TEST,
                                    },
                                },
                            },
                        },
                    },
                    "required": ["ids", "differing", "groups", "comparisons"],
                },
                "Sweep": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "status": {"type": "string"},
                        "spec": SWEEP_SPEC,
                        "total_cells": {"type": "integer"},
                        "model_loads": {"type": "integer"},
                        "progress": {"type": "object"},
                        "cells": {"type": "array"},
                    },
                },
                "Health": {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "boolean"},
                        "database": {"type": "object"},
                        "broker": {"type": "object"},
                        "workers": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    }
