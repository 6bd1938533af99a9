"""Putting work on the queue, and remembering that it is there.

Every run id sent in a message gets a *sent marker* in the broker's Redis
(``edgelab:sent:run:<id>``) just before the message goes out; the worker that
receives the message takes the runs' leases and then removes the markers. So at
any moment a queued run is covered by a marker (its message waits in the broker) or
by a lease (a live worker has it). A queued run with neither lost its message - the
broker restarted without persistence, or the worker that held it died - and the
reconciler (:mod:`edgelab.tasks.reconcile`) sends it again. Markers live in the
same Redis as the messages on purpose: whatever loses the messages loses the
markers too.

Only :mod:`edgelab.store.actions` and the reconciler call these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import redis

from edgelab.tasks.celery_app import CONTROL_QUEUE, EXPERIMENT_QUEUE, QueueOptions
from edgelab.tasks.locks import PREFIX


def sent_key(run_id: int) -> str:
    return f"{PREFIX}:sent:run:{run_id}"


def _broker(celery: Any) -> redis.Redis:
    from edgelab.tasks.events import redis_client

    return redis_client(str(celery.conf.broker_url))


def mark_sent(r: redis.Redis, run_ids: Iterable[int], visibility_timeout_s: float) -> None:
    """Say that a message carrying ``run_ids`` is (about to be) on the queue.

    The marker outlives the broker's visibility timeout only a little: by then an
    unacknowledged message has been redelivered or the marker's run re-sent.
    """
    ttl = int(visibility_timeout_s) + 60
    pipe = r.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.set(sent_key(run_id), "1", ex=ttl)
    pipe.execute()


def clear_sent(r: redis.Redis, run_ids: Iterable[int]) -> None:
    ids = list(run_ids)
    if ids:
        r.delete(*(sent_key(i) for i in ids))


def sent_of(r: redis.Redis, run_ids: list[int]) -> set[int]:
    """The subset of ``run_ids`` that have a sent marker (one round trip)."""
    if not run_ids:
        return set()
    pipe = r.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.exists(sent_key(run_id))
    return {rid for rid, found in zip(run_ids, pipe.execute(), strict=True) if found}


def _send(celery: Any, name: str, args: list[Any], run_ids: list[int], runs: int) -> str:
    options = QueueOptions.of(celery)
    soft, hard = options.group_limits(runs)
    r = _broker(celery)
    mark_sent(r, run_ids, options.visibility_timeout)
    try:
        result = celery.send_task(
            name, args=args, queue=EXPERIMENT_QUEUE, soft_time_limit=soft, time_limit=hard
        )
    except Exception:
        with contextlib.suppress(redis.RedisError):
            clear_sent(r, run_ids)
        raise
    return str(result.id)


def enqueue_run(celery: Any, run_id: int) -> str:
    """One message for one run (not part of a sweep)."""
    return _send(celery, "runs.execute", [run_id], [run_id], 1)


def enqueue_group(celery: Any, run_ids: list[int], sweep_id: int | None) -> str:
    """One message for runs sharing a topology; its time budget grows with the group."""
    return _send(celery, "runs.execute_group", [run_ids, sweep_id], list(run_ids), len(run_ids))


def enqueue_launch(celery: Any, sweep_id: int) -> str:
    """Kept for messages queued by older versions; actions send groups directly now."""
    result = celery.send_task("sweeps.launch", args=[sweep_id], queue=CONTROL_QUEUE)
    return str(result.id)


def enqueue_recover(celery: Any, countdown: float = 0.0, attempt: int = 0) -> str:
    result = celery.send_task(
        "runs.recover", args=[attempt], queue=EXPERIMENT_QUEUE, countdown=countdown
    )
    return str(result.id)
