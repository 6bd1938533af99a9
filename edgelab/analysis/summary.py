"""Whole-sweep and compare-set analyses: the one entry point pages, API, CLI and report call.

:func:`analyze` turns the records of a sweep into groups, scaling series,
model fits and break-even latencies; :func:`compare` turns a handful of ticked
runs into groups, the configuration fields that differ between them and a
significance verdict for every pair. Both return frozen dataclasses with a
``to_dict()`` that is the JSON of ``/api/sweeps/<id>/analysis`` and
``/api/compare``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from edgelab.analysis.config_breakdown import (
    ConfigBreakdown,
    breakdown_inputs,
    config_breakdowns,
)
from edgelab.analysis.groups import ConfigKey, Group, group_records
from edgelab.analysis.memo import SweepMemo
from edgelab.analysis.model import ModelFit, fit_models
from edgelab.analysis.records import METRICS, RunRecord, load_records
from edgelab.analysis.scaling import ScalingSeries, scaling
from edgelab.analysis.significance import Comparison, pairwise
from edgelab.models import Run, Sweep
from edgelab.store.status import RunStatus

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
    "topology",
)


#: Leaves json_safe returns as they are, checked by exact type first (a 1,000-run
#: analysis has ~50,000 of them; isinstance against three types each cost more).
_PLAIN = frozenset({str, int, bool, type(None)})


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/infinity replaced by ``None`` (strict JSON has neither, and
    a page's ``JSON.parse`` rejects them), tuples as lists."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {k: json_safe(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [json_safe(v) for v in value]
    # Subclasses (numpy floats, other mappings and sequences), as before.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _safe_dict(value: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = json_safe(value)
    return safe


@dataclass(frozen=True)
class Counts:
    runs: int  # all runs given
    counted: int  # succeeded, not warm-up
    # Did not succeed (failed, cancelled or unfinished); not named after the one
    # status FAILED, which would hide the cancelled and still-open runs it counts.
    not_succeeded: int
    warmup: int

    def to_dict(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "counted": self.counted,
            "not_succeeded": self.not_succeeded,
            "warmup": self.warmup,
        }


def _counts(records: Sequence[RunRecord]) -> Counts:
    return Counts(
        runs=len(records),
        counted=sum(1 for r in records if r.counted),
        not_succeeded=sum(1 for r in records if r.status != RunStatus.SUCCEEDED),
        warmup=sum(1 for r in records if r.status == RunStatus.SUCCEEDED and "warmup" in r.flags),
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
        return _safe_dict(
            {
                "metrics": list(METRICS),
                "counts": self.counts.to_dict(),
                "notes": list(self.notes),
                "groups": [g.to_dict() for g in self.groups],
                "scaling": [s.to_dict() for s in self.scaling],
                "fits": [f.to_dict(PREDICT_NODES) for f in self.fits],
            }
        )


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
    """Configuration fields whose value is not the same in every key (metrics never are).

    ``fingerprint`` when only the run fingerprint tells the keys apart (a field this
    table does not list yet, such as a non-uniform topology).
    """
    dicts = [k.to_dict() for k in keys]
    fields = [f for f in CONFIG_FIELDS if len({repr(d[f]) for d in dicts}) > 1]
    if not fields and len({k.fingerprint for k in keys}) > 1:
        fields.append("fingerprint")
    return fields


def group_letter(index: int) -> str:
    """A, B, ... Z, then 27, 28, ...: how pages and the CLI name the groups of a comparison."""
    return chr(ord("A") + index) if index < 26 else str(index + 1)


@dataclass(frozen=True)
class CompareAnalysis:
    groups: tuple[Group, ...]
    differing: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    counts: Counts
    group_of: dict[int, int]  # every given run id (counted or not) -> index into groups

    @property
    def letters(self) -> list[str]:
        return [group_letter(i) for i in range(len(self.groups))]

    @property
    def pairs(self) -> list[tuple[str, str, list[str], Comparison]]:
        """(letter of A, letter of B, fields that differ, comparison), in ``comparisons`` order."""
        letters = self.letters
        index = {id(g): i for i, g in enumerate(self.groups)}
        out = []
        for c in self.comparisons:
            fields = differing_fields([c.a.key, c.b.key])
            if c.a.batch != c.b.batch and not fields:
                fields = ["sweep_id"]
            out.append((letters[index[id(c.a)]], letters[index[id(c.b)]], fields, c))
        return out

    def letter_of(self, run_id: int) -> str:
        index = self.group_of.get(run_id)
        return group_letter(index) if index is not None else "–"

    def to_dict(self) -> dict[str, Any]:
        return _safe_dict(
            {
                "counts": self.counts.to_dict(),
                "group_of": {str(k): group_letter(v) for k, v in self.group_of.items()},
                "letters": self.letters,
                "differing": list(self.differing),
                "groups": [g.to_dict() for g in self.groups],
                "comparisons": [
                    c.to_dict() | {"a_letter": la, "b_letter": lb, "differing": fields}
                    for la, lb, fields, c in self.pairs
                ],
            }
        )


def compare(records: Sequence[RunRecord]) -> CompareAnalysis:
    """Group ticked runs by configuration (and batch) and test every pair of groups.

    Repetitions of one configuration fall into one group, so they are never shown
    as "differing"; only configuration fields that differ between groups are. Runs
    of one configuration from different sweeps are different *batches* (separate
    groups, so "is batch 2 the same as batch 1?" gets a verdict); ``sweep_id`` then
    counts as differing only when it is what separates two groups.
    """
    groups = group_records(records, by_batch=True)
    index = {(g.key, g.batch): i for i, g in enumerate(groups)}
    differing = differing_fields([g.key for g in groups])
    keys = [g.key for g in groups]
    if len(set(keys)) < len(keys):  # one configuration in several batches
        differing.append("sweep_id")
    return CompareAnalysis(
        groups=tuple(groups),
        differing=tuple(differing),
        comparisons=tuple(pairwise(groups)),
        counts=_counts(records),
        group_of={r.id: index[(ConfigKey.of(r), r.sweep_id or 0)] for r in records},
    )


def analyze_sweep(session: Session, sweep_id: int) -> SweepAnalysis:
    """:func:`analyze` over every run of a stored sweep; ``LookupError`` if there is none."""
    if session.get(Sweep, sweep_id) is None:
        raise LookupError(f"sweep {sweep_id} not found")
    return analyze(load_records(session, sweep_id=sweep_id))


#: Sweep analyses kept per process (:func:`sweep_analysis_dict`), the latest version of
#: each sweep only; ~0.1-0.4 MB each.
CACHE_SIZE = 32
_cache: SweepMemo[dict[str, Any]] = SweepMemo(CACHE_SIZE)


def runs_version_columns() -> list[Any]:
    """Aggregates over a sweep's runs that change whenever what the analysis reads does.

    A run changes what the analysis says only by being created, finishing (status,
    metrics, flags and link round trips are written with ``finished_at``) or being
    executed again (``finished_at`` cleared); the metric sums catch any later edit.
    Select them ``where(Run.sweep_id == ...)``; the sweep page adds its own (run
    statuses) to the same query.
    """
    return [
        func.count(Run.id),
        func.max(Run.id),
        func.count(Run.finished_at),
        func.max(Run.finished_at),
        func.sum(case((Run.status == RunStatus.SUCCEEDED, 1), else_=0)),
        *(func.sum(getattr(Run, m)) for m in METRICS),
        func.sum(Run.round_trips_per_token),
        func.sum(Run.net_bytes_per_token),
        *(
            func.sum(case((getattr(Run, f).is_(True), 1), else_=0))
            for f in ("contended", "oversubscribed", "warmup")
        ),
    ]


def _runs_version(session: Session, sweep_id: int) -> tuple[Any, ...]:
    """A cheap fingerprint of everything about a sweep's runs that the analysis reads."""
    stmt = select(*runs_version_columns()).where(Run.sweep_id == sweep_id)
    return tuple(session.execute(stmt).one())


