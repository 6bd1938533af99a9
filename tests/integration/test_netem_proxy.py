"""The link proxy through real loopback sockets: delay bounds, integrity, teardown, live control."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from edgelab.netem import LatencyProfile, LinkProxy

pytestmark = pytest.mark.integration

# The installed console script's entry point, run by this interpreter.
EDGELAB = [sys.executable, "-c", "from edgelab.cli import main; main()"]


class Upstream:
    """A loopback server standing in for a worker: echoes, or hands sockets to the test."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.accepted: queue.Queue[socket.socket] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept_loop)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self.threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets.append(conn)
            if self.echo:
                self._spawn(self._echo, conn)
            else:
                self.accepted.put(conn)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        buf = bytearray(1 << 16)
        try:
            while n := conn.recv_into(buf):
                conn.sendall(memoryview(buf)[:n])
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(5)
        for s in self._sockets:
            s.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def raw_upstream() -> Iterator[Upstream]:
    server = Upstream(echo=False)
    yield server
    server.close()


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = bytearray()
    while len(parts) < n:
        chunk = sock.recv(min(1 << 20, n - len(parts)))
        if not chunk:
            raise ConnectionError(f"EOF after {len(parts)} of {n} bytes")
        parts += chunk
    return bytes(parts)


def round_trip_s(sock: socket.socket, size: int = 64) -> float:
    payload = os.urandom(size)
    start = time.perf_counter()
    sock.sendall(payload)
    assert recv_exactly(sock, size) == payload
    return time.perf_counter() - start


def sees_close(sock: socket.socket, probe: bytes = b"") -> bool:
    """True once the far side is gone: EOF or a reset, whichever TCP reports first.

    With ``probe``, keep writing: a write is what surfaces a reset on a socket
    that never receives anything.
    """
    sock.settimeout(5)
    try:
        for _ in range(100):
            if probe:
                sock.sendall(probe)
            if sock.recv(1 << 16) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_fixed_20ms_each_way_bounds_every_round_trip(upstream: Upstream) -> None:
    with LinkProxy("w1", upstream.address, LatencyProfile.parse("20ms")) as proxy:
        with connect(proxy.address) as sock:
            rtts = [round_trip_s(sock) for _ in range(25)]
        stats = proxy.stats()
    assert min(rtts) >= 0.040
    # Far below 80 ms, the round trip of a proxy that delays each chunk twice. The
    # median carries the claim; the max only has to stay under 80 ms because a busy
    # 2-core machine can stall any single ping by tens of milliseconds.
    assert statistics.median(rtts) < 0.045
    assert max(rtts) < 0.080
    assert stats.up.chunks == stats.down.chunks == 25
    assert stats.up.bytes == stats.down.bytes == 25 * 64
    assert stats.up.delay_max_s >= 0.020
    assert stats.up.delay_total_s >= 25 * 0.020


def test_asymmetric_profile_delays_each_direction_by_its_own_amount(upstream: Upstream) -> None:
    with LinkProxy("w1", upstream.address, LatencyProfile.parse("30ms/5ms")) as proxy:
        with connect(proxy.address) as sock:
            rtts = [round_trip_s(sock) for _ in range(5)]
        stats = proxy.stats()
    assert min(rtts) >= 0.035
    assert stats.up.delay_total_s / stats.up.chunks >= 0.030
    assert 0.005 <= stats.down.delay_total_s / stats.down.chunks < 0.030


def test_one_mebibyte_arrives_byte_identical_under_a_random_profile(upstream: Upstream) -> None:
    payload = random.Random(9).randbytes(1 << 20)
    profile = LatencyProfile.parse("0ms..3ms/1ms~1ms", seed=11)
    with LinkProxy("w1", upstream.address, profile) as proxy, connect(proxy.address) as sock:
        received = bytearray()

        def reader() -> None:
            received.extend(recv_exactly(sock, len(payload)))

        t = threading.Thread(target=reader)
        t.start()
        rng = random.Random(3)
        offset = 0
        while offset < len(payload):  # odd-sized writes: many chunks, many delays
            size = rng.randint(1, 50_000)
            sock.sendall(payload[offset : offset + size])
            offset += size
        t.join(30)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        stats = proxy.stats()
        assert stats.up.bytes == stats.down.bytes == len(payload)
        assert stats.up.chunks > 3


