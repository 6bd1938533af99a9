"""What a user can do to runs and sweeps: submit, cancel, re-run, resume.

One implementation, called by the JSON API, the web pages and the CLI alike, so
the three cannot drift apart. Each action is the store's state change plus what the
queue must hear about it:

* **The broker is checked first.** Work accepted while no broker answers would sit
  in the database with nobody told: the action refuses with ``NoBroker`` (none
  configured) or ``BrokerUnreachable`` (configured, not answering) - both 503 -
  before anything is written.
* **A failed send is compensated.** If the broker goes away between the check and
  the send, the runs whose message could not be sent are failed with
  "could not be queued: ..." and the action raises ``BrokerUnreachable`` naming
  them, so nothing stays ``queued`` silently. (The reconciler would re-send such a
  run later, but a 503 must mean "this did not happen", not "maybe later".)
* **Finished work is final.** Cancelling a finished run or sweep raises
  ``InvalidTransition`` (409); a succeeded sweep stays succeeded.

Input is validated by the callers (``parse_config``, ``parse_spec``): actions take
configurations and cells that are already known to be good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from edgelab.store.errors import StoreError
from edgelab.store.store import CancelResult, ResumeResult, RunState, Store, SweepState

if TYPE_CHECKING:
    from edgelab.catalog import Catalog
    from edgelab.runs.config import RunConfig
    from edgelab.settings import Settings
    from edgelab.sweeps.spec import Cell, SweepSpec

NO_BROKER = "no broker configured: set EDGELAB_REDIS_URL, or start everything with `edgelab up`"


class BrokerError(StoreError):
    """Work cannot be queued (or a running run told to stop): answer 503."""

    http_status = 503

    def __init__(self, message: str, ids: list[int] | None = None) -> None:
        super().__init__(message)
        self.ids = ids or []


class NoBroker(BrokerError):
    def __init__(self) -> None:
        super().__init__(NO_BROKER)


class BrokerUnreachable(BrokerError):
    pass


class WorkQueue:
    """The broker as the actions see it: reachable or not, messages, cancel flags."""

    def __init__(self, redis_url: str, celery: Any) -> None:
        self.redis_url = redis_url
        self.celery = celery

    def check(self) -> redis.Redis:
        """The broker's Redis if it answers now; ``NoBroker``/``BrokerUnreachable`` if not."""
        if not self.redis_url:
            raise NoBroker()
        from edgelab.tasks.events import redis_client

        r = redis_client(self.redis_url)
        try:
            r.ping()
        except redis.RedisError as exc:
            raise BrokerUnreachable(f"broker unreachable: {exc}") from exc
        return r

    def send_run(self, run_id: int) -> None:
        from edgelab.tasks.submit import enqueue_run

        enqueue_run(self.celery, run_id)

    def send_group(self, run_ids: list[int], sweep_id: int | None) -> None:
        from edgelab.tasks.submit import enqueue_group

        enqueue_group(self.celery, run_ids, sweep_id)

    def request_cancel(self, run_ids: list[int]) -> None:
        from edgelab.tasks.events import request_cancel

        try:
            request_cancel(self.check(), run_ids)
        except redis.RedisError as exc:
            raise BrokerUnreachable(f"broker unreachable: {exc}") from exc


@dataclass(frozen=True)
class SweepCancel:
    sweep_id: int
    stopping: list[int]  # runs executing now, told to stop


class Actions:
    """The user's actions on ``store``, with ``queue`` told what it must know."""

    def __init__(self, store: Store, queue: WorkQueue) -> None:
        self.store = store
        self.queue = queue

    # --- runs ---------------------------------------------------------------------------

    def submit_run(self, config: RunConfig) -> RunState:
        """A new queued run, with its message on the queue."""
        self.queue.check()
        run = self.store.create_run(config)
        self._send_run(run.id)
        return self.store.get_run(run.id)

    def rerun(self, run_id: int) -> RunState:
        """A new run with the configuration of ``run_id`` (which stays as it was)."""
        config = self.store.run_config(run_id)  # RunNotFound before the broker check
        return self.submit_run(config)

    def cancel_run(self, run_id: int) -> CancelResult:
        """A queued run ends cancelled now; an executing one is told to stop (flag).

        ``RunNotFound``/``InvalidTransition`` (finished) from the store; for an
        executing run, ``BrokerError`` if the flag cannot be raised.
        """
        result = self.store.cancel_run(run_id)
        if result.stopping:
            self.queue.request_cancel([run_id])
        return result

    def _send_run(self, run_id: int) -> None:
        try:
            self.queue.send_run(run_id)
        except Exception as exc:  # the broker went away between the check and the send
            self.store.fail_runs([run_id], f"could not be queued: {exc}")
            raise BrokerUnreachable(
                f"broker unreachable: run {run_id} could not be queued ({exc})", [run_id]
            ) from exc

    # --- sweeps -------------------------------------------------------------------------

    def submit_sweep(self, spec: SweepSpec, cells: list[Cell]) -> SweepState:
        """A new sweep: one queued run per cell, one message per topology group."""
        self.queue.check()
        sweep = self.store.create_sweep(spec, cells)
        self._send_groups(sweep.id, self.store.queued_groups(sweep.id))
        return self.store.get_sweep(sweep.id)

    def cancel_sweep(self, sweep_id: int) -> SweepCancel:
        """Cancel the queued cells now and tell the executing ones to stop.

        ``SweepNotFound``/``InvalidTransition`` (finished sweep) from the store.
        """
        running = self.store.cancel_sweep(sweep_id)
        if running:
            self.queue.request_cancel(running)
        return SweepCancel(sweep_id, running)

    def resume_sweep(self, sweep_id: int, catalog: Catalog, settings: Settings) -> ResumeResult:
        """Queue again every cell without a succeeded run (``SpecError`` if the stored
        spec no longer validates, e.g. its model left the catalog)."""
        from edgelab.sweeps import control

        self.store.get_sweep(sweep_id)  # SweepNotFound before the broker check
        self.queue.check()
        result = control.resume(self.store, sweep_id, catalog, settings)
        if result.requeue:
            self._send_groups(sweep_id, self.store.group_by_topology(result.requeue))
        return result

    def _send_groups(self, sweep_id: int, groups: list[list[int]]) -> None:
        for i, group in enumerate(groups):
            try:
                self.queue.send_group(group, sweep_id)
            except Exception as exc:
                unsent = [rid for g in groups[i:] for rid in g]
                self.store.fail_runs(unsent, f"could not be queued: {exc}")
                raise BrokerUnreachable(
                    f"broker unreachable: {len(unsent)} run(s) of sweep {sweep_id} could not "
                    f"be queued ({exc}); resume the sweep once the broker is back",
                    unsent,
                ) from exc


def open_actions(settings: Settings, redis_url: str, celery: Any) -> Actions:
    """Actions over the database of ``settings`` and the broker at ``redis_url``."""
    return Actions(Store(settings.database_url), WorkQueue(redis_url, celery))


__all__ = [
    "NO_BROKER",
    "Actions",
    "BrokerError",
    "BrokerUnreachable",
    "NoBroker",
    "SweepCancel",
    "WorkQueue",
    "open_actions",
]
