"""Benchmark of the latency proxy against a direct connection to the same server.

Run: ``.venv/bin/python bench/netem_bench.py`` (about 1-2 minutes on 2 cores).

* one-way delay error: 64-byte ping-pong; the server stamps arrival and reply
  times with ``perf_counter`` (CLOCK_MONOTONIC, shared by all processes here),
  so up and down are measured separately. Added delay = proxied one-way minus
  the direct one-way median; the configured delay of each chunk is replayed
  from the profile's seed, so uniform profiles are checked chunk by chunk.
* throughput at 0 ms: request/response echo of 64 KiB and 4 MiB messages.
* bandwidth cap: a one-way bulk stream into a sink, rate measured at the sink.

By default the proxy is the ``edgelab proxy`` process (as inside a worker
container), reconfigured through ``--control-stdin``; ``--in-process`` runs a
LinkProxy in this process instead (as the local backend does).

``--baseline DIR`` also runs the ``edgelab proxy`` of another source tree (e.g.
``git archive COMMIT edgelab | tar -x -C DIR``) and measures it in the same run,
interleaved with this one, so a change to the proxy is judged against its
predecessor under the same load. A last section then times a 5 MB ``sendall``
into a 10 mbit link through each (issue 15: links that push back).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edgelab.netem import LatencyProfile, LinkProxy

STAMPS = struct.Struct("dd")
PING_BYTES = 64


class BenchServer:
    """One upstream for every measurement; the first byte picks the mode."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sink_results: list[tuple[int, float, float]] = []
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def _start(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            mode = conn.recv(1)
            if mode == b"P":
                self._ping(conn)
            elif mode == b"E":
                self._echo(conn)
            elif mode == b"S":
                self._sink(conn)

    @staticmethod
    def _ping(conn: socket.socket) -> None:
        buf = bytearray(PING_BYTES)
        view = memoryview(buf)
        while True:
            got = 0
            while got < PING_BYTES:
                n = conn.recv_into(view[got:])
                if n == 0:
                    return
                got += n
            arrived = time.perf_counter()
            reply = bytearray(PING_BYTES)
            STAMPS.pack_into(reply, 0, arrived, 0.0)
            replied = time.perf_counter()
            STAMPS.pack_into(reply, 0, arrived, replied)
            conn.sendall(reply)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        while n := conn.recv_into(buf):
            conn.sendall(view[:n])

    def _sink(self, conn: socket.socket) -> None:
        buf = bytearray(1 << 20)
        total, first, last = 0, 0.0, 0.0
        while n := conn.recv_into(buf):
            now = time.perf_counter()
            if total == 0:
                first = now
            else:
                total += n  # bytes after the first read, over the time since it
            if total == 0:
                total = 1
            last = now
        self.sink_results.append((total - 1, first, last))
        conn.sendall(b"k")

    def close(self) -> None:
        self.listener.close()


class Link(Protocol):
    address: tuple[str, int]
    # Connections opened so far: the proxy seeds connection i's delays as stream i.
    connections: int

    def set(self, profile: LatencyProfile) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class InProcessLink:
    def __init__(self, upstream: tuple[str, int], realtime: bool) -> None:
        self.proxy = LinkProxy("bench", upstream, LatencyProfile.parse("0ms"), realtime=realtime)
        self.proxy.start()
        self.address = self.proxy.address
        self.connections = 0

    def set(self, profile: LatencyProfile) -> None:
        self.proxy.set_profile(profile)

    def stats(self) -> dict[str, Any]:
        return self.proxy.stats().to_dict()

    def close(self) -> None:
        self.proxy.close()


class ProcessLink:
    """``edgelab proxy --control-stdin`` in a child process."""

    def __init__(
        self,
        upstream: tuple[str, int],
        realtime: bool,
        env: dict[str, str] | None = None,
        source: str | None = None,
        latency: str = "0ms",
        bandwidth: str | None = None,
    ) -> None:
        """``source``: an edgelab source tree to run instead of the installed one (its
        directory is also the child's cwd, which comes first on ``sys.path``)."""
        code = "from edgelab.cli import main; main()"
        self.source = source
        if source is not None:
            env = {**(env or {}), "PYTHONPATH": source}
        start_profile = ["--latency", latency, *(["--bandwidth", bandwidth] if bandwidth else [])]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "proxy", "--upstream", f"{upstream[0]}:{upstream[1]}",
             "--control-stdin", "--name", "bench", *(["--realtime"] if realtime else []),
             *start_profile],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **(env or {})}, cwd=source,
        )  # fmt: skip
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if not ready.startswith("proxy listening on"):
            raise RuntimeError(f"proxy did not start: {ready!r}")
        host, port = ready.split()[3].rsplit(":", 1)
        self.address = (host, int(port))
        self.connections = 0
        self.proc.stdout.readline()  # "profile ..."

    def set(self, profile: LatencyProfile) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"json {json.dumps(profile.to_dict())}\n")
        self.proc.stdin.flush()
        confirm = self.proc.stdout.readline()
        if not confirm.startswith("profile"):
            raise RuntimeError(f"proxy refused profile: {confirm!r}")

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        stats: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return stats

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.terminate()
        self.proc.communicate(timeout=10)


