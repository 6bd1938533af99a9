"""Issue 15: a slow worker behind a slow link vs the uniform cluster, side by side.

Runs the same prompt on a 3-node smollm2-135m cluster twice per backend, uniform
(every link 1 ms, no limit) and heterogeneous (worker2: ``cpus 0.25`` behind 30 ms,
worker1 behind 1 ms), alternating, and prints per configuration the median TPOT,
worker2's peak CPU %, each link's effective one-way delay p50 and the ratio of the
TPOTs. Local CPU quotas need root; ``--backend docker`` needs the images.
``--loss 2`` adds a third configuration, the heterogeneous one with that % of packet
loss on worker1's link (local: every worker then runs in a network namespace of its
own, see edgelab/topology/netns.py), and a column of each link's retransmissions.

    .venv/bin/python bench/topology_bench.py [--backend local|docker] [--rounds 2] [--loss 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from edgelab.catalog import Catalog
from edgelab.models.db import session_scope, upgrade
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

PROMPT = "Name three planets."
CONFIGS: dict[str, dict[str, Any]] = {
    "uniform (1 ms links)": {},
    "worker2 cpus 0.25 + 30 ms": {
        "devices": {"worker2": "cpus:0.25"},
        "links": {"worker2": "30ms", "worker1": "1ms"},
    },
}


def one(settings: Settings, backend: str, extra: dict[str, Any]) -> dict[str, Any]:
    raw = {"prompt": PROMPT, "nodes": 3, "threads": 1, "latency": "1ms", "max_tokens": 16}
    config, _ = parse_config({**raw, **extra, "backend": backend}, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    result = execute_run(settings, run_id)
    if result.status != "succeeded":
        raise SystemExit(f"run failed: {result.error}")
    return run_detail(settings.database_url, run_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="local")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models-dir", default="var/models")
    parser.add_argument("--loss", type=float, default=None, help="% loss on worker1's link")
    args = parser.parse_args()
    configs = dict(CONFIGS)
    if args.loss:
        slow = CONFIGS["worker2 cpus 0.25 + 30 ms"]
        configs[f"... + worker1 loss {args.loss:g} %"] = {
            **slow,
            "links": {**slow["links"], "worker1": f"1ms,loss:{args.loss:g}%"},
        }
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), models_dir=Path(args.models_dir))
        upgrade(settings.database_url)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, extra in configs.items():
                runs[name].append(one(settings, args.backend, extra))
    print(f"backend {args.backend}, {args.rounds} runs per configuration, 16 tokens")
    print(
        "| configuration | TPOT ms (median) | worker2 peak CPU % | link p50 up ms w1 / w2 "
        "| retransmits w1 / w2 (per run) |"
    )
    print("|---|---|---|---|---|")
    tpot: dict[str, float] = {}
    for name, done in runs.items():
        tpot[name] = statistics.median(r["metrics"]["tpot_ms"] for r in done)
        peak = max(s["cpu_percent"] for r in done for s in r["samples"] if s["node"] == "worker2")
        p50 = {
            link["link"]: statistics.median(
                x["eff_delay_p50_ms_up"]
                for r in done
                for x in r["links"]
                if x["link"] == link["link"]
            )
            for link in done[0]["links"]
        }
        rtx = " / ".join(
            ",".join(str(x["retransmits"]) for r in done for x in r["links"] if x["link"] == link)
            for link in ("root<->worker1", "root<->worker2")
        )
        print(
            f"| {name} | {tpot[name]:.1f} | {peak:.1f} | "
            f"{p50['root<->worker1']:.2f} / {p50['root<->worker2']:.2f} | {rtx} |"
        )
    a, b, *lossy = tpot.values()
    print(f"TPOT ratio heterogeneous / uniform: {b / a:.2f}")
    if lossy:
        print(f"TPOT ratio with loss / heterogeneous: {lossy[0] / b:.2f}")


if __name__ == "__main__":
    main()
