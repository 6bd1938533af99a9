"""What the Celery tasks do, as plain functions (testable without Celery).

``run_group`` executes runs that share one topology on one warm cluster: the
model is loaded once, and only the latency profile changes between runs.
``execute_single`` is the one-run case, with the cluster started by the executor.

Both first *adopt* the runs of their message: take each run's lease (so no other
worker executes it at the same time, and the reconciler sees a live owner) and
remove the runs' sent markers (the message has arrived). Then they hold the host
lock (so no other experiment shares the CPU) while executing.

Faults, and what is left behind:

* The broker away for a while: every Redis call that could raise is retried with
  backoff (:func:`edgelab.tasks.locks.retrying`); the others (live events, cancel
  flags, lease renewal) are best effort. If the broker stays away past the retry
  budget before a run was claimed, the group gives up with its runs still queued
  and without lease or marker: the reconciler sends them again once it is back.
* The cluster not starting, whatever the exception (ClusterError naming a node,
  DockerAPIError, SoftTimeLimitExceeded...): every run of the group fails with
  the reason, so none is left ``starting`` or ``queued`` with its message gone.
* A node dying mid-group: the run fails naming it, the cluster is started again
  for the rest.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from edgelab.catalog import Catalog, ModelInfo
from edgelab.cluster import Cluster, ClusterError
from edgelab.runs.config import RunConfig
from edgelab.runs.executor import RunCancelled, cluster_for, execute_run, failure_text
from edgelab.settings import Settings
from edgelab.store import RunStatus
from edgelab.store.store import Store
from edgelab.tasks.events import RunPublisher, cancel_check
from edgelab.tasks.locks import (
    BrokerUnavailable,
    Heartbeat,
    RunLeases,
    host_lock,
    retrying,
)
from edgelab.tasks.submit import clear_sent

log = logging.getLogger(__name__)

#: Outcomes of a run id that this group did not execute.
ELSEWHERE = "executing elsewhere"
MISSING = "missing"
WAITING = "waiting for another experiment on this host"


@dataclass
class GroupResult:
    statuses: dict[int, str] = field(default_factory=dict)
    model_loads: int = 0
    error: str | None = None  # why the group gave up early (broker gone), if it did

    def to_dict(self) -> dict[str, object]:
        return {
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "model_loads": self.model_loads,
            "error": self.error,
        }


class _Group:
    """The runs of one message, the leases on them and what became of each."""

    def __init__(
        self,
        settings: Settings,
        r: redis.Redis,
        leases: RunLeases,
        *,
        sweep_id: int | None,
        catalog: Catalog,
        deadline: float | None,
    ) -> None:
        self.settings = settings
        self.r = r
        self.store = Store(settings.database_url)
        self.leases = leases
        self.sweep_id = sweep_id
        self.catalog = catalog
        self.deadline = deadline
        self.pending: list[int] = []
        self.result = GroupResult()

    def publisher(self, run_id: int) -> RunPublisher:
        return RunPublisher(self.r, run_id)

    def adopt(self, run_ids: list[int]) -> None:
        """Lease every run of the message that still needs executing; drop the markers."""
        on_retry = self._tell_first(run_ids)
        for rid in run_ids:
            status = self.store.run_status(rid)
            if status is None or status.terminal:
                self.result.statuses[rid] = status or MISSING
            elif self.leases.take(rid):
                self.pending.append(rid)
            else:
                self.result.statuses[rid] = ELSEWHERE
        retrying(
            lambda: clear_sent(self.r, run_ids),
            "clear sent markers",
            budget_s=self.settings.broker_retry_s,
            on_retry=on_retry,
        )

    def _tell_first(self, run_ids: list[int]) -> Callable[[str], None]:
        def tell(message: str) -> None:
            if run_ids:
                self.publisher(run_ids[0])({"type": "progress", "message": message})

        return tell

    def on_wait(self) -> None:
        if self.pending:
            self.publisher(self.pending[0])({"type": "progress", "message": WAITING})

    def done(self, rid: int, status: str) -> None:
        self.result.statuses[rid] = status
        if rid in self.pending:
            self.pending.remove(rid)
        self.leases.release(rid)

    def fail_rest(self, error: str, node_logs: dict[str, list[str]] | None = None) -> None:
        """Fail every run still pending with ``error`` (the one copy of "fail the rest")."""
        failed = set(self.store.fail_runs(list(self.pending), error, node_logs))
        for rid in list(self.pending):
            if rid in failed:
                self.publisher(rid)({"type": "status", "status": RunStatus.FAILED, "error": error})
            self.done(rid, RunStatus.FAILED if rid in failed else self._status(rid))

    def _status(self, rid: int) -> str:
        return self.store.run_status(rid) or MISSING

    # --- executing ------------------------------------------------------------------

    def execute(self, on_cluster_start: Callable[[], None] | None) -> None:
        """Run everything pending, starting a cluster again only if a node died."""
        while self.pending:
            lead = self.pending[0]
            config = self.store.run_config(lead)
            try:
                model = self.catalog.get(config.model)
            except Exception as exc:
                self.fail_rest(str(exc))
                return
            if not self.store.claim_run(lead):  # cancelled since it was adopted
                self.done(lead, self._status(lead))
                continue
            # The lead run shows it is starting (and the load progress) while the cluster
            # comes up, like a single run does.
            publish = self.publisher(lead)
            publish({"type": "status", "status": RunStatus.STARTING})
            self._start_and_run(lead, config, model, publish, on_cluster_start)

    def _start_and_run(
        self,
        lead: int,
        config: RunConfig,
        model: ModelInfo,
        publish: RunPublisher,
        on_cluster_start: Callable[[], None] | None,
    ) -> None:
        started = False
        try:
            with cluster_for(
                self.settings,
                config,
                model,
                lambda message: publish({"type": "progress", "message": message}),
                name=f"sweep{self.sweep_id}" if self.sweep_id else f"run{lead}",
                should_cancel=cancel_check(self.r, lead),
            ) as cluster:
                started = True
                self.result.model_loads += 1
                if self.sweep_id is not None:
                    self.store.count_model_load(self.sweep_id)
                if on_cluster_start is not None:
                    on_cluster_start()
                self._run_on(cluster, lead)
        except RunCancelled:
            if started:
                raise
            # The lead was cancelled while its cluster started: the start is torn
            # down; the rest of the group goes on (with the next lead).
            self.store.end_cancelled(lead, RunStatus.CANCELLED.value)
            publish({"type": "status", "status": RunStatus.CANCELLED, "error": RunStatus.CANCELLED})
            self.done(lead, RunStatus.CANCELLED)
        except ClusterError as exc:
            if started:
                raise
            # Every run of this topology would fail the same way: fail them all with
            # the node's story.
            self.fail_rest(failure_text(exc), exc.node_logs)
        except Exception as exc:
            if started:
                raise
            # Not a ClusterError (DockerAPIError, SoftTimeLimitExceeded, a bug): the
            # runs must still end, with the reason, not stay starting/queued.
            self.fail_rest(
                f"the cluster could not start: {type(exc).__name__}: {failure_text(exc)}"
            )
        except BaseException:
            if not started:  # interrupted (worker shutdown): the lead is not half-done
                self.fail_rest("interrupted while the cluster was starting")
            raise

    def _run_on(self, cluster: Cluster, lead: int) -> None:
        """Execute pending runs on the warm cluster until done or a node died."""
        claimed = lead
        while self.pending:
            rid = self.pending[0]
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.fail_rest("the sweep group ran out of its time budget before this run")
                return
            res = execute_run(
                self.settings,
                rid,
                cluster=cluster,
                sink=self.publisher(rid),
                should_cancel=cancel_check(self.r, rid),
                catalog=self.catalog,
                claimed=rid == claimed,
            )
            self.done(rid, res.status)
            if res.status == RunStatus.FAILED:
                try:
                    cluster.check_alive()
                    if cluster.broken is not None:  # e.g. hung, not dead: unusable all the same
                        raise cluster.broken
                except ClusterError:
                    # A node died: the rest of the group needs a fresh cluster.
                    log.warning("cluster lost a node during run %s; restarting it", rid)
                    return


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

    Cancelled runs are skipped (their claim fails). Past ``deadline`` (monotonic)
    the remaining runs fail with a clear error instead of running into the task's
    hard time limit.
    """
    with Heartbeat(settings.lock_ttl_s) as heartbeat:
        leases = RunLeases(r, heartbeat, retry_s=settings.broker_retry_s)
        group = _Group(
            settings,
            r,
            leases,
            sweep_id=sweep_id,
            catalog=catalog or Catalog(settings),
            deadline=deadline,
        )
        try:
            group.adopt(list(run_ids))
            if group.pending:
                with host_lock(
                    r,
                    heartbeat,
                    host=settings.host_id,
                    retry_s=settings.broker_retry_s,
                    on_wait=group.on_wait,
                ):
                    group.execute(on_cluster_start)
        except BrokerUnavailable as exc:
            # Nothing claimed yet (claims happen under the host lock, after every
            # Redis call that can fail): the runs stay queued, and the reconciler
            # sends them again when the broker is back.
            group.result.error = str(exc)
            log.error("group %s gave up: %s", run_ids, exc)
        finally:
            leases.release_all()
    return group.result