def connect(address: tuple[str, int], mode: bytes) -> socket.socket:
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mode)
    return sock


def pings(
    address: tuple[str, int], count: int, idle_s: float = 0.002
) -> tuple[list[float], list[float]]:
    """Up and down one-way times (s) of ``count`` sequential pings ``idle_s`` apart."""
    ups, downs = [], []
    payload = b"p" * PING_BYTES
    buf = bytearray(PING_BYTES)
    view = memoryview(buf)
    with connect(address, b"P") as sock:
        for _ in range(count + 1):
            sent = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < PING_BYTES:
                got += sock.recv_into(view[got:])
            back = time.perf_counter()
            arrived, replied = STAMPS.unpack_from(buf)
            ups.append(arrived - sent)
            downs.append(back - replied)
            time.sleep(idle_s)
    return ups[1:], downs[1:]  # the first ping also pays for the upstream connect


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def delay_matrix(server: BenchServer, links: list[tuple[str, Link]], quick: bool) -> list[str]:
    direct_up, direct_down = pings(server.address, 300)
    base = {"up": statistics.median(direct_up), "down": statistics.median(direct_down)}
    noise = [abs(v - base["up"]) * 1e3 for v in direct_up]
    noise += [abs(v - base["down"]) * 1e3 for v in direct_down]
    rows = [
        f"direct one-way median: up {base['up'] * 1e3:.3f} ms, down {base['down'] * 1e3:.3f} ms; "
        f"direct |deviation| median {statistics.median(noise):.3f} ms, "
        f"p99 {percentile(noise, 0.99):.3f} ms (the noise floor of this machine)",
        f"{'profile':<16}{'proxy':<10}{'n':>5}{'median err ms':>15}{'p99 err ms':>12}"
        f"{'max err ms':>12}{'mean added ms':>15}{'proxy late ms':>15}{'idle wake ms':>14}"
        f"{'target':>8}",
    ]
    configs: list[str] = []
    for ms in (0, 1, 10, 50, 100):
        configs.append(f"{ms}ms")
        if ms:
            configs.append(f"{ms / 2:g}ms..{ms * 1.5:g}ms")
    for index, text in enumerate(configs):
        profile = LatencyProfile.parse(text, seed=index)
        delay_ms = profile.direction("up").max_ms or profile.direction("up").delay_ms
        count = max(20, min(200, int(4000 / (2 * delay_ms + 2))))
        if quick:
            count = max(10, count // 4)
        # Rotated per profile, so no proxy is always measured first.
        order = links[index % len(links) :] + links[: index % len(links)]
        measured_rows: dict[str, str] = {}
        for label, link in order:
            # A new profile restarts the link's samplers at the seed, so the
            # configured delay of every chunk can be replayed here.
            link.set(profile)
            stream = link.connections
            link.connections += 1
            before = link.stats()
            ups, downs = pings(link.address, count)
            after = link.stats()
            late = sum(after[d]["late_total_s"] - before[d]["late_total_s"] for d in ("up", "down"))
            late_chunks = sum(after[d]["chunks"] - before[d]["chunks"] for d in ("up", "down"))
            errors, added = [], []
            for direction, measured in (("up", ups), ("down", downs)):
                sampler = profile.sampler(direction, stream=stream)
                next(sampler)  # the discarded first ping
                for one_way in measured:
                    extra = one_way - base[direction]
                    added.append(extra)
                    errors.append(abs(extra - next(sampler)) * 1e3)
            med, p99 = statistics.median(errors), percentile(errors, 0.99)
            # A receiver that slept as long as the delay wakes later than one that did
            # not (idle CPU states, vCPU halt): measured directly, the server's wake-up
            # cost after the same idle time, a floor under the error that is not the proxy's.
            idle_up, _ = pings(server.address, 10, idle_s=delay_ms / 1000)
            wake = statistics.median(idle_up) - base["up"]
            ok = "ok" if med <= 0.2 and p99 <= 1.0 else "MISS"
            measured_rows[label] = (
                f"{text:<16}{label:<10}{len(errors):>5}{med:>15.3f}{p99:>12.3f}"
                f"{max(errors):>12.3f}{statistics.mean(added) * 1e3:>15.3f}"
                f"{late / late_chunks * 1e3:>15.3f}{wake * 1e3:>14.3f}{ok:>8}"
            )
        rows.extend(measured_rows[label] for label, _ in links)
    return rows


def echo_rate(address: tuple[str, int], size: int, seconds: float) -> float:
    """Bytes per second echoed back, request/response, ``size``-byte messages."""
    payload = bytes(size)
    buf = bytearray(size)
    view = memoryview(buf)
    done = 0
    with connect(address, b"E") as sock:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            sock.sendall(payload)
            got = 0
            while got < size:
                got += sock.recv_into(view[got:])
            done += size
        return done / (time.perf_counter() - start)


def throughput(server: BenchServer, links: list[tuple[str, Link]], quick: bool) -> list[str]:
    """Direct and proxied slices interleaved, so load from other processes hits both alike."""
    link = links[0][1]
    for _, each in links:
        each.set(LatencyProfile.parse("0ms"))
    others: list[tuple[str, Link]] = list(links[1:])
    owned: list[Link] = []
    if isinstance(link, ProcessLink):
        # The other pass-through implementation, measured side by side.
        alt = ProcessLink(server.address, False, {"EDGELAB_NETEM_SPLICE": "0"})
        others.append(("recv_into", alt))
        owned.append(alt)
    rounds, slice_s = (4, 0.1) if quick else (12, 0.15)
    header = f"{'message':<10}{'direct MB/s':>13}{'proxy MB/s':>12}{'ratio':>7}"
    for label, _ in others:
        header += f"{label + ' MB/s':>16}{'ratio':>7}"
    rows = [header + f"   (median of {rounds} interleaved {slice_s}s slices each)"]
    try:
        for size in (64 << 10, 4 << 20):
            targets = [server.address, link.address, *(o.address for _, o in others)]
            rates: list[list[float]] = [[] for _ in targets]
            for r in range(rounds):
                for k in range(len(targets)):  # rotated, so no target always goes first
                    i = (k + r) % len(targets)
                    rates[i].append(echo_rate(targets[i], size, slice_s))
            for _, each in [*links, *others]:
                each.connections += rounds
            medians = [statistics.median(r) for r in rates]
            row = f"{size // 1024:>6} KiB{medians[0] / 1e6:>13.0f}"
            for j, m in enumerate(medians[1:]):
                row += f"{m / 1e6:>{12 if j == 0 else 16}.0f}{m / medians[0]:>7.2f}"
            rows.append(row)
    finally:
        for other in owned:
            other.close()
    return rows


def bandwidth(server: BenchServer, links: list[tuple[str, Link]], quick: bool) -> list[str]:
    rows = [f"{'cap':<10}{'proxy':<10}{'achieved':>14}{'error':>9}{'target':>8}"]
    seconds = 1.0 if quick else 3.0
    chunk = bytes(256 << 10)
    for rate in ("10mbit", "100mbit", "1gbit"):
        profile = LatencyProfile.parse("0ms", bandwidth=rate)
        assert profile.bandwidth_bps is not None
        for label, link in links:
            link.set(profile)
            link.connections += 1
            with connect(link.address, b"S") as sock:
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1)  # the sink has seen everything
            nbytes, first, last = server.sink_results.pop()
            achieved = nbytes * 8 / (last - first)
            err = achieved / profile.bandwidth_bps - 1
            ok = "ok" if abs(err) <= 0.03 else "MISS"
            rows.append(
                f"{rate:<10}{label:<10}{achieved / 1e6:>10.2f} Mb/s{err * 100:>+8.2f}%{ok:>8}"
            )
    return rows


