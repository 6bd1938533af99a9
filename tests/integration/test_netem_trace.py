"""Delay traces (issue 15): a trace-driven link's per-chunk delays follow the trace."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from edgelab.netem import LatencyProfile, LinkProxy
from edgelab.netem.replay import DelayTrace, load_delay_trace
from edgelab.netem.trace import UP
from edgelab.topology.linktrace import TracePoint, parse_trace

pytestmark = pytest.mark.integration

TRACE_CSV = """offset_s,delay_ms,bandwidth
0,5
0.3,40
0.6,15,
"""  # period 0.9 s: the last point lasts as long as the one before


def echo_server() -> socket.socket:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_trace_loops_from_a_seeded_start() -> None:
    trace = DelayTrace.from_points(parse_trace(TRACE_CSV))
    assert trace.period_s == pytest.approx(0.9)
    assert [trace.delay_at(t) for t in (0.0, 0.29, 0.3, 0.61, 0.95, 1.25)] == [
        0.005, 0.005, 0.04, 0.015, 0.005, 0.04,
    ]  # fmt: skip
    assert trace.start_offset_s(7) == trace.start_offset_s(7) != trace.start_offset_s(8)
    bw = DelayTrace.from_points([TracePoint(0, 1, 8_000_000), TracePoint(1, 2)])
    assert (bw.bandwidth_at(0.5), bw.bandwidth_at(1.5)) == (8_000_000, None)


def test_per_chunk_delays_follow_the_trace(tmp_path: Path) -> None:
    path = tmp_path / "wifi.csv"
    path.write_text(TRACE_CSV)
    trace = load_delay_trace(str(path))
    listener = echo_server()
    profile = LatencyProfile.parse("0ms", seed=3)  # the trace replaces its delay
    with LinkProxy("w1", listener.getsockname()[:2], profile, trace=trace) as proxy:
        clock = proxy.trace_clock
        assert clock is not None
        assert clock.start_s == trace.start_offset_s(3)  # the seeded start
        rtts: list[float] = []
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            end = time.perf_counter() + 2.0  # more than two periods
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                sock.sendall(b"x" * 64)
                got = 0
                while got < 64:
                    got += len(sock.recv(64))
                rtts.append(time.perf_counter() - t0)
                time.sleep(0.01)
        chunks = proxy.chunks_since(0.0)
    up = [i for i, d in enumerate(chunks.direction) if d == UP]
    assert len(up) == len(rtts) >= 20
    # Every chunk got the delay the trace holds at its arrival, in both directions...
    for i in range(len(chunks.arrival)):
        expected = trace.delay_at(chunks.arrival[i] - clock.origin + clock.start_s)
        assert chunks.delay[i] == expected
        # ... and left the proxy that long after it arrived (release precision).
        assert chunks.out[i] - chunks.arrival[i] >= expected - 0.0005
    # All three levels were replayed (2 s covers every stretch of a 0.9 s period).
    assert {chunks.delay[i] for i in up} == {0.005, 0.04, 0.015}
    # The client sees it: round trips of 2 x 5 ms and of 2 x 40 ms.
    assert min(rtts) >= 0.0095
    assert max(rtts) >= 0.079