def execute_single(
    settings: Settings, r: redis.Redis, run_id: int, *, catalog: Catalog | None = None
) -> str:
    """Execute one run on its own cluster, under the host lock and the run's lease."""
    with Heartbeat(settings.lock_ttl_s) as heartbeat:
        leases = RunLeases(r, heartbeat, retry_s=settings.broker_retry_s)
        group = _Group(
            settings, r, leases, sweep_id=None, catalog=catalog or Catalog(settings), deadline=None
        )
        try:
            group.adopt([run_id])
            if not group.pending:
                return group.result.statuses.get(run_id, MISSING)
            with host_lock(
                r,
                heartbeat,
                host=settings.host_id,
                retry_s=settings.broker_retry_s,
                on_wait=group.on_wait,
            ):
                result = execute_run(
                    settings,
                    run_id,
                    sink=group.publisher(run_id),
                    should_cancel=cancel_check(r, run_id),
                    catalog=group.catalog,
                )
                return str(result.status)
        except BrokerUnavailable as exc:
            log.error("run %s left queued: %s", run_id, exc)
            return RunStatus.QUEUED
        finally:
            leases.release_all()


@contextlib.contextmanager
def held_like_a_worker(
    settings: Settings, r: redis.Redis, run_id: int, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold ``run_id``'s lease and this host's experiment lock, as a worker would.

    ``edgelab run`` executes in its own process, not through the queue; holding the
    same locks keeps it from sharing the CPU with a worker's experiment, and keeps
    the reconciler from mistaking its run for one left by a dead worker.
    """
    with Heartbeat(settings.lock_ttl_s) as heartbeat:
        leases = RunLeases(r, heartbeat, retry_s=settings.broker_retry_s)
        try:
            leases.take(run_id)
            with host_lock(
                r,
                heartbeat,
                host=settings.host_id,
                retry_s=settings.broker_retry_s,
                on_wait=on_wait,
            ):
                yield
        finally:
            leases.release_all()
