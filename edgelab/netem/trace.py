"""A bounded record of every chunk a link forwarded, for per-token timing.

Why a ring of raw chunks rather than per-token aggregates in the proxy: the
proxy cannot know where one token ends and the next begins (only the root's
token timeline says so), it serves several runs on a warm cluster, and the same
chunks answer several questions (bytes per phase, round trips per token, where
each token's time went, the effective one-way delay per message). So the proxy
only records facts it alone can see, cheaply, and the run executor reduces them
once the run's token times are known (:mod:`edgelab.metrics.linktiming`).

Cost: one record is seven numbers written into preallocated arrays under the
lock the counters already take, so recording adds no allocation per chunk. The
default capacity of 65,536 chunks per link is about 3.7 MB and holds far more
than one run produces: a llama.cpp decode step costs a handful of chunks per
link, so a 1,024-token run needs a few thousand (plus its prefill). If a run
ever produces more, the oldest records are overwritten and the trace says it is
incomplete instead of silently under-counting.

All times are ``time.perf_counter()`` seconds, which on Linux is
CLOCK_MONOTONIC: the same clock as ``time.monotonic()`` in the root process and
in every container on the host, so proxy times and the root's token times can
be compared directly.
"""

from __future__ import annotations

import array
import threading
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CAPACITY = 1 << 16
UP, DOWN = 0, 1


@dataclass
class ChunkTrace:
    """Chunks of one link in column form (equal-length lists), in release order.

    Per chunk: the connection it belongs to, its direction (``UP`` = root ->
    worker), when its first byte reached the proxy (``arrival``), when the
    bandwidth cap let it go (``ready``, = arrival without a cap), the delay
    sampled for it, when it actually left the proxy (``out``) and its size.
    ``complete`` is False when the ring overwrote records newer than the
    requested start, i.e. the trace misses some of the window.
    """

    conn: list[int] = field(default_factory=list)
    direction: list[int] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    delay: list[float] = field(default_factory=list)
    out: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    complete: bool = True
    # Connection index -> the client's "host:port" as the proxy accepted it, so a
    # reader can tell the root's connections from workers' (dllama's full mesh).
    clients: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conn": self.conn,
            "direction": self.direction,
            "arrival": self.arrival,
            "ready": self.ready,
            "delay": self.delay,
            "out": self.out,
            "nbytes": self.nbytes,
            "complete": self.complete,
            "clients": {str(k): v for k, v in self.clients.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkTrace:
        columns = ("conn", "direction", "arrival", "ready", "delay", "out", "nbytes")
        lengths = {len(data.get(c) or []) for c in columns}
        if len(lengths) != 1:
            raise ValueError("chunk trace columns differ in length")
        return cls(
            conn=[int(v) for v in data.get("conn") or []],
            direction=[int(v) for v in data.get("direction") or []],
            arrival=[float(v) for v in data.get("arrival") or []],
            ready=[float(v) for v in data.get("ready") or []],
            delay=[float(v) for v in data.get("delay") or []],
            out=[float(v) for v in data.get("out") or []],
            nbytes=[int(v) for v in data.get("nbytes") or []],
            complete=bool(data.get("complete", True)),
            clients={int(k): str(v) for k, v in (data.get("clients") or {}).items()},
        )


class ChunkLog:
    """The ring itself; ``record`` is called with the link's lock held by the caller
    or not at all concurrently (it takes its own lock, which is uncontended)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._conn = array.array("q", bytes(8 * capacity))
        self._direction = array.array("b", bytes(capacity))
        self._arrival = array.array("d", bytes(8 * capacity))
        self._ready = array.array("d", bytes(8 * capacity))
        self._delay = array.array("d", bytes(8 * capacity))
        self._out = array.array("d", bytes(8 * capacity))
        self._nbytes = array.array("q", bytes(8 * capacity))
        self._written = 0  # records ever written; the next goes to written % capacity
        self._lock = threading.Lock()

    def record(
        self,
        conn: int,
        direction: int,
        arrival: float,
        ready: float,
        delay: float,
        out: float,
        nbytes: int,
    ) -> None:
        with self._lock:
            i = self._written % self.capacity
            self._conn[i] = conn
            self._direction[i] = direction
            self._arrival[i] = arrival
            self._ready[i] = ready
            self._delay[i] = delay
            self._out[i] = out
            self._nbytes[i] = nbytes
            self._written += 1

    def since(self, start: float) -> ChunkTrace:
        """Every retained chunk that arrived at or after ``start`` (perf_counter s)."""
        trace = ChunkTrace()
        with self._lock:
            written = self._written
            first = max(0, written - self.capacity)
            for seq in range(first, written):
                i = seq % self.capacity
                if self._arrival[i] < start:
                    continue
                trace.conn.append(self._conn[i])
                trace.direction.append(self._direction[i])
                trace.arrival.append(self._arrival[i])
                trace.ready.append(self._ready[i])
                trace.delay.append(self._delay[i])
                trace.out.append(self._out[i])
                trace.nbytes.append(self._nbytes[i])
            # The oldest retained record is inside the window and older ones were
            # overwritten: some of the window may be gone.
            if first > 0 and self._arrival[first % self.capacity] >= start:
                trace.complete = False
        return trace
