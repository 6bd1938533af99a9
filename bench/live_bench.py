"""What do the live run events cost? Runs with and without them, side by side (issue 16).

While a run generates, the executor publishes running metrics (at the first token, then
every 0.5 s), node samples and link counters (a thread, every 0.5 s) on the run's Redis
event stream. This bench runs the same 3-node configuration on one warm cluster,
alternating "live" (as the queue runs it: events published to Redis) and "off" (the
live feed's thread not started, no running metrics), and prints per round decode
tokens/s and TTFT, the median ratio live/off (target >= 0.97), how many events and bytes
a live run adds to the stream, and how long after the first token's event the TTFT
event was published.

    .venv/bin/python bench/live_bench.py [--rounds 4] [--tokens 48] [--redis redis://...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--latency", default="10ms..30ms")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--models-dir", default=str(REPO / "var" / "models"))
    args = parser.parse_args()

    import redis

    from edgelab.catalog import Catalog
    from edgelab.models.db import session_scope, upgrade
    from edgelab.runs import executor
    from edgelab.runs.config import parse_config
    from edgelab.runs.executor import cluster_for, create_run, execute_run
    from edgelab.runs.views import run_detail
    from edgelab.settings import Settings
    from edgelab.tasks.events import RunPublisher, log_key

    r = redis.Redis.from_url(args.redis)
    r.ping()
    tmp = Path(tempfile.mkdtemp(prefix="live-bench-"))
    settings = Settings(data_dir=tmp / "data", models_dir=Path(args.models_dir))
    upgrade(settings.database_url)
    catalog = Catalog(settings)
    raw = {
        "prompt": PROMPT,
        "nodes": args.nodes,
        "threads": 1,
        "latency": args.latency,
        "max_tokens": args.tokens,
    }
    config, model = parse_config(raw, catalog)
    start_feed = executor._LiveFeed.start
    live_every = executor.LIVE_EVERY_S
    rows: list[dict[str, Any]] = []
    with cluster_for(settings, config, model, name="livebench") as cluster:
        for rnd in range(args.rounds):
            # Alternate the order every round so neither side always runs first.
            for mode in ("live", "off") if rnd % 2 == 0 else ("off", "live"):
                with session_scope(settings.database_url) as s:
                    run_id = create_run(s, config).id
                events: list[tuple[float, dict[str, Any]]] = []
                publisher = RunPublisher(r, run_id)

                def sink(
                    event: dict[str, Any],
                    publish: RunPublisher = publisher,
                    seen: list[tuple[float, dict[str, Any]]] = events,
                ) -> None:
                    seen.append((time.perf_counter(), event))
                    publish(event)

                if mode == "off":
                    executor._LiveFeed.start = lambda self: None  # type: ignore[method-assign]
                    executor.LIVE_EVERY_S = 1e9  # one running-metrics event (the first token)
                try:
                    result = execute_run(settings, run_id, cluster=cluster, sink=sink)
                finally:
                    executor._LiveFeed.start = start_feed  # type: ignore[method-assign]
                    executor.LIVE_EVERY_S = live_every
                assert result.status == "succeeded", result.error
                m = run_detail(settings.database_url, run_id)["metrics"]
                kinds = [e["type"] for _t, e in events]
                first = next(i for i, k in enumerate(kinds) if k == "token")
                ttft_event = next(
                    (t for t, e in events[first:] if e["type"] == "metrics" and e.get("live")),
                    None,
                )
                log_bytes = sum(len(b) for b in r.lrange(log_key(run_id), 0, -1))
                r.delete(log_key(run_id))
                rows.append(
                    {
                        "round": rnd,
                        "mode": mode,
                        "decode_tps": m["decode_tps"],
                        "ttft_ms": m["ttft_ms"],
                        "samples_events": kinds.count("samples"),
                        "links_events": kinds.count("links"),
                        "metrics_events": kinds.count("metrics"),
                        "log_kb": log_bytes / 1000,
                        "ttft_event_after_token_ms": (
                            (ttft_event - events[first][0]) * 1000 if ttft_event else None
                        ),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)

    live = [x for x in rows if x["mode"] == "live"]
    off = [x for x in rows if x["mode"] == "off"]
    ratios = [a["decode_tps"] / b["decode_tps"] for a, b in zip(live, off, strict=True)]
    ttft_ratios = [a["ttft_ms"] / b["ttft_ms"] for a, b in zip(live, off, strict=True)]
    print()
    print("| round | live tok/s | off tok/s | ratio | live TTFT ms | off TTFT ms |")
    print("|---|---|---|---|---|---|")
    for i, (a, b) in enumerate(zip(live, off, strict=True)):
        print(
            f"| {i} | {a['decode_tps']:.2f} | {b['decode_tps']:.2f} | {ratios[i]:.3f} "
            f"| {a['ttft_ms']:.0f} | {b['ttft_ms']:.0f} |"
        )
    print()
    print(f"median decode tokens/s ratio live/off: {statistics.median(ratios):.3f} (>= 0.97?)")
    print(f"median TTFT ratio live/off: {statistics.median(ttft_ratios):.3f}")
    after = [x["ttft_event_after_token_ms"] for x in live if x["ttft_event_after_token_ms"]]
    print(
        "live run adds per run: "
        f"{statistics.median(x['samples_events'] for x in live):.0f} samples events, "
        f"{statistics.median(x['links_events'] for x in live):.0f} links events, "
        f"{statistics.median(x['metrics_events'] for x in live):.0f} metrics events; "
        f"event log {statistics.median(x['log_kb'] for x in live):.1f} kB "
        f"(off: {statistics.median(x['log_kb'] for x in off):.1f} kB)"
    )
    if after:
        print(f"TTFT event published {statistics.median(after):.3f} ms after the first token's")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
