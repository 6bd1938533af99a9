"""The web downloads: CSV and JSON of the history filter and of a sweep.

The formats themselves live in :mod:`edgelab.runs.export` (shared with
``edgelab runs export``); this module only picks the runs and streams the download.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, abort, request, stream_with_context
from sqlalchemy import select

from edgelab.models import Run, Sweep
from edgelab.runs.export import BATCH, csv_chunks, json_chunks
from edgelab.runs.views import run_summary
from edgelab.service.extensions import db
from edgelab.service.history import parse_history
from edgelab.service.web import web
from edgelab.sweeps import control


def _download(body: Iterator[str], filename: str, mimetype: str) -> Response:
    return Response(
        stream_with_context(body),
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _history_runs() -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
    f = parse_history(request.args)
    if f.errors:
        abort(400, "; ".join(f"{k}: {v}" for k, v in f.errors.items()))
    stmt = f.ordered().execution_options(yield_per=BATCH)

    def rows() -> Iterator[dict[str, Any]]:
        for run in db.session.scalars(stmt):
            yield run_summary(run)

    head = {"filter": f.query_args(page=None), "total": f.count(db.session)}
    return rows(), head


@web.get("/export/runs.csv")
def export_runs_csv() -> Response:
    rows, _head = _history_runs()
    return _download(csv_chunks(rows), "edgelab-runs.csv", "text/csv")


@web.get("/export/runs.json")
def export_runs_json() -> Response:
    rows, head = _history_runs()
    return _download(json_chunks(head, rows), "edgelab-runs.json", "application/json")


def _sweep_runs(sweep_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sweep = db.session.get(Sweep, sweep_id)
    if sweep is None:
        abort(404, f"sweep {sweep_id} not found")
    # Every run of the sweep, including the cancelled/failed ones that resume replaced:
    # the export is the sweep's full record; ``fingerprint``+``repetition`` name the cell.
    runs = db.session.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id))
    return [run_summary(r) for r in runs], {"sweep": control.sweep_summary(db.session, sweep)}


@web.get("/export/sweeps/<int:sweep_id>.csv")
def export_sweep_csv(sweep_id: int) -> Response:
    rows, _head = _sweep_runs(sweep_id)
    return _download(csv_chunks(rows), f"edgelab-sweep-{sweep_id}.csv", "text/csv")


@web.get("/export/sweeps/<int:sweep_id>.json")
def export_sweep_json(sweep_id: int) -> Response:
    rows, head = _sweep_runs(sweep_id)
    return _download(json_chunks(head, rows), f"edgelab-sweep-{sweep_id}.json", "application/json")
