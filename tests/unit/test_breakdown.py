"""Per-token link timing and the breakdown built on it, from synthetic chunk traces
with known answers (one file: the breakdown tests reuse the synthetic pipeline)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from edgelab.analysis.breakdown import adds_up, breakdown
from edgelab.metrics import linktiming
from edgelab.metrics.linktiming import RootClock, decode_bytes_per_token, exchanges
from edgelab.netem.trace import DOWN, UP, ChunkLog, ChunkTrace

MS = 0.001
ORIGIN = 100.0


def chunk(
    trace: ChunkTrace,
    direction: int,
    arrival_ms: float,
    out_ms: float,
    nbytes: int,
    *,
    delay_ms: float | None = None,
    ready_ms: float | None = None,
    conn: int = 0,
) -> None:
    """A chunk at times in ms after ORIGIN; by default all of its wait is injected delay."""
    ready = arrival_ms if ready_ms is None else ready_ms
    trace.conn.append(conn)
    trace.direction.append(direction)
    trace.arrival.append(ORIGIN + arrival_ms * MS)
    trace.ready.append(ORIGIN + ready * MS)
    trace.delay.append((out_ms - ready if delay_ms is None else delay_ms) * MS)
    trace.out.append(ORIGIN + out_ms * MS)
    trace.nbytes.append(nbytes)


def serial_cluster(tokens: int) -> tuple[dict[str, ChunkTrace], RootClock]:
    """A llama.cpp-like 3-node pipeline, 100 ms per decode token:

    root 10 ms, link1 request 20 ms, worker1 10 ms, reply 20 ms, link2 request
    20 ms, worker2 5 ms, reply 15 ms. The first token is emitted at 50 ms.
    """
    link1, link2 = ChunkTrace(), ChunkTrace()
    # Load-phase traffic before the origin and a prefill exchange.
    chunk(link1, UP, -30, -29, 1_000_000)
    chunk(link1, DOWN, -20, -19, 10)
    chunk(link1, UP, 5, 6, 4000)
    chunk(link1, DOWN, 20, 21, 400)
    offsets = [50.0]
    for k in range(1, tokens):
        t = 50.0 + 100.0 * (k - 1)
        chunk(link1, UP, t + 10, t + 30, 300)
        chunk(link1, UP, t + 10.1, t + 30, 20)  # a second message in the same request
        chunk(link1, DOWN, t + 40, t + 60, 2000)
        chunk(link2, UP, t + 60, t + 80, 2000)
        chunk(link2, DOWN, t + 85, t + 100, 2000)
        offsets.append(t + 100.0)
    return {"root<->worker1": link1, "root<->worker2": link2}, RootClock(ORIGIN, offsets)


def test_a_serial_pipeline_splits_each_token_exactly() -> None:
    traces, clock = serial_cluster(tokens=5)

    timing = linktiming.compute(traces, clock)

    w1, w2 = timing["root<->worker1"], timing["root<->worker2"]
    assert w1.per_token["round_trips"] == [1, 1, 1, 1]
    assert w2.per_token["round_trips"] == [1, 1, 1, 1]
    assert w1.per_token["worker_ms"] == pytest.approx([10.0] * 4, abs=1e-6)
    assert w2.per_token["worker_ms"] == pytest.approx([5.0] * 4, abs=1e-6)
    assert w1.per_token["injected_ms"] == pytest.approx([40.0] * 4, abs=1e-6)
    assert w2.per_token["injected_ms"] == pytest.approx([35.0] * 4, abs=1e-6)
    # The second request message arrived 0.1 ms after the first: sender time.
    assert w1.per_token["transfer_ms"] == pytest.approx([0.0] * 4, abs=1e-6)
    assert w1.per_token["bytes"] == [2320] * 4
    assert w1.ms["decode"]["worker"] == pytest.approx(40.0, abs=1e-6)
    # What no link covers is the root's 10 ms per token.
    covered = sum(sum(lt.ms["decode"].values()) for lt in timing.values())
    assert 400.0 - covered == pytest.approx(40.0, abs=1e-6)


def test_phases_split_bytes_and_round_trips_at_the_roots_boundaries() -> None:
    traces, clock = serial_cluster(tokens=3)

    w1 = linktiming.compute(traces, clock)["root<->worker1"]

    assert w1.bytes == {"load": 1_000_010, "prefill": 4400, "decode": 2 * 2320}
    assert w1.round_trips == {"load": 1, "prefill": 1, "decode": 2}
    assert w1.ms["prefill"]["injected"] == pytest.approx(2.0, abs=1e-6)
    assert w1.ms["prefill"]["worker"] == pytest.approx(14.0, abs=1e-6)


def test_decode_bytes_per_token_counts_decode_traffic_only() -> None:
    traces, clock = serial_cluster(tokens=5)

    per_token = decode_bytes_per_token(linktiming.compute(traces, clock))

    assert per_token == 2320 + 4000  # not the 1 MB load nor the prefill


def test_bandwidth_wait_is_transfer_and_the_sampled_delay_is_injected() -> None:
    link = ChunkTrace()
    # 5 ms waiting for the bandwidth cap, then 20 ms of delay; the reply is instant.
    chunk(link, UP, 60, 85, 100_000, ready_ms=65, delay_ms=20)
    chunk(link, DOWN, 90, 90.5, 10, delay_ms=0)

    lt = linktiming.compute({"l": link}, RootClock(ORIGIN, [50.0, 150.0]))["l"]

    assert lt.per_token["transfer_ms"] == pytest.approx([5.5], abs=1e-6)
    assert lt.per_token["injected_ms"] == pytest.approx([20.0], abs=1e-6)
    assert lt.per_token["worker_ms"] == pytest.approx([5.0], abs=1e-6)


def test_a_chunk_held_behind_a_slower_one_is_charged_to_the_slower_ones_delay() -> None:
    link = ChunkTrace()
    # In-order delivery: the second chunk (10 ms delay) leaves with the first (30 ms).
    chunk(link, UP, 60, 90, 100, delay_ms=30)
    chunk(link, UP, 61, 90, 100, delay_ms=10)

    lt = linktiming.compute({"l": link}, RootClock(ORIGIN, [50.0, 150.0]))["l"]

    assert lt.per_token["injected_ms"] == pytest.approx([30.0], abs=1e-6)
    assert lt.per_token["transfer_ms"] == pytest.approx([0.0], abs=1e-6)
    assert lt.delay["up"] == {"p50": 29.5, "p99": pytest.approx(29.99), "max": 30.0, "n": 2}
    assert lt.delay["down"]["n"] == 0


def test_overlapping_links_share_the_time_they_overlap() -> None:
    a, b = ChunkTrace(), ChunkTrace()
    # Two workers asked at once (a tensor-parallel engine): 40 ms of overlap.
    chunk(a, UP, 60, 100, 10)
    chunk(b, UP, 60, 100, 10)

    timing = linktiming.compute({"a": a, "b": b}, RootClock(ORIGIN, [50.0, 150.0]))

    assert timing["a"].per_token["injected_ms"] == pytest.approx([20.0], abs=1e-6)
    assert timing["b"].per_token["injected_ms"] == pytest.approx([20.0], abs=1e-6)


def test_connections_are_separate_conversations() -> None:
    trace = ChunkTrace()
    chunk(trace, UP, 0, 1, 10, conn=0)
    chunk(trace, UP, 0.5, 1.5, 10, conn=1)
    chunk(trace, DOWN, 2, 3, 10, conn=0)
    chunk(trace, DOWN, 2.5, 3.5, 10, conn=1)
    chunk(trace, UP, 4, 5, 10, conn=0)

    turns = exchanges(trace)

    assert sorted((len(up), len(down)) for up, down in turns) == [(1, 0), (1, 1), (1, 1)]


def test_the_ring_keeps_the_newest_chunks_and_says_when_it_lost_some() -> None:
    log = ChunkLog(capacity=4)
    for i in range(6):
        log.record(0, UP, float(i), float(i), 0.0, float(i) + 0.5, 10 * i)

    assert log.since(4.0).nbytes == [40, 50]
    assert log.since(4.0).complete
    lost = log.since(0.0)
    assert lost.nbytes == [20, 30, 40, 50]
    assert not lost.complete
    assert ChunkTrace.from_dict(lost.to_dict()) == lost


def detail_of(tokens: int) -> dict[str, Any]:
    """A run's JSON as run_detail returns it, from the synthetic serial pipeline."""
    traces, clock = serial_cluster(tokens)
    timings = linktiming.compute(traces, clock)
    return {
        "tokens": [
            {"index": i, "offset_ms": off, "text": "x", "detail": None}
            for i, off in enumerate(clock.token_offsets_ms)
        ],
        "links": [{"link": name, "timing": lt.to_json()} for name, lt in timings.items()],
    }


