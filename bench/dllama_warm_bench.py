"""Warm dllama clusters next to llama.cpp: generation share of one sweep each (issue 14).

One run of this script executes the same sweep - 1 topology (4 nodes x 1 thread)
x bandwidth [unlimited, 100mbit] x N repetitions x 64 tokens, one prompt - three
times, side by side on the same host:

* ``llamacpp``: SmolLM2-135M (Q4_1) on the llama.cpp RPC cluster;
* ``dllama api``: the dllama engine in its default warm mode (one ``dllama-api``
  per cluster) against the STAND-IN binaries of tests/standins/;
* ``dllama inference``: the per-run mode (one ``dllama inference`` per run) against
  the same stand-in.

The stand-in is not distributed-llama: it computes nothing (5 ms of sleep per
token plus its sync bytes over the real link proxies) and streams a synthetic
model's bytes as "weights". Its figures measure edgelab's side - cluster reuse,
the weight stream through 100 Mbit links, the per-run overhead - not a real
engine's speed. Each group runs through ``run_group`` (what a Celery group task
calls) with the host lock and leases on an embedded Redis; Celery's own queueing
is left out for all three alike (bench/sweep_bench.py measures it).

Printed per sweep: wall time (cluster start included), time inside generation
(sum of E2E latencies) and its share of the wall, the per-run overhead next to it
(wall - generation - cluster start, per run, and its stored phases: see
bench/phases.py), model loads, each run's
``load_ms`` and weight bytes on the links, and the TTFT of the warm runs on
100 Mbit links over the same repetition on unlimited links.

    .venv/bin/python bench/dllama_warm_bench.py [--repetitions 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench.phases import install_standin, overhead_line  # noqa: E402
from edgelab.catalog import Catalog  # noqa: E402
from edgelab.embedded import EmbeddedRedis  # noqa: E402
from edgelab.engines.dllama.synthetic import SyntheticShape, write_synthetic_model  # noqa: E402
from edgelab.models import Run, Sweep  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.settings import Settings  # noqa: E402
from edgelab.sweeps import control, expand, parse_spec  # noqa: E402
from edgelab.sweeps.spec import group_by_topology  # noqa: E402
from edgelab.tasks.runner import run_group  # noqa: E402

# 4 KV heads (splits over 4 nodes); ~38 MB of F32 "weights", ~9.5 MB per worker.
SHAPE = SyntheticShape(dim=512, hidden_dim=1024, n_layers=4, n_heads=8, n_kv_heads=4)
PROMPT = "Write a short story about a robot who learns to paint."


def run_sweep(
    settings: Settings, r: redis.Redis, data: dict[str, Any]
) -> tuple[float, int, list[Run]]:
    catalog = Catalog(settings)
    spec = parse_spec(data, max_cells=1000)
    cells = expand(spec, catalog)
    with session_scope(settings.database_url) as s:
        sweep_id = control.create_sweep(s, spec, cells).id
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Run.id).where(Run.sweep_id == sweep_id).order_by(Run.id)))
    t0 = time.monotonic()
    for group in group_by_topology(cells):
        run_group(settings, r, [ids[c.index] for c in group], sweep_id=sweep_id, catalog=catalog)
    wall = time.monotonic() - t0
    with session_scope(settings.database_url) as s:
        loads = s.get_one(Sweep, sweep_id).model_loads
        runs = list(s.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id)))
        s.expunge_all()
    return wall, loads, runs


def report(label: str, wall: float, loads: int, runs: list[Run], repetitions: int) -> float:
    ok = sum(r.status == "succeeded" for r in runs)
    gen = sum((r.e2el_ms or 0.0) for r in runs) / 1000
    print(f"\n{label}: {ok}/{len(runs)} succeeded, model loads {loads}")
    for r in runs:
        if r.status != "succeeded":
            print(f"  run {r.id} {r.status}: {r.error}")
    print(f"  wall {wall:7.2f} s, inside generation {gen:7.2f} s -> share {gen / wall:.3f}")
    # The cluster start is the first run's load (warm mode) or part of the wall
    # before it (per-run mode: every run's own load is inside "other").
    startup = (
        max(
            (float(r.measurement["cluster"]["startup_ms"] or 0) for r in runs if r.measurement),
            default=0.0,
        )
        / 1000
    )
    other = wall - gen - startup
    print(
        f"  cluster start {startup:5.2f} s; everything else {other:5.2f} s "
        f"({other / max(1, len(runs)):.3f} s/run); share without the start "
        f"{gen / max(1e-9, wall - startup):.3f}"
    )
    print(f"  {overhead_line(wall, gen, startup, runs)}")
    # Cells: repetition-major, bandwidth [unlimited, 100mbit] inside each repetition.
    print("  rep bandwidth  load_ms  load bytes  TTFT ms  E2E ms  tokens")
    for r in runs:
        bw = "100mbit" if r.bandwidth_bps else "unlimited"
        load = f"{r.load_ms:8.0f}" if r.load_ms is not None else "       -"
        print(
            f"  {r.repetition:3d} {bw:9s} {load} {r.net_load_bytes or 0:11d} "
            f"{r.ttft_ms or 0:8.1f} {r.e2el_ms or 0:7.0f} {r.output_tokens or 0:7d}"
        )
    warm = [r for r in runs if r.repetition > 0]
    ratios = []
    for rep in range(1, repetitions):
        pair = {bool(r.bandwidth_bps): r for r in warm if r.repetition == rep}
        if len(pair) == 2 and pair[True].ttft_ms and pair[False].ttft_ms:
            ratios.append(pair[True].ttft_ms / pair[False].ttft_ms)
    if ratios:
        print(
            f"  TTFT 100mbit / unlimited, repetitions 2..{repetitions}: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f" (median {statistics.median(ratios):.2f}; target <= 1.5)"
        )
    return gen / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--models-dir", default=str(REPO / "var" / "models"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgelab-dllama-bench-"))
    os.environ["EDGELAB_DLLAMA_BIN"] = str(install_standin(tmp / "bin"))
    os.environ.pop("EDGELAB_DLLAMA_API_BIN", None)
    embedded = EmbeddedRedis(tmp / "redis")
    embedded.start()
    try:
        # A catalog of its own (temp dir): the shared SmolLM2 file plus the synthetic model.
        settings = Settings(
            data_dir=tmp / "data", models_dir=tmp / "models", redis_url=embedded.url
        )
        upgrade(settings.database_url)
        shared_dir = Path(args.models_dir).resolve()
        shared = Catalog(path=shared_dir / "catalog.json", models_dir=shared_dir)
        catalog = Catalog(settings)
        catalog.register(shared.fetch("smollm2-135m"))
        model, _ = write_synthetic_model(settings.models_dir, SHAPE)
        catalog.add(model, name="standin-38mb")
        r = redis.Redis.from_url(embedded.url)
        base = {
            "nodes": 4,
            "threads": 1,
            "latency": "0ms",
            "bandwidth": [None, "100mbit"],
            "max_tokens": args.max_tokens,
            "prompts": [PROMPT],
            "repetitions": args.repetitions,
        }
        print(
            f"sweep: 1 topology (4 nodes x 1 thread) x bandwidth [unlimited, 100mbit] x "
            f"{args.repetitions} repetitions x {args.max_tokens} tokens, run_group path"
        )
        shares = {}
        for label, extra in (
            ("llamacpp (SmolLM2-135M Q4_1)", {"engine": "llamacpp", "model": "smollm2-135m"}),
            ("dllama api (stand-in)", {"engine": "dllama", "model": "standin-38mb"}),
            (
                "dllama inference (stand-in)",
                {
                    "engine": "dllama",
                    "model": "standin-38mb",
                    "options": {"dllama_mode": "inference"},
                },
            ),
        ):
            wall, loads, runs = run_sweep(settings, r, {"name": label, **base, **extra})
            shares[label] = report(label, wall, loads, runs, args.repetitions)
        print("\ngeneration share (time inside generation / wall, cluster start included):")
        for label, share in shares.items():
            print(f"  {label:30s} {share:.3f}")
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # stand-in, models, database, work dirs


if __name__ == "__main__":
    main()
