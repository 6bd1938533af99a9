"""Worker process hygiene: fresh DB connections after fork, orphan recovery at start,
and removal of Docker leftovers and cluster work dirs nobody needs any more."""

from __future__ import annotations

import contextlib
from typing import Any

from celery.signals import task_postrun, worker_process_init, worker_ready

from edgelab.models.db import engine_for


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _dispose_engine(**_kwargs: Any) -> None:
    """A forked pool process must not reuse the parent's pooled DB connections."""
    from celery import current_app

    url = current_app.conf.get("edgelab_database_url")
    if url:
        engine_for(url).dispose(close=False)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _recover_orphans(sender: Any = None, **_kwargs: Any) -> None:
    """Runs left in starting/running by a dead worker are queued again right away,
    rather than after the broker's visibility timeout."""
    from edgelab.tasks.submit import enqueue_recover

    if sender is not None:
        enqueue_recover(sender.app)


@worker_process_init.connect  # type: ignore[untyped-decorator]
@task_postrun.connect  # type: ignore[untyped-decorator]
def _reap_docker_leftovers(**_kwargs: Any) -> None:
    """Containers and networks labelled by a process that no longer exists (a worker
    killed with SIGKILL cannot clean up after itself) are removed. Without a Docker
    engine this is a no-op."""
    from edgelab.cluster.docker import reap_orphans

    reap_orphans()


@worker_process_init.connect  # type: ignore[untyped-decorator]
@task_postrun.connect  # type: ignore[untyped-decorator]
def _prune_work_dirs(**_kwargs: Any) -> None:
    """Cluster work dirs of dead processes and failed runs past their keep time or
    size are removed (see :mod:`edgelab.cluster.workdirs`); a worker that is idle
    for days still did it at its start and after its last task."""
    from edgelab.cluster import workdirs
    from edgelab.settings import Settings, SettingsError

    # Tidying up must never fail a worker or a task.
    with contextlib.suppress(SettingsError, OSError):
        workdirs.prune(Settings.from_env())
