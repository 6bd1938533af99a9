"""CSV and JSON export formats of runs, in the API's field names.

JSON rows are exactly :func:`edgelab.runs.views.run_summary`, as ``GET /api/runs``
returns them. CSV rows flatten that shape: the top-level fields, then the keys of
``config``, ``metrics``, ``provenance`` and ``hygiene`` under their own names (they never clash),
with nested values (latency profile, options, layer split) as JSON text.

These are plain generators of text chunks, so the web export (a streamed download)
and ``edgelab runs export`` (a file or stdout) write byte-identical output: a 100k
run export is written as it is read, never held in memory whole. It lives here,
beside the run's JSON shape, rather than in ``service/web`` so the CLI does not
import the viewer.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from edgelab.runs.views import (
    HYGIENE_FIELDS,
    METRIC_FIELDS,
    PROVENANCE_FIELDS,
    SUMMARY_CONFIG_FIELDS,
)

TOP_FIELDS = ("id", "sweep_id", "status", "error", "fingerprint")
TIME_FIELDS = ("created_at", "started_at", "finished_at")
CONFIG_COLUMNS = (*SUMMARY_CONFIG_FIELDS, "latency_profile", "loss", "options", "topology")
CSV_COLUMNS = (
    *TOP_FIELDS,
    *TIME_FIELDS,
    *CONFIG_COLUMNS,
    *METRIC_FIELDS,
    *PROVENANCE_FIELDS,
    *HYGIENE_FIELDS,
)
#: Rows fetched per database round trip while streaming an export.
BATCH = 1000


def flat_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One CSV row from a run summary; nested values as compact JSON."""
    row: dict[str, Any] = {k: summary[k] for k in (*TOP_FIELDS, *TIME_FIELDS)}
    for group in ("config", "metrics", "provenance", "hygiene"):
        for key, value in summary[group].items():
            row[key] = (
                json.dumps(value, sort_keys=True, separators=(",", ":"))
                if isinstance(value, dict | list)
                else value
            )
    return row


def csv_chunks(summaries: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The CSV text (header first) in chunks of about 64 kB."""
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


def json_chunks(head: dict[str, Any], summaries: Iterable[dict[str, Any]]) -> Iterator[str]:
    """``{...head, "runs": [...]}`` written run by run."""
    opening = json.dumps(head)[:-1]
    yield (opening + ", " if head else "{") + '"runs": ['
    for i, summary in enumerate(summaries):
        yield ("," if i else "") + "\n" + json.dumps(summary, default=str)
    yield "\n]}\n"
