"""Jinja filters: numbers shown the same way on every page (and '—' for missing ones)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask

MISSING = "—"


def fmt_num(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def fmt_bytes(value: Any) -> str:
    if value is None:
        return MISSING
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} GB"


def fmt_bps(value: Any) -> str:
    if value is None:
        return "unlimited"
    bits = float(value)
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if bits < 1000 or unit == "Gbit/s":
            return f"{bits:g} {unit}"
        bits /= 1000
    return f"{bits:g} Gbit/s"


def fmt_time(value: Any) -> str:
    """ISO strings or datetimes as 'YYYY-MM-DD HH:MM:SS' (UTC, as stored)."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def register_filters(app: Flask) -> None:
    app.jinja_env.filters.update(num=fmt_num, bytes=fmt_bytes, bps=fmt_bps, when=fmt_time)
