"""How much of a sweep's wall time is spent generating? (issue 5, target >= 0.90)

Submits a 1 topology x 3 latencies x 3 repetitions sweep to a real Celery worker
process (on an embedded Redis-compatible server unless ``--redis-url`` is given,
SQLite in a temp dir) and measures, from submission to the sweep's final status:

* wall time,
* generation time = the sum of every run's E2E latency (request start to last
  token, measured on the root),
* cluster start-up (the one model load) and what is left (queueing, claiming,
  storing tokens/samples/link stats, latency changes between runs), per run too,
  split into the time inside a run that is not generation and the time between
  runs (from the stored timestamps, see bench/phases.py).

The worker is started and warmed up before the clock starts: a worker's own
start-up is not part of a sweep.

    .venv/bin/python bench/sweep_bench.py [--nodes 3] [--max-tokens 64]
        [--latencies 10ms,20ms,40ms] [--repetitions 3] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.phases import overhead_line  # noqa: E402
from edgelab.catalog import Catalog  # noqa: E402
from edgelab.embedded import EmbeddedRedis  # noqa: E402
from edgelab.models import Run  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.service import create_app  # noqa: E402
from edgelab.settings import Settings  # noqa: E402
from edgelab.store import SweepStatus  # noqa: E402
from edgelab.store.actions import open_actions  # noqa: E402
from edgelab.sweeps import control, expand, parse_spec  # noqa: E402


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env.update(
        EDGELAB_DATA_DIR=str(settings.data_dir),
        EDGELAB_MODELS_DIR=str(settings.models_dir),
        EDGELAB_REDIS_URL=settings.redis_url,
        EDGELAB_DATABASE_URL=settings.database_url,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgelab", "worker", "--loglevel", "WARNING"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc


def wait_for_worker(celery: Any, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("worker exited during start-up")
        if celery.control.inspect(timeout=0.5).ping():
            return
        time.sleep(0.5)
    raise SystemExit("worker did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--latencies", default="10ms,20ms,40ms")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--models-dir", default=str(REPO / "var" / "models"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgelab-sweep-bench-"))
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(tmp / "redis")
        embedded.start()
        redis_url = embedded.url
    settings = Settings(
        data_dir=tmp / "data", models_dir=Path(args.models_dir).resolve(), redis_url=redis_url
    )
    upgrade(settings.database_url)
    Catalog(settings).fetch("smollm2-135m")
    celery = create_app(settings).extensions["celery"]
    worker = start_worker(settings, tmp / "worker.log")
    try:
        wait_for_worker(celery, worker)
        spec = parse_spec(
            {
                "name": "sweep-bench",
                "nodes": args.nodes,
                "threads": args.threads,
                "latency": args.latencies.split(","),
                "max_tokens": args.max_tokens,
                "repetitions": args.repetitions,
                "prompts": ["Write a short story about a robot who learns to paint."],
            },
            max_cells=1000,
        )
        cells = expand(spec, Catalog(settings))
        t0 = time.monotonic()
        actions = open_actions(settings, settings.redis_url, celery)
        sweep_id = actions.submit_sweep(spec, cells).id
        while True:
            with session_scope(settings.database_url) as s:
                detail = control.sweep_detail(s, sweep_id)
            if SweepStatus(detail["status"]).terminal:
                break
            time.sleep(0.05)
        wall_s = time.monotonic() - t0
        with session_scope(settings.database_url) as s:
            runs = list(s.scalars(select_runs(sweep_id)))
            rows = [(r.status, r.e2el_ms or 0.0, r.load_ms or 0.0, r.output_tokens) for r in runs]
            s.expunge_all()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # database, worker log, cluster work dirs

    statuses = [r[0] for r in rows]
    gen_s = sum(r[1] for r in rows) / 1000
    load_s = max((r[2] for r in rows), default=0.0) / 1000
    print(
        f"sweep: 1 topology ({args.nodes} nodes x {args.threads} threads) x "
        f"{len(args.latencies.split(','))} latencies x {args.repetitions} repetitions, "
        f"max_tokens {args.max_tokens}: {statuses.count('succeeded')}/{len(rows)} succeeded, "
        f"model loads {detail['model_loads']}"
    )
    print(f"wall time            {wall_s:8.2f} s")
    print(f"inside generation    {gen_s:8.2f} s  ({gen_s / wall_s:.3f} of wall; target >= 0.90)")
    print(f"cluster start-up     {load_s:8.2f} s  ({load_s / wall_s:.3f})")
    other = wall_s - gen_s - load_s
    print(
        f"everything else      {other:8.2f} s  ({other / wall_s:.3f}; "
        f"{other / len(rows):.3f} s/run)"
    )
    print(overhead_line(wall_s, gen_s, load_s, runs))


def select_runs(sweep_id: int) -> Any:
    from sqlalchemy import select

    return select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id)


if __name__ == "__main__":
    main()
