"""A TCP proxy that behaves like one network link between root and a worker.

Every byte between the root and one worker crosses one :class:`LinkProxy`.
Each accepted connection gets its own upstream connection and, per direction,
a reader thread (timestamps chunks as they arrive) and a writer thread
(releases them at ``arrival + sampled delay``, in order). Threads rather than
asyncio because the event loop's epoll timeout is rounded to whole
milliseconds, which alone would blow the 0.2 ms accuracy budget; a blocked
thread instead sleeps to within tens of microseconds (see
:func:`edgelab.netem.schedule.sleep_until`).

With a pass-through profile (0 ms, no bandwidth cap) and nothing queued, the
reader forwards directly with splice(2) (or from a preallocated buffer), so a
chunk costs no Python allocation and no trip through the writer thread.

Each direction of a delayed or paced link holds at most ``queue_limit`` bytes,
like a router's buffer in front of a link: the bytes in flight (bandwidth x
delay) plus a small fixed buffer (:func:`default_queue_bytes`, or the link's
``queue_bytes``). When it is full the reader stops reading, the proxy's small
kernel receive buffer fills and TCP flow control blocks the sender, as a real
bottleneck would; the time readers spent waiting is counted (``pushback_s``).

Not modelled: the TCP handshake (the upstream connect is not delayed, so
connection set-up costs no extra round trip) and packet loss (real loss is
applied by nftables in a node's network namespace, see the backends).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

from edgelab.netem.profile import DIRECTIONS, DelaySampler, LatencyProfile
from edgelab.netem.replay import DelayTrace, TraceClock
from edgelab.netem.schedule import ReleaseSchedule, TokenBucket, sleep_until, tighten_timer_slack
from edgelab.netem.trace import DEFAULT_CAPACITY, DOWN, UP, ChunkLog, ChunkTrace

log = logging.getLogger(__name__)

# Pass-through reads: big enough that a 4 MiB message crosses in a few syscalls.
FAST_BUFFER_BYTES = 1 << 20
# Delayed reads: one chunk is one delay sample, so keep chunks moderate.
DELAYED_CHUNK_BYTES = 256 << 10
# Upper bound of any direction's queue, whatever the profile or override says.
MAX_QUEUED_BYTES = 64 << 20
# The fixed part of a default queue: room for a few chunks, as a router's buffer.
QUEUE_FIXED_BYTES = 64 << 10
# A default queue also covers this much traffic beyond the delay, so a release
# thread woken a few ms late (a loaded host) does not leave the link idle.
QUEUE_SLACK_S = 0.010
# What an uncapped link is sized for: it has no bandwidth of its own, so its queue
# is the delay's worth at 10 Gbit/s (capped by MAX_QUEUED_BYTES).
UNCAPPED_BPS = 10_000_000_000
# Kernel receive buffer of a paced direction's source socket (the kernel doubles
# it for bookkeeping): PACED_RCVBUF_S of the link's rate, within these bounds, so
# the bytes a sender can park in the kernel beyond the queue are a few ms of the
# link, not autotuned megabytes (a small window also keeps the sender's
# congestion window, and with it its send buffer, small).
PACED_RCVBUF_S = 0.005
PACED_RCVBUF_MIN = 8 << 10
PACED_RCVBUF_MAX = 4 << 20
RCVBUF_MIN_SEGMENTS = 4
# A read into a nearly full queue still takes at least one segment's worth.
MIN_READ_BYTES = 1448
ETHERNET_MSS = 1448
CONNECT_TIMEOUT_S = 5.0
# Client addresses remembered for chunk traces (connections are few and long-lived).
MAX_CLIENTS_KEPT = 4096
JOIN_TIMEOUT_S = 5.0
# Low among real-time priorities: above every normal thread, below kernel helpers.
REALTIME_PRIORITY = 10
# Pass-through via splice(2): the bytes go socket -> pipe -> socket inside the
# kernel and never through Python. Measured level with recv_into/sendall at 4 MiB
# and a few per cent ahead at 64 KiB (bench/RESULTS.md); EDGELAB_NETEM_SPLICE=0
# (``Settings.netem_splice``, passed as ``LinkProxy(splice=False)``) selects
# recv_into/sendall.
SPLICE = hasattr(os, "splice")

_EOF = b""  # queued marker: propagate the half-close once earlier chunks are out


@dataclass
class DirectionStats:
    """Counters for one direction of a link, summed over its connections."""

    bytes: int = 0
    chunks: int = 0
    delay_total_s: float = 0.0
    delay_max_s: float = 0.0
    # How late chunks left relative to their scheduled release: the proxy's own error.
    late_total_s: float = 0.0
    late_max_s: float = 0.0
    queue_depth: int = 0  # chunks waiting for their release time right now
    queued_bytes: int = 0
    # The most bytes queued at once (summed over connections) since the link started.
    queue_max_bytes: int = 0
    # Bytes one connection's queue may hold now (the profile's default or queue_bytes).
    queue_limit_bytes: int = 0
    # Seconds readers waited for room in a full queue: how long TCP pushed back.
    pushback_s: float = 0.0
    # Seconds since the last chunk left in this direction, at snapshot time (None:
    # nothing yet). The stall watchdog reads it to tell which link went quiet.
    idle_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LinkStats:
    """A snapshot of a link: "up" is client -> upstream (root -> worker)."""

    name: str
    profile: str
    up: DirectionStats = field(default_factory=DirectionStats)
    down: DirectionStats = field(default_factory=DirectionStats)
    connections_open: int = 0
    connections_total: int = 0
    connect_errors: int = 0
    # None: not requested (or no chunk delayed yet); False: refused by the OS.
    realtime: bool | None = None
    # TCP retransmissions in the worker node's network namespace, set by a backend
    # that can read them (see edgelab.netem.loss); None: not read.
    retransmits: int | None = None
    # Packets the link's loss rules dropped (their nftables counters: exact), set by a
    # backend with loss; 0 for a lossless link of a lossy cluster; None: not read.
    dropped_packets: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile,
            "up": self.up.to_dict(),
            "down": self.down.to_dict(),
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "connect_errors": self.connect_errors,
            "realtime": self.realtime,
            "retransmits": self.retransmits,
            "dropped_packets": self.dropped_packets,
        }

    def link_stat_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`edgelab.models.LinkStat` (minus ``run_id``)."""
        return {
            "link": self.name,
            "bytes_up": self.up.bytes,
            "bytes_down": self.down.bytes,
            "chunks_up": self.up.chunks,
            "chunks_down": self.down.chunks,
            "delay_total_ms_up": self.up.delay_total_s * 1000.0,
            "delay_total_ms_down": self.down.delay_total_s * 1000.0,
            "delay_max_ms": max(self.up.delay_max_s, self.down.delay_max_s) * 1000.0,
            "queue_max_bytes_up": self.up.queue_max_bytes,
            "queue_max_bytes_down": self.down.queue_max_bytes,
            "pushback_ms_up": self.up.pushback_s * 1000.0,
            "pushback_ms_down": self.down.pushback_s * 1000.0,
            "retransmits": self.retransmits,
            "dropped_packets": self.dropped_packets,
        }


