"""Queue wiring that needs no services: Celery settings, worker/serve commands, bind checks."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from edgelab.embedded import resolve_redis_url, url_file
from edgelab.service import create_app
from edgelab.service.cli import check_bind, serve_argv
from edgelab.settings import Settings
from edgelab.tasks.celery_app import QueueOptions, celery_config
from edgelab.tasks.cli import worker_argv


def test_celery_settings_make_delivery_safe_and_sequential() -> None:
    conf = celery_config("redis://127.0.0.1:6379/9", QueueOptions(run_time_limit=100))
    assert conf["broker_url"] == conf["result_backend"] == "redis://127.0.0.1:6379/9"
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_soft_time_limit"] == 100
    assert conf["task_time_limit"] > conf["task_soft_time_limit"]
    assert conf["task_routes"]["runs.*"]["queue"] == "experiments"


def test_group_time_budget_grows_with_the_group() -> None:
    options = QueueOptions(run_time_limit=60, cleanup_grace=10)
    assert options.group_limits(1) == (60, 70)
    assert options.group_limits(4) == (240, 250)


def test_queue_options_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"EDGELAB_DATA_DIR": str(tmp_path), "EDGELAB_RUN_TIME_LIMIT": "120"}
    )
    options = QueueOptions.from_settings(settings)
    assert options.run_time_limit == 120
    assert options.visibility_timeout == QueueOptions.visibility_timeout == 3600
    # Code that has only the Celery app (the reconciler, the store's actions) reads
    # the same budgets back from the configuration create_app built from the settings.
    celery = create_app(settings.with_overrides(cleanup_grace_s=15.0)).extensions["celery"]
    assert QueueOptions.of(celery) == QueueOptions(120, 15, 3600)


def test_tasks_are_registered_under_stable_names(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    names = set(app.extensions["celery"].tasks)
    assert {"runs.execute", "runs.execute_group", "runs.recover", "sweeps.launch"} <= names


def test_worker_runs_one_experiment_at_a_time_on_both_queues(tmp_path: Path) -> None:
    argv = worker_argv(Settings(data_dir=tmp_path), "INFO", name="w@h")
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("--queues") + 1] == "experiments,control"
    assert argv[argv.index("-A") + 1] == "edgelab.tasks.make_celery"


def test_serve_uses_gunicorn_gevent_workers_on_the_bind(tmp_path: Path) -> None:
    argv = serve_argv(Settings(data_dir=tmp_path, bind="127.0.0.1:9000"))
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:9000"
    # Event streams must not hold threads of a fixed pool (issue 13).
    assert argv[argv.index("--worker-class") + 1] == "gevent"
    assert argv[-1] == "edgelab.service.wsgi:app"


@pytest.mark.parametrize(
    ("bind", "token", "ok"),
    [
        ("127.0.0.1:8080", "", True),
        ("localhost:8080", "", True),
        ("[::1]:8080", "", True),
        ("0.0.0.0:8080", "", False),
        ("192.0.2.10:8080", "", False),
        ("0.0.0.0:8080", "secret", True),
    ],
)
def test_non_loopback_bind_needs_a_token(tmp_path: Path, bind: str, token: str, ok: bool) -> None:
    settings = Settings(data_dir=tmp_path, bind=bind, api_token=token)
    if ok:
        check_bind(settings)
    else:
        with pytest.raises(click.ClickException, match="EDGELAB_API_TOKEN"):
            check_bind(settings)


def test_redis_url_prefers_the_environment_and_ignores_a_stale_url_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert resolve_redis_url(settings) == ""
    url_file(settings).write_text("redis://127.0.0.1:1/0\n")  # nothing answers on port 1
    assert resolve_redis_url(settings) == ""
    explicit = settings.with_overrides(redis_url="redis://example.invalid:6379/0")
    assert resolve_redis_url(explicit) == "redis://example.invalid:6379/0"
