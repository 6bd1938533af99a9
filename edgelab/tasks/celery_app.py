"""Celery wired to the Flask app factory: broker and results on Redis, one experiment at a time.

Configuration decisions (all in :func:`celery_config`, lowercase Celery settings):

* ``task_acks_late=True``: a message is acknowledged only after its task returns.
  An experiment whose worker dies mid-run (SIGKILL, OOM, power loss) is then
  redelivered instead of silently lost. That makes delivery at-least-once, so
  execution must be idempotent: the executor claims a run with a guarded status
  transition (a finished run is never executed again) and a Redis lease keeps two
  live workers from executing the same run at once.
* ``task_reject_on_worker_lost=True``: if the pool process running a task dies,
  the message is re-queued at once rather than acknowledged as failed.
* ``worker_prefetch_multiplier=1``: a worker reserves only the experiment it runs;
  the next one stays on the broker for whichever worker is free first.
* Experiments go to the ``experiments`` queue, which ``edgelab worker`` consumes with
  concurrency 1; a Redis lock per host guards against a second worker on one host.
* ``visibility_timeout``: how long an unacknowledged message of a worker that died
  stays invisible before Redis redelivers it. Recovery does not wait for it: the
  reconciler in every worker (:mod:`edgelab.tasks.reconcile`) re-sends runs whose
  worker died or whose message the broker lost within about a lock TTL.
* ``worker_cancel_long_running_tasks_on_connection_loss=False``: a broker restart
  must not kill an experiment that is generating fine; the group task rides out the
  outage (:mod:`edgelab.tasks.locks`) and its runs are protected by their leases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from flask import Flask

from edgelab.settings import Settings

EXPERIMENT_QUEUE = "experiments"
CONTROL_QUEUE = "control"


@dataclass(frozen=True)
class QueueOptions:
    """Time budgets of the queue (seconds): ``Settings.run_time_limit_s`` and its peers."""

    #: Soft limit of one run, cluster start included.
    run_time_limit: float = Settings.run_time_limit_s
    #: Extra hard-limit margin after the soft limit, for cleanup in ``finally``.
    cleanup_grace: float = Settings.cleanup_grace_s
    visibility_timeout: float = Settings.visibility_timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueOptions:
        return cls(
            run_time_limit=settings.run_time_limit_s,
            cleanup_grace=settings.cleanup_grace_s,
            visibility_timeout=settings.visibility_timeout_s,
        )

    @classmethod
    def of(cls, celery: Celery) -> QueueOptions:
        """The budgets ``celery`` was configured with (:func:`celery_config`).

        For code that has the Celery app but not the settings (sending a message
        from the reconciler or the store's actions): the values are the settings'
        all the same, since ``create_app`` built the configuration from them.
        """
        conf = celery.conf
        soft = float(conf.task_soft_time_limit)
        return cls(
            run_time_limit=soft,
            cleanup_grace=float(conf.task_time_limit) - soft,
            visibility_timeout=float(conf.broker_transport_options["visibility_timeout"]),
        )

    def group_limits(self, runs: int) -> tuple[float, float]:
        """(soft, hard) limits for a group: one cluster start plus every run."""
        soft = self.run_time_limit * max(1, runs)
        return soft, soft + self.cleanup_grace


def celery_config(redis_url: str, options: QueueOptions | None = None) -> dict[str, Any]:
    options = options or QueueOptions()
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": options.visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": options.visibility_timeout},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 50,
        "task_default_queue": EXPERIMENT_QUEUE,
        "task_routes": {
            "runs.*": {"queue": EXPERIMENT_QUEUE},
            "sweeps.*": {"queue": CONTROL_QUEUE},
        },
        "task_soft_time_limit": options.run_time_limit,
        "task_time_limit": options.run_time_limit + options.cleanup_grace,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for ``app``; every task runs inside an app context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    # Import the task modules so their shared tasks bind to this app.
    import edgelab.tasks.runs
    import edgelab.tasks.signals
    import edgelab.tasks.sweeps  # noqa: F401

    app.extensions["celery"] = celery_app
    return celery_app