def pushback(server: BenchServer, links: list[tuple[str, Link]], quick: bool) -> list[str]:
    """A 5 MB sendall into a 10 mbit link: when it returns vs when the sink has it all.

    The link is started paced (a fresh ``edgelab proxy``), as a cluster's links
    are, because a paced link sizes its sockets when it starts. Both the host's
    default congestion control and CUBIC are shown: on loopback BBR grows the
    sender's own send buffer to about a megabyte, beyond the proxy's reach.
    """
    rows = [f"{'proxy':<10}{'sender cc':<11}{'sendall s':>10}{'last byte s':>13}{'queue max':>11}"]
    sources = {label: getattr(link, "source", None) for label, link in links}
    for label, _ in links:
        for cc in (None, b"cubic"):
            link = ProcessLink(server.address, False, source=sources[label], latency="0ms",
                               bandwidth="10mbit")  # fmt: skip
            try:
                with socket.socket() as sock:
                    if cc is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc)
                    sock.connect(link.address)
                    sock.sendall(b"S")
                    start = time.perf_counter()
                    sock.sendall(bytes(5_000_000))
                    sent = time.perf_counter() - start
                    sock.shutdown(socket.SHUT_WR)
                    sock.recv(1)
                _, _, last = server.sink_results.pop()
                queue_max = link.stats()["up"].get("queue_max_bytes", "-")
            finally:
                link.close()
            name = (cc or b"default").decode()
            rows.append(f"{label:<10}{name:<11}{sent:>10.2f}{last - start:>13.2f}{queue_max!s:>11}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-process", action="store_true", help="LinkProxy in this process")
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--realtime", action="store_true", help="LinkProxy(realtime=True)")
    parser.add_argument(
        "--baseline", default=None, help="another edgelab source tree to measure side by side"
    )
    args = parser.parse_args()
    server = BenchServer()
    link: Link = (
        InProcessLink(server.address, args.realtime)
        if args.in_process
        else ProcessLink(server.address, args.realtime)
    )
    links: list[tuple[str, Link]] = [("this", link)]
    if args.baseline:
        links.append(("baseline", ProcessLink(server.address, args.realtime, source=args.baseline)))
    parts: list[tuple[str, Callable[[BenchServer, list[tuple[str, Link]], bool], list[str]]]] = [
        ("one-way added delay error vs configured (direct = same server)", delay_matrix),
        ("throughput at 0 ms, request/response echo", throughput),
        ("bandwidth cap, one-way bulk stream", bandwidth),
    ]
    if args.baseline and not args.in_process:
        parts.append(("5 MB sendall into a 10 mbit link (pushback)", pushback))
    try:
        mode = "in-process LinkProxy" if args.in_process else "edgelab proxy subprocess"
        mode += ", realtime" if args.realtime else ""
        mode += f", baseline {args.baseline}" if args.baseline else ""
        print(f"# netem benchmark ({mode})")
        for title, part in parts:
            print(f"\n## {title}")
            for row in part(server, links, args.quick):
                print(row, flush=True)
    finally:
        for _, each in links:
            each.close()
        server.close()


if __name__ == "__main__":
    main()
