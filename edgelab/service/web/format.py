"""Jinja filters: the rules of :mod:`edgelab.units`, so every page reads numbers alike."""

from __future__ import annotations

from flask import Flask

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
