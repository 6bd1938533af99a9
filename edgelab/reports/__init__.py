"""Reports: one sweep written up as a self-contained HTML file or Markdown with figures.

``edgelab report SWEEP_ID`` and ``GET /sweeps/<id>/report`` both call
:func:`build_report` then :func:`render_html` (or :func:`write_markdown`). The
numbers come from :mod:`edgelab.analysis` — the same :func:`~edgelab.analysis.analyze`
the sweep page and ``/api/sweeps/<id>/analysis`` call — so a report can never
disagree with the page; this package only lays them out and draws static figures.

Why a room of its own rather than ``edgelab/analysis/report.py``: the analysis
package is pure statistics (numpy/scipy, no I/O, no rendering) that the API and
pages import on every request; reports bring matplotlib, templates and files, and
change for presentation reasons (a journal's figure format), not statistical ones.
Keeping them apart keeps matplotlib out of the page's import path and lets each
side change without touching the other.

- :mod:`~edgelab.reports.content`: gathers a sweep's runs, analysis, breakdown and
  hygiene flags into one :class:`ReportData`;
- :mod:`~edgelab.reports.figures`: matplotlib figures (no pyplot: safe in threads);
- :mod:`~edgelab.reports.render`: HTML (figures inline as SVG, CSS inline, nothing
  fetched when opened) and Markdown (PNG and SVG files beside it);
- :mod:`~edgelab.reports.cli`: ``edgelab report``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgelab.reports.content import ReportData, build_report
    from edgelab.reports.render import render_html, render_markdown, write_markdown

# Resolved on first use: importing ``edgelab.reports.cli`` (which ``edgelab --help``
# does to print the command's summary) must not load matplotlib, scipy and SQLAlchemy.
_LAZY = {
    "ReportData": "edgelab.reports.content",
    "build_report": "edgelab.reports.content",
    "render_html": "edgelab.reports.render",
    "render_markdown": "edgelab.reports.render",
    "write_markdown": "edgelab.reports.render",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgelab.reports' has no attribute {name!r}")


__all__ = ["ReportData", "build_report", "render_html", "render_markdown", "write_markdown"]