def test_client_close_tears_the_link_down(raw_upstream: Upstream) -> None:
    baseline = threading.active_count()
    with LinkProxy("w1", raw_upstream.address, LatencyProfile.parse("5ms")) as proxy:
        client = connect(proxy.address)
        server_side = raw_upstream.accepted.get(timeout=5)
        client.sendall(b"hello")
        client.close()
        server_side.settimeout(5)
        assert recv_exactly(server_side, 5) == b"hello"
        assert server_side.recv(10) == b""  # the close crossed the link, after the data
        server_side.close()
        assert wait_for(lambda: proxy.stats().connections_open == 0)
        assert wait_for(lambda: len(proxy.threads()) == 1)  # only the accept loop
    assert proxy.threads() == []
    assert wait_for(lambda: threading.active_count() <= baseline)


def test_upstream_close_tears_the_link_down(raw_upstream: Upstream) -> None:
    with LinkProxy("w1", raw_upstream.address, LatencyProfile.parse("5ms")) as proxy:
        client = connect(proxy.address)
        server_side = raw_upstream.accepted.get(timeout=5)
        server_side.sendall(b"bye")
        server_side.close()
        assert recv_exactly(client, 3) == b"bye"
        assert client.recv(10) == b""
        client.close()
        assert wait_for(lambda: proxy.stats().connections_open == 0)
        assert wait_for(lambda: len(proxy.threads()) == 1)


def test_half_close_propagates_and_the_other_direction_keeps_working(
    raw_upstream: Upstream,
) -> None:
    with LinkProxy("w1", raw_upstream.address, LatencyProfile.parse("2ms")) as proxy:
        client = connect(proxy.address)
        server_side = raw_upstream.accepted.get(timeout=5)
        server_side.settimeout(5)
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        assert recv_exactly(server_side, 7) == b"request"
        assert server_side.recv(10) == b""
        server_side.sendall(b"late reply")
        assert recv_exactly(client, 10) == b"late reply"
        server_side.close()
        assert client.recv(10) == b""
        client.close()
        assert wait_for(lambda: proxy.stats().connections_open == 0)


def test_a_peer_that_dies_closes_the_other_side(raw_upstream: Upstream) -> None:
    with LinkProxy("w1", raw_upstream.address, LatencyProfile.parse("1ms")) as proxy:
        client = connect(proxy.address)
        server_side = raw_upstream.accepted.get(timeout=5)
        # An abortive close (RST), as when a worker process is killed mid-write.
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        server_side.close()
        assert sees_close(client, probe=b"x" * 1000)
        client.close()
        assert wait_for(lambda: proxy.stats().connections_open == 0)
        assert wait_for(lambda: len(proxy.threads()) == 1)


def test_unreachable_upstream_closes_the_client_and_counts_the_error() -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    dead = spare.getsockname()[:2]
    spare.close()  # nothing listens there any more
    with LinkProxy("w1", dead, LatencyProfile.parse("0ms")) as proxy:
        client = connect(proxy.address)
        client.settimeout(5)
        assert sees_close(client)
        client.close()
        assert wait_for(lambda: proxy.stats().connect_errors == 1)


def test_live_profile_change_applies_to_the_next_chunk(upstream: Upstream) -> None:
    with (
        LinkProxy("w1", upstream.address, LatencyProfile.parse("0ms")) as proxy,
        connect(proxy.address) as sock,
    ):
        before = [round_trip_s(sock) for _ in range(5)]
        proxy.set_profile(LatencyProfile.parse("25ms"))
        delayed = round_trip_s(sock)
        proxy.set_profile(LatencyProfile.parse("0ms"))
        after = round_trip_s(sock)
        assert proxy.stats().connections_total == 1  # the same connection throughout
    assert max(before) < 0.025
    assert delayed >= 0.050
    assert after < 0.025
    assert proxy.stats().profile == "0ms"


