"""What the Celery tasks do, as plain functions (testable without Celery).

``run_group`` executes runs that share one topology on one warm cluster: the
model is loaded once, and only the latency profile changes between runs. Around
every run it takes the run's lease (so no other worker executes it at the same
time), and around the whole group it holds the host lock (so no other experiment
shares the CPU). ``execute_single`` is the one-run case with the cluster started
by the executor itself. ``find_orphans`` lists runs left behind by dead workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from sqlalchemy import select, update

from edgelab.catalog import Catalog
from edgelab.cluster import Cluster, ClusterError
from edgelab.models import TERMINAL_STATUSES, Run
from edgelab.models.base import utcnow
from edgelab.models.db import session_scope
from edgelab.runs.executor import (
    RunCancelled,
    claim_run,
    cluster_for,
    config_of,
    execute_run,
    failure_text,
)
from edgelab.settings import Settings
from edgelab.sweeps import control
from edgelab.tasks.events import RunPublisher, cancel_check
from edgelab.tasks.locks import Heartbeat, RunLeases, host_lock, lease_held, lock_ttl

log = logging.getLogger(__name__)

CLAIMABLE = ("queued", "starting", "running")


@dataclass
class GroupResult:
    statuses: dict[int, str] = field(default_factory=dict)
    model_loads: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "model_loads": self.model_loads,
        }


def _status(url: str, run_id: int) -> str | None:
    with session_scope(url) as s:
        return s.scalar(select(Run.status).where(Run.id == run_id))


def _refresh_sweep(url: str, sweep_id: int | None) -> None:
    if sweep_id is None:
        return
    with session_scope(url) as s:
        control.refresh_status(s, sweep_id)


def _fail(url: str, run_id: int, error: str, node_logs: dict[str, list[str]] | None = None) -> None:
    with session_scope(url) as s:
        s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(CLAIMABLE))
            .values(status="failed", error=error, finished_at=utcnow(), node_logs=node_logs)
        )


def _cancel(url: str, run_id: int) -> None:
    with session_scope(url) as s:
        s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(CLAIMABLE))
            .values(status="cancelled", error="cancelled", finished_at=utcnow())
        )


def execute_single(
    settings: Settings, r: redis.Redis, run_id: int, *, catalog: Catalog | None = None
) -> str:
    """Execute one run on its own cluster, under the host lock and the run's lease."""
    url = settings.database_url
    with Heartbeat(lock_ttl()) as heartbeat:
        leases = RunLeases(r, heartbeat)
        publish = RunPublisher(r, run_id)
        with host_lock(
            r,
            heartbeat,
            on_wait=lambda: publish(
                {"type": "progress", "message": "waiting for another experiment on this host"}
            ),
        ):
            if not leases.take(run_id):
                return "executing elsewhere"
            try:
                status = _status(url, run_id)
                if status is None or status in TERMINAL_STATUSES:
                    return status or "missing"
                result = execute_run(
                    settings,
                    run_id,
                    sink=publish,
                    should_cancel=cancel_check(r, run_id),
                    catalog=catalog,
                )
                return result.status
            finally:
                leases.release(run_id)


def run_group(
    settings: Settings,
    r: redis.Redis,
    run_ids: list[int],
    *,
    sweep_id: int | None = None,
    catalog: Catalog | None = None,
    deadline: float | None = None,
    on_cluster_start: Callable[[], None] | None = None,
) -> GroupResult:
    """Execute ``run_ids`` (one topology) on as few cluster starts as possible.

    A cluster is started only when a run is still claimable; it is started again
    only if a node died. Cancelled runs are skipped (their claim fails). Past
    ``deadline`` (monotonic) the remaining runs fail with a clear error instead of
    running into the task's hard time limit.
    """
    url = settings.database_url
    catalog = catalog or Catalog(settings)
    result = GroupResult()
    pending = list(run_ids)
    with Heartbeat(lock_ttl()) as heartbeat:
        leases = RunLeases(r, heartbeat)
        waiting = RunPublisher(r, pending[0]) if pending else None

        def on_wait() -> None:
            if waiting is not None:
                waiting(
                    {"type": "progress", "message": "waiting for another experiment on this host"}
                )

        try:
            with host_lock(r, heartbeat, on_wait=on_wait):
                while pending:
                    lead = _next_claimable(url, r, leases, pending, result)
                    if lead is None:
                        break
                    with session_scope(url) as s:
                        config = config_of(s.get_one(Run, lead))
                    try:
                        model = catalog.get(config.model)
                    except Exception as exc:
                        for rid in [lead, *pending]:
                            if leases.take(rid):
                                _fail(url, rid, str(exc))
                                result.statuses[rid] = "failed"
                        pending.clear()
                        break
                    lead_publish = RunPublisher(r, lead)
                    # The lead run shows "starting" (and the load progress) while the
                    # cluster comes up, like a single run does.
                    claim_run(url, lead)
                    lead_publish({"type": "status", "status": "starting"})
                    _refresh_sweep(url, sweep_id)  # the sweep shows "running" from now on
                    try:
                        with cluster_for(
                            settings,
                            config,
                            model,
                            _progress_to(lead_publish),
                            name=f"sweep{sweep_id}" if sweep_id else f"run{lead}",
                            should_cancel=cancel_check(r, lead),
                        ) as cluster:
                            result.model_loads += 1
                            if sweep_id is not None:
                                with session_scope(url) as s:
                                    control.count_model_load(s, sweep_id)
                            if on_cluster_start is not None:
                                on_cluster_start()
                            _run_on(
                                settings,
                                r,
                                cluster,
                                [lead, *pending],
                                pending,
                                leases,
                                result,
                                sweep_id,
                                catalog,
                                deadline,
                            )
                    except RunCancelled:
                        # The lead was cancelled while its cluster started: the start
                        # is torn down; the rest of the group goes on (next lead).
                        _cancel(url, lead)
                        lead_publish(
                            {"type": "status", "status": "cancelled", "error": "cancelled"}
                        )
                        result.statuses[lead] = "cancelled"
                    except ClusterError as exc:
                        # The cluster did not start: every run of this topology would
                        # fail the same way, so fail them all with the node's story.
                        error = failure_text(exc)
                        for rid in [lead, *pending]:
                            if leases.take(rid):
                                _fail(url, rid, error, exc.node_logs)
                                RunPublisher(r, rid)(
                                    {"type": "status", "status": "failed", "error": error}
                                )
                                result.statuses[rid] = "failed"
                                leases.release(rid)
                        pending.clear()
                    finally:
                        leases.release(lead)
                        _refresh_sweep(url, sweep_id)
        finally:
            leases.release_all()
            _refresh_sweep(url, sweep_id)
    return result


