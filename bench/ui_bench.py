"""Server time of the web viewer's heavy pages with 100k runs (issue 7, target p95 <= 100 ms).

Fills a fresh database (SQLite in a temp dir, and/or a throw-away PostgreSQL
database) with synthetic runs — spread over a year, 3 models, 1-4 nodes, 6
latency profiles, 80 % succeeded, one in five in a sweep — and gives every
100th run a full detail record (64 token events, 3 nodes x 50 samples, 2 links)
like a real 64-token, 3-node run. Then it times, through Flask's test client
(the whole request in the server: routing, queries, template; no network):

* history: filtered (status + model + nodes), sorted, paginated, random pages;
* history sorted by an unindexed metric (TTFT) and unfiltered, for contrast;
* the run page of detailed runs;
* compare of 5 detailed runs.

    .venv/bin/python bench/ui_bench.py [--runs 100000] [--requests 60]
        [--db sqlite,postgresql] [--pg-server postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert, text  # noqa: E402

from edgelab.models import LinkStat, NodeSample, Run, Sweep, TokenEvent  # noqa: E402
from edgelab.models.db import engine_for, session_scope, upgrade  # noqa: E402
from edgelab.netem.profile import LatencyProfile  # noqa: E402
from edgelab.service import create_app  # noqa: E402
from edgelab.settings import Settings  # noqa: E402

MODELS = ("smollm2-135m", "qwen2-0.5b", "tinyllama-1.1b")
LATENCIES = ("0ms", "10ms", "20ms", "50ms", "10ms..50ms", "20ms~5ms")
DETAIL_EVERY = 100
CHUNK = 5000


def fill(url: str, runs: int, seed: int = 7) -> list[int]:
    """Insert ``runs`` synthetic runs; return the ids of those with full detail."""
    rng = random.Random(seed)
    profiles = {label: LatencyProfile.parse(label).to_dict() for label in LATENCIES}
    now = datetime.now(UTC)
    n_sweeps = max(1, runs // 500)
    with session_scope(url) as s:
        s.execute(
            insert(Sweep),
            [
                {
                    "name": f"sweep {i}",
                    "spec": {"nodes": [1, 2, 3, 4]},
                    "status": "succeeded",
                    "total_cells": 100,
                    "created_at": now - timedelta(days=rng.uniform(0, 365)),
                }
                for i in range(n_sweeps)
            ],
        )
    detailed: list[int] = []
    engine = engine_for(url)
    for start in range(0, runs, CHUNK):
        rows: list[dict[str, Any]] = []
        for i in range(start, min(runs, start + CHUNK)):
            ok = rng.random() < 0.8
            label = rng.choice(LATENCIES)
            ttft = rng.uniform(50, 2000)
            rows.append(
                {
                    "id": i + 1,
                    "sweep_id": rng.randint(1, n_sweeps) if rng.random() < 0.2 else None,
                    "status": "succeeded" if ok else rng.choice(("failed", "cancelled")),
                    "engine": "llamacpp",
                    "backend": "local",
                    "model": rng.choice(MODELS),
                    "nodes": rng.randint(1, 4),
                    "threads": rng.choice((1, 2)),
                    "latency": profiles[label],
                    "latency_label": label,
                    "max_tokens": 64,
                    "prompt": "Name three planets.",
                    "temperature": 0.0,
                    "seed": 0,
                    "repetition": rng.randint(0, 2),
                    "options": {},
                    "fingerprint": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
                    "created_at": now - timedelta(seconds=rng.uniform(0, 365 * 86400)),
                    "ttft_ms": ttft if ok else None,
                    "e2el_ms": ttft + 64 * 60 if ok else None,
                    "tpot_ms": rng.uniform(20, 200) if ok else None,
                    "decode_tps": rng.uniform(5, 50) if ok else None,
                    "output_tokens": 64 if ok else None,
                    "error": None if ok else "node worker1 exited with status 1",
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Run), rows)
            tokens: list[dict[str, Any]] = []
            samples: list[dict[str, Any]] = []
            links: list[dict[str, Any]] = []
            for row in rows:
                if row["id"] % DETAIL_EVERY or row["status"] != "succeeded":
                    continue
                detailed.append(row["id"])
                t = row["ttft_ms"]
                for k in range(64):
                    tokens.append(
                        {"run_id": row["id"], "index": k, "offset_ms": t + 60 * k, "text": " tok"}
                    )
                for node in ("root", "worker1", "worker2"):
                    for k in range(50):
                        samples.append(
                            {
                                "run_id": row["id"],
                                "node": node,
                                "role": "root" if node == "root" else "worker",
                                "offset_ms": 200.0 * k,
                                "cpu_percent": rng.uniform(0, 100),
                                "rss_bytes": 100_000_000,
                            }
                        )
                for w in (1, 2):
                    links.append(
                        {
                            "run_id": row["id"],
                            "link": f"root<->worker{w}",
                            "bytes_up": 600_000,
                            "bytes_down": 200_000,
                            "chunks_up": 90,
                            "chunks_down": 30,
                            "delay_total_ms_up": 3000.0,
                            "delay_total_ms_down": 900.0,
                            "delay_max_ms": 50.0,
                        }
                    )
            if tokens:
                conn.execute(insert(TokenEvent), tokens)
                conn.execute(insert(NodeSample), samples)
                conn.execute(insert(LinkStat), links)
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            conn.execute(text("SELECT setval('runs_id_seq', (SELECT max(id) FROM runs))"))
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE"))
    return detailed


def timed(client: Any, urls: list[str], warmup: int = 3) -> dict[str, float]:
    for url in urls[:warmup]:
        client.get(url)
    times = []
    for url in urls:
        t0 = time.perf_counter()
        resp = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{url} answered {resp.status_code}")
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"p50": statistics.median(times), "p95": p95, "max": times[-1]}


def bench(url: str, label: str, runs: int, requests: int, data_dir: Path) -> list[str]:
    t0 = time.perf_counter()
    upgrade(url)
    detailed = fill(url, runs)
    fill_s = time.perf_counter() - t0
    settings = Settings(data_dir=data_dir, database_url=url, models_dir=data_dir / "models")
    app = create_app(settings, {"TESTING": False})
    client = app.test_client()
    rng = random.Random(1)
    since = (datetime.now(UTC) - timedelta(days=90)).date().isoformat()
    cases = {
        "history: status+model+nodes, sort -created_at, page 1-20 of 50": [
            f"/runs?status=succeeded&model={rng.choice(MODELS)}&nodes={rng.randint(1, 4)}"
            f"&sort=-created_at&per_page=50&page={rng.randint(1, 20)}"
            for _ in range(requests)
        ],
        "history: status, sort -ttft_ms (no index), page 1-20 of 50": [
            f"/runs?status=succeeded&sort=-ttft_ms&per_page=50&page={rng.randint(1, 20)}"
            for _ in range(requests)
        ],
        "history: status+latency+last 90 days, sort -decode_tps, page 1-10": [
            f"/runs?status=succeeded&latency={rng.choice(LATENCIES)}&since={since}"
            f"&sort=-decode_tps&per_page=50&page={rng.randint(1, 10)}"
            for _ in range(requests)
        ],
        "history: no filter, sort -id, page 1-100 of 50": [
            f"/runs?page={rng.randint(1, 100)}" for _ in range(requests)
        ],
        "run page (64 tokens, 150 samples, 2 links)": [
            f"/runs/{rng.choice(detailed)}" for _ in range(requests)
        ],
        "compare of 5 runs": [
            "/compare?ids=" + ",".join(map(str, rng.sample(detailed, 5))) for _ in range(requests)
        ],
    }
    lines = []
    for name, urls in cases.items():
        r = timed(client, urls)
        ok = "yes" if r["p95"] <= 100 else "**no**"
        lines.append(
            f"| {label} | {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | {ok} |"
        )
        print(lines[-1], flush=True)
    print(f"({label}: {runs} runs, {len(detailed)} detailed, filled in {fill_s:.1f} s)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--pg-server", default="postgresql://postgres@127.0.0.1:5432")
    args = ap.parse_args()
    print("| database | page | p50 ms | p95 ms | max ms | p95 <= 100 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="edgelab-uibench-") as tmp:
        if "sqlite" in args.db:
            url = f"sqlite:///{tmp}/bench.db"
            bench(url, "SQLite", args.runs, args.requests, Path(tmp))
            engine_for(url).dispose()
        if "postgresql" in args.db:
            import psycopg

            name = f"edgelab_uibench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(f"{args.pg_server}/postgres", autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = f"postgresql+psycopg://{args.pg_server.split('://', 1)[1]}/{name}"
            try:
                bench(url, "PostgreSQL", args.runs, args.requests, Path(tmp))
            finally:
                engine_for(url).dispose()
                engine_for.cache_clear()
                with psycopg.connect(f"{args.pg_server}/postgres", autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