def test_proxy_breakdown_recovers_the_pipelines_parts_and_adds_up_to_tpot() -> None:
    result = breakdown(detail_of(tokens=6))

    assert result is not None
    assert result.source == "proxy"
    assert result.decode_tokens == 5
    assert result.tpot_ms == pytest.approx(100.0)
    assert result.root_compute_ms == pytest.approx(10.0, abs=1e-3)
    assert result.worker_compute_ms == pytest.approx({"worker1": 10.0, "worker2": 5.0}, abs=1e-3)
    assert result.injected_ms == pytest.approx(75.0, abs=1e-3)
    assert result.transfer_ms == pytest.approx(0.0, abs=1e-3)
    assert result.round_trips_per_token == 2.0
    assert result.bytes_per_token == 2320 + 4000
    assert result.per_token["root_compute_ms"] == pytest.approx([10.0] * 5, abs=1e-3)
    assert adds_up(result)


def test_adds_up_refuses_parts_that_miss_tpot_by_more_than_five_percent() -> None:
    result = breakdown(detail_of(tokens=3))
    assert result is not None
    assert adds_up(replace(result, root_compute_ms=result.root_compute_ms + 4.9))
    assert not adds_up(replace(result, root_compute_ms=result.root_compute_ms + 5.1))


def test_dllama_uses_its_own_compute_and_sync_and_cross_checks_the_proxies() -> None:
    data = detail_of(tokens=4)
    for token in data["tokens"]:
        token["detail"] = {"compute_ms": 9, "sync_ms": 88, "sent_kb": 6, "recv_kb": 2}

    result = breakdown(data)

    assert result is not None
    assert result.source == "dllama"
    assert result.root_compute_ms == 9.0
    # The 88 ms of sync is split as the proxies saw it: 15 worker, 75 injected of 90.
    assert result.injected_ms == pytest.approx(88 * 75 / 90, abs=1e-3)
    assert sum(result.worker_compute_ms.values()) == pytest.approx(88 * 15 / 90, abs=1e-3)
    assert result.other_ms == pytest.approx(3.0, abs=1e-3)
    assert result.cross_check == {
        "sync_ms": 88.0,
        "proxy_network_ms": pytest.approx(90.0),
        "dllama_bytes_per_token": 8 * 1024,
        "proxy_root_bytes_per_token": None,  # the root's addresses were not given
    }
    assert adds_up(result)


