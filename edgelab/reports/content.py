"""Everything one report shows, gathered once from the database.

:func:`build_report` reads the sweep's runs in one query, turns them into
:class:`~edgelab.analysis.RunRecord` values and calls :func:`edgelab.analysis.analyze`
— the sweep page's own entry point — so the report's table, speedups, fit and
break-even latencies are the page's numbers. What is added here is only what a
written report needs beside them: provenance (host, engine and model versions),
the measurement-hygiene list in one place, and a compact list of every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgelab import __version__
from edgelab.analysis import Group, RunRecord, SweepAnalysis, analyze, records_from_runs
from edgelab.models import Run, Sweep
from edgelab.sweeps import control


@dataclass(frozen=True)
class Breakdown:
    """Where one configuration's time per token goes: ``parts`` (ms/token) sum to ~TPOT."""

    label: str
    nodes: int
    latency: str | None
    tpot_ms: float | None
    parts: dict[str, float]
    n: int


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
    breakdowns: tuple[Breakdown, ...]
    hygiene: Hygiene
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    edgelab_version: str = __version__

    @property
    def title(self) -> str:
        return f"Sweep {self.sweep['id']} · {self.sweep['name']}"

    def groups_of_fit(self, index: int) -> list[Group]:
        """The configurations one model fit was fitted to (same engine/model/threads/backend)."""
        fit = self.analysis.fits[index]
        return [
            g
            for g in self.analysis.groups
            if (g.key.engine, g.key.model, g.key.threads, g.key.backend)
            == (fit.engine, fit.model, fit.threads, fit.backend)
        ]


PROVENANCE_FIELDS = ("host_cpu", "host_cores", "engine_version", "edgelab_version", "model_sha256")


def _run_row(run: Run, record: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "nodes": run.nodes,
        "threads": run.threads,
        "latency": run.latency_label,
        "bandwidth_bps": run.bandwidth_bps,
        "repetition": run.repetition,
        "ttft_ms": run.ttft_ms,
        "tpot_ms": run.tpot_ms,
        "decode_tps": run.decode_tps,
        "output_tokens": run.output_tokens,
        "flags": sorted(record.flags | ({"oversubscribed"} if record.oversubscribed else set())),
        "error": run.error,
    }


def breakdowns_of(runs: Sequence[Run], groups: Sequence[Group]) -> list[Breakdown]:
    """The per-token time breakdown of each configuration, where the runs recorded one.

    Filled from :mod:`edgelab.analysis.breakdown` when that module is present (it
    needs the link proxies' per-request timing); otherwise there is nothing to show
    and the report says the breakdown was not recorded.
    """
    return []


def hygiene_of(analysis: SweepAnalysis, records: Sequence[RunRecord]) -> Hygiene:
    flagged_groups: dict[str, list[str]] = {}
    for g in analysis.groups:
        for flag in g.flags:
            flagged_groups.setdefault(flag, []).append(g.key.label)
    flagged_runs: dict[str, list[int]] = {}
    for r in records:
        flags = set(r.flags) | ({"oversubscribed"} if r.oversubscribed else set())
        for flag in sorted(flags):
            flagged_runs.setdefault(flag, []).append(r.id)
    statuses = Counter(r.status for r in records if r.status != "succeeded")
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


def build_report(session: Session, sweep_id: int) -> ReportData:
    """The report of one sweep; ``LookupError`` if there is no such sweep."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    runs = list(session.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id)))
    records = records_from_runs(runs)
    analysis = analyze(records)
    provenance: dict[str, list[str]] = {}
    for name in PROVENANCE_FIELDS:
        values = {str(v) for r in runs if (v := getattr(r, name)) is not None}
        provenance[name] = sorted(values)
    return ReportData(
        sweep=control.sweep_summary(session, sweep),
        analysis=analysis,
        records=tuple(records),
        runs=tuple(_run_row(run, rec) for run, rec in zip(runs, records, strict=True)),
        provenance=provenance,
        breakdowns=tuple(breakdowns_of(runs, analysis.groups)),
        hygiene=hygiene_of(analysis, records),
    )
