"""Docker backend vs local backend: decode speed on the same topology, and start-up time.

Both clusters are started (alternately, ``--starts`` times each) and, on the last
pair, the same greedy generation runs on each in alternation ``--rounds`` times
at 0 ms latency, so slow drift of a shared machine hits both sides equally.
Reported: decode tokens/s (median over rounds) and their ratio docker/local;
cluster start-up (first container/process created -> root healthy) per backend,
and per Docker node from container creation to ready.

    .venv/bin/python bench/docker_bench.py [--nodes 3] [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from edgelab.catalog import Catalog
from edgelab.cluster import Cluster, ClusterSpec, open_cluster
from edgelab.metrics import timeline
from edgelab.netem.profile import LatencyProfile
from edgelab.settings import Settings

PROMPT = "Write a long story about a dragon who learns to bake bread."


def generate(cluster: Cluster, max_tokens: int) -> tuple[float, int]:
    """Decode tokens/s of one greedy generation, and how many tokens it produced."""
    offsets: list[float] = []
    prompt_tokens = 0
    for event in cluster.client.generate(PROMPT, max_tokens, temperature=0.0, seed=0):
        if event["type"] == "start":
            prompt_tokens = int(event["prompt_tokens"])
        elif event["type"] == "token":
            offsets.append(float(event["offset_ms"]))
    metrics = timeline.compute(offsets, prompt_tokens)
    return float(metrics.decode_tps or 0.0), len(offsets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    settings = Settings.from_env()
    model = Catalog(settings).get(args.model)
    specs = {
        backend: ClusterSpec(
            model=args.model,
            nodes=args.nodes,
            threads=args.threads,
            latency=LatencyProfile.parse("0ms"),
            backend=backend,
        )
        for backend in ("local", "docker")
    }
    startup: dict[str, list[float]] = {"local": [], "docker": []}
    node_ready: dict[str, list[float]] = {}
    tps: dict[str, list[float]] = {"local": [], "docker": []}
    tokens: dict[str, list[int]] = {"local": [], "docker": []}
    with TemporaryDirectory() as tmp:
        for attempt in range(args.starts):
            clusters: dict[str, Cluster] = {}
            try:
                for backend in ("docker", "local") if attempt % 2 else ("local", "docker"):
                    cluster = open_cluster(
                        specs[backend], str(Path(tmp) / backend), str(model.path)
                    )
                    clusters[backend] = cluster
                    cluster.start()
                    startup[backend].append(cluster.startup_ms or 0.0)
                    if backend == "docker":
                        containers: dict[str, Any] = cluster.provenance()["containers"]
                        for node, entry in containers.items():
                            node_ready.setdefault(node, []).append(float(entry["ready_ms"]))
                if attempt == args.starts - 1:
                    for backend in ("local", "docker"):
                        generate(clusters[backend], 8)  # warm-up: page cache, first-run costs
                    for r in range(args.rounds):
                        for backend in ("local", "docker") if r % 2 == 0 else ("docker", "local"):
                            rate, n = generate(clusters[backend], args.max_tokens)
                            tps[backend].append(rate)
                            tokens[backend].append(n)
            finally:
                for cluster in clusters.values():
                    cluster.close()

    print(f"topology: nodes={args.nodes} threads={args.threads} latency=0ms model={args.model}")
    for backend in ("local", "docker"):
        rates = ", ".join(f"{r:.1f}" for r in tps[backend])
        print(
            f"{backend:6} decode tok/s median {statistics.median(tps[backend]):6.2f} "
            f"[{rates}] tokens {tokens[backend]}"
        )
    ratio = statistics.median(tps["docker"]) / statistics.median(tps["local"])
    print(f"ratio docker/local (median decode tok/s): {ratio:.3f}")
    for backend in ("local", "docker"):
        ms = ", ".join(f"{v:.0f}" for v in startup[backend])
        print(f"{backend:6} cluster start-up ms: [{ms}]")
    for node, values in sorted(node_ready.items()):
        ms = ", ".join(f"{v:.0f}" for v in values)
        print(f"docker {node:8} container created -> ready ms: [{ms}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
