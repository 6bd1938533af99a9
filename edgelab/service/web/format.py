"""Jinja filters and globals every page shares.

The filters are the rules of :mod:`edgelab.units`, so every page reads numbers alike;
the statuses are :mod:`edgelab.store.status` handed to the page scripts, so the static
JavaScript never spells a state itself.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from edgelab.store.status import (
    RUN_OPEN_ORDER,
    RUN_TERMINAL,
    SWEEP_TERMINAL,
    RunStatus,
    SweepStatus,
)
from edgelab.units import (
    METRIC_KINDS,
    fmt_bps,
    fmt_bytes,
    fmt_metric,
    fmt_ms,
    fmt_num,
    fmt_time,
    metric_parts,
)


def register_filters(app: Flask) -> None:
    app.jinja_env.filters.update(
        num=fmt_num,
        bytes=fmt_bytes,
        ms=fmt_ms,
        bps=fmt_bps,
        when=fmt_time,
        metric=fmt_metric,
        metric_parts=metric_parts,
    )
    app.jinja_env.globals["METRIC_KINDS"] = METRIC_KINDS
    app.context_processor(_statuses_context)


def status_names() -> dict[str, Any]:
    """The run and sweep states as ``base.html`` exposes them (``window.EDGELAB_STATUS``).

    Run states by enum name (``QUEUED`` ... ``CANCELLED``), ``ALL`` in the enum's
    order (the sweep page's count boxes), ``OPEN`` in the queue panel's order,
    ``TERMINAL`` for runs and ``SWEEP_TERMINAL`` for sweeps (equal today, named apart
    so a new state in one enum cannot silently change the other page).
    """
    names: dict[str, Any] = {s.name: s.value for s in RunStatus}
    names["ALL"] = [s.value for s in RunStatus]
    names["OPEN"] = [s.value for s in RUN_OPEN_ORDER]
    names["TERMINAL"] = [s.value for s in RunStatus if s in RUN_TERMINAL]
    names["SWEEP"] = {s.name: s.value for s in SweepStatus}
    names["SWEEP_TERMINAL"] = [s.value for s in SweepStatus if s in SWEEP_TERMINAL]
    return names


def _statuses_context() -> dict[str, Any]:
    return {"edgelab_status": status_names()}