def test_close_with_traffic_in_flight_leaves_no_threads(upstream: Upstream) -> None:
    baseline = threading.active_count()
    proxy = LinkProxy("w1", upstream.address, LatencyProfile.parse("200ms"))
    proxy.start()
    socks = [connect(proxy.address) for _ in range(3)]
    for s in socks:
        s.sendall(b"queued for 200 ms")
    assert wait_for(lambda: proxy.stats().up.queue_depth == 3)
    proxy.close()
    proxy.close()  # idempotent
    assert proxy.threads() == []
    assert proxy.stats().up.queue_depth == 0
    for s in socks:
        s.settimeout(5)
        assert sees_close(s)  # a reset or an EOF, but never the queued bytes
        s.close()
    assert wait_for(lambda: threading.active_count() <= baseline)


def test_many_concurrent_connections_share_one_link(upstream: Upstream) -> None:
    errors: list[BaseException] = []
    n_clients = 16
    with LinkProxy("w1", upstream.address, LatencyProfile.parse("1ms..4ms", seed=1)) as proxy:

        def client(i: int) -> None:
            try:
                payload = random.Random(i).randbytes(100_000 + i)
                with connect(proxy.address) as sock:
                    for _ in range(3):
                        sock.sendall(payload)
                        assert recv_exactly(sock, len(payload)) == payload
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        stats = proxy.stats()
        assert stats.connections_total == n_clients
        expected = sum(3 * (100_000 + i) for i in range(n_clients))
        assert stats.up.bytes == stats.down.bytes == expected
        assert wait_for(lambda: proxy.stats().connections_open == 0)


def test_bandwidth_cap_slows_a_bulk_transfer(upstream: Upstream) -> None:
    profile = LatencyProfile.parse("0ms", bandwidth="8mbit")  # 1 MB/s
    with LinkProxy("w1", upstream.address, profile) as proxy, connect(proxy.address) as sock:
        start = time.perf_counter()
        round_trip_s(sock, 200_000)
        elapsed = time.perf_counter() - start
    # 200 kB at 1 MB/s must take >= 0.2 s one way (both directions are paced).
    assert elapsed >= 0.2


def test_cli_proxy_prints_ready_line_and_final_counters(upstream: Upstream) -> None:
    host, port = upstream.address
    proc = subprocess.Popen(
        [
            *EDGELAB,
            "proxy",
            "--upstream",
            f"{host}:{port}",
            "--latency",
            "2ms",
            "--seed",
            "3",
            "--name",
            "root<->w1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("proxy listening on 127.0.0.1:")
        listen_port = int(ready.split()[3].rsplit(":", 1)[1])
        with connect(("127.0.0.1", listen_port)) as sock:
            assert round_trip_s(sock) >= 0.004
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["event"] == "final"
    assert final["name"] == "root<->w1"
    assert final["up"]["bytes"] == 64
    assert final["down"]["chunks"] == 1


def test_cli_proxy_rejects_a_bad_profile_with_the_accepted_forms() -> None:
    result = subprocess.run(
        [
            *EDGELAB,
            "proxy",
            "--upstream",
            "127.0.0.1:1",
            "--latency",
            "fast",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "10ms..50ms" in result.stderr


def test_cli_proxy_takes_live_profiles_on_stdin(upstream: Upstream) -> None:
    host, port = upstream.address
    proc = subprocess.Popen(
        [*EDGELAB, "proxy", "--upstream", f"{host}:{port}", "--control-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        listen_port = int(proc.stdout.readline().split()[3].rsplit(":", 1)[1])
        assert proc.stdout.readline().strip() == "profile 0ms"
        with connect(("127.0.0.1", listen_port)) as sock:
            assert round_trip_s(sock) < 0.030
            proc.stdin.write("set 15ms\n")
            assert proc.stdout.readline().strip() == "profile 15ms"
            assert round_trip_s(sock) >= 0.030
            exact = LatencyProfile.parse("1ms..2ms/3ms", seed=5)
            proc.stdin.write(f"json {json.dumps(exact.to_dict())}\n")
            assert proc.stdout.readline().strip() == f"profile {exact.label}"
            proc.stdin.write("stats\n")
            stats = json.loads(proc.stdout.readline())
        assert stats["event"] == "stats"
        assert stats["profile"] == "1ms..2ms/3ms"
        assert stats["up"]["chunks"] == 2
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
