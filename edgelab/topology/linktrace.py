"""Delay traces: a CSV of time offset -> one-way delay [and bandwidth] for one link.

Format, one point per line (a header line and ``#`` comments are allowed)::

    offset_s,delay_ms,bandwidth
    0,12,20mbit
    0.5,35
    1.0,18,5mbit

``offset_s`` starts at 0 and increases; ``delay_ms`` is the one-way delay from that
offset until the next point; ``bandwidth`` (optional, a rate such as ``20mbit`` or
bits per second) caps the link from that offset. The trace is replayed and looped
from a seeded start. Any line that does not parse is refused with its number,
before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgelab.netem.profile import ProfileError, parse_bandwidth

MAX_TRACE_POINTS = 100_000
MAX_TRACE_BYTES = 4 * 1024 * 1024
MAX_TRACE_DELAY_MS = 10_000.0


@dataclass(frozen=True)
class TracePoint:
    offset_s: float
    delay_ms: float
    bandwidth_bps: int | None = None


def parse_trace(text: str, source: str = "trace") -> list[TracePoint]:
    """The points of a trace CSV; ``ValueError`` naming ``source`` and the line number."""
    points: list[TracePoint] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        cells = [c.strip() for c in stripped.split(",")]
        if not points and cells[0].lower() in ("offset_s", "offset", "time", "t"):
            continue  # header
        where = f"{source} line {number}"
        if len(cells) not in (2, 3):
            raise ValueError(
                f"{where}: expected offset_s,delay_ms[,bandwidth], got {len(cells)} field(s)"
            )
        try:
            offset = float(cells[0])
            delay = float(cells[1])
        except ValueError:
            raise ValueError(
                f"{where}: offset and delay must be numbers, got {stripped!r}"
            ) from None
        if not (0 <= offset < float("inf")):
            raise ValueError(f"{where}: offset must be a finite number >= 0, got {cells[0]}")
        if not (0 <= delay <= MAX_TRACE_DELAY_MS):
            raise ValueError(
                f"{where}: delay must be between 0 and {MAX_TRACE_DELAY_MS:g} ms, got {cells[1]}"
            )
        if points and offset <= points[-1].offset_s:
            raise ValueError(
                f"{where}: offsets must increase, got {offset:g} after {points[-1].offset_s:g}"
            )
        if not points and offset != 0:
            raise ValueError(f"{where}: the first offset must be 0, got {offset:g}")
        bandwidth: int | None = None
        if len(cells) == 3 and cells[2]:
            try:
                bandwidth = parse_bandwidth(cells[2])
            except ProfileError as exc:
                raise ValueError(f"{where}: {exc}") from None
        points.append(TracePoint(offset, delay, bandwidth))
        if len(points) > MAX_TRACE_POINTS:
            raise ValueError(f"{source}: more than {MAX_TRACE_POINTS} points")
    if not points:
        raise ValueError(f"{source}: no points (expected lines of offset_s,delay_ms[,bandwidth])")
    return points


def load_trace(path: Path) -> list[TracePoint]:
    """Read and parse a trace file; ``ValueError`` saying what is wrong with it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"trace file {path} cannot be read: {exc.strerror}") from None
    if size > MAX_TRACE_BYTES:
        raise ValueError(f"trace file {path} is {size} bytes, more than {MAX_TRACE_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"trace file {path} cannot be read as UTF-8 text: {exc}") from None
    return parse_trace(text, source=f"trace file {path}")
