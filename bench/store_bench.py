"""CPU the store spends per executed run: its three status moves and its outcome's rows.

On a temporary SQLite database, for a sweep of ``--small`` and of ``--large`` runs
(one topology): the CPU time (this thread) of ``claim_run``, ``mark_running`` and
``succeed_run`` per run, the last one with what a 4-node, 64-token run stores (12
node samples, 3 link rows with their per-token timing JSON, a 16-token batch).
Every move refreshes the sweep, so a cost that grows with the sweep shows as the
difference between the two sizes. ``--tree DIR`` measures the edgelab of another
checkout (e.g. ``git worktree add --detach /tmp/old 6f9bcd1``) with this script.

    .venv/bin/python bench/store_bench.py [--small 30] [--large 1000] [--runs 20] [--tree DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else str(REPO)
sys.path.insert(0, _TREE)

from sqlalchemy import select  # noqa: E402

from edgelab.models import Run, Sweep  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.netem.profile import LatencyProfile  # noqa: E402
from edgelab.runs.config import RunConfig  # noqa: E402
from edgelab.store.store import Store  # noqa: E402

CONFIG = RunConfig(
    prompt="x",
    model="tiny",
    nodes=4,
    threads=1,
    latency=LatencyProfile.parse("0ms"),
    max_tokens=64,
)


def outcome() -> dict[str, Any]:
    """What one 4-node, 64-token run stores with its outcome."""
    per_token = {
        k: [1.2345] * 63
        for k in ("round_trips", "bytes", "root_bytes", "worker_ms", "injected_ms", "transfer_ms")
    }
    timing = {
        "source": "proxy",
        "complete": True,
        "bytes": {"load": 0, "prefill": 4096, "decode": 129024},
        "round_trips": {"load": 0, "prefill": 1, "decode": 63},
        "per_token": per_token,
    }
    link = {
        "bytes_up": 1,
        "bytes_down": 2,
        "chunks_up": 1,
        "chunks_down": 1,
        "delay_total_ms_up": 0.0,
        "delay_total_ms_down": 0.0,
        "delay_max_ms": 0.0,
        "timing": timing,
    }
    return {
        "values": {"output_text": "x" * 64, "ttft_ms": 10.0, "e2el_ms": 500.0, "output_tokens": 64},
        "samples": [
            {
                "node": f"worker{i % 4}",
                "role": "worker",
                "offset_ms": 200.0 * i,
                "cpu_percent": 50.0,
                "rss_bytes": 10**8,
                "net_rx_bytes": None,
                "net_tx_bytes": None,
            }
            for i in range(12)
        ],
        "links": {f"root<->worker{i}": link for i in (1, 2, 3)},
        "tokens": [
            {"index": 48 + i, "offset_ms": 5.0 * i, "text": "x", "detail": None} for i in range(16)
        ],
    }


def measure(size: int, runs: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="edgelab-store-bench-"))
    url = f"sqlite:///{tmp / 'store.db'}"
    upgrade(url)
    store = Store(url)
    with session_scope(url) as s:
        sweep = Sweep(name="bench", spec={}, status="queued", total_cells=size)
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    for i in range(size):
        store.create_run(RunConfig(**{**CONFIG.__dict__, "repetition": i}), sweep_id)
    with session_scope(url) as s:
        ids = list(s.scalars(select(Run.id).where(Run.sweep_id == sweep_id).order_by(Run.id)))
    data = outcome()
    try:  # this tree stores the last token batch with the outcome; older ones do not
        store.succeed_run(-1, {}, tokens=[])
        extra: dict[str, Any] = {"tokens": data["tokens"]}
    except TypeError:
        extra = {}
    cpu = {"claim": 0.0, "running": 0.0, "succeed": 0.0}
    for rid in ids[:runs]:
        for step, call in (
            ("claim", lambda rid=rid: store.claim_run(rid)),
            ("running", lambda rid=rid: store.mark_running(rid)),
            (
                "succeed",
                lambda rid=rid: store.succeed_run(
                    rid, data["values"], samples=data["samples"], links=data["links"], **extra
                ),
            ),
        ):
            t = time.thread_time()
            if not call():
                raise SystemExit(f"{step} of run {rid} refused")
            cpu[step] += time.thread_time() - t
    shutil.rmtree(tmp, ignore_errors=True)
    return {k: v / runs * 1000 for k, v in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=30)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tree", default=str(REPO), help="the checkout whose edgelab to measure")
    args = parser.parse_args()
    import edgelab

    print(f"edgelab from {Path(edgelab.__file__).parent}")
    print("CPU ms per call (this thread)   claim  running  succeed  (sum)")
    for size in (args.small, args.large):
        res = measure(size, min(args.runs, size))
        print(
            f"  sweep of {size:5d} runs          {res['claim']:6.2f} {res['running']:8.2f} "
            f"{res['succeed']:8.2f}  ({sum(res.values()):.1f})"
        )


if __name__ == "__main__":
    main()
