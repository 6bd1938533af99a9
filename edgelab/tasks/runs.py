"""Run tasks: ``runs.execute``, ``runs.execute_group`` and ``runs.recover``."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from celery.utils.log import get_task_logger
from flask import current_app

from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.service.extensions import current_settings
from edgelab.tasks import runner
from edgelab.tasks.celery_app import QueueOptions
from edgelab.tasks.events import redis_client
from edgelab.tasks.locks import lock_ttl
from edgelab.tasks.submit import enqueue_group, enqueue_recover, enqueue_run

log = get_task_logger(__name__)
RECOVER_ATTEMPTS = 5


def _redis() -> Any:
    return redis_client(current_app.extensions["edgelab_redis_url"])


@shared_task(name="runs.execute", bind=True)  # type: ignore[untyped-decorator]
def execute(self: Any, run_id: int) -> dict[str, Any]:
    """Execute one run; a run of a sweep goes through the group path (counts loads)."""
    settings = current_settings()
    with session_scope(settings.database_url) as s:
        run = s.get(Run, run_id)
        sweep_id = run.sweep_id if run is not None else None
    if sweep_id is not None:
        result: dict[str, Any] = execute_group.run([run_id], sweep_id)
        return result
    status = runner.execute_single(settings, _redis(), run_id)
    return {"run_id": run_id, "status": status}


@shared_task(name="runs.execute_group", bind=True)  # type: ignore[untyped-decorator]
def execute_group(self: Any, run_ids: list[int], sweep_id: int | None) -> dict[str, Any]:
    """Execute runs sharing one topology on one warm cluster (one model load)."""
    settings = current_settings()
    options = QueueOptions.from_env()
    soft, _hard = options.group_limits(len(run_ids))
    # Stop starting new runs a little before the soft limit fires, so the group
    # ends with clear per-run errors rather than an exception mid-generation.
    deadline = time.monotonic() + soft - min(60.0, soft * 0.05)
    result = runner.run_group(
        settings, _redis(), list(run_ids), sweep_id=sweep_id, deadline=deadline
    )
    return result.to_dict()


@shared_task(name="runs.recover", bind=True)  # type: ignore[untyped-decorator]
def recover(self: Any, attempt: int = 0) -> dict[str, Any]:
    """Re-queue runs whose worker died (``starting``/``running`` without a lease).

    Sent when a worker starts. A lease of a just-killed worker lives on for up to
    the lock TTL, so runs still leased are checked again a bit later.
    """
    settings = current_settings()
    r = _redis()
    orphans, held = runner.find_orphans(settings, r)
    options = QueueOptions.from_env()
    overdue = runner.fail_overdue(settings, orphans, options.run_time_limit + options.cleanup_grace)
    orphans = [rid for rid in orphans if rid not in overdue]
    celery = current_app.extensions["celery"]
    queued: list[list[int]] = []
    for group, sweep_id in runner.recovery_groups(settings, orphans):
        if sweep_id is None:
            enqueue_run(celery, group[0])
        else:
            enqueue_group(celery, group, sweep_id)
        queued.append(group)
    if held and attempt < RECOVER_ATTEMPTS:
        enqueue_recover(celery, countdown=lock_ttl() + 1, attempt=attempt + 1)
    if queued:
        log.warning("re-queued runs left by a dead worker: %s", queued)
    if overdue:
        log.warning("failed runs that outlived their time limit: %s", overdue)
    return {"requeued": queued, "still_leased": held, "failed_overdue": overdue}
