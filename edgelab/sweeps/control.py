"""A sweep's life in the database, read side: progress, cells, the JSON shapes.

A *cell* is one grid point (config fingerprint + repetition). A cell may own
several runs over time (a cancelled one, then the one created by resume); its
state is that of its latest run. Every change of state (create, cancel, resume,
the sweep's status following its cells) is :class:`edgelab.store.store.Store`'s;
these functions only read, with the caller's session, and never talk to Celery or
Redis.

Warm-up runs (``warmup: N`` in the spec) belong to a topology, not to a cell: they
are left out of cells, progress and status, and listed apart in the detail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgelab.catalog import Catalog
from edgelab.models import Run, Sweep
from edgelab.settings import Settings
from edgelab.store import RUN_ACTIVE, RUN_TERMINAL, RunStatus, SweepNotFound
from edgelab.store.store import (
    ResumeResult,
    Store,
    cell_counts,
    group_by_topology,
    insert_sweep,
)
from edgelab.sweeps.spec import expand, notes, parse_spec

ACTIVE_RUN_STATUSES = tuple(RUN_ACTIVE)
CELL_STATES: tuple[RunStatus, ...] = tuple(RunStatus)

# Inserting a sweep inside a caller's transaction (fixtures, imports); a sweep
# submitted by a user goes through edgelab.store.actions.
create_sweep = insert_sweep
group_runs = group_by_topology

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "CELL_STATES",
    "ResumeResult",
    "cell_key",
    "create_sweep",
    "group_runs",
    "latest_runs",
    "progress",
    "resume",
    "sweep_detail",
    "sweep_summary",
]


def cell_key(run: Run) -> tuple[str, int]:
    return (run.fingerprint, run.repetition)


def latest_runs(session: Session, sweep_id: int) -> dict[tuple[str, int], Run]:
    """The latest run of every cell of the sweep, in cell order (warm-ups are no cells)."""
    latest: dict[tuple[str, int], Run] = {}
    stmt = select(Run).where(Run.sweep_id == sweep_id, Run.warmup.is_(False)).order_by(Run.id)
    for run in session.scalars(stmt):
        latest[cell_key(run)] = run
    return latest


def progress(session: Session, sweep_id: int) -> dict[str, int]:
    """Cells per state, plus ``total`` and ``done`` (cells in a terminal state)."""
    return _progress(cell_counts(session, sweep_id))


def _progress(counts: Mapping[RunStatus, int]) -> dict[str, int]:
    out: dict[str, int] = {state: counts.get(state, 0) for state in CELL_STATES}
    out["total"] = sum(counts.values())
    out["done"] = sum(counts.get(s, 0) for s in RUN_TERMINAL)
    return out


def sweep_summary(
    session: Session, sweep: Sweep, progress_: dict[str, int] | None = None
) -> dict[str, Any]:
    """The one JSON shape of a sweep (API, CLI, exports); ``progress_`` if the caller
    has counted the cells already."""
    return {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "spec": sweep.spec,
        "total_cells": sweep.total_cells,
        "model_loads": sweep.model_loads,
        "created_at": sweep.created_at.isoformat() if sweep.created_at else None,
        "finished_at": sweep.finished_at.isoformat() if sweep.finished_at else None,
        "progress": progress(session, sweep.id) if progress_ is None else progress_,
        "notes": _notes(sweep),
    }


def _notes(sweep: Sweep) -> list[str]:
    try:
        return notes(parse_spec(sweep.spec, max_cells=2**62))
    except ValueError:  # a spec stored by an older edgelab that no longer parses
        return []


#: A cell's fields in sweep_detail (``latency_label`` is shown as ``latency``, ``id`` as
#: ``run_id``), in the order of the JSON.
_CELL_COLUMNS = (
    "id",
    "status",
    "fingerprint",
    "repetition",
    "model",
    "nodes",
    "threads",
    "latency_label",
    "bandwidth_bps",
    "max_tokens",
    "prompt",
    "ttft_ms",
    "e2el_ms",
    "decode_tps",
)
_CELL_KEYS = tuple(
    "latency" if c == "latency_label" else "run_id" if c == "id" else c for c in _CELL_COLUMNS
)


def sweep_detail(session: Session, sweep_id: int) -> dict[str, Any]:
    """A sweep with one entry per cell (its latest run); ``LookupError`` if unknown."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise SweepNotFound(sweep_id)
    # The latest run of every cell as in latest_runs, but read as columns: the sweep
    # page shows this for up to 1,000 cells, and ORM objects cost most of its time.
    # The progress counts come from the same rows (one read of the runs, not two).
    latest: dict[tuple[str, int], Any] = {}
    for row in session.execute(
        select(*(getattr(Run, c) for c in _CELL_COLUMNS))
        .where(Run.sweep_id == sweep_id, Run.warmup.is_(False))
        .order_by(Run.id)
    ):
        latest[(row.fingerprint, row.repetition)] = row
    data = sweep_summary(
        session, sweep, _progress(Counter(RunStatus(row.status) for row in latest.values()))
    )
    # Rows are tuples in _CELL_COLUMNS order (row._mapping builds a mapping per call).
    data["cells"] = [dict(zip(_CELL_KEYS, row, strict=True)) for row in latest.values()]
    if sweep.spec.get("search"):
        from edgelab.sweeps import search

        spec = parse_spec(sweep.spec, max_cells=2**62)
        data["search"] = search.state_of(session, sweep_id, spec).to_dict()
    data["warmups"] = [
        {"run_id": run.id, "status": run.status, "nodes": run.nodes, "threads": run.threads}
        for run in session.scalars(
            select(Run).where(Run.sweep_id == sweep_id, Run.warmup.is_(True)).order_by(Run.id)
        )
    ]
    return data


def resume(store: Store, sweep_id: int, catalog: Catalog, settings: Settings) -> ResumeResult:
    """Re-expand the stored spec and resume the sweep (``SpecError`` if it no longer
    validates, e.g. a model was removed from the catalog)."""
    from edgelab.models.db import session_scope

    with session_scope(store.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None:
            raise SweepNotFound(sweep_id)
        stored, total = sweep.spec, sweep.total_cells
    spec = parse_spec(stored, max_cells=max(settings.max_sweep_cells, total))
    if spec.search is None:
        cells = expand(spec, catalog, default_backend=settings.backend)
        return store.resume_sweep(sweep_id, cells)
    from edgelab.sweeps import search

    with session_scope(store.database_url) as s:
        cells = search.known_cells(s, sweep_id, spec, catalog, default_backend=settings.backend)
    result = store.resume_sweep(sweep_id, cells)
    # Probes the finished ones call for and that were never created (a lost message).
    more = search.advance(store, sweep_id, catalog, default_backend=settings.backend)
    return ResumeResult(created=result.created + more, requeue=result.requeue + more)
