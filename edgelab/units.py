"""How numbers read, on every page and in the terminal: one set of rules.

A value is shown with the unit a person reads ("259 kB", "5,395 ms", "12.3 tok/s")
instead of its raw stored form ("259,258.0 B"). Templates use these functions as
Jinja filters (``edgelab/service/web/format.py``), the CLI calls them directly, and
the page scripts that update numbers live use ``edgelab/service/static/format.js``,
which implements the same functions: ``tests/unit/test_format.py`` runs both on
one table of cases so they cannot drift apart. CSV and JSON exports never go
through this module: they keep the raw values under the API's field names.

Conventions, chosen once:

- bytes are decimal SI (1 kB = 1000 B), like plotly's axis ticks and the bit/s of
  bandwidths, with three significant digits ("259 kB", "98.2 MB", "1.52 GB");
- durations stay in milliseconds below 10 s (the scale of TTFT/TPOT, comparable
  across cards) and switch to seconds, then minutes, above;
- a missing value is "—", never 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

MISSING = "—"

#: The unit kind of every metric the pages show (the API's field names).
METRIC_KINDS: dict[str, str] = {
    "ttft_ms": "ms",
    "e2el_ms": "ms",
    "tpot_ms": "ms",
    "itl_mean_ms": "ms",
    "itl_p50_ms": "ms",
    "itl_p90_ms": "ms",
    "itl_p99_ms": "ms",
    "prompt_tokens": "count",
    "output_tokens": "count",
    "prefill_tps": "tok/s",
    "decode_tps": "tok/s",
    "load_ms": "ms",
    "net_bytes_per_token": "bytes",
    "net_load_bytes": "bytes",
    "net_prefill_bytes": "bytes",
    "net_decode_bytes": "bytes",
    "round_trips_per_token": "num",
}


def _missing(value: Any) -> bool:
    if value is None or value == "" or isinstance(value, bool):
        return True
    try:
        return float(value) != float(value)  # NaN
    except (TypeError, ValueError):
        return True


def _fixed(value: float, digits: int) -> str:
    """Grouped thousands, ``digits`` decimals: 5395.2 -> '5,395' (0), '5,395.2' (1)."""
    return f"{value:,.{digits}f}"


def _three_significant(value: float) -> str:
    a = abs(value)
    return _fixed(value, 0 if a >= 100 else 1 if a >= 10 else 2)


def fmt_num(value: Any, digits: int = 1) -> str:
    """A plain number: integers grouped, others with ``digits`` decimals."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    try:
        return _fixed(float(value), digits)
    except (TypeError, ValueError):
        return str(value)


def bytes_parts(value: Any) -> tuple[str, str]:
    if _missing(value):
        return MISSING, ""
    size = float(value)
    if abs(size) < 1000:
        return _fixed(size, 0), "B"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if abs(size) < 999.5 or unit == "TB":
            return _three_significant(size), unit
    raise AssertionError("unreachable")


def ms_parts(value: Any) -> tuple[str, str]:
    if _missing(value):
        return MISSING, ""
    ms = float(value)
    a = abs(ms)
    if a >= 600_000:
        return _fixed(ms / 60_000, 1), "min"
    if a >= 10_000:
        return _fixed(ms / 1000, 1), "s"
    if a >= 100:
        return _fixed(ms, 0), "ms"
    return _fixed(ms, 1 if a >= 10 else 2), "ms"


def rate_parts(value: Any) -> tuple[str, str]:
    if _missing(value):
        return MISSING, ""
    return _three_significant(float(value)), "tok/s"


def count_parts(value: Any) -> tuple[str, str]:
    if _missing(value):
        return MISSING, ""
    return f"{round(float(value)):,}", ""


def parts(kind: str, value: Any) -> tuple[str, str]:
    """(number, unit) of ``value`` read as ``kind`` ("ms", "bytes", "tok/s", "count")."""
    if kind == "ms":
        return ms_parts(value)
    if kind == "bytes":
        return bytes_parts(value)
    if kind == "tok/s":
        return rate_parts(value)
    if kind == "count":
        return count_parts(value)
    return (MISSING, "") if _missing(value) else (fmt_num(value), "")


def fmt_kind(value: Any, kind: str) -> str:
    """'253 kB', '5,395 ms', '12.3 tok/s', '—' ..."""
    number, unit = parts(kind, value)
    return f"{number} {unit}" if unit and number != MISSING else number


def fmt_bytes(value: Any) -> str:
    return fmt_kind(value, "bytes")


def fmt_ms(value: Any) -> str:
    return fmt_kind(value, "ms")


def metric_parts(value: Any, name: str) -> tuple[str, str]:
    """(number, unit) of metric ``name`` (see :data:`METRIC_KINDS`)."""
    return parts(METRIC_KINDS.get(name, "num"), value)


def fmt_metric(value: Any, name: str) -> str:
    return fmt_kind(value, METRIC_KINDS.get(name, "num"))


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


#: How many base units one display unit holds (to put a ± in the mean's unit).
_UNIT_SCALE = {"ms": 1.0, "s": 1000.0, "min": 60_000.0, "tok/s": 1.0, "B": 1.0, "kB": 1e3}
_UNIT_SCALE.update({"MB": 1e6, "GB": 1e9, "TB": 1e12})


def fmt_mean_ci(mean: Any, half_width: Any, kind: str) -> str:
    """'50.2 ± 0.69 ms', '15.0 ± 0.30 s': a mean and its CI half-width in the mean's unit
    (the mean alone without a half-width; '—' without a mean). Reports and the CLI
    use it so a ± never mixes units ('15.0 s ± 300 ms')."""
    number, unit = parts(kind, mean)
    if number == MISSING or _missing(half_width):
        return fmt_kind(mean, kind)
    half = float(half_width) / _UNIT_SCALE.get(unit, 1.0)
    return f"{number} ± {_three_significant(half)}" + (f" {unit}" if unit else "")
