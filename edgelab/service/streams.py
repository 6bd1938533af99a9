"""Live event streams (server-sent events) that cannot starve the app.

**Why gevent.** A stream lives as long as its run (minutes to hours, most of it
waiting). Under gunicorn's ``gthread`` worker every open stream held one of a fixed
pool of request threads: 16 viewers of a queued run took all 16, and ``/api/health``
and every page timed out until the run ended. ``edgelab serve`` therefore runs
gunicorn's ``gevent`` worker (:func:`edgelab.service.cli.serve_argv`): a waiting
stream is a parked greenlet (a few kB) blocked on its Redis pub/sub socket, which
gevent's patched sockets turn into an event-loop wait, so other requests are served
in between. What makes this safe for the whole app: the app's blocking calls are
network calls that gevent patches (redis-py, psycopg 3, which supports gevent
natively since 3.1.14) or short SQLite queries. A separate SSE server would have
needed a second port, its own access checks and a proxy to join the two; an asyncio
rewrite of the stream would still have needed an ASGI server for a WSGI app.

**Bounds.** Streams are still connections: each client (IP address) may hold at most
``Settings.max_streams_per_client`` across all web worker processes of the server
(:class:`StreamSlots`); the next one is a 429 with ``Retry-After``. A stream that
carried nothing but keep-alive pings for ``Settings.stream_idle_s``
(``EDGELAB_STREAM_IDLE_S``, 300 s) is closed by the server; the browser's
``EventSource`` reconnects by itself (``retry:``) and the stream replays what it
missed, so a forgotten tab costs a reconnect every few minutes instead of a
connection forever.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis

from edgelab.tasks.locks import PREFIX

#: Close a stream after this long without a real event (pings do not count).
IDLE_TIMEOUT_S = 300.0
#: What a client is told to wait after a 429.
RETRY_AFTER_S = 5


#: How long a stream's slot outlives its last refresh: a worker killed with its streams
#: open frees their slots after this. Refreshed every third of it while the stream
#: lives (:func:`sse` calls back on every event and ping; pings come at least every 15 s).
SLOT_TTL_S = 60.0

# Drop the client's expired slots, then take one if fewer than the limit are left.
# One script, so two workers taking the last slot at once cannot both get it.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class StreamSlots:
    """Open streams per client across the whole server, counted in the broker's Redis.

    **Why Redis.** ``edgelab serve --workers N`` runs N processes, and a count in each
    let one client hold N times the cap. The broker is the one thing every worker
    already shares, and a stream cannot exist without it (it follows the run over the
    broker's pub/sub; without a broker the stream is a 503 before any slot is taken),
    so there is no per-process fallback: it would never count anything.

    **Why a sorted set, not INCR/DECR.** A counter leaks forever when a worker dies
    with streams open (nobody decrements it). Here each open stream is one member of
    the client's set ``edgelab:streams:<client>``, scored with the time its slot
    expires: a live stream pushes that time forward (:meth:`refresh`), a closed one
    removes itself (:meth:`release`), and a dead worker's members are dropped once
    their time has passed, within :data:`SLOT_TTL_S`. Taking a slot is one script
    (atomic across workers). Times are this host's wall clock; web workers on hosts
    whose clocks disagree by seconds shift a dead slot's expiry by as much.
    """

    def __init__(self, r: redis.Redis, ttl_s: float = SLOT_TTL_S) -> None:
        self.r = r
        self.ttl_s = ttl_s
        self._acquire = r.register_script(_ACQUIRE)

    @staticmethod
    def key(client: str) -> str:
        return f"{PREFIX}:streams:{client}"

    def acquire(self, client: str, limit: int) -> str | None:
        """A new slot's id, or None if ``client`` already holds ``limit`` open streams."""
        slot = uuid.uuid4().hex
        now = time.time()
        taken = self._acquire(
            keys=[self.key(client)],
            args=[now, now + self.ttl_s, limit, slot, int(self.ttl_s * 1000)],
        )
        return slot if taken else None

    def refresh(self, client: str, slot: str) -> None:
        """The stream still lives: its slot expires :data:`SLOT_TTL_S` from now."""
        pipe = self.r.pipeline()
        pipe.zadd(self.key(client), {slot: time.time() + self.ttl_s}, xx=True)
        pipe.pexpire(self.key(client), int(self.ttl_s * 1000))
        pipe.execute()

    def release(self, client: str, slot: str) -> None:
        self.r.zrem(self.key(client), slot)

    def count(self, client: str) -> int:
        """Open streams of ``client`` now (expired slots not counted)."""
        return int(self.r.zcount(self.key(client), time.time(), "+inf"))


def every(
    interval_s: float, fn: Callable[[], None], clock: Callable[[], float] = time.monotonic
) -> Callable[[], None]:
    """``fn``, called at most once per ``interval_s`` (the first call waits a full interval)."""
    last = clock()

    def call() -> None:
        nonlocal last
        now = clock()
        if now - last >= interval_s:
            last = now
            fn()

    return call


def sse(
    events: Iterator[dict[str, Any]],
    *,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    on_event: Callable[[], None] | None = None,
    on_close: Any = None,
) -> Iterator[str]:
    """Events as SSE text; ends after ``idle_timeout_s`` of pings only; ``on_close`` last.

    ``on_event`` is called before each event or ping goes out (the stream is alive).
    """
    seq = 0
    last_real = time.monotonic()
    try:
        yield "retry: 2000\n\n"
        for event in events:
            if on_event is not None:
                on_event()
            if event.get("type") == "ping":
                if time.monotonic() - last_real >= idle_timeout_s:
                    return  # idle: the browser reconnects and replays
                yield ": ping\n\n"
                continue
            last_real = time.monotonic()
            seq += 1
            kind = event.get("type", "message")
            yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(event, default=str)}\n\n"
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # unsubscribes from Redis now, not when garbage collected
        if on_close is not None:
            on_close()


__all__ = ["IDLE_TIMEOUT_S", "RETRY_AFTER_S", "SLOT_TTL_S", "StreamSlots", "every", "sse"]
