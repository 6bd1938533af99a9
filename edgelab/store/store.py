"""``Store``: every change of state of a run or a sweep, in one place.

The shape is MLflow's ``SqlAlchemyStore``: each method opens its own managed
session (committed on success, rolled back on error), checks the current state
before changing it, raises typed errors (:mod:`edgelab.store.errors`) and returns
plain dataclasses rather than ORM rows. Callers - the executor, the group runner,
the reconciler, the actions behind the API, pages and CLI - never write
``Run.status`` or ``Sweep.status`` themselves.

Every state change is a *guarded* ``UPDATE ... WHERE status IN (<legal sources>)``
built from the transition table in :mod:`edgelab.store.status`, so two processes
racing (a worker finishing a run while a user cancels it, two workers claiming the
same redelivered message) cannot both win, and the loser learns it from the row
count instead of overwriting a finished run.

A run change that belongs to a sweep refreshes the sweep's state in the same
transaction, so a sweep never lags behind its cells.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from edgelab.models import LinkStat, NodeSample, Run, Sweep, TokenEvent
from edgelab.models.base import utcnow
from edgelab.models.db import session_scope
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.store.errors import InvalidTransition, RunNotFound, SweepNotFound
from edgelab.store.status import (
    RUN_ACTIVE,
    RUN_OPEN,
    RunStatus,
    SweepStatus,
    derived_sweep_status,
    run_sources,
    sweep_may,
    sweep_sources,
)
from edgelab.topology.spec import Topology

if TYPE_CHECKING:
    from edgelab.sweeps.spec import Cell, SweepSpec

log = logging.getLogger(__name__)

#: Error stored on a queued run cancelled before an executor claimed it.
CANCELLED_BEFORE_START = "cancelled before it started"


@dataclass(frozen=True)
class RunState:
    """What the store says about a run (no configuration, no measurements)."""

    id: int
    sweep_id: int | None
    status: RunStatus
    error: str | None
    fingerprint: str
    repetition: int
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, run: Run) -> RunState:
        return cls(
            id=run.id,
            sweep_id=run.sweep_id,
            status=RunStatus(run.status),
            error=run.error,
            fingerprint=run.fingerprint,
            repetition=run.repetition,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )


@dataclass(frozen=True)
class SweepState:
    id: int
    name: str
    status: SweepStatus
    total_cells: int
    model_loads: int
    created_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, sweep: Sweep) -> SweepState:
        return cls(
            id=sweep.id,
            name=sweep.name,
            status=SweepStatus(sweep.status),
            total_cells=sweep.total_cells,
            model_loads=sweep.model_loads,
            created_at=sweep.created_at,
            finished_at=sweep.finished_at,
        )


@dataclass(frozen=True)
class CancelResult:
    """``status`` after the cancel; ``stopping``: an executor must be told (flag)."""

    run_id: int
    status: RunStatus
    stopping: bool
    sweep_id: int | None = None


@dataclass(frozen=True)
class ResumeResult:
    created: list[int]  # new runs for cells whose latest run failed or was cancelled
    requeue: list[int]  # queued runs (new and old) that need a message on the queue


# --- rows <-> configuration (used inside a caller's transaction) --------------------


def insert_run(session: Session, config: RunConfig, sweep_id: int | None = None) -> Run:
    """Insert a queued run for ``config`` into ``session`` (the caller commits)."""
    run = Run(
        sweep_id=sweep_id,
        status=RunStatus.QUEUED,
        engine=config.engine,
        backend=config.backend,
        model=config.model,
        nodes=config.nodes,
        threads=config.threads,
        latency=config.latency.to_dict(),
        latency_label=config.latency.label,
        bandwidth_bps=config.latency.bandwidth_bps,
        max_tokens=config.max_tokens,
        prompt=config.prompt,
        temperature=config.temperature,
        seed=config.seed,
        repetition=config.repetition,
        options=dict(config.options),
        topology=None if config.topology.is_uniform else config.topology.to_dict(),
        # A uniform cluster is "uniform" whatever named topology produced it.
        topology_label="uniform" if config.topology.is_uniform else config.topology.label[:200],
        fingerprint=config.fingerprint(),
    )
    session.add(run)
    session.flush()
    return run


def insert_sweep(session: Session, spec: SweepSpec, cells: list[Cell]) -> Sweep:
    """Insert a queued sweep and one queued run per cell (the caller commits).

    A break-even search's ``total_cells`` is its upper bound: its cells are created
    as results arrive (:meth:`Store.extend_sweep`).
    """
    total = spec.total_cells if spec.search is not None else len(cells)
    sweep = Sweep(name=spec.name, spec=spec.to_dict(), status=SweepStatus.QUEUED, total_cells=total)
    session.add(sweep)
    session.flush()
    insert_cells(session, spec, cells, sweep.id)
    return sweep


def insert_cells(session: Session, spec: SweepSpec, cells: list[Cell], sweep_id: int) -> list[int]:
    """Queued runs for ``cells`` in the spec's execution order, each topology's
    warm-up runs (``spec.warmup``) first unless some are still queued; the new ids."""
    from edgelab.sweeps.spec import execution_order

    created: list[int] = []
    warmed: set[str] = set()
    for cell in execution_order(spec, cells):
        if spec.warmup and cell.topology not in warmed:
            warmed.add(cell.topology)
            created.extend(_insert_warmups(session, spec, cell, sweep_id))
        created.append(insert_run(session, cell.config, sweep_id=sweep_id).id)
    return created


def _insert_warmups(session: Session, spec: SweepSpec, cell: Cell, sweep_id: int) -> list[int]:
    queued = session.scalars(
        select(Run).where(
            Run.sweep_id == sweep_id, Run.warmup.is_(True), Run.status == RunStatus.QUEUED
        )
    )
    if any(config_of(run).cluster_spec.topology_key() == cell.topology for run in queued):
        return []
    ids = []
    for k in range(spec.warmup):
        # Negative repetitions: a warm-up never takes the key of a cell.
        run = insert_run(session, replace(cell.config, repetition=-1 - k), sweep_id=sweep_id)
        run.warmup = True
        ids.append(run.id)
    session.flush()
    return ids


def config_of(run: Run) -> RunConfig:
    """The configuration a stored run was created with."""
    return RunConfig(
        prompt=run.prompt,
        model=run.model,
        nodes=run.nodes,
        threads=run.threads,
        latency=LatencyProfile.from_dict(run.latency),
        max_tokens=run.max_tokens,
        seed=run.seed,
        temperature=run.temperature,
        engine=run.engine,
        backend=run.backend,
        repetition=run.repetition,
        options=dict(run.options or {}),
        topology=Topology.from_dict(run.topology),
    )


def latest_cells(session: Session, sweep_id: int) -> dict[tuple[str, int], tuple[int, RunStatus]]:
    """(run id, status) of the latest run of every cell (fingerprint, repetition).

    Warm-up runs are no cells: they never count towards progress or status.
    """
    latest: dict[tuple[str, int], tuple[int, RunStatus]] = {}
    rows = session.execute(
        select(Run.id, Run.fingerprint, Run.repetition, Run.status)
        .where(Run.sweep_id == sweep_id, Run.warmup.is_(False))
        .order_by(Run.id)
    )
    for rid, fingerprint, repetition, status in rows:
        latest[(fingerprint, repetition)] = (rid, RunStatus(status))
    return latest


def cell_counts(session: Session, sweep_id: int) -> Counter[RunStatus]:
    """How many cells' latest runs are in each status (the cells of :func:`latest_cells`).

    Counted by the database, not by loading every run: every status move of a
    sweep's run refreshes the sweep with this (three per executed run), and a
    row per run through the ORM made each move of a 1,000-run sweep ~6 ms slower.
    """
    latest = (
        select(func.max(Run.id).label("id"))
        .where(Run.sweep_id == sweep_id, Run.warmup.is_(False))
        .group_by(Run.fingerprint, Run.repetition)
        .subquery()
    )
    rows = session.execute(
        select(Run.status, func.count()).join(latest, Run.id == latest.c.id).group_by(Run.status)
    )
    return Counter({RunStatus(status): int(n) for status, n in rows})


def group_by_topology(session: Session, run_ids: Iterable[int]) -> list[list[int]]:
    """Split run ids by cluster topology, keeping their order (one warm cluster each),
    except that a group's warm-up runs go first: they exist to be executed first."""
    ids = list(run_ids)
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))}
    groups: dict[str, list[int]] = {}
    for rid in ids:
        if rid in runs:
            key = config_of(runs[rid]).cluster_spec.topology_key()
            groups.setdefault(key, []).append(rid)
    return [sorted(g, key=lambda rid: not runs[rid].warmup) for g in groups.values()]