def _progress_to(publish: RunPublisher) -> Callable[[str], None]:
    return lambda message: publish({"type": "progress", "message": message})


def _next_claimable(
    url: str, r: redis.Redis, leases: RunLeases, pending: list[int], result: GroupResult
) -> int | None:
    """Pop runs off ``pending`` until one can be executed here; lease it and return it."""
    while pending:
        rid = pending.pop(0)
        status = _status(url, rid)
        if status is None or status in TERMINAL_STATUSES:
            result.statuses[rid] = status or "missing"
            continue
        if not leases.take(rid):
            result.statuses[rid] = "executing elsewhere"
            continue
        return rid
    return None


def _run_on(
    settings: Settings,
    r: redis.Redis,
    cluster: Cluster,
    order: list[int],
    pending: list[int],
    leases: RunLeases,
    result: GroupResult,
    sweep_id: int | None,
    catalog: Catalog,
    deadline: float | None,
) -> None:
    """Execute ``order`` on the warm cluster, removing each run from ``pending``."""
    url = settings.database_url
    for rid in order:
        if rid in pending:
            pending.remove(rid)
        if deadline is not None and time.monotonic() > deadline:
            for late in [rid, *pending]:
                if leases.take(late):
                    _fail(url, late, "the sweep group ran out of its time budget before this run")
                    result.statuses[late] = "failed"
            pending.clear()
            return
        if not leases.take(rid):
            result.statuses[rid] = "executing elsewhere"
            continue
        try:
            res = execute_run(
                settings,
                rid,
                cluster=cluster,
                sink=RunPublisher(r, rid),
                should_cancel=cancel_check(r, rid),
                catalog=catalog,
            )
        finally:
            leases.release(rid)
        result.statuses[rid] = res.status
        _refresh_sweep(url, sweep_id)
        if res.status == "failed":
            try:
                cluster.check_alive()
                if cluster.stalled is not None:  # hung, not dead: unusable all the same
                    raise cluster.stalled
            except ClusterError:
                # A node died: the rest of the group needs a fresh cluster.
                log.warning("cluster lost a node during run %s; restarting it", rid)
                return


def find_orphans(settings: Settings, r: redis.Redis) -> tuple[list[int], list[int]]:
    """Runs in ``starting``/``running`` whose lease lapsed (orphans) or is still held."""
    orphans: list[int] = []
    held: list[int] = []
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Run.id).where(Run.status.in_(("starting", "running")))))
    for rid in ids:
        (held if lease_held(r, rid) else orphans).append(rid)
    return orphans, held


def fail_overdue(settings: Settings, orphans: list[int], limit_s: float) -> list[int]:
    """Fail orphans that had been generating for longer than a run may take.

    Such a run was most likely killed by the hard time limit (which leaves no
    chance to record anything); executing it again would only hit the limit again.
    """
    cutoff = utcnow() - timedelta(seconds=limit_s)
    with session_scope(settings.database_url) as s:
        overdue = list(
            s.scalars(
                select(Run.id).where(
                    Run.id.in_(orphans), Run.started_at.is_not(None), Run.started_at < cutoff
                )
            )
        )
    for rid in overdue:
        _fail(settings.database_url, rid, f"the run exceeded its time limit of {limit_s:.0f} s")
    return overdue


def recovery_groups(settings: Settings, orphans: list[int]) -> list[tuple[list[int], int | None]]:
    """Orphans plus the queued runs of their sweeps, grouped by (sweep, topology)."""
    out: list[tuple[list[int], int | None]] = []
    with session_scope(settings.database_url) as s:
        runs = list(s.scalars(select(Run).where(Run.id.in_(orphans)).order_by(Run.id)))
        sweeps = sorted({run.sweep_id for run in runs if run.sweep_id is not None})
        for run in runs:
            if run.sweep_id is None:
                out.append(([run.id], None))
        for sweep_id in sweeps:
            ids = [run.id for run in runs if run.sweep_id == sweep_id]
            ids += [
                rid
                for group in control.queued_groups(s, sweep_id)
                for rid in group
                if rid not in ids
            ]
            for group in control.group_runs(s, ids):
                out.append((group, sweep_id))
    return out
