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
        "options": {"type": "object", "description": "Backend extras (docker: cpus, mem)"},
    },
}

AXIS = {"description": "One value or a list of values"}
SWEEP_SPEC = {
    "type": "object",
    "required": ["prompts"],
    "properties": {
        "name": {"type": "string"},
        "model": AXIS,
        "nodes": AXIS,
        "threads": AXIS,
        "latency": AXIS,
        "bandwidth": AXIS,
        "max_tokens": AXIS,
        "prompts": {"type": "array", "items": {"type": "string"}},
        "repetitions": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
        "seed": {"type": "integer"},
        "temperature": {"type": "number"},
        "engine": {"type": "string"},
        "backend": {"type": "string"},
        "options": {"type": "object"},
    },
    "description": "The full grid of all axes times repetitions; "
    "at most EDGELAB_MAX_SWEEP_CELLS cells",
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
