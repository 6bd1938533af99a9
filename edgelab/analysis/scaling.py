"""Speedup and efficiency vs nodes, per latency/bandwidth profile, with CIs.

S(N) = TPOT(baseline) / TPOT(N), from the mean TPOT of each configuration. The
baseline is the 1-node configuration with the same engine, model, threads,
prompt and generation settings (its latency cannot matter, so one baseline
serves every latency profile); without 1-node runs it is the fewest nodes present
in that profile, and the series says so. Efficiency is S(N) / (N / N_baseline).

The CI of S is the delta method on log S (:func:`edgelab.analysis.stats.ratio_ci`):
deterministic, valid for the 3-10 runs a sweep has, and fast enough for a
1,000-run sweep page. A point with fewer than 2 runs on either side has no CI.

Oversubscription: when threads over all nodes exceed the host's cores, the nodes
share cores and a "speedup" measures the scheduler, not the cluster. Such points
are kept (with ``oversubscribed`` set) but the series is marked not measurable
and its ``note`` says why, so a chart can say so instead of drawing a curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from edgelab.analysis.groups import ConfigKey, Group
from edgelab.analysis.stats import ratio_ci


@dataclass(frozen=True)
class ScalingPoint:
    nodes: int
    n: int
    tpot_ms: float
    speedup: float
    speedup_ci: tuple[float, float] | None
    efficiency: float
    efficiency_ci: tuple[float, float] | None
    oversubscribed: bool
    flags: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "n": self.n,
            "tpot_ms": self.tpot_ms,
            "speedup": self.speedup,
            "speedup_ci": list(self.speedup_ci) if self.speedup_ci else None,
            "efficiency": self.efficiency,
            "efficiency_ci": list(self.efficiency_ci) if self.efficiency_ci else None,
            "oversubscribed": self.oversubscribed,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class ScalingSeries:
    """Speedup vs nodes for one latency/bandwidth profile of one engine/model/threads."""

    engine: str
    model: str
    threads: int
    backend: str
    latency: str
    bandwidth_bps: int | None
    rtt_delay_ms: float
    baseline_nodes: int
    baseline_n: int
    baseline_note: str | None  # set when the baseline is not a 1-node configuration
    points: tuple[ScalingPoint, ...]
    measurable: bool  # False when any point is oversubscribed
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "points"}
        data["points"] = [p.to_dict() for p in self.points]
        return data


def _family(key: ConfigKey) -> tuple[Any, ...]:
    return (
        key.engine,
        key.backend,
        key.model,
        key.threads,
        key.max_tokens,
        key.prompt,
        key.temperature,
        key.seed,
        key.options,
    )


def _point(base: Group, group: Group) -> ScalingPoint | None:
    b, g = base.stats["tpot_ms"], group.stats["tpot_ms"]
    if not b.mean or not g.mean or b.mean <= 0 or g.mean <= 0:
        return None
    speedup = b.mean / g.mean
    ci = ratio_ci(b, g)
    scale = base.key.nodes / group.key.nodes
    return ScalingPoint(
        nodes=group.key.nodes,
        n=g.n,
        tpot_ms=g.mean,
        speedup=speedup,
        speedup_ci=ci,
        efficiency=speedup * scale,
        efficiency_ci=(ci[0] * scale, ci[1] * scale) if ci else None,
        oversubscribed=group.oversubscribed,
        flags=group.flags,
    )


def _oversubscribed_note(points: Sequence[ScalingPoint], groups: dict[int, Group]) -> str:
    parts = []
    for p in points:
        if p.oversubscribed:
            g = groups[p.nodes]
            cores = f"{g.host_cores}-core" if g.host_cores else "this"
            parts.append(
                f"{p.nodes} nodes × {g.key.threads} threads = {p.nodes * g.key.threads} "
                f"threads on a {cores} host"
            )
    return (
        "oversubscribed: " + "; ".join(parts) + ". The nodes share CPU cores, so compute "
        "speedup cannot be measured on this host; the values show contention, not scaling."
    )


def scaling(groups: Sequence[Group]) -> list[ScalingSeries]:
    """One series per (engine, model, threads, ..., latency, bandwidth) with >= 2 node counts
    (counting the baseline); configurations without a TPOT are skipped."""
    families: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        if g.stats["tpot_ms"].mean is not None:
            families.setdefault(_family(g.key), []).append(g)
    out: list[ScalingSeries] = []
    for members in families.values():
        single = [g for g in members if g.key.nodes == 1]
        profiles: dict[tuple[str | None, int | None], list[Group]] = {}
        for g in members:
            if g.key.nodes > 1:
                profiles.setdefault((g.key.latency, g.key.bandwidth_bps), []).append(g)
        for (latency, bandwidth), multi in profiles.items():
            multi.sort(key=lambda g: g.key.nodes)
            if single:
                base = max(single, key=lambda g: g.n)
                note = None
                rest = multi
            else:
                base, rest = multi[0], multi[1:]
                note = (
                    f"no 1-node runs: speedup is relative to the fewest nodes present "
                    f"({base.key.nodes})"
                )
            if not rest:
                continue
            points = [p for g in [base, *rest] if (p := _point(base, g)) is not None]
            by_nodes = {g.key.nodes: g for g in [base, *rest]}
            over = any(p.oversubscribed for p in points)
            out.append(
                ScalingSeries(
                    engine=base.key.engine,
                    model=base.key.model,
                    threads=base.key.threads,
                    backend=base.key.backend,
                    latency=str(latency),
                    bandwidth_bps=bandwidth,
                    rtt_delay_ms=rest[0].rtt_delay_ms,
                    baseline_nodes=base.key.nodes,
                    baseline_n=base.n,
                    baseline_note=note,
                    points=tuple(points),
                    measurable=not over,
                    note=_oversubscribed_note(points, by_nodes) if over else None,
                )
            )
    out.sort(key=lambda s: (s.engine, s.model, s.threads, s.bandwidth_bps or 0, s.rtt_delay_ms))
    return out
