"""The reconciler: makes the queue agree with the database again, without a restart.

The database is the truth about runs; the broker only carries messages. Every few
seconds (``Settings.reconcile_s``: ``EDGELAB_RECONCILE_S``, 5) one worker compares
the two and repairs:

* a **queued** run with neither a sent marker (its message waits in the broker)
  nor a lease (a live worker holds it) lost its message - the broker restarted
  without persistence, or the worker that had received it died: it is sent again;
* a **starting/running** run without a lease was left by a dead worker: it goes
  back to ``queued`` and is sent again (or ends ``cancelled`` if it was being
  cancelled), so a live worker adopts it without anybody restarting anything;
* a run still **active past its deadline** (run time limit + cleanup grace) fails
  with that reason, and its cancel flag is raised in case something still runs it.

A run is acted on only after it has looked abandoned for ``grace`` seconds (half
the lock TTL) in a row: that covers the moment after a broker restart when the
leases of a live worker are gone until its next heartbeat puts them back, and the
moment between a run's creation and its message being sent. Suspicion is kept in
Redis, so it does not matter which worker's reconciler sees the run next.

**Why a timer in every worker and not Celery beat.** Beat is one more process to
run, supervise and keep single (two beats double every schedule); if it is not
running, nothing recovers, which is exactly the failure being repaired. A timer
thread in each ``edgelab worker`` main process runs as long as any worker is alive
- the only situation in which recovery can do any good - and keeps running while
the worker's pool process is busy with a long experiment. A Redis lock makes one
reconciler act per period, whichever worker it is. With the default TTL of 30 s a
dead worker's run is adopted within about TTL + TTL/2 + period (~50 s).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from edgelab.store import RunStatus, SweepStatus
from edgelab.store.store import RunState, Store
from edgelab.tasks.celery_app import QueueOptions
from edgelab.tasks.events import cancel_key, request_cancel
from edgelab.tasks.locks import OUTAGE, PREFIX, leases_held
from edgelab.tasks.submit import enqueue_group, enqueue_run, sent_of

log = logging.getLogger(__name__)

SUSPECTS_KEY = f"{PREFIX}:reconcile:suspects"
LOCK_KEY = f"{PREFIX}:reconcile:lock"
#: Stored on a run handed back to the queue (cleared when it is claimed again).
HANDED_BACK = "its worker stopped holding the run's lease; queued again"


@dataclass
class ReconcileReport:
    requeued: list[list[int]] = field(default_factory=list)  # groups sent again
    adopted: list[int] = field(default_factory=list)  # dead workers' runs, queued again
    cancelled: list[int] = field(default_factory=list)  # dead workers' runs being cancelled
    failed_overdue: list[int] = field(default_factory=list)
    suspects: int = 0  # runs that look abandoned but are still within the grace
    skipped: bool = False  # another worker's reconciler held the lock
    #: Longest time (s) a run acted on had looked abandoned: detection latency.
    waited_s: float = 0.0

    def acted(self) -> bool:
        return bool(self.requeued or self.adopted or self.cancelled or self.failed_overdue)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requeued": self.requeued,
            "adopted": self.adopted,
            "ended_cancelled": self.cancelled,
            "failed_overdue": self.failed_overdue,
            "suspects": self.suspects,
            "skipped": self.skipped,
            "waited_s": round(self.waited_s, 2),
        }


class Reconciler:
    """One reconciliation pass at a time over the database at ``database_url``.

    ``lock_ttl_s`` is the workers' lease lifetime (``Settings.lock_ttl_s``): a lease
    missing for half of it (``grace_s``) is believed gone.
    """

    def __init__(
        self,
        database_url: str,
        r: redis.Redis,
        celery: Any,
        *,
        lock_ttl_s: float,
        grace_s: float | None = None,
        limit_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        options = QueueOptions.of(celery)
        self.store = Store(database_url)
        self.r = r
        self.celery = celery
        self.grace_s = grace_s if grace_s is not None else max(1.0, lock_ttl_s / 2)
        self.limit_s = (
            limit_s if limit_s is not None else options.run_time_limit + options.cleanup_grace
        )
        self.clock = clock

    def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        lock = self.r.lock(LOCK_KEY, timeout=max(10.0, self.grace_s * 4), thread_local=False)
        if not lock.acquire(blocking=False):
            report.skipped = True
            return report
        try:
            self._fail_overdue(report)
            self._repair(report)
        finally:
            with contextlib.suppress(redis.RedisError):
                lock.release()
        return report

    def _fail_overdue(self, report: ReconcileReport) -> None:
        overdue = [run.id for run in self.store.overdue_runs(self.limit_s)]
        if not overdue:
            return
        error = f"the run exceeded its time limit of {self.limit_s:.0f} s"
        report.failed_overdue = self.store.fail_runs(overdue, error)
        request_cancel(self.r, report.failed_overdue)  # in case something still runs it

    def _repair(self, report: ReconcileReport) -> None:
        runs = {run.id: run for run in self.store.open_runs()}
        ids = list(runs)
        leased = leases_held(self.r, ids)
        queued = [rid for rid in ids if runs[rid].status == RunStatus.QUEUED]
        sent = sent_of(self.r, [rid for rid in queued if rid not in leased])
        abandoned = [rid for rid in ids if rid not in leased and rid not in sent]
        ripe, waited = self._suspect(abandoned)
        report.suspects = len(abandoned) - len(ripe)
        report.waited_s = waited
        resend: list[RunState] = []
        for rid in ripe:
            run = runs[rid]
            if run.status == RunStatus.QUEUED:
                resend.append(run)
            elif self._being_cancelled(run):
                if self.store.end_cancelled(rid, "cancelled (its worker had died)"):
                    report.cancelled.append(rid)
            elif self.store.requeue_run(rid, HANDED_BACK):
                report.adopted.append(rid)
                resend.append(run)
        report.requeued = self._send(resend)
        sent_ids = [rid for group in report.requeued for rid in group]
        settled = [*sent_ids, *report.cancelled]
        if settled:
            self.r.hdel(SUSPECTS_KEY, *map(str, settled))

    def _suspect(self, abandoned: list[int]) -> tuple[list[int], float]:
        """Record when each run first looked abandoned; those past the grace, and the
        longest wait among them. Runs no longer abandoned are forgotten."""
        now = self.clock()
        known = {int(k): float(v) for k, v in self.r.hgetall(SUSPECTS_KEY).items()}
        gone = [str(rid) for rid in known if rid not in abandoned]
        pipe = self.r.pipeline(transaction=False)
        if gone:
            pipe.hdel(SUSPECTS_KEY, *gone)
        new: dict[Any, Any] = {str(rid): repr(now) for rid in abandoned if rid not in known}
        if new:
            pipe.hset(SUSPECTS_KEY, mapping=new)
        pipe.execute()
        ripe = [rid for rid in abandoned if rid in known and now - known[rid] >= self.grace_s]
        waited = max((now - known[rid] for rid in ripe), default=0.0)
        return ripe, waited

    def _being_cancelled(self, run: RunState) -> bool:
        if self.r.exists(cancel_key(run.id)):
            return True
        if run.sweep_id is None:
            return False
        return self.store.get_sweep(run.sweep_id).status == SweepStatus.CANCELLED

    def _send(self, runs: list[RunState]) -> list[list[int]]:
        """One message per single run, one per (sweep, topology) for sweep cells."""
        sent: list[list[int]] = []
        by_sweep: dict[int, list[int]] = {}
        for run in runs:
            if run.sweep_id is None:
                enqueue_run(self.celery, run.id)
                sent.append([run.id])
            else:
                by_sweep.setdefault(run.sweep_id, []).append(run.id)
        for sweep_id, ids in sorted(by_sweep.items()):
            for group in self.store.group_by_topology(ids):
                enqueue_group(self.celery, group, sweep_id)
                sent.append(group)
        return sent


class ReconcilerThread:
    """Runs :meth:`Reconciler.run_once` every ``period_s`` (``Settings.reconcile_s``)
    until stopped; never dies.

    A broker outage or a database error skips one pass (logged once per outage).
    """

    def __init__(self, make: Callable[[], Reconciler], period_s: float) -> None:
        self.make = make
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgelab-reconciler", daemon=True)
        self.last: ReconcileReport | None = None

    def start(self) -> ReconcilerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        reconciler: Reconciler | None = None
        failing = False
        while not self._stop.is_set():
            try:
                reconciler = reconciler or self.make()
                self.last = report = reconciler.run_once()
                if report.acted():
                    log.warning("reconciler: %s", report.to_dict())
                failing = False
            except OUTAGE as exc:
                if not failing:
                    log.warning("reconciler: broker unreachable (%s); will try again", exc)
                failing = True
            except Exception:
                log.exception("reconciler pass failed; will try again")
            self._stop.wait(self.period_s)
