"""Putting work on the queue, the same way from the API and from the CLI."""

from __future__ import annotations

from typing import Any

from edgelab.tasks.celery_app import CONTROL_QUEUE, EXPERIMENT_QUEUE, QueueOptions


def enqueue_run(celery: Any, run_id: int) -> str:
    options = QueueOptions.from_env()
    soft, hard = options.group_limits(1)
    result = celery.send_task(
        "runs.execute",
        args=[run_id],
        queue=EXPERIMENT_QUEUE,
        soft_time_limit=soft,
        time_limit=hard,
    )
    return str(result.id)


def enqueue_group(celery: Any, run_ids: list[int], sweep_id: int | None) -> str:
    """One message for runs sharing a topology; its time budget grows with the group."""
    options = QueueOptions.from_env()
    soft, hard = options.group_limits(len(run_ids))
    result = celery.send_task(
        "runs.execute_group",
        args=[run_ids, sweep_id],
        queue=EXPERIMENT_QUEUE,
        soft_time_limit=soft,
        time_limit=hard,
    )
    return str(result.id)


def enqueue_launch(celery: Any, sweep_id: int) -> str:
    result = celery.send_task("sweeps.launch", args=[sweep_id], queue=CONTROL_QUEUE)
    return str(result.id)


def enqueue_recover(celery: Any, countdown: float = 0.0, attempt: int = 0) -> str:
    result = celery.send_task(
        "runs.recover", args=[attempt], queue=EXPERIMENT_QUEUE, countdown=countdown
    )
    return str(result.id)
