"""Everything one report shows, gathered once from the database.

:func:`build_report` loads the sweep's records with :func:`edgelab.analysis.load_records`
and calls :func:`edgelab.analysis.analyze`, exactly as the sweep page and
``/api/sweeps/<id>/analysis`` do, so the report's table, speedups, fit and
break-even latencies are the page's numbers. What is added here is only what a
written report needs beside them: each configuration's mean time breakdown (from
:func:`edgelab.analysis.breakdown.breakdown` per run), a hold-out check of the fit,
provenance (host, engine and model versions), the measurement-hygiene list in one
place, and a compact list of every run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgelab import __version__
from edgelab.analysis import (
    ConfigKey,
    Group,
    RunRecord,
    SweepAnalysis,
    analyze,
    differing_fields,
    load_records,
)
from edgelab.analysis.config_breakdown import ConfigBreakdown, breakdown_inputs, config_breakdowns
from edgelab.analysis.model import ModelFit, Residual, fit_model, group_residuals
from edgelab.models import Run, Sweep
from edgelab.store.status import RunStatus
from edgelab.sweeps import control


@dataclass(frozen=True)
class HoldOut:
    """The model refitted without one latency profile's cells, predicting those cells.

    An interpolation check a reader can trust more than R²: a model that only
    memorised the points it saw fails here. Only interior profiles are held out
    (never the smallest or largest delay), so the check never extrapolates.
    """

    latency: str
    delay_ms: float  # one-way
    residuals: tuple[Residual, ...]
    r2_means: float | None  # of the refit, over its configuration means (the headline R²)
    r2: float | None  # of the refit, over its runs (repetitions' noise included)

    @property
    def max_relative(self) -> float | None:
        values = [abs(r.relative) for r in self.residuals if math.isfinite(r.relative)]
        return max(values) if values else None


@dataclass(frozen=True)
class Hygiene:
    """The measurement-hygiene findings: what a reader must know before trusting a number."""

    flagged_groups: dict[str, list[str]]  # flag -> labels of the configurations carrying it
    flagged_runs: dict[str, list[int]]  # run flag (contended, oversubscribed, warmup) -> ids
    excluded: dict[str, int]  # why runs were left out of the statistics -> how many
    notes: list[str]  # merges, baselines, oversubscription, fit caveats

    @property
    def clean(self) -> bool:
        return not (self.flagged_groups or self.flagged_runs or self.excluded)


@dataclass(frozen=True)
class ReportData:
    sweep: dict[str, Any]  # control.sweep_summary
    analysis: SweepAnalysis
    records: tuple[RunRecord, ...]
    runs: tuple[dict[str, Any], ...]  # one compact row per run (appendix)
    provenance: dict[str, list[str]]  # field -> distinct values over the runs
    breakdowns: tuple[ConfigBreakdown, ...]
    hygiene: Hygiene
    holdouts: tuple[tuple[HoldOut, ...], ...] = ()  # per fit, in ``analysis.fits`` order
    varying: tuple[str, ...] = ()  # configuration fields that differ between groups
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    edgelab_version: str = __version__

    @property
    def title(self) -> str:
        return f"Sweep {self.sweep['id']} · {self.sweep['name']}"

    def label(self, group: Group) -> str:
        """The group's label, plus every field that varies in this sweep but the label
        does not show (a prompt or model axis), so no two rows read the same."""
        return config_label(group.key, self.varying)

    def groups_of_fit(self, index: int) -> list[Group]:
        """The configurations one model fit was fitted to (same engine/model/threads/backend)."""
        return groups_of(self.analysis, self.analysis.fits[index])


#: Configuration fields :attr:`ConfigKey.label` already shows.
LABEL_FIELDS = frozenset({"nodes", "threads", "latency", "bandwidth_bps", "topology"})


def config_label(key: ConfigKey, varying: Sequence[str]) -> str:
    """``key.label`` plus the ``varying`` fields it does not show, e.g.
    ``2 nodes × 1 thread · 5ms · model qwen2-0.5b · prompt 'Name three…'``."""
    data = key.to_dict()
    extra = []
    for name in varying:
        if name == "fingerprint":  # only the run fingerprint tells these apart
            extra.append(f"config {key.fingerprint[:8]}" if key.fingerprint else "config -")
            continue
        if name in LABEL_FIELDS or name not in data:
            continue
        value = data[name]
        if name == "prompt":
            text = str(value)
            extra.append(f"prompt {text if len(text) <= 32 else text[:31] + '…'!r}")
        elif name == "options":
            extra.append(f"options {json.dumps(value, sort_keys=True)}")
        else:
            extra.append(f"{name.replace('_', ' ')} {value}")
    return " · ".join([key.label, *extra])


def groups_of(analysis: SweepAnalysis, fit: ModelFit) -> list[Group]:
    return [
        g
        for g in analysis.groups
        if (g.key.engine, g.key.model, g.key.threads, g.key.backend)
        == (fit.engine, fit.model, fit.threads, fit.backend)
    ]


PROVENANCE_FIELDS = ("host_cpu", "host_cores", "engine_version", "edgelab_version", "model_sha256")


def _run_row(record: RunRecord, extra: tuple[int | None, str | None]) -> dict[str, Any]:
    output_tokens, error = extra
    return {
        "id": record.id,
        "status": record.status,
        "nodes": record.nodes,
        "threads": record.threads,
        "latency": record.latency,
        "bandwidth_bps": record.bandwidth_bps,
        "repetition": record.repetition,
        "ttft_ms": record.metric("ttft_ms"),
        "tpot_ms": record.metric("tpot_ms"),
        "decode_tps": record.metric("decode_tps"),
        "output_tokens": output_tokens,
        "flags": sorted(record.flags | ({"oversubscribed"} if record.oversubscribed else set())),
        "error": error,
    }


def hygiene_of(
    analysis: SweepAnalysis, records: Sequence[RunRecord], varying: Sequence[str] = ()
) -> Hygiene:
    flagged_groups: dict[str, list[str]] = {}
    for g in analysis.groups:
        for flag in g.flags:
            flagged_groups.setdefault(flag, []).append(config_label(g.key, varying))
    flagged_runs: dict[str, list[int]] = {}
    for r in records:
        flags = set(r.flags) | ({"oversubscribed"} if r.oversubscribed else set())
        for flag in sorted(flags):
            flagged_runs.setdefault(flag, []).append(r.id)
    statuses = Counter(r.status for r in records if r.status != RunStatus.SUCCEEDED)
    excluded = {f"{status} runs": n for status, n in sorted(statuses.items())}
    if analysis.counts.warmup:
        excluded["warm-up runs"] = analysis.counts.warmup
    notes = list(analysis.notes)
    for s in analysis.scaling:
        for note in (s.baseline_note, s.note):
            if note and note not in notes:
                notes.append(note)
    for fit in analysis.fits:
        for note in fit.notes:
            text = f"model fit ({fit.model}, {fit.threads} thread(s)): {note}"
            if text not in notes:
                notes.append(text)
    return Hygiene(flagged_groups, flagged_runs, excluded, notes)


def holdouts_of(
    fit: ModelFit, records: Sequence[RunRecord], groups: Sequence[Group]
) -> list[HoldOut]:
    """For each interior one-way delay of the fit's multi-node cells: refit without
    them (:func:`edgelab.analysis.model.fit_model`) and predict them
    (:func:`~edgelab.analysis.model.group_residuals`)."""
    family = [
        r
        for r in records
        if (r.engine, r.model, r.threads, r.backend)
        == (fit.engine, fit.model, fit.threads, fit.backend)
    ]
    multi = [g for g in groups if g.key.nodes > 1 and g.n]
    delays = sorted({g.rtt_delay_ms for g in multi})
    out = []
    for rtt in delays[1:-1]:
        held = [g for g in multi if g.rtt_delay_ms == rtt]
        keep = [r for r in family if not (r.nodes > 1 and r.rtt_delay_ms == rtt)]
        refit = fit_model(keep)
        if refit is None or "delay_factor" in refit.dropped:
            continue
        out.append(
            HoldOut(
                latency=", ".join(sorted({str(g.key.latency) for g in held})),
                delay_ms=rtt / 2,
                residuals=tuple(group_residuals(refit, held)),
                r2_means=refit.r2_means,
                r2=refit.r2,
            )
        )
    return out


def build_report(session: Session, sweep_id: int) -> ReportData:
    """The report of one sweep; ``LookupError`` if there is no such sweep."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    # The page's own loader and entry point (analysis.summary.analyze_sweep does the
    # same): the report's numbers are the page's, round trips from link_stats included.
    records = load_records(session, sweep_id=sweep_id)
    analysis = analyze(records)
    varying = tuple(differing_fields([g.key for g in analysis.groups]))
    extra = {
        rid: (tokens, error)
        for rid, tokens, error in session.execute(
            select(Run.id, Run.output_tokens, Run.error).where(Run.sweep_id == sweep_id)
        )
    }
    provenance: dict[str, list[str]] = {}
    for name in PROVENANCE_FIELDS:
        column = getattr(Run, name)
        values = session.scalars(
            select(column).where(Run.sweep_id == sweep_id, column.is_not(None)).distinct()
        )
        provenance[name] = sorted({str(v) for v in values})
    return ReportData(
        sweep=control.sweep_summary(session, sweep),
        analysis=analysis,
        records=tuple(records),
        runs=tuple(_run_row(r, extra.get(r.id, (None, None))) for r in records),
        provenance=provenance,
        breakdowns=tuple(
            config_breakdowns(
                breakdown_inputs(session, sweep_id),
                analysis.groups,
                label=lambda g: config_label(g.key, varying),
            )
        ),
        hygiene=hygiene_of(analysis, records, varying),
        holdouts=tuple(
            tuple(holdouts_of(f, records, groups_of(analysis, f))) for f in analysis.fits
        ),
        varying=varying,
    )