class _LinkState:
    """Profile and pacing that change together on ``set_profile``."""

    def __init__(
        self,
        profile: LatencyProfile,
        version: int,
        queue_bytes: int | None,
        trace: DelayTrace | None = None,
    ) -> None:
        self.profile = profile
        self.version = version
        self.passthrough = {
            d: trace is None and _is_passthrough(profile.direction(d)) for d in DIRECTIONS
        }
        self.buckets: dict[str, TokenBucket | None] = {}
        self.chunk_bytes: dict[str, int] = {}
        self.queue_limit = {
            d: min(
                MAX_QUEUED_BYTES,
                queue_bytes or default_queue_bytes(_sizing_profile(profile.direction(d), trace)),
            )
            for d in DIRECTIONS
        }
        for d in DIRECTIONS:
            rate = profile.direction(d).bandwidth_bps
            if trace is not None and trace.has_bandwidth:
                # Chunks sized for the slowest rate the trace reaches.
                rate = min(b for b in (*trace.bandwidths, rate) if b is not None)
            if rate is None:
                self.buckets[d] = None
                self.chunk_bytes[d] = DELAYED_CHUNK_BYTES
            else:
                # ~1 ms of traffic per chunk keeps pacing smooth at any rate.
                self.buckets[d] = TokenBucket(rate)
                self.chunk_bytes[d] = min(DELAYED_CHUNK_BYTES, max(1448, rate // 8 // 1000))


def _is_passthrough(one_way: LatencyProfile) -> bool:
    return one_way.kind == "fixed" and one_way.delay_ms == 0 and one_way.bandwidth_bps is None


def _sizing_profile(one_way: LatencyProfile, trace: DelayTrace | None) -> LatencyProfile:
    """What a traced direction is sized for: the trace's worst delay and top rate."""
    if trace is None:
        return one_way
    rates = [b for b in (*trace.bandwidths, one_way.bandwidth_bps) if b is not None]
    return LatencyProfile.fixed(
        max(trace.delays_s) * 1000.0, bandwidth_bps=max(rates) if rates else None
    )


def worst_delay_s(one_way: LatencyProfile) -> float:
    """The longest delay a one-way profile normally draws (normal: mean + 3 sd)."""
    if one_way.kind == "uniform":
        return one_way.max_ms / 1000.0
    if one_way.kind == "normal":
        return (one_way.delay_ms + 3 * one_way.jitter_ms) / 1000.0
    return one_way.delay_ms / 1000.0


def default_queue_bytes(one_way: LatencyProfile) -> int:
    """A router-like buffer for one direction: bandwidth x (delay + slack) + a fixed part.

    The bandwidth-delay product is what a real link holds in flight; the slack and
    fixed part are its buffer. At 10 mbit and 0 ms that is 76 KiB (61 ms of the
    link), at 100 mbit and 20 ms 439 KiB.
    """
    rate = one_way.bandwidth_bps or UNCAPPED_BPS
    in_flight = rate / 8 * (worst_delay_s(one_way) + QUEUE_SLACK_S)
    return min(MAX_QUEUED_BYTES, int(in_flight) + QUEUE_FIXED_BYTES)


class _Pipe:
    """One direction of one connection: a reader, a release queue and a writer."""

    def __init__(self, conn: _Connection, direction: str, src: socket.socket, dst: socket.socket):
        self.conn = conn
        self.link = conn.link
        self.direction = direction
        self.src = src
        self.dst = dst
        self._use_splice = self.link.splice
        # (release, arrival, data, ready, sampled delay) per queued chunk.
        self.queue: collections.deque[tuple[float, float, bytes, float, float]] = (
            collections.deque()
        )
        self.code = UP if direction == "up" else DOWN
        self.queued_bytes = 0
        self.cond = threading.Condition()
        self.sending = False  # the writer holds a chunk it took off the queue
        self.schedule = ReleaseSchedule()
        self._sampler: DelaySampler | None = None
        self._sampler_version = -1

    # -- reader -------------------------------------------------------------------------------

    def read_loop(self) -> None:
        buf = bytearray(FAST_BUFFER_BYTES)
        view = memoryview(buf)
        stats = self.link._stats[self.direction]
        try:
            while not self.conn.closed.is_set():
                state = self.link._state
                if state.passthrough[self.direction] and self._idle() and self._use_splice:
                    if not self._splice_once(stats):
                        return
                elif state.passthrough[self.direction] and self._idle():
                    n = self.src.recv_into(buf)
                    if n == 0:
                        self._enqueue(_EOF, time.perf_counter())
                        return
                    if self.link._state.passthrough[self.direction] and self._idle():
                        self._count_passthrough(stats, n)
                        self.dst.sendall(view[:n])
                    else:  # the profile changed while we were blocked in recv
                        self._enqueue(bytes(view[:n]), time.perf_counter())
                else:
                    room = self._wait_for_room(state, stats)
                    if room is None:
                        return
                    self._size_receive_buffer(state)
                    data, arrival = _recv_stamped(
                        self.src, min(state.chunk_bytes[self.direction], room)
                    )
                    self._enqueue(data, arrival)
                    if not data:
                        return
        except OSError as exc:
            self.conn.abort(f"{self.direction} read/forward failed: {exc}")
        finally:
            view.release()
            if self._pipe_fds is not None:
                for fd in self._pipe_fds:
                    os.close(fd)
            self.conn.thread_done()

    _pipe_fds: tuple[int, int] | None = None
    _rcvbuf_version = -1
    _rcvbuf_sized = False

    def _wait_for_room(self, state: _LinkState, stats: DirectionStats) -> int | None:
        """Block while this direction's queue is full; the bytes a read may take then.

        Not reading is what pushes back: the sender's bytes stay in the kernel and
        TCP's window closes. An empty queue always admits a read, so a limit
        smaller than a chunk still moves. ``None``: the connection closed.
        """
        limit = state.queue_limit[self.direction]
        # Wait for room for a whole chunk, not just a byte: reads of the last few
        # bytes of room would multiply the per-chunk cost on a busy host.
        want = min(state.chunk_bytes[self.direction], limit)
        with self.cond:
            if self.queue and self.queued_bytes + want > limit:
                t0 = time.perf_counter()
                while (
                    self.queue
                    and self.queued_bytes + want > limit
                    and not self.conn.closed.is_set()
                ):
                    self.cond.wait(0.5)
                with self.link._lock:
                    stats.pushback_s += time.perf_counter() - t0
            if self.conn.closed.is_set():
                return None
            return max(MIN_READ_BYTES, limit - self.queued_bytes)

    def _size_receive_buffer(self, state: _LinkState) -> None:
        """A paced direction reads from a small kernel buffer (see PACED_RCVBUF_S).

        Only paced ones: an uncapped link keeps autotuning, which its throughput needs.
        Applied once per profile; a later uncapped profile cannot restore autotuning
        on this connection (Linux has no way back), so it gets a generous fixed size.
        """
        if self._rcvbuf_version == state.version:
            return
        paced = state.buckets[self.direction] is not None
        if paced or self._rcvbuf_sized:
            size = _rcvbuf_bytes(state.profile.direction(self.direction).bandwidth_bps)
            with contextlib.suppress(OSError):
                # A window under a few segments stalls TCP (silly-window avoidance):
                # a connection made before the link was paced has loopback's ~64 KiB
                # segments and needs room for several of them.
                mss = self.src.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
                size = max(size, RCVBUF_MIN_SEGMENTS * mss)
                self.src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            self._rcvbuf_sized = True
        self._rcvbuf_version = state.version

    def _splice_once(self, stats: DirectionStats) -> bool:
        """Forward one read's worth without copying through Python; False at EOF."""
        if self._pipe_fds is None:
            r, w = os.pipe()
            with contextlib.suppress(OSError):  # the default 64 KiB pipe still works
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, FAST_BUFFER_BYTES)
            self._pipe_fds = (r, w)
        r, w = self._pipe_fds
        try:
            n = os.splice(self.src.fileno(), w, FAST_BUFFER_BYTES)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            # Nothing moved: this kernel or sandbox cannot splice sockets.
            self._use_splice = False
            return True
        if n == 0:
            self._enqueue(_EOF, time.perf_counter())
            return False
        if self.link._state.passthrough[self.direction] and self._idle():
            self._count_passthrough(stats, n)
            left = n
            dst = self.dst.fileno()
            while left:
                left -= os.splice(r, dst, left)
        else:  # the profile changed while we were blocked: queue what we hold
            data = bytearray()
            while len(data) < n:
                data += os.read(r, n - len(data))
            self._enqueue(bytes(data), time.perf_counter())
        return True

    def _count_passthrough(self, stats: DirectionStats, n: int) -> None:
        now = time.perf_counter()
        self.link._count(stats, n, 0.0, trace=(self.conn.index, self.code, now, now, 0.0, now))

    def _idle(self) -> bool:
        """Nothing queued or being sent, so forwarding directly cannot overtake anything."""
        with self.cond:
            return not self.queue and not self.sending

    def _enqueue(self, data: bytes, arrival: float) -> None:
        state = self.link._state
        if self._sampler_version != state.version:
            self._sampler = state.profile.sampler(self.direction, stream=self.conn.index)
            self._sampler_version = state.version
        assert self._sampler is not None
        clock = self.link.trace_clock
        delay = self._sampler.next_delay_s() if clock is None else clock.delay_s(arrival)
        bucket = state.buckets[self.direction]
        rate = None
        if clock is not None and bucket is not None:
            # The trace's rate now, else the profile's cap; neither: not paced.
            rate = (
                clock.bandwidth_bps(arrival)
                or state.profile.direction(self.direction).bandwidth_bps
            )
            if rate is None:
                bucket = None
        ready = bucket.reserve(len(data), arrival, rate) if bucket is not None and data else arrival
        release = self.schedule.release_at(ready, delay)
        stats = self.link._stats[self.direction]
        with self.cond:
            self.queue.append((release, arrival, data, ready, delay))
            self.queued_bytes += len(data)
            if data:
                with self.link._lock:
                    stats.queue_depth += 1
                    stats.queued_bytes += len(data)
                    if stats.queued_bytes > stats.queue_max_bytes:
                        stats.queue_max_bytes = stats.queued_bytes
            self.cond.notify_all()

    # -- writer -------------------------------------------------------------------------------

    def write_loop(self) -> None:
        tighten_timer_slack()
        if self.link.realtime:
            self.link._make_realtime()
        stats = self.link._stats[self.direction]
        closed = self.conn.closed
        try:
            while True:
                with self.cond:
                    while not self.queue and not closed.is_set():
                        self.cond.wait()
                    if closed.is_set():
                        return
                    release, arrival, data, ready, delay = self.queue[0]
                if not sleep_until(release, closed):
                    return
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    self.conn.half_closed(self.direction)
                    return
                with self.cond:
                    if closed.is_set():
                        return  # abort() discards the queue and its counts
                    self.sending = True  # before popping: see _idle()
                    self.queue.popleft()
                    self.queued_bytes -= len(data)
                    self.cond.notify_all()
                    with self.link._lock:
                        stats.queue_depth -= 1
                        stats.queued_bytes -= len(data)
                # Counted before sending so a peer that saw the bytes also sees the count.
                now = time.perf_counter()
                self.link._count(
                    stats,
                    len(data),
                    now - arrival,
                    now - release,
                    trace=(self.conn.index, self.code, arrival, ready, delay, now),
                )
                self.dst.sendall(data)
                with self.cond:
                    self.sending = False
        except OSError as exc:
            self.conn.abort(f"{self.direction} write failed: {exc}")
        finally:
            self.conn.thread_done()

    def discard(self) -> None:
        """Forget queued chunks of a dead connection (and their queue-depth counts)."""
        with self.cond:
            dropped = [entry[2] for entry in self.queue if entry[2]]
            self.queue.clear()
            self.queued_bytes = 0
            with self.link._lock:
                stats = self.link._stats[self.direction]
                stats.queue_depth -= len(dropped)
                stats.queued_bytes -= sum(len(d) for d in dropped)
            self.cond.notify_all()


class _Connection:
    """A client connection, its upstream connection and the four threads between them."""

    def __init__(self, link: LinkProxy, client: socket.socket, index: int) -> None:
        self.link = link
        self.client = client
        self.index = index
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pipes: list[_Pipe] = []
        self._lock = threading.Lock()
        self._half_closed: set[str] = set()
        self._running = 0
        self._sockets_closed = False

    def start(self) -> None:
        self._running = 1
        t = threading.Thread(
            target=self._connect_and_run,
            name=f"netem-{self.link.name}-{self.index}-connect",
            daemon=True,
        )
        self.threads.append(t)
        t.start()

    def _connect_and_run(self) -> None:
        try:
            try:
                upstream = _connect(
                    self.link.upstream,
                    self.link._state.profile.direction("down").bandwidth_bps
                    if self.link._paced_at_start()
                    else None,
                )
            except OSError as exc:
                self.link._connect_failed(exc)
                self.abort(f"cannot connect to upstream {self.link.upstream}: {exc}")
                return
            upstream.settimeout(None)
            _tune(upstream)
            with self._lock:
                self.upstream = upstream
                if self.closed.is_set():  # the link closed while we were connecting
                    return
                up = _Pipe(self, "up", self.client, upstream)
                down = _Pipe(self, "down", upstream, self.client)
                self.pipes = [up, down]
                targets = [
                    (up.read_loop, "up-read"),
                    (up.write_loop, "up-write"),
                    (down.read_loop, "down-read"),
                    (down.write_loop, "down-write"),
                ]
                self._running += len(targets)
                for target, role in targets:
                    t = threading.Thread(
                        target=target,
                        name=f"netem-{self.link.name}-{self.index}-{role}",
                        daemon=True,
                    )
                    self.threads.append(t)
                    t.start()
        finally:
            self.thread_done()

    def half_closed(self, direction: str) -> None:
        with self._lock:
            self._half_closed.add(direction)
            both = len(self._half_closed) == len(DIRECTIONS)
        if both:
            self.abort(None)

    def abort(self, reason: str | None) -> None:
        """Stop both directions now; the last thread out closes the sockets."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            sockets = [s for s in (self.client, self.upstream) if s is not None]
        if reason:
            log.info("link %s connection %d closed: %s", self.link.name, self.index, reason)
        for s in sockets:
            if reason:  # an abnormal end: let the peers see a reset, not a clean FIN
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for pipe in self.pipes:
            pipe.discard()

    def thread_done(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self.abort(None)
            self._close_sockets()
            self.link._forget(self)

    def _close_sockets(self) -> None:
        with self._lock:
            if self._sockets_closed:
                return
            self._sockets_closed = True
        for s in (self.client, self.upstream):
            if s is not None:
                s.close()


def _rcvbuf_bytes(rate_bps: int | None) -> int:
    if rate_bps is None:
        return PACED_RCVBUF_MAX
    return max(PACED_RCVBUF_MIN, min(PACED_RCVBUF_MAX, int(rate_bps / 8 * PACED_RCVBUF_S)))


def _ethernet_segments(sock: socket.socket, rate_bps: int | None) -> None:
    """Advertise an Ethernet-sized MSS (before listen/connect) on a paced link.

    Over loopback the MSS is ~64 KiB, and Linux sizes a sender's send buffer from
    it (2 x 10 segments at least: 2.6 MB), so a sender could park megabytes in its
    own kernel and never feel the queue. With 1448-byte segments, as on the
    Ethernet and Wi-Fi links being simulated, that is ~90 KB. Only links paced
    when they start get it: a pass-through link keeps loopback's throughput, and
    a link that gains a cap on a warm cluster pushes back through larger buffers.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, ETHERNET_MSS)
    # And a small receive window from the first segment on (see PACED_RCVBUF_S):
    # set later, the window autotuned during the first reads could not shrink back.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _rcvbuf_bytes(rate_bps))


