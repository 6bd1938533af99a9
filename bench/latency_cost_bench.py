"""What does one millisecond of link latency cost per token?

For each node count, one warm cluster serves runs at several fixed one-way
latencies (alternated over rounds, so drift hits all alike). llama.cpp's RPC
backend needs about one round trip per worker per generated token, so the
expected TPOT increase over 0 ms is ``2 * latency * workers``; the benchmark
prints measured vs expected side by side.

    .venv/bin/python bench/latency_cost_bench.py [--nodes 2 3] [--latency 0 10 20] [--tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgelab.catalog import Catalog
from edgelab.models.db import session_scope, upgrade
from edgelab.runs.config import parse_config
from edgelab.runs.executor import cluster_for, create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--latency", type=float, nargs="+", default=[0, 10, 20])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    env = Settings.from_env()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="edgelab-bench-")), models_dir=env.models_dir
    )
    upgrade(settings.database_url)
    catalog = Catalog(settings)
    print(
        f"{'nodes':>5} {'latency':>8} {'TPOT ms':>9} {'+ms/token':>10} {'expected':>9} {'ratio':>6}"
    )
    for nodes in args.nodes:
        tpot: dict[float, list[float]] = {lat: [] for lat in args.latency}
        base_config, model = parse_config(
            {"prompt": PROMPT, "nodes": nodes, "latency": "0ms", "max_tokens": args.tokens}, catalog
        )
        with cluster_for(settings, base_config, model) as cluster:
            for _ in range(args.rounds):
                for lat in args.latency:
                    config, _ = parse_config(
                        {
                            "prompt": PROMPT,
                            "nodes": nodes,
                            "latency": f"{lat:g}ms",
                            "max_tokens": args.tokens,
                        },
                        catalog,
                    )
                    with session_scope(settings.database_url) as s:
                        run_id = create_run(s, config).id
                    result = execute_run(settings, run_id, cluster=cluster, catalog=catalog)
                    if result.status != "succeeded":
                        raise SystemExit(f"run failed: {result.error}")
                    tpot[lat].append(
                        run_detail(settings.database_url, run_id)["metrics"]["tpot_ms"]
                    )
        base = statistics.median(tpot[args.latency[0]])
        for lat in args.latency:
            measured = statistics.median(tpot[lat])
            added = measured - base
            expected = 2 * (lat - args.latency[0]) * (nodes - 1)
            ratio = f"{added / expected:.2f}" if expected else "-"
            print(
                f"{nodes:>5} {lat:>6g}ms {measured:>9.1f} {added:>10.1f} "
                f"{expected:>9.1f} {ratio:>6}",
                flush=True,
            )


if __name__ == "__main__":
    main()
