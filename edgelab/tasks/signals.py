"""Worker process hygiene: fresh DB connections after fork, the reconciler timer in
the main process, and removal of Docker leftovers and cluster work dirs nobody needs
any more."""

from __future__ import annotations

import contextlib
from typing import Any

from celery.signals import task_postrun, worker_process_init, worker_ready, worker_shutdown

from edgelab.models.db import engine_for

_reconciler: Any = None


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _dispose_engine(**_kwargs: Any) -> None:
    """A forked pool process must not reuse the parent's pooled DB connections."""
    from celery import current_app

    url = current_app.conf.get("edgelab_database_url")
    if url:
        engine_for(url).dispose(close=False)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reconciler(sender: Any = None, **_kwargs: Any) -> None:
    """The reconciler timer (see :mod:`edgelab.tasks.reconcile` for why it lives in
    every worker): its first pass runs now, so runs left by a dead worker or lost by
    the broker are sent again without waiting for the broker's visibility timeout."""
    global _reconciler
    if sender is None or _reconciler is not None:
        return
    from edgelab.tasks.events import redis_client
    from edgelab.tasks.reconcile import Reconciler, ReconcilerThread

    app = sender.app
    url = app.conf.get("edgelab_database_url")
    ttl = app.conf.get("edgelab_lock_ttl_s")  # Settings.lock_ttl_s, put there by create_app
    period = app.conf.get("edgelab_reconcile_s")  # Settings.reconcile_s
    broker = str(app.conf.broker_url)
    if not url or ttl is None or period is None or not broker.startswith("redis"):
        return
    _reconciler = ReconcilerThread(
        lambda: Reconciler(url, redis_client(broker), app, lock_ttl_s=float(ttl)),
        period_s=float(period),
    ).start()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_reconciler(**_kwargs: Any) -> None:
    global _reconciler
    if _reconciler is not None:
        _reconciler.stop()
        _reconciler = None


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
def _reap_local_leftovers(**_kwargs: Any) -> None:
    """cgroups and network namespaces of local nodes whose owner died (a worker killed
    with SIGKILL) are removed here too, not only at the next local start that needs
    them. Not root: a no-op."""
    from edgelab.topology.cgroups import reap_groups
    from edgelab.topology.netns import reap_namespaces

    with contextlib.suppress(OSError):
        reap_groups()
        reap_namespaces()


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
