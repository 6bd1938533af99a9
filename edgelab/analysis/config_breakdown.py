"""The mean per-token breakdown of each configuration of a sweep (root, workers, delay, transfer).

Each run's breakdown is :func:`edgelab.analysis.breakdown.breakdown` (what the run
page shows); a configuration's is the mean of its counted runs' parts. Runs
without link timing (old runs, a backend without chunk traces) have none and are
not counted; a configuration none of whose runs has one is left out, so a chart
can say "no breakdown recorded" instead of drawing zeros.

The loader reads only what the breakdown needs (token offsets and details, link
timing) for the whole sweep in two queries. It is heavier than the rest of the
sweep analysis (every token of every run), so the sweep page asks for it in a
request of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgelab.analysis.breakdown import Breakdown, breakdown
from edgelab.analysis.groups import Group
from edgelab.models import LinkStat, Run, TokenEvent

#: Parts of a token's time in stacking order: (Breakdown attribute, label).
PARTS: tuple[tuple[str, str], ...] = (
    ("root_compute_ms", "root compute"),
    ("worker_compute_ms", "worker compute"),
    ("injected_ms", "injected delay"),
    ("transfer_ms", "transfer"),
    ("other_ms", "other"),
)


@dataclass(frozen=True)
class ConfigBreakdown:
    """Mean ms per decode token of one configuration, by part (labels of :data:`PARTS`)."""

    label: str
    nodes: int
    latency: str | None
    n: int  # runs with a breakdown
    tpot_ms: float
    parts: dict[str, float]
    round_trips_per_token: float | None
    bytes_per_token: float | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "nodes": self.nodes,
            "latency": self.latency,
            "n": self.n,
            "tpot_ms": self.tpot_ms,
            "parts": [{"name": k, "ms": v} for k, v in self.parts.items()],
            "round_trips_per_token": self.round_trips_per_token,
            "bytes_per_token": self.bytes_per_token,
            "source": self.source,
        }


def breakdown_inputs(session: Session, sweep_id: int) -> dict[int, dict[str, Any]]:
    """Per run of the sweep, the ``tokens`` and ``links`` :func:`breakdown` reads."""
    details: dict[int, dict[str, Any]] = {}
    tokens = session.execute(
        select(TokenEvent.run_id, TokenEvent.index, TokenEvent.offset_ms, TokenEvent.detail)
        .join(Run, Run.id == TokenEvent.run_id)
        .where(Run.sweep_id == sweep_id)
    )
    for run_id, index, offset_ms, detail in tokens:
        entry = details.setdefault(run_id, {"tokens": [], "links": []})
        entry["tokens"].append({"index": index, "offset_ms": offset_ms, "detail": detail})
    links = session.execute(
        select(LinkStat.run_id, LinkStat.link, LinkStat.timing)
        .join(Run, Run.id == LinkStat.run_id)
        .where(Run.sweep_id == sweep_id)
        .order_by(LinkStat.run_id, LinkStat.link)
    )
    for run_id, link, timing in links:
        entry = details.setdefault(run_id, {"tokens": [], "links": []})
        entry["links"].append({"link": link, "timing": timing})
    return details


def _part(b: Breakdown, key: str) -> float:
    value = getattr(b, key)
    return float(sum(value.values())) if isinstance(value, dict) else float(value)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def config_breakdowns(
    details: dict[int, dict[str, Any]],
    groups: Sequence[Group],
    label: Callable[[Group], str] | None = None,
) -> list[ConfigBreakdown]:
    """One mean breakdown per group that has at least one run with a breakdown.

    ``label`` names each group (default ``Group.label``); the report passes its own,
    which also names the fields that vary in the sweep but the default label omits.
    """
    out = []
    for g in groups:
        found = [b for rid in g.run_ids if (b := breakdown(details.get(rid, {}))) is not None]
        if not found:
            continue
        parts: dict[str, float] = {}
        for key, title in PARTS:
            mean = sum(_part(b, key) for b in found) / len(found)
            if key != "other_ms" or abs(mean) > 1e-9:
                parts[title] = mean
        out.append(
            ConfigBreakdown(
                label=label(g) if label is not None else g.label,
                nodes=g.key.nodes,
                latency=g.key.latency,
                n=len(found),
                tpot_ms=sum(b.tpot_ms for b in found) / len(found),
                parts=parts,
                round_trips_per_token=_mean(
                    [b.round_trips_per_token for b in found if b.round_trips_per_token is not None]
                ),
                bytes_per_token=_mean(
                    [b.bytes_per_token for b in found if b.bytes_per_token is not None]
                ),
                source=found[0].source,
            )
        )
    return out
