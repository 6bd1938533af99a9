"""Redis locks that keep experiments honest: one per host, one per executing run.

* The **host lock** makes experiments on one machine strictly sequential even when a
  second worker is started by mistake: that worker waits instead of sharing the CPU
  and corrupting both runs' timings.
* The **run lease** says "a live worker is executing this run". A run found in
  ``starting``/``running`` without a lease was left by a dead worker and may be
  executed again; with a lease it must not, so a redelivered message can never
  execute a run twice in parallel.

Both expire after ``ttl`` seconds (``Settings.lock_ttl_s``, ``EDGELAB_LOCK_TTL``)
unless a heartbeat thread renews them, so a worker killed with SIGKILL releases
them by itself.

**Broker outages.** Redis may go away for a few seconds (a restart) or come back
empty (a restart without persistence). Nothing here lets a ``ConnectionError``
escape into the group task: taking a lock is retried with backoff for
``Settings.broker_retry_s`` seconds (:func:`retrying`; ``EDGELAB_BROKER_RETRY_S``),
and the heartbeat re-takes a lock that vanished with the broker's memory, under the
same token, as long as nobody else took it meanwhile. The reconciler waits a whole ``ttl`` before it
believes a lease is gone, which is longer than a heartbeat period.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

PREFIX = "edgelab"
#: What a broker outage looks like to redis-py (refused, reset, timed out, loading).
OUTAGE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

log = logging.getLogger(__name__)
T = TypeVar("T")


class BrokerUnavailable(RuntimeError):
    """Redis stayed unreachable for longer than the retry budget."""


def retrying(
    fn: Callable[[], T],
    what: str,
    *,
    budget_s: float,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """``fn()``, retried with exponential backoff (0.25 s .. 5 s) while Redis is away.

    Raises ``BrokerUnavailable`` once ``budget_s`` (the caller's
    ``Settings.broker_retry_s``) is spent. ``on_retry`` hears one message per outage,
    for the run's progress line.
    """
    budget = budget_s
    deadline = time.monotonic() + budget
    delay = 0.25
    told = False
    while True:
        try:
            return fn()
        except OUTAGE as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(
                    f"the broker stayed unreachable for {budget:.0f} s while trying to {what}: "
                    f"{exc}"
                ) from exc
            if not told:
                log.warning("broker unreachable while trying to %s (%s); retrying", what, exc)
                if on_retry is not None:
                    on_retry(f"broker unreachable ({exc}); retrying")
                told = True
            time.sleep(min(delay, remaining))
            delay = min(5.0, delay * 2)


def host_lock_key(host: str) -> str:
    """The key of ``host``'s experiment lock (``Settings.host_id``)."""
    return f"{PREFIX}:host-lock:{host}"


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
        wait = self.ttl / 3
        while not self._stop.wait(wait):
            # While Redis is away, beat every half second: the moment it is back
            # (possibly empty) our locks are put back, well before the reconciler
            # (which waits half a ttl) could think their holder died.
            wait = self.ttl / 3 if self.beat() else min(0.5, self.ttl / 3)

    def beat(self) -> bool:
        """Renew every lock once; False if Redis could not be reached."""
        with self._mutex:
            locks = list(self._locks)
        reached = True
        for lock in locks:
            # A renewal failing (Redis briefly away) is retried at the next beat;
            # the lock only lapses if Redis stays away for a whole ttl.
            try:
                try:
                    lock.reacquire()
                except LockNotOwnedError:
                    _retake(lock)
            except OUTAGE:
                reached = False
            except redis.RedisError:
                pass
        return reached


def _retake(lock: Lock) -> None:
    """Put back a lock that vanished (Redis restarted empty) under our own token.

    ``SET NX``: if someone else holds the key now, it stays theirs (and we log it).
    """
    token = lock.local.token
    if token is not None and not lock.do_acquire(token):
        log.warning("lock %s was taken by another holder while the broker was away", lock.name)


def _lock(r: redis.Redis, key: str, ttl: float) -> Lock:
    # thread_local=False: the heartbeat thread renews a token taken by the task thread.
    lock: Lock = r.lock(key, timeout=ttl, thread_local=False)
    return lock


@contextlib.contextmanager
def host_lock(
    r: redis.Redis,
    heartbeat: Heartbeat,
    *,
    host: str,
    retry_s: float,
    on_wait: Callable[[], None] | None = None,
    poll_s: float = 1.0,
) -> Iterator[None]:
    """Hold ``host``'s experiment lock; wait (forever) while another worker has it.

    ``host`` is ``Settings.host_id``; ``retry_s``: how long one attempt rides out a
    broker outage (:func:`retrying`).
    """
    lock = _lock(r, host_lock_key(host), heartbeat.ttl)
    told = False
    while not retrying(
        lambda: lock.acquire(blocking=False), "take the host lock", budget_s=retry_s
    ):
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
    """Leases on runs this worker executes, renewed by one heartbeat; taking one rides
    out a broker outage of up to ``retry_s`` seconds."""

    def __init__(self, r: redis.Redis, heartbeat: Heartbeat, *, retry_s: float) -> None:
        self.r = r
        self.heartbeat = heartbeat
        self.retry_s = retry_s
        self._held: dict[int, Lock] = {}

    def take(self, run_id: int) -> bool:
        """True if this worker now holds the lease (or already did).

        Retried through a broker outage (``BrokerUnavailable`` past the budget).
        """
        if run_id in self._held:
            return True
        lock = _lock(self.r, run_lease_key(run_id), self.heartbeat.ttl)
        if not retrying(
            lambda: lock.acquire(blocking=False),
            f"take the lease of run {run_id}",
            budget_s=self.retry_s,
        ):
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

    def holds(self, run_id: int) -> bool:
        return run_id in self._held


def lease_held(r: redis.Redis, run_id: int) -> bool:
    """Whether some live worker holds the run's lease."""
    return bool(r.exists(run_lease_key(run_id)))


def leases_held(r: redis.Redis, run_ids: list[int]) -> set[int]:
    """The subset of ``run_ids`` whose lease some live worker holds (one round trip)."""
    if not run_ids:
        return set()
    pipe = r.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.exists(run_lease_key(run_id))
    return {rid for rid, found in zip(run_ids, pipe.execute(), strict=True) if found}
