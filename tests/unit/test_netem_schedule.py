"""Release ordering and pacing, with made-up clocks."""

from __future__ import annotations

import random
import threading
import time

import pytest

from edgelab.netem.profile import LatencyProfile
from edgelab.netem.schedule import ReleaseSchedule, TokenBucket, sleep_until


def test_release_never_precedes_an_earlier_chunk() -> None:
    schedule = ReleaseSchedule()
    sampler = LatencyProfile.parse("0ms..50ms", seed=5).sampler("up")
    arrivals = [i * 0.001 for i in range(500)]
    releases = [schedule.release_at(t, next(sampler)) for t in arrivals]
    assert releases == sorted(releases)
    assert all(r >= t for r, t in zip(releases, arrivals, strict=True))
    # Something was actually held back behind a slower predecessor.
    replay = LatencyProfile.parse("0ms..50ms", seed=5).sampler("up")
    assert any(r > t + next(replay) for r, t in zip(releases, arrivals, strict=True))


def test_release_is_arrival_plus_delay_when_nothing_is_ahead() -> None:
    schedule = ReleaseSchedule()
    assert schedule.release_at(1.0, 0.02) == pytest.approx(1.02)
    assert schedule.release_at(2.0, 0.02) == pytest.approx(2.02)


def test_token_bucket_paces_to_its_rate() -> None:
    bucket = TokenBucket(8_000)  # 1000 bytes per second
    done = [bucket.reserve(100, 0.0) for _ in range(10)]
    assert done[0] == pytest.approx(0.1)
    assert done[-1] == pytest.approx(1.0)
    # An idle wire does not bank unlimited credit.
    assert bucket.reserve(100, 10.0) == pytest.approx(10.1)


def test_token_bucket_burst_allowance() -> None:
    bucket = TokenBucket(8_000, burst_bits=8_000)
    assert bucket.reserve(1000, 5.0) == pytest.approx(5.0)
    assert bucket.reserve(1000, 5.0) == pytest.approx(6.0)


def test_token_bucket_shared_by_threads_accounts_every_byte() -> None:
    bucket = TokenBucket(8_000_000)
    finishes: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        rng = random.Random(1)
        for _ in range(1000):
            t = bucket.reserve(rng.choice([10, 100]), 0.0)
            with lock:
                finishes.append(t)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rng = random.Random(1)
    total_bytes = 4 * sum(rng.choice([10, 100]) for _ in range(1000))
    assert max(finishes) == pytest.approx(total_bytes * 8 / 8_000_000)


def test_sleep_until_returns_false_when_cancelled() -> None:
    cancelled = threading.Event()
    threading.Timer(0.05, cancelled.set).start()
    assert sleep_until(time.perf_counter() + 30, cancelled) is False


def test_sleep_until_never_wakes_early() -> None:
    cancelled = threading.Event()
    for delay in (0.0, 0.0003, 0.003):
        deadline = time.perf_counter() + delay
        assert sleep_until(deadline, cancelled) is True
        assert time.perf_counter() >= deadline
