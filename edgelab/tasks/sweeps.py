"""Sweep tasks: ``sweeps.launch`` turns a sweep's queued cells into group tasks.

Submitting a sweep sends its group messages directly now
(:func:`edgelab.store.actions.Actions.submit_sweep`); the task stays so that launch
messages queued by an older version still do their job.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from flask import current_app

from edgelab.service.extensions import current_settings
from edgelab.store.store import Store
from edgelab.tasks.submit import enqueue_group


def advance_search(
    database_url: str, celery: Any, sweep_id: int, catalog: Any, backend: str
) -> list[int]:
    """After a group of a break-even search finished: create and queue its next probes
    (nothing for a grid sweep)."""
    from edgelab.sweeps import search

    store = Store(database_url)
    new = search.advance(store, sweep_id, catalog, default_backend=backend)
    for group in store.group_by_topology(new):
        enqueue_group(celery, group, sweep_id)
    return new


def launch_sweep(database_url: str, celery: Any, sweep_id: int) -> list[list[int]]:
    """Queue one group task per topology of the sweep's queued cells."""
    store = Store(database_url)
    groups = store.queued_groups(sweep_id)
    for group in groups:
        enqueue_group(celery, group, sweep_id)
    store.refresh_sweep(sweep_id)
    return groups


@shared_task(name="sweeps.launch")  # type: ignore[untyped-decorator]
def launch(sweep_id: int) -> dict[str, Any]:
    groups = launch_sweep(
        current_settings().database_url, current_app.extensions["celery"], sweep_id
    )
    return {"sweep_id": sweep_id, "groups": groups}
