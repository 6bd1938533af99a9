"""The JSON API under ``/api``: submit and follow runs and sweeps, list models, health.

Conventions: bad input is a 400 with ``{"error": ..., "errors": {field: message}}``;
an unknown id is a 404; accepted work is a 202 with the new id. Shapes of runs and
sweeps come from :mod:`edgelab.runs.views` and :mod:`edgelab.sweeps.control` so the
API, the CLI and exports agree. :mod:`edgelab.service.openapi` documents it all.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy import func, select, text

from edgelab import analysis
from edgelab.catalog import Catalog, CatalogError
from edgelab.models import Run, Sweep
from edgelab.netem.profile import ProfileError, parse_bandwidth
from edgelab.runs.config import parse_config
from edgelab.runs.views import run_detail, run_summary
from edgelab.service.extensions import (
    current_actions,
    current_celery,
    current_redis,
    current_settings,
    db,
)
from edgelab.service.history import parse_history, parse_paging
from edgelab.service.streams import RETRY_AFTER_S, StreamSlots, every, sse
from edgelab.store import RUN_OPEN_ORDER, InvalidTransition, StoreError
from edgelab.store.actions import NO_BROKER, BrokerError, BrokerUnreachable
from edgelab.store.store import Store
from edgelab.sweeps import SpecError, control, expand, load_spec_text, parse_spec
from edgelab.tasks.events import stream_run_events
from edgelab.validation import DocumentError, InvalidInput, load_json, quote
from edgelab.validation.fields import ID, Rule
from edgelab.validation.values import DB_INT_MAX, FieldError, clean_text

api = Blueprint("api", __name__)

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def _invalid(errors: dict[str, str], status: int = 400) -> tuple[Response, int]:
    return jsonify(error="invalid request", errors=errors), status


def _not_found(what: str) -> tuple[Response, int]:
    return jsonify(error=f"{what} not found"), 404


def _refused(exc: StoreError) -> tuple[Response, int]:
    """A store or action error as JSON with its HTTP code (404, 409, 503)."""
    body: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, InvalidTransition):
        body["status"] = exc.current
    if isinstance(exc, BrokerError) and exc.ids:
        body["ids"] = exc.ids
    resp = jsonify(body)
    if exc.http_status == 503:
        resp.headers["Retry-After"] = "10"
    return resp, exc.http_status


def _json_body(types: tuple[str, ...] = JSON_TYPES) -> dict[str, Any]:
    """The request's JSON object, read within the limits of :mod:`edgelab.validation.documents`.

    Only a JSON content type: text/plain bodies are what cross-site forms send.
    """
    if request.mimetype not in types:
        raise UnsupportedType(request.mimetype, types)
    data = load_json(request.get_data(cache=True), field="body")
    if not isinstance(data, dict):
        raise DocumentError({"body": "must be a JSON object with the fields"})
    return data


class UnsupportedType(Exception):
    """A body of a content type the operation does not take (415)."""

    def __init__(self, given: str, types: tuple[str, ...]) -> None:
        self.given, self.types = given, types

    def response(self) -> tuple[Response, int]:
        shown = quote(self.given) if self.given else "none"
        return jsonify(
            error="unsupported content type",
            errors={"Content-Type": f"must be {' or '.join(self.types)}, got {shown}"},
        ), 415


# --- runs ---------------------------------------------------------------------


@api.post("/runs")
def submit_run() -> Any:
    settings = current_settings()
    try:
        body = _json_body()
        config, _model = parse_config(body, Catalog(settings), default_backend=settings.backend)
    except UnsupportedType as exc:
        return exc.response()
    except InvalidInput as exc:
        return _invalid(exc.errors)
    except CatalogError as exc:
        return _invalid({"model": str(exc)[:300]})
    try:
        run = current_actions().submit_run(config)
    except StoreError as exc:
        return _refused(exc)
    resp = jsonify(id=run.id, status=run.status, url=url_for("api.get_run", run_id=run.id))
    resp.headers["Location"] = url_for("api.get_run", run_id=run.id)
    return resp, 202


@api.get("/runs")
def list_runs() -> Any:
    """History: the filters, sort and pages of :mod:`edgelab.service.history`."""
    f = parse_history(request.args, strict=True)
    if f.errors:
        return _invalid(f.errors)
    runs = f.page_of(db.session)
    return jsonify(
        runs=[run_summary(r) for r in runs],
        total=f.count(db.session),
        page=f.page,
        per_page=f.per_page,
    )


@api.get("/runs/<int:run_id>")
def get_run(run_id: int) -> Any:
    try:
        return jsonify(run_detail(current_settings().database_url, run_id))
    except LookupError:
        return _not_found(f"run {run_id}")


@api.get("/runs/<int:run_id>/events")
def run_events(run_id: int) -> Any:
    """Server-sent events: replay of what is stored, then live events, then ``end``."""
    return event_stream(run_id)


def event_stream(run_id: int) -> Any:
    """The run's event stream as a response (the API and the run page both serve it).

    Served without holding a request thread while it waits (see
    :mod:`edgelab.service.streams`), at most ``max_streams_per_client`` per client.
    """
    settings = current_settings()
    if db.session.get(Run, run_id) is None:
        return _not_found(f"run {run_id}")
    try:
        r = current_actions().queue.check()
    except StoreError as exc:
        return _refused(exc)
    client = request.remote_addr or "unknown"
    slots = StreamSlots(r)
    try:
        slot = slots.acquire(client, settings.max_streams_per_client)
    except redis.RedisError as exc:
        return _refused(BrokerUnreachable(f"broker unreachable: {exc}"))
    if slot is None:
        resp = jsonify(
            error=f"too many open event streams from {client}: at most "
            f"{settings.max_streams_per_client} (EDGELAB_MAX_STREAMS_PER_CLIENT) on this "
            "server; close some pages or retry later"
        )
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp, 429

    def refresh() -> None:
        # A missed refresh is retried at the next one; the slot lives SLOT_TTL_S.
        with contextlib.suppress(redis.RedisError):
            slots.refresh(client, slot)

    # Pings often enough that an idle stream is noticed within a tenth of its timeout.
    ping_s = min(15.0, settings.stream_idle_s / 10)
    events = stream_run_events(settings.database_url, r, run_id, idle_s=ping_s)
    resp = Response(
        stream_with_context(
            sse(
                events,
                idle_timeout_s=settings.stream_idle_s,
                on_event=every(slots.ttl_s / 3, refresh),
            )
        ),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    released = threading.Event()

    def release() -> None:
        # The WSGI server closes every response, also one whose stream never started.
        # If the broker is gone now, the slot expires by itself within SLOT_TTL_S.
        if not released.is_set():
            released.set()
            with contextlib.suppress(redis.RedisError):
                slots.release(client, slot)

    resp.call_on_close(release)
    return resp


@api.post("/runs/<int:run_id>/cancel")
def cancel_run(run_id: int) -> Any:
    """202 ``cancelled`` (was queued) or ``cancelling`` (told to stop); 409 if finished."""
    try:
        result = current_actions().cancel_run(run_id)
    except StoreError as exc:
        return _refused(exc)
    return jsonify(id=run_id, status="cancelling" if result.stopping else result.status), 202


# --- sweeps -------------------------------------------------------------------


@api.post("/sweeps")
def submit_sweep() -> Any:
    settings = current_settings()
    try:
        if request.mimetype in YAML_TYPES:
            body: dict[str, Any] = load_spec_text(request.get_data(cache=True, as_text=True))
        else:
            body = _json_body(JSON_TYPES + YAML_TYPES)
        spec = parse_spec(body, max_cells=settings.max_sweep_cells)
        cells = expand(spec, Catalog(settings), default_backend=settings.backend)
    except UnsupportedType as exc:
        return exc.response()
    except InvalidInput as exc:
        return _invalid(exc.errors)
    try:
        sweep = current_actions().submit_sweep(spec, cells)
    except StoreError as exc:
        return _refused(exc)
    location = url_for("api.get_sweep", sweep_id=sweep.id)
    resp = jsonify(id=sweep.id, status=sweep.status, total_cells=sweep.total_cells, url=location)
    resp.headers["Location"] = location
    return resp, 202


@api.get("/sweeps")
def list_sweeps() -> Any:
    errors: dict[str, str] = {}
    page, per_page = parse_paging(request.args, errors, strict=True)
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
    """202 with the runs told to stop; 409 for a finished sweep (it stays as it ended)."""
    try:
        result = current_actions().cancel_sweep(sweep_id)
    except StoreError as exc:
        return _refused(exc)
    status = Store(current_settings().database_url).get_sweep(sweep_id).status
    return jsonify(id=sweep_id, status=status, stopping=result.stopping), 202


@api.post("/sweeps/<int:sweep_id>/resume")
def resume_sweep(sweep_id: int) -> Any:
    settings = current_settings()
    try:
        result = current_actions().resume_sweep(sweep_id, Catalog(settings), settings)
    except SpecError as exc:
        return _invalid(exc.errors, 409)
    except StoreError as exc:
        return _refused(exc)
    return jsonify(id=sweep_id, created=result.created, requeued=result.requeue), 202


# --- analysis -----------------------------------------------------------------

#: The largest id a run can have (a 32-bit INTEGER key on PostgreSQL): larger ids are a
#: 400, not a database overflow.
MAX_RUN_ID = DB_INT_MAX
#: How many runs one ``/api/compare`` call may group and test pairwise.
COMPARE_API_MAX = 200
PREDICT_MAX_NODES = 1024
PREDICT_MAX_DELAY_MS = 60_000.0


@api.get("/sweeps/<int:sweep_id>/analysis")
def sweep_analysis(sweep_id: int) -> Any:
    """Groups with CIs and flags, scaling, model fits and break-even (:mod:`edgelab.analysis`)."""
    try:
        data = analysis.sweep_analysis_dict(db.session, sweep_id)
    except LookupError:
        return _not_found(f"sweep {sweep_id}")
    return jsonify({"sweep_id": sweep_id, **data})


@api.get("/sweeps/<int:sweep_id>/breakdown")
def sweep_breakdown(sweep_id: int) -> Any:
    """Mean per-token breakdown (root, workers, injected delay, transfer) per configuration."""
    try:
        found = analysis.sweep_breakdowns(db.session, sweep_id)
    except LookupError:
        return _not_found(f"sweep {sweep_id}")
    return jsonify(sweep_id=sweep_id, breakdowns=[b.to_dict() for b in found])


def _number(name: str, errors: dict[str, str], low: float, high: float) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return float(Rule(name, "number", "", minimum=low, maximum=high).from_text(raw))
    except FieldError as exc:
        errors[name] = str(exc)
        return None


@api.get("/sweeps/<int:sweep_id>/predict")
def sweep_predict(sweep_id: int) -> Any:
    """TPOT predicted by each fitted model at (nodes, delay_ms, bandwidth), any node count."""
    errors: dict[str, str] = {}
    nodes = _number("nodes", errors, 1, PREDICT_MAX_NODES)
    if nodes is None and "nodes" not in errors:
        errors["nodes"] = "required: the node count to predict for (root included)"
    elif nodes is not None and nodes != int(nodes):
        errors["nodes"] = f"must be a whole number, got {request.args.get('nodes')}"
    delay = _number("delay_ms", errors, 0.0, PREDICT_MAX_DELAY_MS)
    bandwidth: int | None = None
    raw_bw = request.args.get("bandwidth", "").strip()
    if raw_bw:
        try:
            bandwidth = parse_bandwidth(clean_text(raw_bw, max_chars=40))
        except FieldError as exc:
            errors["bandwidth"] = str(exc)
        except ProfileError as exc:
            errors["bandwidth"] = str(exc)[:300]
    if errors:
        return _invalid(errors)
    try:
        result = analysis.analyze_sweep(db.session, sweep_id)
    except LookupError:
        return _not_found(f"sweep {sweep_id}")
    n = int(nodes or 1)
    d = delay or 0.0
    out = []
    for fit in result.fits:
        tpot = fit.predict(n, d, bandwidth)
        out.append(
            {
                "engine": fit.engine,
                "model": fit.model,
                "threads": fit.threads,
                "backend": fit.backend,
                "r2": fit.r2,
                "tpot_ms": tpot,
                "decode_tps": 1000.0 / tpot if tpot > 0 else None,
                "extrapolated": n > max(fit.nodes_tried) or d > fit.max_delay_tried_ms,
                "break_even": fit.break_even(n, bandwidth).to_dict() if n > 1 else None,
            }
        )
    return jsonify(sweep_id=sweep_id, nodes=n, delay_ms=d, bandwidth_bps=bandwidth, predictions=out)


def parse_run_ids(values: list[str], low: int, high: int) -> tuple[list[int], str | None]:
    """Run ids from ``ids=1,2&ids=3`` (deduplicated, in order) and what is wrong with them.

    The compare page and ``/api/compare`` share it, so both refuse the same input.
    """
    ids: list[int] = []
    parts = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if len(parts) > 10 * high:
        return [], f"select between {low} and {high} runs to compare (got {len(parts)})"
    for part in parts:
        try:
            run_id = int(ID.from_text(part))
        except FieldError:
            if part.isascii() and part.isdigit():
                return [], f"run ids must be between 1 and {MAX_RUN_ID}, got {quote(part)}"
            return [], f"run ids must be whole numbers, got {quote(part)}"
        if run_id not in ids:
            ids.append(run_id)
    if not low <= len(ids) <= high:
        return ids, f"select between {low} and {high} runs to compare (got {len(ids)})"
    return ids, None


@api.get("/compare")
def compare_runs() -> Any:
    """Runs grouped by configuration, the fields that differ, and a verdict per pair."""
    ids, problem = parse_run_ids(request.args.getlist("ids"), 2, COMPARE_API_MAX)
    if problem:
        return _invalid({"ids": problem})
    try:
        result = analysis.compare_runs(db.session, ids)
    except LookupError as exc:
        return jsonify(error=str(exc)), 404
    return jsonify({"ids": ids, **result.to_dict()})


# --- models and health --------------------------------------------------------


class _WorkerCache:
    """Which workers answer a ping, asked at most every ``ttl_s`` seconds per app.

    Celery's ping waits its whole timeout (0.5 s) for replies, since it cannot know
    how many workers exist; health checks poll often and must answer fast, so the
    list may be up to ``ttl_s`` old (``workers_age_s`` says how old). An empty list
    is asked again sooner (``empty_ttl_s``): a worker that just started shows up fast.
    """

    def __init__(self, ttl_s: float = 10.0, empty_ttl_s: float = 2.0) -> None:
        self.ttl_s, self.empty_ttl_s = ttl_s, empty_ttl_s
        self._at = -1e9
        self._workers: list[str] = []
        self._lock = threading.Lock()

    def get(self, ask: Callable[[], dict[str, Any] | None]) -> list[str]:
        with self._lock:
            ttl = self.ttl_s if self._workers else self.empty_ttl_s
            if time.monotonic() - self._at >= ttl:
                self._workers = sorted(ask() or {})
                self._at = time.monotonic()
            return list(self._workers)

    def age_s(self) -> float:
        return round(time.monotonic() - self._at, 1)


def _worker_cache() -> _WorkerCache:
    cache: _WorkerCache = current_app.extensions.setdefault("edgelab_workers", _WorkerCache())
    return cache


def _shown_path(path: Path, models_dir: Path) -> str:
    """A model's path relative to the models directory: the API does not show host paths."""
    try:
        return str(Path(path).resolve().relative_to(models_dir.resolve()))
    except (ValueError, OSError):
        return Path(path).name  # registered from elsewhere: its file name only


