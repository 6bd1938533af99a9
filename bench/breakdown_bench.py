"""Where a token's time goes on a real 3-node llama.cpp cluster, at several delays.

Run: ``.venv/bin/python bench/breakdown_bench.py`` (about a minute on 2 cores; needs
the smollm2-135m model, ``EDGELAB_MODELS_DIR`` or ``var/models``).

One warm 3-node x 1-thread cluster serves every run, so the runs differ only in
the injected one-way delay; delays are visited in a rotated order per repetition
(no position bias). Per delay it prints the mean of the runs' breakdowns
(:mod:`edgelab.analysis.breakdown`): TPOT and its parts (root compute, each
worker's compute, injected delay, transfer), the measured round trips and bytes
per decode token per link, and the injected delay beside what the profile
implies (round trips x 2 x delay). It also times the proxy's per-chunk record
(:class:`edgelab.netem.trace.ChunkLog`) against a loopback send+recv of one
64-byte message, the cheapest thing a proxy does per chunk.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgelab.analysis.breakdown import breakdown  # noqa: E402
from edgelab.catalog import Catalog  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.netem.trace import UP, ChunkLog  # noqa: E402
from edgelab.runs.config import parse_config  # noqa: E402
from edgelab.runs.executor import cluster_for, create_run, execute_run  # noqa: E402
from edgelab.runs.views import run_detail  # noqa: E402
from edgelab.settings import Settings  # noqa: E402

PROMPT = "Write a long story about the planets of the solar system."


def record_cost_us(n: int = 200_000) -> tuple[float, float]:
    """(ChunkLog.record µs per call, loopback 64-byte send+recv µs), measured here."""
    log = ChunkLog()
    t0 = time.perf_counter()
    for i in range(n):
        log.record(0, UP, 1.0, 1.0, 0.0, 1.0, i)
    record = (time.perf_counter() - t0) / n * 1e6
    a, b = socket.socketpair()
    payload = b"x" * 64
    m = 20_000
    t0 = time.perf_counter()
    for _ in range(m):
        a.sendall(payload)
        b.recv(64)
    loop = (time.perf_counter() - t0) / m * 1e6
    a.close()
    b.close()
    return record, loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,5,10,20", help="one-way delays, ms")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    models = Path(os.environ.get("EDGELAB_MODELS_DIR", REPO / "var" / "models"))

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), models_dir=models)
        upgrade(settings.database_url)
        catalog = Catalog(settings)
        plan: list[tuple[float, int]] = []
        for rep in range(args.repetitions):
            shift = rep % len(delays)
            plan += [(d, rep) for d in delays[shift:] + delays[:shift]]
        ids: dict[float, list[int]] = {d: [] for d in delays}
        config = None
        model = None
        with session_scope(settings.database_url) as s:
            for delay, rep in plan:
                raw = {
                    "prompt": PROMPT,
                    "nodes": 3,
                    "threads": 1,
                    "latency": f"{delay:g}ms",
                    "max_tokens": args.max_tokens,
                    "repetition": rep,
                }
                config, model = parse_config(raw, catalog)
                ids[delay].append(create_run(s, config).id)
        assert config is not None
        assert model is not None
        order = [ids[d][rep] for d, rep in plan]
        started = time.monotonic()
        with cluster_for(settings, config, model) as cluster:
            for run_id in order:
                result = execute_run(settings, run_id, cluster=cluster, catalog=catalog)
                if result.status != "succeeded":
                    print(f"run {run_id} {result.status}: {result.error}", file=sys.stderr)
                    return 1
        elapsed = time.monotonic() - started

        print(
            f"3 nodes x 1 thread, smollm2-135m, {args.max_tokens} tokens, "
            f"{args.repetitions} runs per delay, one warm cluster ({elapsed:.0f} s)\n"
        )
        print(
            "| one-way delay | TPOT ms | root ms | worker1 ms | worker2 ms | injected ms "
            "| expected ms | transfer ms | parts/TPOT | round trips/token (w1, w2) "
            "| kB/token (w1, w2) | contended |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for delay in delays:
            rows: list[dict[str, Any]] = []
            for run_id in ids[delay]:
                data = run_detail(settings.database_url, run_id)
                found = breakdown(data)
                assert found is not None
                rows.append({"bd": found, "contended": data["hygiene"]["contended"]})

            def mean(get: Any, rows: list[dict[str, Any]] = rows) -> float:
                return statistics.fmean(get(r["bd"]) for r in rows)

            rts = [mean(lambda b, i=i: b.links[i].round_trips_per_token) for i in (0, 1)]
            kbs = [mean(lambda b, i=i: b.links[i].bytes_per_token) / 1000 for i in (0, 1)]
            expected = sum(rts) * 2 * delay
            print(
                f"| {delay:g} ms | {mean(lambda b: b.tpot_ms):.1f} "
                f"| {mean(lambda b: b.root_compute_ms):.1f} "
                f"| {mean(lambda b: b.worker_compute_ms['worker1']):.1f} "
                f"| {mean(lambda b: b.worker_compute_ms['worker2']):.1f} "
                f"| {mean(lambda b: b.injected_ms):.1f} | {expected:.1f} "
                f"| {mean(lambda b: b.transfer_ms):.1f} "
                f"| {mean(lambda b: b.parts_ms / b.tpot_ms):.3f} "
                f"| {rts[0]:.2f}, {rts[1]:.2f} | {kbs[0]:.1f}, {kbs[1]:.1f} "
                f"| {sum(bool(r['contended']) for r in rows)}/{len(rows)} |"
            )
    record, loop = record_cost_us()
    print(
        f"\nChunkLog.record: {record:.2f} us per chunk; a loopback 64-byte send+recv: "
        f"{loop:.2f} us (ratio {record / loop:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
