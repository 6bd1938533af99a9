"""Delay traces replayed by a link: one-way delay (and bandwidth) as a function of time.

A trace (parsed from a CSV by :mod:`edgelab.topology.linktrace`) is a list of points
``(offset_s, delay_ms, bandwidth_bps | None)``; each point holds from its offset
until the next. The trace loops; its period is the last offset plus the interval
before it (the last point lasts as long as the one before; a one-point trace is
constant). Where a link starts in its trace is drawn from the link's seed, so the
same seed replays the same stretch and different links do not move in lockstep.

The trace replaces the profile's delay in both directions; a point's bandwidth
replaces the profile's cap from that point on (a point without one keeps the
profile's cap, if any).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class _Point(Protocol):
    @property
    def offset_s(self) -> float: ...
    @property
    def delay_ms(self) -> float: ...
    @property
    def bandwidth_bps(self) -> int | None: ...


@dataclass(frozen=True)
class DelayTrace:
    """Points sorted by offset (the first at 0) and the loop period, in seconds."""

    offsets: tuple[float, ...]
    delays_s: tuple[float, ...]
    bandwidths: tuple[int | None, ...]
    period_s: float

    @classmethod
    def from_points(cls, points: Sequence[_Point]) -> DelayTrace:
        if not points:
            raise ValueError("a delay trace needs at least one point")
        offsets = tuple(float(p.offset_s) for p in points)
        if offsets[0] != 0 or any(b <= a for a, b in itertools.pairwise(offsets)):
            raise ValueError("trace offsets must start at 0 and increase")
        last_gap = offsets[-1] - offsets[-2] if len(offsets) > 1 else 1.0
        return cls(
            offsets=offsets,
            delays_s=tuple(p.delay_ms / 1000.0 for p in points),
            bandwidths=tuple(p.bandwidth_bps for p in points),
            period_s=offsets[-1] + last_gap,
        )

    def start_offset_s(self, seed: int | None) -> float:
        """Where a link seeded ``seed`` starts in the trace (``None``: anywhere)."""
        rng = random.Random() if seed is None else random.Random(f"edgelab-trace:{seed}")
        return rng.uniform(0.0, self.period_s)

    def index_at(self, t_s: float) -> int:
        """The point in force ``t_s`` seconds into the (looped) trace."""
        return bisect.bisect_right(self.offsets, t_s % self.period_s) - 1

    def delay_at(self, t_s: float) -> float:
        return self.delays_s[self.index_at(t_s)]

    def bandwidth_at(self, t_s: float) -> int | None:
        return self.bandwidths[self.index_at(t_s)]

    @property
    def has_bandwidth(self) -> bool:
        return any(b is not None for b in self.bandwidths)


class TraceClock:
    """A trace as a link replays it: trace time = seconds since ``origin`` + seeded start."""

    def __init__(self, trace: DelayTrace, origin: float, seed: int | None) -> None:
        self.trace = trace
        self.origin = origin
        self.start_s = trace.start_offset_s(seed)

    def position_s(self, now: float) -> float:
        return (now - self.origin + self.start_s) % self.trace.period_s

    def delay_s(self, now: float) -> float:
        return self.trace.delay_at(self.position_s(now))

    def bandwidth_bps(self, now: float) -> int | None:
        return self.trace.bandwidth_at(self.position_s(now))


def load_delay_trace(path: str) -> DelayTrace:
    """Read a trace CSV (``ValueError`` naming the file and line) into a :class:`DelayTrace`."""
    from pathlib import Path

    # The CSV format belongs to the topology (it is checked before a run starts).
    from edgelab.topology.linktrace import load_trace

    return DelayTrace.from_points(load_trace(Path(path)))
