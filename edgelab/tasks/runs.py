"""Run tasks: ``runs.execute``, ``runs.execute_group`` and ``runs.recover``."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from celery.utils.log import get_task_logger
from flask import current_app

from edgelab.service.extensions import current_settings
from edgelab.store.store import Store
from edgelab.tasks import runner
from edgelab.tasks.celery_app import QueueOptions
from edgelab.tasks.events import redis_client

log = get_task_logger(__name__)


def _redis() -> Any:
    return redis_client(current_app.extensions["edgelab_redis_url"])


@shared_task(name="runs.execute", bind=True)  # type: ignore[untyped-decorator]
def execute(self: Any, run_id: int) -> dict[str, Any]:
    """Execute one run; a run of a sweep goes through the group path (counts loads)."""
    settings = current_settings()
    try:
        sweep_id = Store(settings.database_url).get_run(run_id).sweep_id
    except LookupError:
        return {"run_id": run_id, "status": runner.MISSING}
    if sweep_id is not None:
        result: dict[str, Any] = execute_group.run([run_id], sweep_id)
        return result
    status = runner.execute_single(settings, _redis(), run_id)
    return {"run_id": run_id, "status": status}


@shared_task(name="runs.execute_group", bind=True)  # type: ignore[untyped-decorator]
def execute_group(self: Any, run_ids: list[int], sweep_id: int | None) -> dict[str, Any]:
    """Execute runs sharing one topology on one warm cluster (one model load)."""
    settings = current_settings()
    options = QueueOptions.from_settings(settings)
    soft, _hard = options.group_limits(len(run_ids))
    # Stop starting new runs a little before the soft limit fires, so the group
    # ends with clear per-run errors rather than an exception mid-generation.
    deadline = time.monotonic() + soft - min(60.0, soft * 0.05)
    result = runner.run_group(
        settings, _redis(), list(run_ids), sweep_id=sweep_id, deadline=deadline
    )
    if sweep_id is not None:
        from edgelab.catalog import Catalog
        from edgelab.tasks.sweeps import advance_search

        # A break-even search creates its next cells as results arrive.
        advance_search(
            settings.database_url,
            current_app.extensions["celery"],
            sweep_id,
            Catalog(settings),
            settings.backend,
        )
    return result.to_dict()


@shared_task(name="runs.recover", bind=True)  # type: ignore[untyped-decorator]
def recover(self: Any, attempt: int = 0) -> dict[str, Any]:
    """One reconciler pass (see :mod:`edgelab.tasks.reconcile`).

    Workers run the reconciler on a timer of their own; this task stays for
    messages sent by older versions and for operators who want a pass now.
    """
    from edgelab.tasks.reconcile import Reconciler

    settings = current_settings()
    report = Reconciler(
        settings.database_url,
        _redis(),
        current_app.extensions["celery"],
        lock_ttl_s=settings.lock_ttl_s,
    ).run_once()
    return report.to_dict()
