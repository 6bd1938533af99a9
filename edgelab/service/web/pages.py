"""Pages about runs: history, the new-run form, one run (live), compare, the queue panel.

Validation goes through :func:`edgelab.runs.config.parse_config`; submitting,
cancelling and re-running go through :mod:`edgelab.store.actions`, the same code
the API and the CLI call, so a run handled here behaves exactly like one handled by
``/api`` (and no page calls an API view and parses its JSON).
"""

from __future__ import annotations

import math
from importlib.resources import files
from typing import Any

import redis
from flask import (
    abort,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from edgelab import analysis
from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.models import Run, Sweep, TokenEvent
from edgelab.runs.config import ENGINES, ConfigError, parse_config
from edgelab.runs.views import METRIC_FIELDS, SUMMARY_CONFIG_FIELDS, run_detail, run_summary
from edgelab.service import api as api_views
from edgelab.service.api import event_stream
from edgelab.service.extensions import current_actions, current_celery, current_settings, db
from edgelab.service.history import PER_PAGE_CHOICES, parse_history
from edgelab.service.web import web
from edgelab.service.web.cluster_svg import cluster_svg
from edgelab.service.web.forms import (
    BANDWIDTH_HELP,
    DEVICES_HELP,
    LATENCY_HELP,
    LINKS_HELP,
    LOSS_HELP,
    ActionForm,
    RunForm,
    button_refused,
    csrf_problem,
    default_model,
    engine_help,
    engines_for,
    form_refused,
    latency_error_field,
    run_input,
)
from edgelab.store import (
    RUN_ACTIVE,
    RUN_OPEN_ORDER,
    RUN_TERMINAL,
    NotFound,
    RunStatus,
    StoreError,
)
from edgelab.store.actions import BrokerError
from edgelab.store.store import Store
from edgelab.tasks.celery_app import CONTROL_QUEUE, EXPERIMENT_QUEUE
from edgelab.topology.spec import Topology
from edgelab.validation.fields import ID, format_loss
from edgelab.validation.values import FieldError

COMPARE_MIN, COMPARE_MAX = 2, 10
#: Configuration rows of the compare page, in the API's field names.
COMPARE_CONFIG = ("sweep_id", *SUMMARY_CONFIG_FIELDS, "loss", "topology")
#: Compare rows that are no field of the analysis' configuration key: they differ
#: when their values do (loss is also part of the topology, which the key has).
_OWN_DIFF = frozenset({"loss"})


def check_button() -> None:
    """Abort with a 400 that says what happened when an action button's CSRF check fails."""
    form = ActionForm()
    if not form.validate():
        abort(400, button_refused(csrf_problem(form) or "the request was not accepted"))


def refused(exc: StoreError) -> tuple[dict[str, str], int]:
    """An action's refusal as form errors and the HTTP code (503 no broker, 409, 404).

    The run and sweep forms share this, so both refuse in the same way.
    """
    return {"form": str(exc)}, exc.http_status


def catalog_models() -> list[ModelInfo]:
    try:
        return Catalog(current_settings()).list()
    except CatalogError:
        return []


def model_names() -> list[str]:
    return [m.name for m in catalog_models()]


def _id_arg(text: str) -> int | None:
    """An id from a query argument (ASCII digits, within the database's range) or None."""
    try:
        return int(ID.from_text(text))
    except FieldError:
        return None


@web.get("/")
def index() -> Any:
    return redirect(url_for("web.history"))


# --- history ------------------------------------------------------------------


@web.get("/runs")
def history() -> Any:
    f = parse_history(request.args)
    total = f.count(db.session)
    pages = max(1, math.ceil(total / f.per_page))
    runs = f.page_of(db.session)
    sweeps = {
        s.id: s.name
        for s in db.session.scalars(
            select(Sweep).where(Sweep.id.in_({r.sweep_id for r in runs if r.sweep_id}))
        )
    }
    return render_template(
        "history.html",
        f=f,
        runs=runs,
        total=total,
        pages=pages,
        sweeps=sweeps,
        statuses=tuple(RunStatus),
        models=model_names(),
        per_page_choices=PER_PAGE_CHOICES,
    ), (400 if f.errors else 200)


# --- new run ------------------------------------------------------------------


def _prefill(form: RunForm, run: Run) -> None:
    form.prompt.data = run.prompt
    form.model.data = run.model
    form.nodes.data = str(run.nodes)
    form.threads.data = str(run.threads)
    form.latency_profile.data = run.latency_label
    form.max_tokens.data = str(run.max_tokens)
    form.backend.data = run.backend
    form.engine.data = run.engine
    form.seed.data = str(run.seed)
    topology = Topology.from_dict(run.topology)
    if topology.loss_pct:
        form.loss.data = format_loss(topology.loss_pct)
    devices, links = topology.as_flags()
    form.devices.data = "\n".join(devices)
    form.links.data = "\n".join(links)


@web.route("/runs/new", methods=["GET", "POST"])
def new_run() -> Any:
    settings = current_settings()
    form = RunForm()
    models = catalog_models()
    form.model.choices = [m.name for m in models] or ["smollm2-135m"]
    runs_on = engines_for(models)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "GET":
        form.backend.data = form.backend.data or settings.backend
        form.model.data = default_model(models, form.engine.data or ENGINES[0])
        source = _id_arg(request.args.get("from", ""))
        run = db.session.get(Run, source) if source is not None else None
        if run is not None:
            _prefill(form, run)
    else:
        if not form.validate():
            why = csrf_problem(form)
            if why is not None:
                errors = {"form": form_refused(why)}
            errors.update({k: "; ".join(v) for k, v in form.errors.items() if k != "csrf_token"})
            status = 400
        else:
            data, errors = run_input(form)
            try:
                config, _model = parse_config(data, Catalog(settings), default_backend="local")
            except ConfigError as exc:
                for key, message in exc.errors.items():
                    errors.setdefault(
                        latency_error_field(form) if key == "latency" else key, message
                    )
            except CatalogError as exc:
                errors["model"] = str(exc)
            if errors:
                status = 400
            else:
                try:
                    submitted = current_actions().submit_run(config)
                except StoreError as exc:
                    errors, status = refused(exc)
                else:
                    return redirect(url_for("web.run_page", run_id=submitted.id), code=303)
    return render_template(
        "run_new.html",
        form=form,
        errors=errors,
        latency_help=LATENCY_HELP,
        bandwidth_help=BANDWIDTH_HELP,
        loss_help=LOSS_HELP,
        engine_help=engine_help(),
        model_engines=runs_on,
        devices_help=DEVICES_HELP,
        links_help=LINKS_HELP,
    ), status


# --- one run ------------------------------------------------------------------


def _detail_or_404(run_id: int) -> dict[str, Any]:
    try:
        return run_detail(current_settings().database_url, run_id)
    except LookupError:
        abort(404, f"run {run_id} not found")


@web.get("/runs/<int:run_id>")
def run_page(run_id: int) -> Any:
    detail = _detail_or_404(run_id)
    sweep = db.session.get(Sweep, detail["sweep_id"]) if detail["sweep_id"] else None
    return render_template(
        "run.html",
        run=detail,
        cluster=cluster_svg(detail),
        sweep=sweep,
        action=ActionForm(),
        terminal=detail["status"] in RUN_TERMINAL,
        metric_fields=METRIC_FIELDS,
    )


@web.get("/runs/<int:run_id>/data")
def run_data(run_id: int) -> Any:
    return jsonify(_detail_or_404(run_id))


@web.get("/runs/<int:run_id>/events")
def run_events(run_id: int) -> Any:
    """The API's event stream (replay, then live), behind the pages' access check."""
    return event_stream(run_id)


@web.post("/runs/<int:run_id>/cancel")
def cancel_run(run_id: int) -> Any:
    check_button()
    try:
        result = current_actions().cancel_run(run_id)
    except NotFound as exc:
        abort(404, str(exc))
    except StoreError as exc:
        flash(f"run {run_id}: {exc}", "error")
    else:
        # "pending": the run page's script updates the banner when the run has stopped.
        if result.stopping:
            flash(f"run {run_id}: cancelling", "pending")
        else:
            flash(f"run {run_id}: {result.status}", "ok")
    return redirect(url_for("web.run_page", run_id=run_id), code=303)


@web.post("/runs/<int:run_id>/rerun")
def rerun(run_id: int) -> Any:
    """A new run with the same configuration (the old one is kept as it was)."""
    check_button()
    try:
        new = current_actions().rerun(run_id)
    except NotFound as exc:
        abort(404, str(exc))
    except StoreError as exc:
        flash(f"cannot re-run run {run_id}: {exc}", "error")
        return redirect(url_for("web.run_page", run_id=run_id), code=303)
    flash(f"run {new.id} re-runs run {run_id}", "ok")
    return redirect(url_for("web.run_page", run_id=new.id), code=303)


# --- compare ------------------------------------------------------------------


def _compare_ids() -> tuple[list[int], str | None]:
    ids, problem = api_views.parse_run_ids(request.args.getlist("ids"), COMPARE_MIN, COMPARE_MAX)
    return ids, (f"{problem}; tick them in the history" if problem else None)


def _scaling_chart(result: analysis.CompareAnalysis) -> list[dict[str, Any]]:
    """Speedup vs nodes per latency profile, from :func:`edgelab.analysis.scaling`."""
    return [
        {
            "latency": s.latency,
            "nodes": [p.nodes for p in s.points],
            "speedup": [p.speedup for p in s.points],
            "ci": [p.speedup_ci for p in s.points],
            "measurable": s.measurable,
            "note": s.note or s.baseline_note,
        }
        for s in analysis.scaling(result.groups)
    ]


@web.get("/compare")
def compare() -> Any:
    """Ticked runs side by side, grouped by configuration, with a verdict per pair of groups.

    Only configuration fields that differ between groups are highlighted: repetitions of
    one configuration differ in their metrics, which is noise, not a difference.
    """
    ids, problem = _compare_ids()
    if problem:
        return render_template("compare.html", error=problem, runs=[]), 400
    try:
        result = analysis.compare_runs(db.session, ids)
    except LookupError as exc:
        return render_template("compare.html", error=str(exc), runs=[]), 404
    found = {r.id: r for r in db.session.scalars(select(Run).where(Run.id.in_(ids)))}
    runs = [run_summary(found[i]) for i in ids]
    offsets: dict[int, list[float]] = {i: [] for i in ids}
    for run_id, offset in db.session.execute(
        select(TokenEvent.run_id, TokenEvent.offset_ms)
        .where(TokenEvent.run_id.in_(ids))
        .order_by(TokenEvent.run_id, TokenEvent.index)
    ):
        offsets[run_id].append(offset)
    differing = set(result.differing)
    config_rows = []
    for name in COMPARE_CONFIG:
        values = [
            r["sweep_id"]
            if name == "sweep_id"
            else r["config"]["topology"]["label"]
            if name == "topology"
            else r["config"][name]
            for r in runs
        ]
        differs = name in differing or (name in _OWN_DIFF and len(set(values)) > 1)
        config_rows.append({"name": name, "values": values, "differs": differs})
    metric_rows = [
        {"name": name, "values": [r["metrics"][name] for r in runs]} for name in METRIC_FIELDS
    ]
    sweep_ids = {r["sweep_id"] for r in runs}
    one_sweep = len(sweep_ids) == 1 and None not in sweep_ids
    chart = {
        "runs": [
            {
                "id": r["id"],
                "label": f"#{r['id']} {r['config']['nodes']}n {r['config']['latency']}",
                "offsets": offsets[r["id"]],
            }
            for r in runs
        ],
        "scaling": _scaling_chart(result) if one_sweep else [],
    }
    return render_template(
        "compare.html",
        error=None,
        runs=runs,
        config_rows=config_rows,
        metric_rows=metric_rows,
        result=result,
        chart=chart,
        one_sweep=one_sweep,
    )


# --- queue panel --------------------------------------------------------------


def _queue_runs() -> dict[str, Any]:
    counts = Store(current_settings().database_url).count_by_status(RUN_OPEN_ORDER)
    active = db.session.scalars(
        select(Run).where(Run.status.in_(list(RUN_ACTIVE))).order_by(Run.id)
    )
    waiting = db.session.scalars(
        select(Run).where(Run.status == RunStatus.QUEUED).order_by(Run.id).limit(50)
    )
    return {
        "counts": counts,
        "active": [run_summary(r) for r in active],
        "waiting": [run_summary(r) for r in waiting],
    }


def _queue_broker() -> dict[str, Any]:
    try:
        r = current_actions().queue.check()
    except BrokerError as exc:
        return {"broker": False, "workers": [], "messages": {}, "error": str(exc)}
    try:
        messages = {q: int(r.llen(q)) for q in (EXPERIMENT_QUEUE, CONTROL_QUEUE)}
        replies = current_celery().control.inspect(timeout=0.5).ping() or {}
    except redis.RedisError as exc:
        return {"broker": False, "workers": [], "messages": {}, "error": str(exc)}
    return {"broker": True, "workers": sorted(replies), "messages": messages, "error": None}


@web.get("/queue")
def queue() -> Any:
    return render_template("queue.html", q=_queue_runs())


@web.get("/queue/data")
def queue_data() -> Any:
    return jsonify(_queue_runs() | _queue_broker())


# --- vendored scripts ---------------------------------------------------------


@web.get("/vendor/plotly.min.js")
def vendor_js() -> Any:
    """plotly.js from the installed ``plotly`` package: no CDN, works offline."""
    path = files("plotly") / "package_data" / "plotly.min.js"
    resp = send_file(str(path), mimetype="text/javascript", max_age=7 * 24 * 3600)
    return resp


@web.errorhandler(HTTPException)
def _page_error(exc: HTTPException) -> Any:
    """Errors of page routes as a page (the data routes used by scripts get JSON)."""
    if (request.endpoint or "").endswith(("_data", "_events")):
        resp = jsonify(error=exc.description)
    else:
        resp = make_response(
            render_template("error.html", code=exc.code, name=exc.name, description=exc.description)
        )
    resp.status_code = exc.code or 500
    for key, value in exc.get_headers():  # 405's Allow, 429's Retry-After
        if key.lower() != "content-type":
            resp.headers[key] = value
    return resp
