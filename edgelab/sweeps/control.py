"""A sweep's life in the database: creation, progress, status, cancel and resume.

A *cell* is one grid point (config fingerprint + repetition). A cell may own
several runs over time (a cancelled one, then the one created by resume); its
state is that of its latest run. These functions never talk to Celery or Redis:
callers enqueue work and raise cancel flags with the ids they return.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edgelab.catalog import Catalog
from edgelab.models import TERMINAL_STATUSES, Run, Sweep
from edgelab.models.base import utcnow
from edgelab.runs.executor import config_of, create_run
from edgelab.settings import Settings
from edgelab.sweeps.spec import Cell, SweepSpec, expand, parse_spec

ACTIVE_RUN_STATUSES = ("starting", "running")
CELL_STATES = ("queued", "starting", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class ResumeResult:
    created: list[int]  # new runs for cells whose latest run failed or was cancelled
    requeue: list[int]  # queued runs (new and old) that need a message on the queue


def create_sweep(session: Session, spec: SweepSpec, cells: list[Cell]) -> Sweep:
    """Insert the sweep and one queued run per cell (the caller commits)."""
    sweep = Sweep(name=spec.name, spec=spec.to_dict(), status="queued", total_cells=len(cells))
    session.add(sweep)
    session.flush()
    for cell in cells:
        create_run(session, cell.config, sweep_id=sweep.id)
    return sweep


def cell_key(run: Run) -> tuple[str, int]:
    return (run.fingerprint, run.repetition)


def latest_runs(session: Session, sweep_id: int) -> dict[tuple[str, int], Run]:
    """The latest run of every cell of the sweep, in cell order."""
    latest: dict[tuple[str, int], Run] = {}
    for run in session.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id)):
        latest[cell_key(run)] = run
    return latest


def progress(session: Session, sweep_id: int) -> dict[str, int]:
    """Cells per state, plus ``total`` and ``done`` (cells in a terminal state)."""
    counts = Counter(run.status for run in latest_runs(session, sweep_id).values())
    out = {state: counts.get(state, 0) for state in CELL_STATES}
    out["total"] = sum(counts.values())
    out["done"] = sum(counts.get(s, 0) for s in TERMINAL_STATUSES)
    return out


def refresh_status(session: Session, sweep_id: int) -> str:
    """Derive the sweep's status from its cells and store it."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    p = progress(session, sweep_id)
    if p["starting"] or p["running"] or (p["queued"] and p["done"]):
        status = "running"
    elif p["queued"]:
        status = "queued"
    elif p["total"] and p["succeeded"] == p["total"]:
        status = "succeeded"
    elif sweep.status == "cancelled" or (p["cancelled"] and not p["failed"]):
        status = "cancelled"
    else:
        status = "failed"
    if status != sweep.status:
        sweep.status = status
    if status in TERMINAL_STATUSES:
        sweep.finished_at = sweep.finished_at or utcnow()
    else:
        sweep.finished_at = None
    return status


def count_model_load(session: Session, sweep_id: int) -> None:
    """One more cluster start for this sweep (atomic, so concurrent workers add up)."""
    session.execute(
        update(Sweep).where(Sweep.id == sweep_id).values(model_loads=Sweep.model_loads + 1)
    )


def queued_groups(session: Session, sweep_id: int) -> list[list[int]]:
    """Queued runs of the sweep grouped by topology (one warm cluster per group)."""
    groups: dict[str, list[int]] = {}
    for run in latest_runs(session, sweep_id).values():
        if run.status == "queued":
            key = config_of(run).cluster_spec.topology_key()
            groups.setdefault(key, []).append(run.id)
    return list(groups.values())