@api.get("/models")
def list_models() -> Any:
    """The catalog; paths are relative to ``EDGELAB_MODELS_DIR`` (no host paths)."""
    settings = current_settings()
    try:
        models = Catalog(settings).list()
    except CatalogError as exc:
        return jsonify(error=f"the model catalog cannot be read: {str(exc)[:300]}"), 503
    shown = []
    for m in models:
        entry = m.to_dict() | {"path": _shown_path(m.path, settings.models_dir)}
        extra = dict(entry.get("extra") or {})
        if "tokenizer" in extra:
            extra["tokenizer"] = _shown_path(Path(str(extra["tokenizer"])), settings.models_dir)
        entry["extra"] = extra
        shown.append(entry)
    return jsonify(models=shown)


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
            workers = _worker_cache().get(
                lambda: current_celery().control.inspect(timeout=0.5).ping()
            )
        except redis.RedisError as exc:
            out["broker"] = {"ok": False, "error": str(exc)}
    out["workers"] = workers
    if out["broker"]["ok"]:
        out["workers_age_s"] = _worker_cache().age_s()
    if out["database"]["ok"]:
        out["runs"] = Store(current_settings().database_url).count_by_status(RUN_OPEN_ORDER)
    out["ok"] = bool(out["database"]["ok"] and out["broker"]["ok"])
    return jsonify(out), 200 if out["ok"] else 503


@api.get("/openapi.json")
def openapi() -> Any:
    from edgelab.service.openapi import document

    return jsonify(document())