def _connect(address: tuple[str, int], paced_bps: int | None) -> socket.socket:
    """The upstream connection; a paced link's gets Ethernet segments (``paced_bps``)."""
    if paced_bps is None:
        return socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _ethernet_segments(sock, paced_bps)
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _tune(sock: socket.socket) -> None:
    # Small RPC messages must not wait for Nagle; that would be latency we did not inject.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _SO_TIMESTAMPNS is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)


_SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None
)
_TIMESPEC = struct.Struct("@ll")
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)


def _recv_stamped(sock: socket.socket, size: int) -> tuple[bytes, float]:
    """Read a chunk and when the kernel received it, on the ``perf_counter`` clock.

    A reader thread that slept through a long idle gap wakes 0.05-0.2 ms after
    the data arrived (idle CPU states, vCPU halt); stamping with the kernel's
    receive time keeps that wake-up out of the injected delay.
    """
    data, ancdata, _flags, _addr = sock.recvmsg(size, _ANC_BYTES)
    # Wall clock first: a pause between the two reads then makes the arrival
    # look later, never earlier, so a chunk can only err on the side of more delay.
    now_real = time.time()
    now_perf = time.perf_counter()
    for level, kind, payload in ancdata:
        if (
            level == socket.SOL_SOCKET
            and kind == _SO_TIMESTAMPNS
            and len(payload) >= _TIMESPEC.size
        ):
            sec, nsec = _TIMESPEC.unpack_from(payload)
            age = now_real - (sec + nsec * 1e-9)
            if 0 <= age < 1.0:  # ignore a stamp from a wall-clock step
                return data, now_perf - age
    return data, now_perf