def cancel_queued(
    session: Session, run_ids: list[int] | None = None, *, sweep_id: int | None = None
) -> int:
    """Cancel queued runs with a guarded update; return how many changed."""
    stmt = update(Run).where(Run.status == "queued")
    if run_ids is not None:
        stmt = stmt.where(Run.id.in_(run_ids))
    if sweep_id is not None:
        stmt = stmt.where(Run.sweep_id == sweep_id)
    result = session.execute(
        stmt.values(status="cancelled", error="cancelled before it started", finished_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def cancel_sweep(session: Session, sweep_id: int) -> list[int]:
    """Cancel every queued cell; return the ids of runs executing now (to be flagged)."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    cancel_queued(session, sweep_id=sweep_id)
    running = list(
        session.scalars(
            select(Run.id).where(Run.sweep_id == sweep_id, Run.status.in_(ACTIVE_RUN_STATUSES))
        )
    )
    sweep.status = "cancelled"
    if not running:
        sweep.finished_at = utcnow()
    return running


def resume_sweep(session: Session, sweep_id: int, cells: list[Cell]) -> ResumeResult:
    """Make every cell without a succeeded run queued again.

    Cells whose latest run failed or was cancelled get a new queued run (the old
    one stays as history); cells already queued are returned for re-queueing
    (their messages may have been lost; executing a run twice is prevented by the
    executor's guarded claim). Cells running now are left alone.
    """
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    latest = latest_runs(session, sweep_id)
    created: list[int] = []
    requeue: list[int] = []
    for cell in cells:
        run = latest.get(cell.key)
        if run is None or run.status in ("failed", "cancelled"):
            new = create_run(session, cell.config, sweep_id=sweep_id)
            created.append(new.id)
            requeue.append(new.id)
        elif run.status == "queued":
            requeue.append(run.id)
    sweep.status = "queued"
    sweep.finished_at = None
    session.flush()
    refresh_status(session, sweep_id)
    return ResumeResult(created=created, requeue=requeue)


def group_runs(session: Session, run_ids: list[int]) -> list[list[int]]:
    """Split run ids by topology, keeping their order."""
    groups: dict[str, list[int]] = {}
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
    for rid in run_ids:
        if rid in runs:
            key = config_of(runs[rid]).cluster_spec.topology_key()
            groups.setdefault(key, []).append(rid)
    return list(groups.values())


def sweep_summary(session: Session, sweep: Sweep) -> dict[str, Any]:
    """The one JSON shape of a sweep (API, CLI, exports)."""
    return {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "spec": sweep.spec,
        "total_cells": sweep.total_cells,
        "model_loads": sweep.model_loads,
        "created_at": sweep.created_at.isoformat() if sweep.created_at else None,
        "finished_at": sweep.finished_at.isoformat() if sweep.finished_at else None,
        "progress": progress(session, sweep.id),
    }


def sweep_detail(session: Session, sweep_id: int) -> dict[str, Any]:
    """A sweep with one entry per cell (its latest run); ``LookupError`` if unknown."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    data = sweep_summary(session, sweep)
    data["cells"] = [
        {
            "run_id": run.id,
            "status": run.status,
            "fingerprint": run.fingerprint,
            "repetition": run.repetition,
            "model": run.model,
            "nodes": run.nodes,
            "threads": run.threads,
            "latency": run.latency_label,
            "bandwidth_bps": run.bandwidth_bps,
            "max_tokens": run.max_tokens,
            "prompt": run.prompt,
            "ttft_ms": run.ttft_ms,
            "e2el_ms": run.e2el_ms,
            "decode_tps": run.decode_tps,
        }
        for run in latest_runs(session, sweep_id).values()
    ]
    return data


def resume(session: Session, sweep_id: int, catalog: Catalog, settings: Settings) -> ResumeResult:
    """Re-expand the stored spec and resume the sweep (``SpecError`` if it no longer
    validates, e.g. a model was removed from the catalog)."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    spec = parse_spec(sweep.spec, max_cells=max(settings.max_sweep_cells, sweep.total_cells))
    cells = expand(spec, catalog, default_backend=settings.backend)
    return resume_sweep(session, sweep_id, cells)
