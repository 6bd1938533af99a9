"""The JSON API under ``/api``: submit and follow runs and sweeps, list models, health.

Conventions: bad input is a 400 with ``{"error": ..., "errors": {field: message}}``;
an unknown id is a 404; accepted work is a 202 with the new id. Shapes of runs and
sweeps come from :mod:`edgelab.runs.views` and :mod:`edgelab.sweeps.control` so the
API, the CLI and exports agree. :mod:`edgelab.service.openapi` documents it all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request, stream_with_context, url_for
from sqlalchemy import func, select, text

from edgelab.catalog import Catalog, CatalogError
from edgelab.models import RUN_STATUSES, Run, Sweep
from edgelab.runs.config import ConfigError, parse_config
from edgelab.runs.executor import create_run
from edgelab.runs.views import run_detail, run_summary
from edgelab.service.extensions import (
    broker,
    current_celery,
    current_redis,
    current_settings,
    db,
)
from edgelab.sweeps import SpecError, control, expand, load_spec_text, parse_spec
from edgelab.tasks.events import request_cancel, stream_run_events
from edgelab.tasks.submit import enqueue_launch, enqueue_run

api = Blueprint("api", __name__)

SORTABLE = (
    "id",
    "created_at",
    "finished_at",
    "status",
    "model",
    "nodes",
    "threads",
    "max_tokens",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "decode_tps",
)
MAX_PER_PAGE = 500
NO_BROKER = "no broker configured: set EDGELAB_REDIS_URL, or start everything with `edgelab up`"


def _invalid(errors: dict[str, str], status: int = 400) -> tuple[Response, int]:
    return jsonify(error="invalid request", errors=errors), status


def _not_found(what: str) -> tuple[Response, int]:
    return jsonify(error=f"{what} not found"), 404


def _json_body() -> dict[str, Any] | None:
    # Only a real JSON content type: text/plain bodies are what cross-site forms send.
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


# --- runs ---------------------------------------------------------------------


@api.post("/runs")
def submit_run() -> Any:
    body = _json_body()
    if body is None:
        return _invalid({"body": "must be a JSON object with the run's fields"})
    settings = current_settings()
    try:
        config, _model = parse_config(body, Catalog(settings), default_backend=settings.backend)
    except ConfigError as exc:
        return _invalid(exc.errors)
    except CatalogError as exc:
        return _invalid({"model": str(exc)})
    if broker() is None:
        return jsonify(error=NO_BROKER), 503
    run = create_run(db.session, config)
    db.session.commit()
    try:
        enqueue_run(current_celery(), run.id)
    except Exception as exc:  # broker gone between the ping and the send
        run.status, run.error = "failed", f"could not be queued: {exc}"
        db.session.commit()
        return jsonify(error=f"the broker did not accept the run: {exc}", id=run.id), 503
    resp = jsonify(id=run.id, status=run.status, url=url_for("api.get_run", run_id=run.id))
    resp.headers["Location"] = url_for("api.get_run", run_id=run.id)
    return resp, 202


def _parse_when(raw: str, name: str, errors: dict[str, str]) -> datetime | None:
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            when = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        errors[name] = (
            f"must be an ISO date or date-time (2026-01-31 or 2026-01-31T12:00), got {raw!r}"
        )
        return None


def _int_arg(
    name: str,
    errors: dict[str, str],
    *,
    default: int | None = None,
    lo: int = 0,
    hi: int | None = None,
) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        errors[name] = f"must be a whole number, got {raw!r}"
        return default
    if value < lo or (hi is not None and value > hi):
        errors[name] = (
            f"must be between {lo} and {hi}" if hi is not None else f"must be at least {lo}"
        )
        return default
    return value


@api.get("/runs")
def list_runs() -> Any:
    """History: filters status, model, nodes, threads, sweep, since/until; sort; pages."""
    errors: dict[str, str] = {}
    stmt = select(Run)
    statuses = [s for s in request.args.get("status", "").split(",") if s]
    bad = [s for s in statuses if s not in RUN_STATUSES]
    if bad:
        errors["status"] = f"unknown status {', '.join(bad)}; one of {', '.join(RUN_STATUSES)}"
    elif statuses:
        stmt = stmt.where(Run.status.in_(statuses))
    if request.args.get("model"):
        stmt = stmt.where(Run.model == request.args["model"])
    for name, column in (("nodes", Run.nodes), ("threads", Run.threads), ("sweep", Run.sweep_id)):
        value = _int_arg(name, errors, lo=0 if name == "sweep" else 1)
        if value is not None:
            stmt = stmt.where(column == value)
    for name in ("since", "until"):
        raw = request.args.get(name)
        if raw:
            when = _parse_when(raw, name, errors)
            if when is not None:
                stmt = stmt.where(
                    Run.created_at >= when if name == "since" else Run.created_at < when
                )
    sort = request.args.get("sort", "-id")
    key = sort.lstrip("-")
    if key not in SORTABLE:
        errors["sort"] = f"must be one of {', '.join(SORTABLE)} (prefix - for descending)"
        key = "id"
    page = _int_arg("page", errors, default=1, lo=1) or 1
    per_page = _int_arg("per_page", errors, default=50, lo=1, hi=MAX_PER_PAGE) or 50
    if errors:
        return _invalid(errors)
    column = getattr(Run, key)
    order = column.desc() if sort.startswith("-") else column.asc()
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    runs = db.session.scalars(
        stmt.order_by(order, Run.id.desc()).offset((page - 1) * per_page).limit(per_page)
    )
    return jsonify(runs=[run_summary(r) for r in runs], total=total, page=page, per_page=per_page)


@api.get("/runs/<int:run_id>")
def get_run(run_id: int) -> Any:
    try:
        return jsonify(run_detail(current_settings().database_url, run_id))
    except LookupError:
        return _not_found(f"run {run_id}")


def _sse(events: Iterator[dict[str, Any]]) -> Iterator[str]:
    seq = 0
    yield "retry: 2000\n\n"
    for event in events:
        if event.get("type") == "ping":
            yield ": ping\n\n"
            continue
        seq += 1
        kind = event.get("type", "message")
        yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(event, default=str)}\n\n"


@api.get("/runs/<int:run_id>/events")
def run_events(run_id: int) -> Any:
    """Server-sent events: replay of what is stored, then live events, then ``end``."""
    settings = current_settings()
    if db.session.get(Run, run_id) is None:
        return _not_found(f"run {run_id}")
    r = broker()
    if r is None:
        return jsonify(error=NO_BROKER), 503
    events = stream_run_events(settings.database_url, r, run_id)
    return Response(
        stream_with_context(_sse(events)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@api.post("/runs/<int:run_id>/cancel")
def cancel_run(run_id: int) -> Any:
    run = db.session.get(Run, run_id)
    if run is None:
        return _not_found(f"run {run_id}")
    if control.cancel_queued(db.session, [run_id]):
        db.session.commit()
        if run.sweep_id is not None:
            control.refresh_status(db.session, run.sweep_id)
            db.session.commit()
        return jsonify(id=run_id, status="cancelled"), 202
    db.session.refresh(run)
    if run.status in ("starting", "running"):
        r = broker()
        if r is None:
            return jsonify(error=NO_BROKER), 503
        request_cancel(r, [run_id])
        return jsonify(id=run_id, status="cancelling"), 202
    return jsonify(error=f"run {run_id} already {run.status}", status=run.status), 409


# --- sweeps -------------------------------------------------------------------


def _spec_body() -> dict[str, Any] | None:
    if request.mimetype in ("application/yaml", "application/x-yaml", "text/yaml"):
        return load_spec_text(request.get_data(as_text=True))
    return _json_body()


@api.post("/sweeps")
def submit_sweep() -> Any:
    settings = current_settings()
    try:
        body = _spec_body()
        if body is None:
            return _invalid({"body": "must be a sweep spec (JSON object or YAML)"})
        spec = parse_spec(body, max_cells=settings.max_sweep_cells)
        cells = expand(spec, Catalog(settings), default_backend=settings.backend)
    except SpecError as exc:
        return _invalid(exc.errors)
    if broker() is None:
        return jsonify(error=NO_BROKER), 503
    sweep = control.create_sweep(db.session, spec, cells)
    db.session.commit()
    try:
        enqueue_launch(current_celery(), sweep.id)
    except Exception as exc:  # the cells stay queued in the database: resume queues them
        return jsonify(
            error=f"the broker did not accept the sweep ({exc}); resume it once it is back",
            id=sweep.id,
        ), 503
    location = url_for("api.get_sweep", sweep_id=sweep.id)
    resp = jsonify(id=sweep.id, status=sweep.status, total_cells=sweep.total_cells, url=location)
    resp.headers["Location"] = location
    return resp, 202


@api.get("/sweeps")
def list_sweeps() -> Any:
    errors: dict[str, str] = {}
    page = _int_arg("page", errors, default=1, lo=1) or 1
    per_page = _int_arg("per_page", errors, default=50, lo=1, hi=MAX_PER_PAGE) or 50
    if errors:
        return _invalid(errors)
    total = db.session.scalar(select(func.count(Sweep.id))) or 0
    sweeps = db.session.scalars(
        select(Sweep).order_by(Sweep.id.desc()).offset((page - 1) * per_page).limit(per_page)
    )
    return jsonify(
        sweeps=[control.sweep_summary(db.session, s) for s in sweeps],
        total=total,
        page=page,
        per_page=per_page,
    )


@api.get("/sweeps/<int:sweep_id>")
def get_sweep(sweep_id: int) -> Any:
    try:
        return jsonify(control.sweep_detail(db.session, sweep_id))
    except LookupError:
        return _not_found(f"sweep {sweep_id}")


@api.post("/sweeps/<int:sweep_id>/cancel")
def cancel_sweep(sweep_id: int) -> Any:
    if db.session.get(Sweep, sweep_id) is None:
        return _not_found(f"sweep {sweep_id}")
    r = broker()
    running = control.cancel_sweep(db.session, sweep_id)
    db.session.commit()
    if running and r is not None:
        request_cancel(r, running)
    return jsonify(id=sweep_id, status="cancelled", stopping=running), 202


@api.post("/sweeps/<int:sweep_id>/resume")
def resume_sweep(sweep_id: int) -> Any:
    settings = current_settings()
    if db.session.get(Sweep, sweep_id) is None:
        return _not_found(f"sweep {sweep_id}")
    if broker() is None:
        return jsonify(error=NO_BROKER), 503
    try:
        result = control.resume(db.session, sweep_id, Catalog(settings), settings)
    except SpecError as exc:
        return _invalid(exc.errors, 409)
    db.session.commit()
    if result.requeue:
        enqueue_launch(current_celery(), sweep_id)
    return jsonify(id=sweep_id, created=result.created, requeued=result.requeue), 202


# --- models and health --------------------------------------------------------


@api.get("/models")
def list_models() -> Any:
    try:
        models = Catalog(current_settings()).list()
    except CatalogError as exc:
        return jsonify(error=str(exc)), 500
    return jsonify(models=[m.to_dict() | {"path": str(m.path)} for m in models])


@api.get("/health")
def health() -> Any:
    """DB, broker and workers; 200 only if the DB and broker answer."""
    out: dict[str, Any] = {}
    try:
        db.session.execute(text("SELECT 1"))
        out["database"] = {"ok": True}
    except Exception as exc:  # any driver error means "not healthy", never a 500
        db.session.rollback()
        out["database"] = {"ok": False, "error": str(exc)}
    r = current_redis()
    workers: list[str] = []
    if r is None:
        out["broker"] = {"ok": False, "error": NO_BROKER}
    else:
        try:
            r.ping()
            out["broker"] = {"ok": True}
            replies = current_celery().control.inspect(timeout=0.5).ping() or {}
            workers = sorted(replies)
        except redis.RedisError as exc:
            out["broker"] = {"ok": False, "error": str(exc)}
    out["workers"] = workers
    if out["database"]["ok"]:
        out["runs"] = {
            status: db.session.scalar(select(func.count(Run.id)).where(Run.status == status)) or 0
            for status in ("queued", "starting", "running")
        }
    out["ok"] = bool(out["database"]["ok"] and out["broker"]["ok"])
    return jsonify(out), 200 if out["ok"] else 503


@api.get("/openapi.json")
def openapi() -> Any:
    from edgelab.service.openapi import document

    return jsonify(document())