def sweep_analysis_dict(session: Session, sweep_id: int) -> dict[str, Any]:
    """``analyze_sweep(session, sweep_id).to_dict()``, remembered per process until the
    sweep's runs change (see :func:`_runs_version`): a finished sweep's page, its
    refreshes and the API then cost one aggregate query instead of loading and
    analysing every run. The dict is shared: callers must not change it.
    """
    bind = session.get_bind()
    key = (str(bind.engine.url), sweep_id, _runs_version(session, sweep_id))
    found = _cache.get(key)
    if found is not None:
        return found
    data = analyze_sweep(session, sweep_id).to_dict()
    _cache.put(key, data)
    return data


def clear_cache() -> None:
    """Forget every remembered sweep analysis (tests and benchmarks time cold requests)."""
    _cache.clear()


def sweep_breakdowns(session: Session, sweep_id: int) -> list[ConfigBreakdown]:
    """Mean per-token breakdown per configuration of a stored sweep (``LookupError`` if
    there is no such sweep); configurations without recorded link timing are left out."""
    if session.get(Sweep, sweep_id) is None:
        raise LookupError(f"sweep {sweep_id} not found")
    groups = group_records(load_records(session, sweep_id=sweep_id))
    return config_breakdowns(breakdown_inputs(session, sweep_id), groups)


def compare_runs(session: Session, run_ids: Sequence[int]) -> CompareAnalysis:
    """:func:`compare` over stored runs; ``LookupError`` naming every unknown id."""
    records = load_records(session, run_ids=run_ids)
    found = {r.id for r in records}
    missing = [i for i in run_ids if i not in found]
    if missing:
        raise LookupError(f"no run with id {', '.join(map(str, missing))}")
    return compare(records)
