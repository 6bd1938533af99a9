"""Host lock and run leases on the real Redis: experiments never overlap on one host."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import redis
from sqlalchemy import select

from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.tasks.locks import Heartbeat, RunLeases, host_lock, lease_held

pytestmark = pytest.mark.integration

HOST = f"locks-test-{os.getpid()}"  # Settings.host_id: both holders act as one host


def test_second_holder_of_the_host_lock_waits(queue_redis_url: str) -> None:
    r = redis.Redis.from_url(queue_redis_url)
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with Heartbeat(3) as hb, host_lock(r, hb, host=HOST, retry_s=5):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    waited: list[bool] = []
    second = threading.Thread(
        target=lambda: _second(r, order, waited),
    )
    second.start()
    time.sleep(1.5)
    assert order == ["first in"]  # the second is still waiting
    release.set()
    t.join(10)
    second.join(10)
    assert order == ["first in", "first out", "second in"]
    assert waited == [True]


def _second(r: redis.Redis, order: list[str], waited: list[bool]) -> None:
    with (
        Heartbeat(3) as hb,
        host_lock(r, hb, host=HOST, retry_s=5, on_wait=lambda: waited.append(True), poll_s=0.1),
    ):
        order.append("second in")


def test_run_lease_is_exclusive_renewed_and_lapses_without_heartbeat(queue_redis_url: str) -> None:
    r = redis.Redis.from_url(queue_redis_url)
    with Heartbeat(2) as hb:
        leases = RunLeases(r, hb, retry_s=5)
        assert leases.take(7)
        with Heartbeat(2) as other_hb:
            other = RunLeases(r, other_hb, retry_s=5)
            assert not other.take(7)  # another worker may not execute it
        time.sleep(3)  # longer than the TTL: only the heartbeat keeps it
        assert lease_held(r, 7)
        leases.release(7)
        assert not lease_held(r, 7)
    # A lease whose holder died (no heartbeat) lapses by itself.
    lock = r.lock("edgelab:run-lease:8", timeout=1)
    assert lock.acquire(blocking=False)
    assert lease_held(r, 8)
    time.sleep(1.5)
    assert not lease_held(r, 8)


def test_two_workers_on_one_host_never_overlap(
    queue_settings: Settings, queue_worker_factory: Callable[..., Any]
) -> None:
    workers = [queue_worker_factory(queue_settings) for _ in range(2)]  # one too many
    client = create_app(queue_settings, {"TESTING": True}).test_client()
    ids = [
        client.post(
            "/api/runs",
            json={"prompt": "Name three planets.", "nodes": 2, "max_tokens": 8},
        ).get_json()["id"]
        for _ in range(2)
    ]
    deadline = time.monotonic() + 180
    while True:
        with session_scope(queue_settings.database_url) as s:
            runs = list(s.scalars(select(Run).where(Run.id.in_(ids)).order_by(Run.started_at)))
            spans: list[tuple[str, datetime | None, datetime | None]] = [
                (r.status, r.started_at, r.finished_at) for r in runs
            ]
        if all(status in ("succeeded", "failed", "cancelled") for status, _, _ in spans):
            break
        assert time.monotonic() < deadline, spans
        time.sleep(0.5)
    assert [status for status, _, _ in spans] == ["succeeded", "succeeded"]
    (_, _a_start, a_end), (_, b_start, _b_end) = spans
    assert a_end is not None
    assert b_start is not None
    assert a_end <= b_start, f"the runs overlapped: {spans}"
    # Each worker took one run (prefetch 1): the second one really had to wait.
    for worker in workers:
        assert "runs.execute" in worker.log_path.read_text().split(" ready.", 1)[1]
