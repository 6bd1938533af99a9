"""The reconciler and the outage-tolerant locks against a real Redis and a real Celery app.

Messages are really sent to the broker (the test's Redis database) and read back
from the ``experiments`` list, so "re-sent" means a message a worker would receive.
No worker runs here: the chaos tests (tests/integration/chaos/) do that end to end.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from edgelab.models import Run, Sweep
from edgelab.models.base import utcnow
from edgelab.models.db import session_scope, upgrade
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.store import RunStatus, SweepStatus
from edgelab.store.store import Store
from edgelab.tasks.celery_app import EXPERIMENT_QUEUE
from edgelab.tasks.locks import (
    BrokerUnavailable,
    Heartbeat,
    RunLeases,
    host_lock_key,
    retrying,
    run_lease_key,
)
from edgelab.tasks.reconcile import HANDED_BACK, Reconciler
from edgelab.tasks.submit import enqueue_run, sent_key

pytestmark = pytest.mark.integration

CONFIG = RunConfig(
    prompt="x", model="tiny", nodes=1, threads=1, latency=LatencyProfile.parse("0ms"), max_tokens=4
)


def _messages(r: redis.Redis) -> list[tuple[str, list[object]]]:
    """(task name, args) of every message waiting on the experiments queue."""
    out = []
    for raw in r.lrange(EXPERIMENT_QUEUE, 0, -1):
        msg = json.loads(raw)
        args = json.loads(base64.b64decode(msg["body"]))[0]
        out.append((msg["headers"]["task"], args))
    return out


def _force(store: Store, run_id: int, status: RunStatus, **values: object) -> None:
    with session_scope(store.database_url) as s:
        s.execute(update(Run).where(Run.id == run_id).values(status=status, **values))


def _sweep(store: Store, status: SweepStatus, n: int) -> list[int]:
    with session_scope(store.database_url) as s:
        sweep = Sweep(name="s", spec={}, status=status, total_cells=n)
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    return [store.create_run(CONFIG, sweep_id).id for _ in range(n)]


def test_reconciler_resends_lost_messages_adopts_dead_workers_runs_and_fails_overdue(
    tmp_path: Path, queue_redis_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=queue_redis_url)
    upgrade(settings.database_url)
    app = create_app(settings, {"TESTING": True})
    celery = app.extensions["celery"]
    r = redis.Redis.from_url(queue_redis_url)
    store = Store(settings.database_url)

    sent = store.create_run(CONFIG).id  # its message waits in the broker
    enqueue_run(celery, sent)
    lost = store.create_run(CONFIG).id  # queued, but its message is gone
    live = store.create_run(CONFIG).id  # a live worker executes it (holds the lease)
    _force(store, live, RunStatus.RUNNING, started_at=utcnow())
    dead = store.create_run(CONFIG).id  # its worker died: running, no lease
    _force(store, dead, RunStatus.RUNNING, started_at=utcnow())
    overdue = store.create_run(CONFIG).id
    _force(store, overdue, RunStatus.RUNNING, started_at=utcnow() - timedelta(hours=3))
    cells = _sweep(store, SweepStatus.QUEUED, 2)  # a sweep whose one group message was lost
    (stopping,) = _sweep(store, SweepStatus.CANCELLED, 1)  # being cancelled, worker died
    _force(store, stopping, RunStatus.RUNNING, started_at=utcnow())

    reconciler = Reconciler(
        settings.database_url, r, celery, lock_ttl_s=settings.lock_ttl_s, grace_s=1.0, limit_s=3600
    )
    with Heartbeat(30) as heartbeat:
        assert RunLeases(r, heartbeat, retry_s=5).take(live)
        first = reconciler.run_once()
        # Only the overdue run is acted on at once; the rest must look abandoned for
        # the grace first (a live worker's heartbeat may be about to put its lease back).
        assert first.failed_overdue == [overdue]
        assert (first.requeued, first.adopted, first.cancelled) == ([], [], [])
        assert first.suspects == 5  # lost, dead, the two cells, stopping
        assert store.get_run(overdue).status == RunStatus.FAILED
        assert "time limit of 3600 s" in (store.get_run(overdue).error or "")

        time.sleep(1.2)
        second = reconciler.run_once()
        assert sorted(second.requeued) == sorted([[lost], [dead], cells])
        assert second.adopted == [dead]
        assert second.cancelled == [stopping]
        assert second.waited_s >= 1.0
        assert store.get_run(dead).status == RunStatus.QUEUED
        assert store.get_run(dead).error == HANDED_BACK
        assert store.get_run(stopping).status == RunStatus.CANCELLED
        assert store.get_run(live).status == RunStatus.RUNNING  # its worker is alive
        tasks = _messages(r)
        assert tasks.count(("runs.execute", [sent])) == 1  # not sent twice
        assert ("runs.execute", [lost]) in tasks
        assert ("runs.execute", [dead]) in tasks
        assert ("runs.execute_group", [cells, store.get_run(cells[0]).sweep_id]) in tasks
        assert all(r.exists(sent_key(i)) for i in (sent, lost, dead, *cells))

        time.sleep(1.2)
        third = reconciler.run_once()
        assert not third.acted()  # everything is covered by a message or a lease now
        assert third.suspects == 0
        assert len(_messages(r)) == len(tasks)


def test_one_reconciler_acts_at_a_time(tmp_path: Path, queue_redis_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=queue_redis_url)
    upgrade(settings.database_url)
    celery = create_app(settings, {"TESTING": True}).extensions["celery"]
    r = redis.Redis.from_url(queue_redis_url)
    lock = r.lock("edgelab:reconcile:lock", timeout=10)
    assert lock.acquire(blocking=False)  # another worker's reconciler is busy
    try:
        report = Reconciler(
            settings.database_url, r, celery, lock_ttl_s=settings.lock_ttl_s
        ).run_once()
    finally:
        lock.release()
    assert report.skipped


def test_heartbeat_puts_back_a_lease_that_an_emptied_broker_lost(queue_redis_url: str) -> None:
    r = redis.Redis.from_url(queue_redis_url)
    with Heartbeat(30) as heartbeat:
        leases = RunLeases(r, heartbeat, retry_s=5)
        assert leases.take(7)
        token = r.get(run_lease_key(7))
        r.delete(run_lease_key(7))  # what a restart without persistence does
        assert heartbeat.beat()
        assert r.get(run_lease_key(7)) == token  # back, under our own token
        assert 0 < r.ttl(run_lease_key(7)) <= 30

        r.delete(run_lease_key(7))
        other = r.lock(run_lease_key(7), timeout=30)
        assert other.acquire(blocking=False)  # somebody else took it meanwhile
        heartbeat.beat()
        assert r.get(run_lease_key(7)) != token  # it stays theirs
        leases.release_all()
        assert r.exists(run_lease_key(7))  # releasing ours did not free theirs
        other.release()


def test_retrying_gives_up_after_its_budget_with_broker_unavailable() -> None:
    # Port 1 on loopback: nothing listens, every attempt is refused (a real outage).
    r = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    heard: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        retrying(r.ping, "ping the broker", budget_s=1.5, on_retry=heard.append)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 5.0
    assert "stayed unreachable for 2 s while trying to ping the broker" in str(info.value)
    assert len(heard) == 1  # one progress line per outage, not one per attempt


def _cli_env(tmp_path: Path, models_dir: Path, redis_url: str, host: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env.update(
        EDGELAB_DATA_DIR=str(tmp_path / "cli"),
        EDGELAB_MODELS_DIR=str(models_dir),
        EDGELAB_REDIS_URL=redis_url,
        EDGELAB_HOST_ID=host,
    )
    return env


RUN_ARGV = ["-m", "edgelab", "run", "--prompt", "Hi", "--nodes", "1", "--latency", "0ms"]


def test_edgelab_run_waits_for_the_host_lock_like_a_worker(
    tmp_path: Path, models_dir: Path, smollm2: object, queue_redis_url: str
) -> None:
    host = f"cli-lock-{os.getpid()}"
    r = redis.Redis.from_url(queue_redis_url)
    held = r.lock(host_lock_key(host), timeout=60, thread_local=False)
    assert held.acquire(blocking=False)  # a worker's experiment on this host
    err = tmp_path / "run.err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *RUN_ARGV, "--max-tokens", "2"],
            env=_cli_env(tmp_path, models_dir, queue_redis_url, host),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while b"waiting for another experiment on this host" not in err.read_bytes():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        time.sleep(2)
        assert proc.poll() is None  # still waiting: it does not share the CPU
        assert b"running]" not in err.read_bytes()
        held.release()
        assert proc.wait(timeout=120) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b": succeeded]" in err.read_bytes()
    assert not r.exists(host_lock_key(host))  # released when it finished


def test_edgelab_run_refuses_when_its_broker_does_not_answer(
    tmp_path: Path, models_dir: Path, smollm2: object
) -> None:
    # Port 1 on loopback: nothing listens (a configured broker that is down).
    env = _cli_env(tmp_path, models_dir, "redis://127.0.0.1:1/0", "cli-down")
    done = subprocess.run(
        [sys.executable, *RUN_ARGV, "--max-tokens", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "broker unreachable at redis://127.0.0.1:1/0" in done.stderr
    assert "same host lock as workers" in done.stderr
    assert not (tmp_path / "cli" / "edgelab.db").exists()  # refused before anything was written
