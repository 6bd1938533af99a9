"""Pages about sweeps: the list, the sweep form (live cell count), one sweep (live grid).

A sweep submitted here is parsed and expanded by :mod:`edgelab.sweeps` exactly as
``POST /api/sweeps`` does; submit, cancel and resume are :mod:`edgelab.store.actions`,
the same code the API and the CLI call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flask import (
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from sqlalchemy import case, func, select

from edgelab import analysis
from edgelab.analysis.memo import SweepMemo
from edgelab.catalog import Catalog
from edgelab.models import Run, Sweep
from edgelab.service.extensions import current_actions, current_settings, db
from edgelab.service.web import web
from edgelab.service.web.forms import (
    SWEEP_DEVICES_HELP,
    SWEEP_LATENCY_HELP,
    SWEEP_LINKS_HELP,
    SWEEP_LOSS_HELP,
    ActionForm,
    SweepForm,
    csrf_problem,
    engine_help,
    form_refused,
    sweep_input,
)
from edgelab.service.web.forms import (
    default_model as pick_default,
)
from edgelab.service.web.pages import catalog_models, check_button, refused
from edgelab.store import SWEEP_TERMINAL, NotFound, RunStatus, StoreError, SweepStatus
from edgelab.sweeps import SpecError, control, expand, parse_spec
from edgelab.validation.fields import PAGE
from edgelab.validation.values import FieldError, quote

SWEEP_STATUSES = tuple(SweepStatus)

SWEEPS_PER_PAGE = 50
#: Spec fields whose errors have their own place on the form; the rest go on top.
FORM_FIELDS = frozenset(
    {"name", "model", "nodes", "threads", "latency", "bandwidth", "max_tokens", "prompts"}
    | {"repetitions", "backend", "engine", "devices", "links", "loss"}
)


@web.get("/sweeps")
def sweeps() -> Any:
    """Sweeps, newest first; filters: ``status`` and ``name`` (substring)."""
    error = None
    raw = request.args.get("page", "").strip()
    page = 1
    if raw:
        try:
            page = PAGE.from_text(raw)
        except FieldError as exc:
            error = f"page {exc}"
    status = request.args.get("status", "").strip()[:40]
    name = request.args.get("name", "").strip()[:200]
    stmt = select(Sweep)
    if status and status not in SWEEP_STATUSES:
        error = f"unknown status {quote(status)}; one of {', '.join(SWEEP_STATUSES)}"
    elif status:
        stmt = stmt.where(Sweep.status == status)
    if name:
        stmt = stmt.where(Sweep.name.contains(name, autoescape=True))
    total = db.session.scalar(stmt.with_only_columns(func.count(Sweep.id))) or 0
    rows = db.session.scalars(
        stmt.order_by(Sweep.id.desc()).offset((page - 1) * SWEEPS_PER_PAGE).limit(SWEEPS_PER_PAGE)
    )
    items = [control.sweep_summary(db.session, s) for s in rows]
    pages = max(1, math.ceil(total / SWEEPS_PER_PAGE))
    return render_template(
        "sweeps.html",
        sweeps=items,
        page=page,
        pages=pages,
        total=total,
        statuses=SWEEP_STATUSES,
        status=status,
        name=name,
        error=error,
    ), (400 if error else 200)


@web.route("/sweeps/new", methods=["GET", "POST"])
def new_sweep() -> Any:
    settings = current_settings()
    form = SweepForm()
    catalogued = catalog_models()
    models = [m.name for m in catalogued]
    default_model = pick_default(catalogued, form.engine.data or "llamacpp") or "smollm2-135m"
    errors: dict[str, str] = {}
    status = 200
    if request.method == "GET":
        form.model.data = form.model.data or default_model
        form.backend.data = form.backend.data or settings.backend
    elif not form.validate():
        why = csrf_problem(form)
        errors = {"form": form_refused(why)} if why is not None else {}
        errors.update({k: "; ".join(v) for k, v in form.errors.items() if k != "csrf_token"})
        status = 400
    else:
        spec_data, errors = sweep_input(form, default_model)
        try:
            spec = parse_spec(spec_data, max_cells=settings.max_sweep_cells)
            cells = expand(spec, Catalog(settings), default_backend=settings.backend)
        except SpecError as exc:
            for key, message in exc.errors.items():
                errors.setdefault(key if key in FORM_FIELDS else "form", message)
        if errors:
            status = 400
        else:
            try:
                sweep = current_actions().submit_sweep(spec, cells)
            except StoreError as exc:
                errors, status = refused(exc)
            else:
                return redirect(url_for("web.sweep_page", sweep_id=sweep.id), code=303)
    return render_template(
        "sweep_new.html",
        form=form,
        errors=errors,
        models=models,
        latency_help=SWEEP_LATENCY_HELP,
        engine_help=engine_help(),
        max_cells=settings.max_sweep_cells,
        devices_help=SWEEP_DEVICES_HELP,
        links_help=SWEEP_LINKS_HELP,
        loss_help=SWEEP_LOSS_HELP,
    ), status


@web.get("/sweeps/count")
def sweep_count() -> Any:
    """The sweep form's live cell count, by the parser that checks the submitted form.

    The page sends the fields as typed; the answer is the grid's size per axis and
    the problems that would refuse it ("0, abc" is an error, not two node values),
    so the count on the page can never disagree with what a submit does.
    """
    settings = current_settings()
    form = SweepForm(formdata=request.args, meta={"csrf": False})
    catalogued = catalog_models()
    default_model = pick_default(catalogued, form.engine.data or "llamacpp") or "smollm2-135m"
    spec_data, errors = sweep_input(form, default_model)
    axes: dict[str, int] = {}
    repetitions = spec_data["repetitions"] if isinstance(spec_data["repetitions"], int) else 0
    cells = 0
    grid: int | None = None
    try:
        # No size limit here: the count is shown (and refused) even above the limit.
        spec = parse_spec(spec_data, max_cells=2**62)
        axes = {axis: len(values) for axis, values in spec.axes.items()}
        repetitions = spec.repetitions
        cells = grid = spec.total_cells
        if cells <= settings.max_sweep_cells and not errors:
            # What a submit creates: 1-node cells collapse across latency/bandwidth.
            cells = len(expand(spec, Catalog(settings), default_backend=settings.backend))
    except SpecError as exc:
        axes = axes or {axis: len(values) for axis, values in exc.axes.items()}
        for key, message in exc.errors.items():
            errors.setdefault(key, message)
    return jsonify(
        cells=cells if not errors else None,
        # The full grid (axes x repetitions); more than ``cells`` when 1-node cells
        # collapse: a 1-node cluster has no links, so its latencies cannot differ.
        grid=grid,
        axes=axes,
        repetitions=repetitions,
        max_cells=settings.max_sweep_cells,
        errors=errors,
    )


def _detail_or_404(sweep_id: int) -> dict[str, Any]:
    try:
        return control.sweep_detail(db.session, sweep_id)
    except LookupError:
        abort(404, f"sweep {sweep_id} not found")


@dataclass(frozen=True)
class SweepPage:
    """What the sweep page embeds: the cell list and the analysis, already serialised."""

    detail: dict[str, Any]  # the sweep detail without its cells (in detail_json)
    detail_json: Markup
    analysis_json: Markup


#: Sweep pages kept per process (:func:`sweep_page_data`), the latest version of each
#: sweep only; 0.5-1 MB each at 1,000 runs.
PAGE_CACHE_SIZE = 16
_pages: SweepMemo[SweepPage] = SweepMemo(PAGE_CACHE_SIZE)


def page_version(sweep_id: int) -> tuple[Any, ...] | None:
    """One aggregate query that changes whenever anything the sweep page embeds does:
    the sweep's own row, the analysis' fingerprint of its runs
    (:func:`edgelab.analysis.summary.runs_version_columns`) and every run's status (a
    sum of run ids per status: a run moving between any two states changes it).
    ``None`` if there is no such sweep."""
    row = db.session.execute(
        select(
            Sweep.status,
            Sweep.name,
            Sweep.model_loads,
            Sweep.total_cells,
            Sweep.finished_at,
            *analysis.runs_version_columns(),
            func.count(Run.started_at),
            *(func.sum(case((Run.status == s, Run.id), else_=0)) for s in RunStatus),
        )
        .select_from(Sweep)
        .outerjoin(Run, Run.sweep_id == Sweep.id)
        .where(Sweep.id == sweep_id)
        .group_by(Sweep.id)
    ).one_or_none()
    return None if row is None else tuple(row)


def _tojson(value: Any) -> Markup:
    """``value|tojson`` as the template would write it (the app's JSON settings)."""
    env = current_app.jinja_env
    return htmlsafe_json_dumps(
        value, dumps=env.policies["json.dumps_function"], **env.policies["json.dumps_kwargs"]
    )


def sweep_page_data(sweep_id: int) -> SweepPage:
    """The page's cell list and analysis, remembered per process until the sweep or its
    runs change (:func:`page_version`): a finished 1,000-run sweep's page then costs one
    aggregate query and the template, instead of reading every run twice (cells,
    analysis) and serialising ~0.5-0.8 MB of JSON per view. Shared: do not change it."""
    version = page_version(sweep_id)
    if version is None:
        abort(404, f"sweep {sweep_id} not found")
    key = (str(db.session.get_bind().engine.url), sweep_id, version)
    found = _pages.get(key)
    if found is not None:
        return found
    detail = _detail_or_404(sweep_id)
    data = analysis.sweep_analysis_dict(db.session, sweep_id)
    # The template reads the sweep's own fields; its 1,000 cell dicts (~1 MB of Python
    # objects) are kept only as the JSON text.
    head = {k: v for k, v in detail.items() if k != "cells"}
    page = SweepPage(head, _tojson(detail), _tojson(data))
    _pages.put(key, page)
    return page


def clear_page_cache(sweep_id: int | None = None) -> None:
    """Forget the remembered pages of one sweep, or of all (benchmarks time cold views)."""
    _pages.clear(sweep_id)


@web.get("/sweeps/<int:sweep_id>")
def sweep_page(sweep_id: int) -> Any:
    page = sweep_page_data(sweep_id)
    return render_template(
        "sweep.html",
        sweep=page.detail,
        sweep_json=page.detail_json,
        analysis_json=page.analysis_json,
        action=ActionForm(),
        terminal=page.detail["status"] in SWEEP_TERMINAL,
    )


@web.get("/sweeps/<int:sweep_id>/data")
def sweep_data(sweep_id: int) -> Any:
    return jsonify(_detail_or_404(sweep_id))


@web.get("/sweeps/<int:sweep_id>/analysis")
def sweep_analysis_data(sweep_id: int) -> Any:
    """The sweep analysis (same JSON as the API's) behind the pages' access check."""
    try:
        data = analysis.sweep_analysis_dict(db.session, sweep_id)
    except LookupError:
        abort(404, f"sweep {sweep_id} not found")
    return jsonify({"sweep_id": sweep_id, **data})


@web.get("/sweeps/<int:sweep_id>/breakdown")
def sweep_breakdown_data(sweep_id: int) -> Any:
    """The per-configuration breakdown, asked for apart from the page: it reads every
    token of every run, which the page's own time budget should not carry."""
    try:
        found = analysis.sweep_breakdowns(db.session, sweep_id)
    except LookupError:
        abort(404, f"sweep {sweep_id} not found")
    return jsonify(sweep_id=sweep_id, breakdowns=[b.to_dict() for b in found])


def _sweep_action(sweep_id: int, verb: str) -> Any:
    check_button()
    settings = current_settings()
    actions = current_actions()
    try:
        if verb == "cancel":
            actions.cancel_sweep(sweep_id)
        else:
            actions.resume_sweep(sweep_id, Catalog(settings), settings)
    except NotFound as exc:
        abort(404, str(exc))
    except SpecError as exc:
        flash(f"cannot {verb} sweep {sweep_id}: {'; '.join(exc.errors.values())}", "error")
    except StoreError as exc:
        flash(f"cannot {verb} sweep {sweep_id}: {exc}", "error")
    else:
        flash(f"sweep {sweep_id}: {verb} requested", "ok")
    return redirect(url_for("web.sweep_page", sweep_id=sweep_id), code=303)


@web.post("/sweeps/<int:sweep_id>/cancel")
def cancel_sweep(sweep_id: int) -> Any:
    return _sweep_action(sweep_id, "cancel")


@web.post("/sweeps/<int:sweep_id>/resume")
def resume_sweep(sweep_id: int) -> Any:
    return _sweep_action(sweep_id, "resume")
