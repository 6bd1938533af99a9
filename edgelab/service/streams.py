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
``Settings.max_streams_per_client`` per web worker process; the next one is a 429
with ``Retry-After``. A stream that carried nothing but keep-alive pings for
``Settings.stream_idle_s`` (``EDGELAB_STREAM_IDLE_S``, 300 s) is closed by the
server; the browser's ``EventSource`` reconnects by itself (``retry:``) and the
stream replays what it missed, so a forgotten tab costs a reconnect every few
minutes instead of a connection forever.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

#: Close a stream after this long without a real event (pings do not count).
IDLE_TIMEOUT_S = 300.0
#: What a client is told to wait after a 429.
RETRY_AFTER_S = 5


class StreamSlots:
    """Open streams per client in this process, with a cap."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str, limit: int) -> bool:
        with self._lock:
            if self._open.get(client, 0) >= limit:
                return False
            self._open[client] = self._open.get(client, 0) + 1
            return True

    def release(self, client: str) -> None:
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)

    def count(self, client: str) -> int:
        with self._lock:
            return self._open.get(client, 0)


def sse(
    events: Iterator[dict[str, Any]],
    *,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    on_close: Any = None,
) -> Iterator[str]:
    """Events as SSE text; ends after ``idle_timeout_s`` of pings only; ``on_close`` last."""
    seq = 0
    last_real = time.monotonic()
    try:
        yield "retry: 2000\n\n"
        for event in events:
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


__all__ = ["IDLE_TIMEOUT_S", "RETRY_AFTER_S", "StreamSlots", "sse"]
