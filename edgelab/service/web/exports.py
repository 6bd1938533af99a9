"""CSV and JSON exports of the history filter and of a sweep, in the API's field names.

JSON rows are exactly :func:`edgelab.runs.views.run_summary`, as ``GET /api/runs``
returns them. CSV rows flatten that shape: the top-level fields, then the keys of
``config``, ``metrics`` and ``provenance`` under their own names (they never clash),
with nested values (latency profile, options, layer split) as JSON text.

Exports stream: a filter matching 100k runs is written as it is read, never held
in memory whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response, abort, request, stream_with_context
from sqlalchemy import select

from edgelab.models import Run, Sweep
from edgelab.runs.views import (
    METRIC_FIELDS,
    PROVENANCE_FIELDS,
    SUMMARY_CONFIG_FIELDS,
    run_summary,
)
from edgelab.service.extensions import db
from edgelab.service.history import parse_history
from edgelab.service.web import web
from edgelab.sweeps import control

TOP_FIELDS = ("id", "sweep_id", "status", "error", "fingerprint")
TIME_FIELDS = ("created_at", "started_at", "finished_at")
CONFIG_COLUMNS = (*SUMMARY_CONFIG_FIELDS, "latency_profile", "options")
CSV_COLUMNS = (*TOP_FIELDS, *TIME_FIELDS, *CONFIG_COLUMNS, *METRIC_FIELDS, *PROVENANCE_FIELDS)
BATCH = 1000


def flat_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One CSV row from a run summary; nested values as compact JSON."""
    row: dict[str, Any] = {k: summary[k] for k in (*TOP_FIELDS, *TIME_FIELDS)}
    for group in ("config", "metrics", "provenance"):
        for key, value in summary[group].items():
            row[key] = (
                json.dumps(value, sort_keys=True, separators=(",", ":"))
                if isinstance(value, dict | list)
                else value
            )
    return row


def _csv_lines(summaries: Iterable[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for summary in summaries:
        writer.writerow(flat_row(summary))
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _json_chunks(head: dict[str, Any], summaries: Iterable[dict[str, Any]]) -> Iterator[str]:
    """``{...head, "runs": [...]}`` written run by run."""
    opening = json.dumps(head)[:-1]
    yield (opening + ", " if head else "{") + '"runs": ['
    for i, summary in enumerate(summaries):
        yield ("," if i else "") + "\n" + json.dumps(summary, default=str)
    yield "\n]}\n"


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
    return _download(_csv_lines(rows), "edgelab-runs.csv", "text/csv")


@web.get("/export/runs.json")
def export_runs_json() -> Response:
    rows, head = _history_runs()
    return _download(_json_chunks(head, rows), "edgelab-runs.json", "application/json")


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
    return _download(_csv_lines(rows), f"edgelab-sweep-{sweep_id}.csv", "text/csv")


@web.get("/export/sweeps/<int:sweep_id>.json")
def export_sweep_json(sweep_id: int) -> Response:
    rows, head = _sweep_runs(sweep_id)
    return _download(_json_chunks(head, rows), f"edgelab-sweep-{sweep_id}.json", "application/json")