def _search_open(session: Session, sweep: Sweep) -> bool:
    """A break-even search whose brackets still want probes has not finished."""
    if not (sweep.spec or {}).get("search"):
        return False
    from edgelab.sweeps import search
    from edgelab.sweeps.spec import parse_spec

    spec = parse_spec(sweep.spec, max_cells=2**62)
    return not search.state_of(session, sweep.id, spec).done


def _insert_rows(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``model``'s table with one executemany per set of keys.

    Not through ORM objects: a run's outcome carries tens of samples, token events
    and link rows, and building, flushing and expiring an object for each cost
    more CPU than the rest of the commit, after every run.
    """
    by_keys: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        by_keys.setdefault(frozenset(row), []).append(row)
    for same in by_keys.values():
        session.execute(insert(model), same)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class Store:
    """Runs and sweeps in the database at ``database_url``."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with session_scope(self.database_url) as s:
            yield s

    # --- guarded moves (inside a session) -------------------------------------------

    def _move_runs(
        self,
        s: Session,
        run_ids: Iterable[int],
        target: RunStatus,
        *,
        only_from: RunStatus | None = None,
        **values: Any,
    ) -> list[int]:
        """Move every run of ``run_ids`` that legally can to ``target``; the moved ids.

        ``only_from`` narrows the legal sources to one (a user's cancel changes only
        queued runs; executing ones are told to stop instead).
        """
        ids = list(run_ids)
        if not ids:
            return []
        sources = run_sources(target)
        if only_from is not None:
            if only_from not in sources:
                raise ValueError(f"{only_from} -> {target} is not in the transition table")
            sources = (only_from,)
        movable = list(s.scalars(select(Run.id).where(Run.id.in_(ids), Run.status.in_(sources))))
        if not movable:
            return []
        result = s.execute(
            update(Run)
            .where(Run.id.in_(movable), Run.status.in_(sources))
            .values(status=target, **values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != len(movable):  # lost a race for some: say which moved
            moved = set(s.scalars(select(Run.id).where(Run.id.in_(movable), Run.status == target)))
            movable = [rid for rid in movable if rid in moved]
        self._refresh_sweeps_of(s, movable)
        return movable

    def _move_run(self, s: Session, run_id: int, target: RunStatus, **values: Any) -> bool:
        return bool(self._move_runs(s, [run_id], target, **values))

    def _refresh_sweeps_of(self, s: Session, run_ids: list[int]) -> None:
        if not run_ids:
            return
        sweep_ids = set(
            s.scalars(select(Run.sweep_id).where(Run.id.in_(run_ids), Run.sweep_id.is_not(None)))
        )
        for sweep_id in sorted(i for i in sweep_ids if i is not None):
            self._refresh(s, sweep_id)

    def _refresh(self, s: Session, sweep_id: int) -> SweepStatus:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None:
            raise SweepNotFound(sweep_id)
        current = SweepStatus(sweep.status)
        status = current
        counts = cell_counts(s, sweep_id)
        if not current.terminal:  # following the cells never leaves a finished state
            derived = derived_sweep_status(counts)
            if derived == SweepStatus.SUCCEEDED and _search_open(s, sweep):
                derived = SweepStatus.RUNNING  # its next probes are about to be created
            if derived != current and sweep_may(current, derived):
                status = derived
        if status != current:
            sweep.status = status
        # Finished once nothing of it is left to execute (a cancelled sweep whose last
        # run is still stopping is cancelled, but not finished yet).
        if status.terminal and not any(counts[o] for o in RUN_OPEN):
            sweep.finished_at = sweep.finished_at or utcnow()
        else:
            sweep.finished_at = None
        return status

    # --- runs: reading ----------------------------------------------------------------

    def get_run(self, run_id: int) -> RunState:
        with self._session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise RunNotFound(run_id)
            return RunState.of(run)

    def run_status(self, run_id: int) -> RunStatus | None:
        """The run's status, or None if there is no such run."""
        with self._session() as s:
            status = s.scalar(select(Run.status).where(Run.id == run_id))
            return None if status is None else RunStatus(status)

    def run_config(self, run_id: int) -> RunConfig:
        with self._session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise RunNotFound(run_id)
            return config_of(run)

    def runs_in(self, statuses: Iterable[RunStatus], limit: int | None = None) -> list[RunState]:
        """Runs in any of ``statuses``, oldest first."""
        with self._session() as s:
            stmt = select(Run).where(Run.status.in_(list(statuses))).order_by(Run.id)
            if limit is not None:
                stmt = stmt.limit(limit)
            return [RunState.of(r) for r in s.scalars(stmt)]

    def count_by_status(self, statuses: Iterable[RunStatus] = tuple(RunStatus)) -> dict[str, int]:
        wanted = list(statuses)
        with self._session() as s:
            counts = dict(
                s.execute(
                    select(Run.status, func.count(Run.id))
                    .where(Run.status.in_(wanted))
                    .group_by(Run.status)
                ).all()
            )
        return {status: int(counts.get(status, 0)) for status in wanted}

    # --- runs: creating and executing ---------------------------------------------------

    def create_run(self, config: RunConfig, sweep_id: int | None = None) -> RunState:
        """A new queued run (re-run: the same configuration as an old run)."""
        with self._session() as s:
            run = insert_run(s, config, sweep_id)
            if sweep_id is not None:
                self._refresh(s, sweep_id)
            return RunState.of(run)

    def claim_run(self, run_id: int, *, running: Mapping[str, Any] | None = None) -> bool:
        """queued (or left active by a dead executor) -> starting; False: do not execute.

        The caller holds the run's lease, which is what makes re-claiming an active
        run safe: nobody alive is executing it. Partial rows of an earlier execution
        are discarded, so a run ends up executed exactly once to completion.

        ``running``: go on to running in the same commit, with these values (see
        :meth:`mark_running`): a run on a warm cluster has nothing to start, and its
        claim and start were two commits (two fsyncs) before every such run.
        """
        with self._session() as s:
            if not self._move_run(
                s, run_id, RunStatus.STARTING, error=None, started_at=None, finished_at=None
            ):
                return False
            for table in (TokenEvent, NodeSample, LinkStat):
                s.execute(delete(table).where(table.run_id == run_id))
            if running is not None:
                values = {"started_at": utcnow(), **running}
                if not self._move_run(s, run_id, RunStatus.RUNNING, **values):
                    # Cannot happen inside this transaction; if it did, nothing is claimed.
                    raise InvalidTransition("run", run_id, "starting", "running")
        # One line per execution attempt, in the worker's log: how often a run was
        # really started is visible (the chaos tests count these lines).
        log.info("run %s claimed by pid %s", run_id, os.getpid())
        return True

    def mark_running(self, run_id: int, **values: Any) -> bool:
        """starting -> running, with the provenance known once the cluster is up."""
        values.setdefault("started_at", utcnow())
        with self._session() as s:
            return self._move_run(s, run_id, RunStatus.RUNNING, **values)

    def succeed_run(
        self,
        run_id: int,
        values: Mapping[str, Any],
        samples: Iterable[Mapping[str, Any]] = (),
        links: Mapping[str, Mapping[str, Any]] | None = None,
        tokens: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        """running -> succeeded with the metrics, node samples, link rows and the last
        token events not stored yet, atomically (one commit: a viewer that sees the
        run succeeded sees all of its tokens).

        False (and nothing written) if the run is no longer running, e.g. a
        reconciler already gave it to another worker after a long broker outage.
        """
        with self._session() as s:
            if not self._move_run(
                s, run_id, RunStatus.SUCCEEDED, finished_at=utcnow(), **dict(values)
            ):
                return False
            self._add_measurements(s, run_id, samples, links, tokens)
            return True

    def keep_measurements(
        self,
        run_id: int,
        values: Mapping[str, Any],
        samples: Iterable[Mapping[str, Any]] = (),
        links: Mapping[str, Mapping[str, Any]] | None = None,
        tokens: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        """Store what a stopped run (cancelled, node lost) measured, leaving its status
        to the caller. False (nothing written) if the run is no longer running here."""
        with self._session() as s:
            result = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                .values(**dict(values))
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(result):
                return False
            self._add_measurements(s, run_id, samples, links, tokens)
            return True

    def add_token_events(self, run_id: int, tokens: Iterable[Mapping[str, Any]]) -> None:
        """Append a batch of a generating run's token events (live viewers replay them)."""
        rows = [{**token, "run_id": run_id} for token in tokens]
        if rows:
            with self._session() as s:
                _insert_rows(s, TokenEvent, rows)

    @staticmethod
    def _add_measurements(
        s: Session,
        run_id: int,
        samples: Iterable[Mapping[str, Any]],
        links: Mapping[str, Mapping[str, Any]] | None,
        tokens: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        _insert_rows(s, TokenEvent, [{**token, "run_id": run_id} for token in tokens])
        _insert_rows(s, NodeSample, [{**sample, "run_id": run_id} for sample in samples])
        _insert_rows(
            s,
            LinkStat,
            [{**row, "run_id": run_id, "link": name} for name, row in (links or {}).items()],
        )

    def fail_run(self, run_id: int, error: str, node_logs: Mapping[str, Any] | None = None) -> bool:
        """Any unfinished state -> failed with ``error``; False if it had already ended."""
        return bool(self.fail_runs([run_id], error, node_logs))

    def fail_runs(
        self, run_ids: Iterable[int], error: str, node_logs: Mapping[str, Any] | None = None
    ) -> list[int]:
        """Fail every unfinished run of ``run_ids``; the ids that were failed now."""
        with self._session() as s:
            return self._move_runs(
                s,
                run_ids,
                RunStatus.FAILED,
                error=error,
                finished_at=utcnow(),
                node_logs=dict(node_logs) if node_logs is not None else None,
            )

    def end_cancelled(self, run_id: int, reason: str) -> bool:
        """The executor stopped the run because it was asked to (or interrupted)."""
        with self._session() as s:
            return self._move_run(
                s, run_id, RunStatus.CANCELLED, error=reason, finished_at=utcnow()
            )

    def requeue_run(self, run_id: int, note: str | None = None) -> bool:
        """starting/running -> queued: a dead executor's run goes back to the queue.

        Only the reconciler calls this, after the run's lease lapsed.
        """
        with self._session() as s:
            return bool(
                self._move_runs(
                    s,
                    [run_id],
                    RunStatus.QUEUED,
                    error=note,
                    started_at=None,
                    finished_at=None,
                )
            )

    def cancel_run(self, run_id: int) -> CancelResult:
        """A user's cancel: a queued run ends now; an active one must be told to stop.

        Raises ``RunNotFound``, or ``InvalidTransition`` for a finished run.
        """
        with self._session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise RunNotFound(run_id)
            sweep_id = run.sweep_id
            if self._move_runs(
                s,
                [run_id],
                RunStatus.CANCELLED,
                error=CANCELLED_BEFORE_START,
                finished_at=utcnow(),
                only_from=RunStatus.QUEUED,
            ):
                return CancelResult(run_id, RunStatus.CANCELLED, False, sweep_id)
            s.refresh(run)
            status = RunStatus(run.status)
            if status.active:
                return CancelResult(run_id, status, True, sweep_id)
            raise InvalidTransition("run", run_id, status, RunStatus.CANCELLED, "be cancelled")

    # --- sweeps -------------------------------------------------------------------------

    def create_sweep(self, spec: SweepSpec, cells: list[Cell]) -> SweepState:
        with self._session() as s:
            return SweepState.of(insert_sweep(s, spec, cells))

    def get_sweep(self, sweep_id: int) -> SweepState:
        with self._session() as s:
            sweep = s.get(Sweep, sweep_id)
            if sweep is None:
                raise SweepNotFound(sweep_id)
            return SweepState.of(sweep)

    def refresh_sweep(self, sweep_id: int) -> SweepStatus:
        """Bring the sweep's state in line with its cells (within the transition table)."""
        with self._session() as s:
            return self._refresh(s, sweep_id)

    def count_model_load(self, sweep_id: int) -> None:
        """One more cluster start for this sweep (atomic, so concurrent workers add up)."""
        with self._session() as s:
            s.execute(
                update(Sweep).where(Sweep.id == sweep_id).values(model_loads=Sweep.model_loads + 1)
            )

    def queued_groups(self, sweep_id: int) -> list[list[int]]:
        """The sweep's queued cells grouped by topology (one warm cluster per group),
        each group's queued warm-up runs first. Queued warm-ups of a topology with no
        queued cell left have nothing to warm up and are cancelled."""
        with self._session() as s:
            queued = [
                rid
                for rid, status in latest_cells(s, sweep_id).values()
                if status == RunStatus.QUEUED
            ]
            groups = group_by_topology(s, queued)
            topologies = {
                config_of(s.get_one(Run, g[0])).cluster_spec.topology_key(): i
                for i, g in enumerate(groups)
            }
            stale: list[int] = []
            warmups = s.scalars(
                select(Run)
                .where(
                    Run.sweep_id == sweep_id, Run.warmup.is_(True), Run.status == RunStatus.QUEUED
                )
                .order_by(Run.id)
            )
            extra: dict[int, list[int]] = {}
            for run in warmups:
                index = topologies.get(config_of(run).cluster_spec.topology_key())
                if index is None:
                    stale.append(run.id)
                else:
                    extra.setdefault(index, []).append(run.id)
            if stale:
                self._move_runs(
                    s,
                    stale,
                    RunStatus.CANCELLED,
                    error="no cell of its topology left to run",
                    finished_at=utcnow(),
                    only_from=RunStatus.QUEUED,
                )
            return [extra.get(i, []) + g for i, g in enumerate(groups)]

    def extend_sweep(self, sweep_id: int, plan: Callable[[Session], list[Cell]]) -> list[int]:
        """Create queued runs for the cells ``plan`` decides on now; their ids.

        For sweeps whose cells depend on results (a break-even search). The sweep
        row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL), so two workers
        finishing groups at once cannot both create the same cells.
        """
        from edgelab.sweeps.spec import parse_spec

        with self._session() as s:
            sweep = s.scalars(select(Sweep).where(Sweep.id == sweep_id).with_for_update()).first()
            if sweep is None:
                raise SweepNotFound(sweep_id)
            if SweepStatus(sweep.status).terminal:  # cancelled (or over): nothing new
                return []
            cells = plan(s)
            if not cells:
                return []
            spec = parse_spec(sweep.spec, max_cells=2**62)
            ids = insert_cells(s, spec, cells, sweep_id)
            s.flush()
            self._refresh(s, sweep_id)
            return ids

    def group_by_topology(self, run_ids: Iterable[int]) -> list[list[int]]:
        with self._session() as s:
            return group_by_topology(s, run_ids)

    def cancel_sweep(self, sweep_id: int) -> list[int]:
        """Cancel every queued cell and the sweep; the ids of runs to be told to stop.

        Raises ``SweepNotFound``, or ``InvalidTransition`` for a finished sweep (a
        12/12-succeeded sweep stays succeeded).
        """
        with self._session() as s:
            sweep = s.get(Sweep, sweep_id)
            if sweep is None:
                raise SweepNotFound(sweep_id)
            moved = _rowcount(
                s.execute(
                    update(Sweep)
                    .where(
                        Sweep.id == sweep_id,
                        Sweep.status.in_(sweep_sources(SweepStatus.CANCELLED)),
                    )
                    .values(status=SweepStatus.CANCELLED)
                    .execution_options(synchronize_session=False)
                )
            )
            s.expire(sweep)  # the guarded UPDATE bypassed the ORM: read the row again
            if not moved:
                raise InvalidTransition(
                    "sweep", sweep_id, sweep.status, SweepStatus.CANCELLED, "be cancelled"
                )
            queued = list(
                s.scalars(
                    select(Run.id).where(Run.sweep_id == sweep_id, Run.status == RunStatus.QUEUED)
                )
            )
            self._move_runs(
                s,
                queued,
                RunStatus.CANCELLED,
                error=CANCELLED_BEFORE_START,
                finished_at=utcnow(),
                only_from=RunStatus.QUEUED,
            )
            running = list(
                s.scalars(
                    select(Run.id).where(Run.sweep_id == sweep_id, Run.status.in_(list(RUN_ACTIVE)))
                )
            )
            self._refresh(s, sweep_id)  # finished now, unless runs are still stopping
            return running

    def resume_sweep(self, sweep_id: int, cells: list[Cell]) -> ResumeResult:
        """Make every cell without a succeeded run queued again.

        Cells whose latest run failed or was cancelled get a new queued run (the old
        one stays as history); cells already queued are returned for re-sending
        (their message may have been lost; a second message is harmless). Cells
        executing now are left alone. A succeeded sweep has nothing to resume.
        """
        with self._session() as s:
            sweep = s.get(Sweep, sweep_id)
            if sweep is None:
                raise SweepNotFound(sweep_id)
            from edgelab.sweeps.spec import parse_spec

            latest = latest_cells(s, sweep_id)
            requeue: list[int] = []
            missing: list[Cell] = []
            for cell in cells:
                found = latest.get(cell.key)
                if found is None or found[1] in (RunStatus.FAILED, RunStatus.CANCELLED):
                    missing.append(cell)
                elif found[1] == RunStatus.QUEUED:
                    requeue.append(found[0])
            # New runs in the spec's order, with fresh warm-ups for their topologies.
            created: list[int] = []
            if missing:
                try:
                    spec = parse_spec(sweep.spec, max_cells=2**62)
                except ValueError:  # a spec this version cannot read: plain cells
                    created = [insert_run(s, c.config, sweep_id=sweep_id).id for c in missing]
                else:
                    created = insert_cells(s, spec, missing, sweep_id)
            requeue.extend(created)
            if created and sweep_may(sweep.status, SweepStatus.QUEUED):
                sweep.status = SweepStatus.QUEUED
                sweep.finished_at = None
            s.flush()
            self._refresh(s, sweep_id)
            return ResumeResult(created=created, requeue=requeue)

    # --- the reconciler's view ------------------------------------------------------------

    def open_runs(self) -> list[RunState]:
        """Every run that has not finished, oldest first."""
        return self.runs_in(RUN_OPEN)

    def overdue_runs(self, limit_s: float) -> list[RunState]:
        """Active runs that started generating longer than ``limit_s`` ago."""
        cutoff = utcnow() - timedelta(seconds=limit_s)
        with self._session() as s:
            return [
                RunState.of(r)
                for r in s.scalars(
                    select(Run)
                    .where(
                        Run.status.in_(list(RUN_ACTIVE)),
                        Run.started_at.is_not(None),
                        Run.started_at < cutoff,
                    )
                    .order_by(Run.id)
                )
            ]
