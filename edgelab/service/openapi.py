"""The OpenAPI 3.1 document of ``/api``, written by hand next to the API it describes.

A unit test checks that every route of the ``api`` blueprint is described here and
nothing else is, so the two cannot drift apart silently. Request fields, bounds,
enums and defaults come from :mod:`edgelab.validation.fields`, the rules the API
itself checks, and schemathesis (``tests/integration/test_api_fuzz.py``) holds the
live app to this document: every status it answers is listed, every body matches.
"""

from __future__ import annotations

from typing import Any

from edgelab import __version__
from edgelab.models import RUN_STATUSES
from edgelab.service.history import SORTABLE
from edgelab.validation.documents import MAX_BODY_BYTES
from edgelab.validation.fields import (
    ID,
    MAX_AXIS_VALUES,
    PAGE,
    PER_PAGE,
    RUN_RULES,
    SWEEP_AXES,
    SWEEP_FIXED,
    SWEEP_RULES,
    Rule,
    axis_rule,
)
from edgelab.validation.values import DB_INT_MAX, LINE_CONTROL_CHARS


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
    return {"name": name, "in": "path", "required": True, "schema": _bounded(ID)}


def _bounded(rule: Rule) -> dict[str, Any]:
    lo, hi = rule.bounds()
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _rule_query(rule: Rule, description: str | None = None) -> dict[str, Any]:
    schema = rule.schema()
    schema.pop("description", None)
    return _query(rule.name, schema, description or rule.description)


def run_config_schema() -> dict[str, Any]:
    """A run's fields, from their rules (:data:`edgelab.validation.fields.RUN_RULES`)."""
    return {
        "type": "object",
        "required": ["prompt"],
        "properties": {name: rule.schema() for name, rule in RUN_RULES.items()},
        "additionalProperties": False,
    }


def sweep_spec_schema() -> dict[str, Any]:
    """A sweep spec's fields: each axis one value or a list of its run field's values."""
    properties: dict[str, Any] = {name: rule.schema() for name, rule in SWEEP_RULES.items()}
    for axis in SWEEP_AXES:
        one = axis_rule(axis).schema()
        many = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_AXIS_VALUES}
        properties[axis] = {"anyOf": [one, many], "description": "One value or a list"}
    # With several engines, each engine may get its own model(s).
    one, many = properties["model"]["anyOf"]
    properties["model"]["anyOf"].append(
        {
            "type": "object",
            "propertyNames": {"enum": list(RUN_RULES["engine"].choices)},
            "additionalProperties": {"anyOf": [one, many]},
            "minProperties": 1,
        }
    )
    properties["model"]["description"] = (
        "One value or a list; with several engines, a mapping of each engine to its "
        "model(s), e.g. {llamacpp: smollm2-135m, dllama: tiny}"
    )
    for name in SWEEP_FIXED:
        properties[name] = RUN_RULES[name].schema()
    properties["prompt"] = {**RUN_RULES["prompt"].schema(), "description": "One prompt"}
    delay = {
        "type": "string",
        "minLength": 1,
        "maxLength": 40,
        "pattern": f"^[^{LINE_CONTROL_CHARS}]*$",
    }
    properties |= {
        "search": {
            "type": "string",
            "enum": ["break_even"],
            "description": "Not a grid: search each node count's break-even latency",
        },
        "latency_range": {
            "anyOf": [delay, {"type": "array", "items": delay, "minItems": 2, "maxItems": 2}],
            "description": "search only: the delays to search between, e.g. ['0ms', '40ms']",
        },
        "tolerance": {**delay, "description": "search only: stop when the bracket is this narrow"},
    }
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "anyOf": [{"required": ["prompts"]}, {"required": ["prompt"]}],
        "description": "The full grid of all axes times repetitions; "
        "at most EDGELAB_MAX_SWEEP_CELLS cells",
    }


#: Statuses every operation can answer, whatever it does (see edgelab.service.guards).
COMMON = {
    "400": _json(
        _ref("ValidationError"),
        "Invalid input, one message per field (also: a Host that is not allowed, an id "
        "outside 1..2147483647)",
    ),
    "401": _json(_ref("Error"), "EDGELAB_API_TOKEN is set and the request lacks it"),
    "414": {"description": "Request line longer than the server accepts (4094 bytes)"},
}
#: And every state-changing one.
WRITES = {
    "403": _json(_ref("ValidationError"), "Cross-site request: Origin is not an allowed host"),
}
#: And every one with a request body.
BODIES = {
    "413": _json(_ref("ValidationError"), f"Body larger than {MAX_BODY_BYTES} bytes"),
    "415": _json(_ref("ValidationError"), "Content-Type is not one of the documented types"),
}


def _complete(paths: dict[str, Any]) -> dict[str, Any]:
    """Add the statuses of :data:`COMMON`, :data:`WRITES` and :data:`BODIES` where they apply."""
    for ops in paths.values():
        for method, op in ops.items():
            extra = dict(COMMON)
            if method in ("post", "put", "patch", "delete"):
                extra |= WRITES
            if "requestBody" in op:
                extra |= BODIES
            op["responses"] = {**extra, **op["responses"]}
    return paths


HISTORY_SORTS = [*SORTABLE, *(f"-{k}" for k in SORTABLE)]