def test_runs_without_decode_tokens_or_link_timing_have_no_breakdown() -> None:
    one_token = {"tokens": [{"index": 0, "offset_ms": 5.0}], "links": []}
    old_run = detail_of(tokens=3)
    for link in old_run["links"]:
        link["timing"] = None

    assert breakdown(one_token) is None
    assert breakdown(old_run) is None


def test_a_single_node_run_is_all_root_compute() -> None:
    data = {"tokens": [{"index": i, "offset_ms": 10.0 * i} for i in range(4)], "links": []}

    result = breakdown(data)

    assert result is not None
    assert result.root_compute_ms == pytest.approx(10.0)
    assert result.injected_ms == 0.0
    assert result.round_trips_per_token is None


def test_root_bytes_count_only_the_roots_connections() -> None:
    traces, clock = serial_cluster(tokens=3)
    # A worker-to-worker connection (dllama's mesh) on link 2, from another client.
    link2 = traces["root<->worker2"]
    chunk(link2, UP, 61, 62, 5000, conn=7)
    for trace in traces.values():
        trace.clients = {0: "127.0.0.1:4000", 7: "127.0.0.1:5000"}

    timing = linktiming.compute(traces, clock, root_clients={"127.0.0.1:4000"})

    w2 = timing["root<->worker2"]
    assert w2.bytes["decode"] == 2 * 4000 + 5000
    assert w2.root_bytes == {"load": 0, "prefill": 0, "decode": 2 * 4000}
    assert w2.per_token["root_bytes"] == [4000, 4000]
    # A bare host stands for every port of it (a Docker node's own address).
    by_host = linktiming.compute(traces, clock, root_clients={"127.0.0.1"})
    assert by_host["root<->worker2"].root_bytes == {"load": 0, "prefill": 0, "decode": 13000}
