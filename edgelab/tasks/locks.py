"""Redis locks that keep experiments honest: one per host, one per executing run.

* The **host lock** makes experiments on one machine strictly sequential even when a
  second worker is started by mistake: that worker waits instead of sharing the CPU
  and corrupting both runs' timings.
* The **run lease** says "a live worker is executing this run". A run found in
  ``starting``/``running`` without a lease was left by a dead worker and may be
  executed again; with a lease it must not, so a redelivered message can never
  execute a run twice in parallel.

Both expire after ``ttl`` seconds unless a heartbeat thread renews them, so a worker
killed with SIGKILL releases them by itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import redis
from redis.lock import Lock

PREFIX = "edgelab"
DEFAULT_TTL_S = 30.0


def lock_ttl() -> float:
    """Lease/lock lifetime without heartbeat (``EDGELAB_LOCK_TTL``, seconds)."""
    raw = os.environ.get("EDGELAB_LOCK_TTL", "")
    try:
        return max(2.0, float(raw)) if raw else DEFAULT_TTL_S
    except ValueError:
        return DEFAULT_TTL_S


def host_name() -> str:
    return os.environ.get("EDGELAB_HOST_ID") or socket.gethostname()


def host_lock_key(host: str | None = None) -> str:
    return f"{PREFIX}:host-lock:{host or host_name()}"


def run_lease_key(run_id: int) -> str:
    return f"{PREFIX}:run-lease:{run_id}"


class Heartbeat:
    """Renews a changing set of locks every ``ttl / 3`` seconds from a daemon thread."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._locks: set[Lock] = set()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgelab-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, lock: Lock) -> None:
        with self._mutex:
            self._locks.add(lock)

    def discard(self, lock: Lock) -> None:
        with self._mutex:
            self._locks.discard(lock)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._mutex:
                locks = list(self._locks)
            for lock in locks:
                # A renewal failing (Redis briefly away) is retried at the next beat;
                # the lock only lapses if Redis stays away for a whole ttl.
                with contextlib.suppress(redis.RedisError):
                    lock.reacquire()


def _lock(r: redis.Redis, key: str, ttl: float) -> Lock:
    # thread_local=False: the heartbeat thread renews a token taken by the task thread.
    lock: Lock = r.lock(key, timeout=ttl, thread_local=False)
    return lock


@contextlib.contextmanager
def host_lock(
    r: redis.Redis,
    heartbeat: Heartbeat,
    *,
    on_wait: Callable[[], None] | None = None,
    poll_s: float = 1.0,
) -> Iterator[None]:
    """Hold this host's experiment lock; wait (forever) while another worker has it."""
    lock = _lock(r, host_lock_key(), heartbeat.ttl)
    told = False
    while not lock.acquire(blocking=False):
        if on_wait is not None and not told:
            on_wait()
            told = True
        time.sleep(poll_s)
    heartbeat.add(lock)
    try:
        yield
    finally:
        heartbeat.discard(lock)
        with contextlib.suppress(redis.RedisError):
            lock.release()


class RunLeases:
    """Leases on runs this worker executes, renewed by one heartbeat."""

    def __init__(self, r: redis.Redis, heartbeat: Heartbeat) -> None:
        self.r = r
        self.heartbeat = heartbeat
        self._held: dict[int, Lock] = {}

    def take(self, run_id: int) -> bool:
        """True if this worker now holds the lease (or already did)."""
        if run_id in self._held:
            return True
        lock = _lock(self.r, run_lease_key(run_id), self.heartbeat.ttl)
        if not lock.acquire(blocking=False):
            return False
        self._held[run_id] = lock
        self.heartbeat.add(lock)
        return True

    def release(self, run_id: int) -> None:
        lock = self._held.pop(run_id, None)
        if lock is not None:
            self.heartbeat.discard(lock)
            with contextlib.suppress(redis.RedisError):
                lock.release()

    def release_all(self) -> None:
        for run_id in list(self._held):
            self.release(run_id)


def lease_held(r: redis.Redis, run_id: int) -> bool:
    """Whether some live worker holds the run's lease."""
    return bool(r.exists(run_lease_key(run_id)))