def history_parameters() -> list[dict[str, Any]]:
    """``GET /api/runs``'s filters, bounded as :mod:`edgelab.service.history` checks them."""
    status = "|".join(RUN_STATUSES)
    return [
        _query(
            "status",
            {"type": "string", "pattern": f"^(({status})(,({status}))*)?$"},
            f"Comma-separated: {', '.join(RUN_STATUSES)}",
        ),
        _query("model", TEXT_FILTER, "Catalog name"),
        _query("nodes", _bounded(RUN_RULES["nodes"]), "Exact node count"),
        _query(
            "threads", {"type": "integer", "minimum": 1, "maximum": DB_INT_MAX}, "Exact threads"
        ),
        _query("latency", TEXT_FILTER, "Latency profile label, e.g. 10ms..50ms"),
        _query("sweep", _bounded(ID), "Sweep id"),
        _query("since", DATE, "Created at or after (ISO date or date-time, UTC if no zone)"),
        _query("until", DATE, "Created up to (ISO date-time; a bare date includes that whole day)"),
        _query(
            "sort",
            {"type": "string", "enum": HISTORY_SORTS, "default": "-id"},
            "Sort key; prefix - for descending",
        ),
        _rule_query(PAGE),
        _rule_query(PER_PAGE),
    ]


TEXT_FILTER = {"type": "string", "maxLength": 200, "pattern": f"^[^{LINE_CONTROL_CHARS}]*$"}
DATE = {
    "type": "string",
    "minLength": 10,
    "maxLength": 40,
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}",
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
    "properties": {k: {"type": "integer"} for k in ("runs", "counted", "not_succeeded", "warmup")},
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
        "paths": _complete(
            {
                "/api/runs": {
                    "post": {
                        "summary": "Queue a run",
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": _ref("RunConfig")}},
                        },
                        "responses": {
                            "202": _json(_ref("Accepted"), "Queued"),
                            "400": ERRORS["400"],
                            **BROKER,
                        },
                    },
                    "get": {
                        "summary": "List runs (history)",
                        "parameters": history_parameters(),
                        "responses": {
                            "200": _json(_ref("RunPage"), "A page of runs"),
                            "400": ERRORS["400"],
                        },
                    },
                },
                "/api/runs/{run_id}": {
                    "get": {
                        "summary": "A run: config, metrics, provenance, tokens, samples, "
                        "link stats",
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
                            "429": _json(
                                _ref("Error"),
                                "This client already holds EDGELAB_MAX_STREAMS_PER_CLIENT streams "
                                "on this server (Retry-After says when to try again)",
                            ),
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
                                "application/json": {"schema": _ref("SweepSpec")},
                                "application/yaml": {"schema": _ref("SweepSpec")},
                            },
                        },
                        "responses": {
                            "202": _json(_ref("SweepAccepted"), "Queued"),
                            "400": ERRORS["400"],
                            **BROKER,
                        },
                    },
                    "get": {
                        "summary": "List sweeps",
                        "parameters": [_rule_query(PAGE), _rule_query(PER_PAGE)],
                        "responses": {
                            "200": _json(_ref("SweepPage"), "A page of sweeps"),
                            "400": ERRORS["400"],
                        },
                    },
                },
                "/api/sweeps/{sweep_id}": {
                    "get": {
                        "summary": "A sweep with progress and one entry per cell",
                        "parameters": [sweep_id],
                        "responses": {
                            "200": _json(_ref("Sweep"), "The sweep"),
                            "404": ERRORS["404"],
                        },
                    }
                },
                "/api/sweeps/{sweep_id}/cancel": {
                    "post": {
                        "summary": "Cancel queued cells and stop the running one",
                        "parameters": [sweep_id],
                        "responses": {
                            "202": _json(_ref("SweepCancelled"), "Cancelled"),
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
                            "202": _json(_ref("SweepResumed"), "Re-queued"),
                            "404": ERRORS["404"],
                            "409": _json(
                                _ref("ValidationError"), "The stored spec is no longer valid here"
                            ),
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
                                    "Comma-separated run ids (or repeated ids=), each 1 to "
                                    "2147483647; 2 to 200 distinct runs",
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
                        "responses": {
                            "200": _json(
                                _ref("Models"), "The catalog; paths relative to the models dir"
                            ),
                            "503": _json(_ref("Error"), "The catalog file cannot be read"),
                        },
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
            }
        ),
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
                    "required": ["id", "status"],
                    "properties": {
                        "id": {"type": "integer"},
                        "status": {"type": "string"},
                        "url": {"type": "string"},
                    },
                },
                "SweepAccepted": {
                    "type": "object",
                    "required": ["id", "status", "total_cells"],
                    "properties": {
                        "id": {"type": "integer"},
                        "status": {"type": "string"},
                        "total_cells": {"type": "integer"},
                        "url": {"type": "string"},
                    },
                },
                "SweepCancelled": {
                    "type": "object",
                    "required": ["id", "status"],
                    "properties": {
                        "id": {"type": "integer"},
                        "status": {"type": "string"},
                        "stopping": {"type": "array", "items": {"type": "integer"}},
                    },
                },
                "SweepResumed": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "integer"},
                        "created": {"type": "integer"},
                        "requeued": {"type": "boolean"},
                    },
                },
                "SweepPage": {
                    "type": "object",
                    "required": ["sweeps", "total", "page", "per_page"],
                    "properties": {
                        "sweeps": {"type": "array", "items": {"type": "object"}},
                        "total": {"type": "integer"},
                        "page": {"type": "integer"},
                        "per_page": {"type": "integer"},
                    },
                },
                "Models": {
                    "type": "object",
                    "required": ["models"],
                    "properties": {
                        "models": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "path": {
                                        "type": "string",
                                        "description": "Relative to EDGELAB_MODELS_DIR",
                                    },
                                    "format": {"type": "string"},
                                    "size_bytes": {"type": "integer"},
                                },
                            },
                        }
                    },
                },
                "RunConfig": run_config_schema(),
                "SweepSpec": sweep_spec_schema(),
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
                        "spec": {"type": "object", "description": "The canonical spec"},
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
