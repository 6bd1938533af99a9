"""Whole-sweep and compare-set analyses: the one entry point pages, API, CLI and report call.

:func:`analyze` turns the records of a sweep into groups, scaling series,
model fits and break-even latencies; :func:`compare` turns a handful of ticked
runs into groups, the configuration fields that differ between them and a
significance verdict for every pair. Both return frozen dataclasses with a
``to_dict()`` that is the JSON of ``/api/sweeps/<id>/analysis`` and
``/api/compare``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgelab.analysis.groups import ConfigKey, Group, group_records
from edgelab.analysis.model import ModelFit, fit_models
from edgelab.analysis.records import METRICS, RunRecord
from edgelab.analysis.scaling import ScalingSeries, scaling
from edgelab.analysis.significance import Comparison, pairwise

#: Node counts every fit predicts (and solves break-even for), beyond what ran.
PREDICT_NODES: tuple[int, ...] = (2, 3, 4, 6, 8)
#: Configuration fields the compare view can show as differing, in table order.
CONFIG_FIELDS: tuple[str, ...] = (
    "engine",
    "backend",
    "model",
    "nodes",
    "threads",
    "latency",
    "bandwidth_bps",
    "max_tokens",
    "prompt",
    "temperature",
    "seed",
    "options",
)


@dataclass(frozen=True)
class Counts:
    runs: int  # all runs given
    counted: int  # succeeded, not warm-up
    failed: int  # did not succeed (failed, cancelled, unfinished)
    warmup: int

    def to_dict(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "counted": self.counted,
            "failed": self.failed,
            "warmup": self.warmup,
        }


def _counts(records: Sequence[RunRecord]) -> Counts:
    return Counts(
        runs=len(records),
        counted=sum(1 for r in records if r.counted),
        failed=sum(1 for r in records if r.status != "succeeded"),
        warmup=sum(1 for r in records if r.status == "succeeded" and "warmup" in r.flags),
    )


def _merge_notes(groups: Sequence[Group]) -> list[str]:
    notes = []
    for g in groups:
        if g.key.nodes == 1 and len(g.latencies) > 1:
            notes.append(
                f"{g.key.label}: runs at {len(g.latencies)} latency profiles "
                f"({', '.join(g.latencies)}) are one configuration (1 node has no links)"
            )
    return notes


@dataclass(frozen=True)
class SweepAnalysis:
    groups: tuple[Group, ...]
    scaling: tuple[ScalingSeries, ...]
    fits: tuple[ModelFit, ...]
    counts: Counts
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": list(METRICS),
            "counts": self.counts.to_dict(),
            "notes": list(self.notes),
            "groups": [g.to_dict() for g in self.groups],
            "scaling": [s.to_dict() for s in self.scaling],
            "fits": [f.to_dict(PREDICT_NODES) for f in self.fits],
        }


def analyze(records: Sequence[RunRecord]) -> SweepAnalysis:
    """Everything the sweep page, ``/api/sweeps/<id>/analysis`` and the report show."""
    groups = group_records(records)
    return SweepAnalysis(
        groups=tuple(groups),
        scaling=tuple(scaling(groups)),
        fits=tuple(fit_models(records)),
        counts=_counts(records),
        notes=tuple(_merge_notes(groups)),
    )


def differing_fields(keys: Sequence[ConfigKey]) -> list[str]:
    """Configuration fields whose value is not the same in every key (metrics never are)."""
    dicts = [k.to_dict() for k in keys]
    return [f for f in CONFIG_FIELDS if len({repr(d[f]) for d in dicts}) > 1]


@dataclass(frozen=True)
class CompareAnalysis:
    groups: tuple[Group, ...]
    differing: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    counts: Counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts.to_dict(),
            "differing": list(self.differing),
            "groups": [g.to_dict() for g in self.groups],
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def compare(records: Sequence[RunRecord]) -> CompareAnalysis:
    """Group ticked runs by configuration and test every pair of groups.

    Repetitions of one configuration fall into one group, so they are never shown
    as "differing"; only configuration fields that differ between groups are.
    """
    groups = [g for g in group_records(records) if g.n or g.excluded_runs]
    return CompareAnalysis(
        groups=tuple(groups),
        differing=tuple(differing_fields([g.key for g in groups])),
        comparisons=tuple(pairwise(groups)),
        counts=_counts(records),
    )