class LinkProxy:
    """One simulated link: listens on ``listen`` and forwards every connection to ``upstream``.

    Thread-safe: ``stats()`` and ``set_profile()`` may be called from any thread
    while traffic flows.
    """

    def __init__(
        self,
        name: str,
        upstream: tuple[str, int],
        profile: LatencyProfile,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        realtime: bool = False,
        trace_capacity: int = DEFAULT_CAPACITY,
        queue_bytes: int | None = None,
        trace: DelayTrace | None = None,
        splice: bool = True,
    ) -> None:
        """``realtime`` asks for SCHED_FIFO on the releasing threads (best effort).

        ``splice`` passes bytes through with splice(2) where the kernel can
        (``Settings.netem_splice``); False copies them through a buffer.

        ``trace`` replays a delay trace (:mod:`edgelab.netem.replay`) in place of the
        profile's delay, looped from a start drawn from the profile's seed; the
        trace's clock starts now and keeps running across profile changes.

        ``queue_bytes`` bounds each direction's queue per connection (``None``: the
        profile's :func:`default_queue_bytes`, recomputed when the profile changes).

        ``trace_capacity`` bounds the per-chunk record (:mod:`edgelab.netem.trace`)
        that per-token timing is computed from.

        On a busy machine a woken thread can wait a whole scheduler slice
        (several ms) for a core; real-time priority removes that tail. It needs
        root or CAP_SYS_NICE; without them the link runs normally and
        ``stats().realtime`` says so.
        """
        self.name = name
        self.realtime = realtime
        self.splice = splice and SPLICE
        self._realtime_ok: bool | None = None
        self.upstream = upstream
        self.listen = listen
        if queue_bytes is not None and queue_bytes <= 0:
            raise ValueError(f"queue_bytes must be positive, got {queue_bytes}")
        self.queue_bytes = queue_bytes
        self.trace = trace
        self.trace_clock = (
            None if trace is None else TraceClock(trace, time.perf_counter(), profile.seed)
        )
        self._version = itertools.count()
        self._state = _LinkState(profile, next(self._version), queue_bytes, trace)
        self._lock = threading.Lock()
        self._stats = {d: DirectionStats() for d in DIRECTIONS}
        self._last_at: dict[str, float | None] = {d: None for d in DIRECTIONS}
        self._trace = ChunkLog(trace_capacity)
        # Client address of each recent connection (for the trace); bounded.
        self._clients: dict[int, str] = {}
        self._connections: set[_Connection] = set()
        self._connections_total = 0
        self._connect_errors = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._closing = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and start accepting; ``address`` is valid afterwards."""
        if self._listener is not None or self._closed:
            raise RuntimeError(f"link {self.name} already started or closed")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._paced_at_start():
                _ethernet_segments(listener, self._state.profile.direction("up").bandwidth_bps)
            listener.bind(self.listen)
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise OSError(f"link {self.name} cannot listen on {self.listen}: {exc}") from exc
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"netem-{self.name}-accept", daemon=True
        )
        self._accept_thread.start()

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError(f"link {self.name} is not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop accepting, drop every connection and join every thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._closing = True
            connections = list(self._connections)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        if self._accept_thread is not None:
            self._accept_thread.join(JOIN_TIMEOUT_S)
        if self._listener is not None:
            self._listener.close()
        for conn in connections:
            conn.abort("link closed")
        for conn in connections:
            for t in list(conn.threads):
                t.join(JOIN_TIMEOUT_S)

    def __enter__(self) -> LinkProxy:
        if self._listener is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- control and observation --------------------------------------------------------------

    @property
    def profile(self) -> LatencyProfile:
        return self._state.profile

    def set_profile(self, profile: LatencyProfile) -> None:
        """Apply ``profile`` to the next chunk read in each direction, on every connection.

        Chunks already queued keep their release times, so a stream never reorders.
        """
        self._state = _LinkState(profile, next(self._version), self.queue_bytes, self.trace)

    def stats(self) -> LinkStats:
        with self._lock:
            now = time.perf_counter()
            snap = {}
            for d in DIRECTIONS:
                last = self._last_at[d]
                snap[d] = DirectionStats(
                    **{
                        **asdict(self._stats[d]),
                        "idle_s": None if last is None else now - last,
                        "queue_limit_bytes": self._state.queue_limit[d],
                    }
                )
            return LinkStats(
                name=self.name,
                profile=self._state.profile.label,
                up=snap["up"],
                down=snap["down"],
                connections_open=len(self._connections),
                connections_total=self._connections_total,
                connect_errors=self._connect_errors,
                realtime=self._realtime_ok,
            )

    def chunks_since(self, start: float) -> ChunkTrace:
        """Every chunk forwarded that reached the proxy at or after ``start``
        (``time.perf_counter()``/``time.monotonic()`` seconds)."""
        trace = self._trace.since(start)
        with self._lock:
            trace.clients = {c: self._clients[c] for c in set(trace.conn) if c in self._clients}
        return trace

    def threads(self) -> list[threading.Thread]:
        """Live threads owned by this link (for leak checks)."""
        with self._lock:
            owned = [t for c in self._connections for t in c.threads]
        if self._accept_thread is not None:
            owned.append(self._accept_thread)
        return [t for t in owned if t.is_alive()]

    # -- internals ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener shut down by close()
            with self._lock:
                if self._closing:
                    client.close()
                    return
                conn = _Connection(self, client, self._connections_total)
                with contextlib.suppress(OSError):
                    host, port = client.getpeername()[:2]
                    self._clients[conn.index] = f"{host}:{port}"
                    if len(self._clients) > MAX_CLIENTS_KEPT:
                        del self._clients[min(self._clients)]
                self._connections_total += 1
                self._connections.add(conn)
            _tune(client)
            conn.start()

    def _paced_at_start(self) -> bool:
        return any(self._state.buckets[d] is not None for d in DIRECTIONS)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _make_realtime(self) -> None:
        try:
            # pid 0 is the calling thread on Linux, so only release threads are promoted.
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
            ok = True
        except (OSError, AttributeError) as exc:
            ok = False
            if self._realtime_ok is None:
                log.warning("link %s: real-time priority refused (%s)", self.name, exc)
        with self._lock:
            self._realtime_ok = ok if self._realtime_ok is None else (self._realtime_ok and ok)

    def _connect_failed(self, exc: OSError) -> None:
        log.warning("link %s: cannot connect to upstream %s: %s", self.name, self.upstream, exc)
        with self._lock:
            self._connect_errors += 1

    def _count(
        self,
        stats: DirectionStats,
        nbytes: int,
        delay_s: float,
        late_s: float = 0.0,
        *,
        trace: tuple[int, int, float, float, float, float] | None = None,
    ) -> None:
        if trace is not None:
            self._trace.record(*trace, nbytes)
        with self._lock:
            self._last_at["up" if stats is self._stats["up"] else "down"] = time.perf_counter()
            stats.bytes += nbytes
            stats.chunks += 1
            stats.delay_total_s += delay_s
            stats.late_total_s += late_s
            if delay_s > stats.delay_max_s:
                stats.delay_max_s = delay_s
            if late_s > stats.late_max_s:
                stats.late_max_s = late_s
