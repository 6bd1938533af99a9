"""Does edgelab's significance verdict see a real 5 ms difference, and not a false one? (issue 12)

Issue 12's acceptance: "Comparing 5 repetitions at 0 ms with 5 at 5 ms on 3 nodes says
'significant'; two batches of the same configuration usually say 'no significant
difference', with the p-value shown."

Real llama.cpp runs: SmolLM2-135M (from ``EDGELAB_TEST_MODELS_DIR``, else var/models;
nothing is written there), 3 nodes x 1 thread, 32 tokens, one prompt. Two stored
sweeps, as a researcher would make them:

* sweep A: latency [0ms, 5ms] x N repetitions, one warm-up run (stored, flagged,
  never counted);
* sweep B: latency 0ms x N repetitions: the second batch of A's 0 ms configuration.

All 2N + N runs execute on ONE warm cluster through ``run_group`` (what a sweep's
Celery group task calls: leases, host lock, link profile changes between runs; on
an embedded Redis; Celery's own queueing is left out, bench/sweep_bench.py times
it). Their order is blocked and seeded: the warm-up first, then N blocks of one run
of each batch (A 0ms, A 5ms, B 0ms) in a random order per block, so a drift on the
host (another job starting, a CPU clocking down) falls on all three batches alike
instead of making one of them look faster. The order is printed with each run's
TPOT and the load average.

Then the comparison through :func:`edgelab.analysis.compare_runs`, the function
behind ``edgelab runs compare`` and the compare page: per batch n, mean TPOT and
TTFT with 95 % CI, CV, the contended/oversubscribed flags; per pair the verdict,
Welch p-value, Hedges' g and the bootstrap CI of the difference.

    .venv/bin/python bench/significance_bench.py [--runs 5] [--max-tokens 32]
        [--delay 5ms] [--seed 1] [--repeats 1] [--models-dir DIR]

``--repeats K`` runs the whole experiment K times (fresh sweeps, order seeds seed ..
seed+K-1, a cluster start each) and counts how often each pair came out
significant: "usually no significant difference" as a number.

3 nodes x 1 thread on a 2-core host is oversubscribed (flagged): the nodes take
turns on the cores, which adds noise but is the same for every batch.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from sqlalchemy import select  # noqa: E402

from edgelab.analysis import CompareAnalysis, Group, compare_groups, compare_runs  # noqa: E402
from edgelab.catalog import Catalog  # noqa: E402
from edgelab.embedded import EmbeddedRedis  # noqa: E402
from edgelab.models import Run  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.settings import Settings  # noqa: E402
from edgelab.sweeps import control, expand, parse_spec  # noqa: E402
from edgelab.tasks.runner import run_group  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."
MODEL = "smollm2-135m"


def default_models_dir() -> Path:
    # The test suite's convention (tests/conftest.py): a shared, read-only models dir.
    return Path(os.environ.get("EDGELAB_TEST_MODELS_DIR", REPO / "var" / "models"))


def create_sweep(settings: Settings, catalog: Catalog, data: dict[str, Any]) -> int:
    spec = parse_spec(data, max_cells=1000)
    with session_scope(settings.database_url) as s:
        return control.create_sweep(s, spec, expand(spec, catalog)).id


def sweep_runs(settings: Settings, sweep_id: int) -> list[tuple[int, str, bool]]:
    """(id, latency label, warm-up) of the sweep's runs, in id order."""
    with session_scope(settings.database_url) as s:
        rows = s.execute(
            select(Run.id, Run.latency_label, Run.warmup)
            .where(Run.sweep_id == sweep_id)
            .order_by(Run.id)
        )
        return [(rid, label, bool(warm)) for rid, label, warm in rows]


def blocked_order(batches: dict[str, list[int]], seed: int) -> tuple[list[int], dict[int, str]]:
    """Block k holds run k of every batch, shuffled with a generator seeded by
    ``seed`` and k; returns the run ids in execution order and a label per run."""
    order: list[int] = []
    labels: dict[int, str] = {}
    for k in range(max(len(ids) for ids in batches.values())):
        block = [(name, ids[k]) for name, ids in batches.items() if k < len(ids)]
        random.Random(f"{seed}:{k}").shuffle(block)
        for name, rid in block:
            order.append(rid)
            labels[rid] = f"{name}#{k + 1}"
    return order, labels


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mean_ci(group: Group, metric: str) -> str:
    s = group.stats.get(metric)
    if s is None or s.mean is None:
        return "-"
    half = "" if s.half_width is None else f" ± {s.half_width:.1f}"
    return f"{s.mean:.1f}{half}"


def report(result: CompareAnalysis, names: dict[tuple[str | None, int | None], str]) -> None:
    print("\n| batch | group | n | TPOT ms (95 % CI) | TPOT CV | TTFT ms (95 % CI) | TTFT CV "
          "| contended | oversubscribed | flags |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for letter, g in zip(result.letters, result.groups, strict=True):
        tpot, ttft = g.stats.get("tpot_ms"), g.stats.get("ttft_ms")
        print(
            f"| {names.get((g.key.latency, g.batch), '?')} | {letter} | {g.n} "
            f"| {mean_ci(g, 'tpot_ms')} | {fmt(tpot.cv * 100 if tpot and tpot.cv else None)} % "
            f"| {mean_ci(g, 'ttft_ms')} | {fmt(ttft.cv * 100 if ttft and ttft.cv else None)} % "
            f"| {g.contended_runs}/{g.n} | {'yes' if g.oversubscribed else 'no'} "
            f"| {', '.join(g.flags) or '-'} |"
        )
    print("\n| B vs A | metric | mean A | mean B | B - A (bootstrap 95 % CI) | Welch p "
          "| Hedges' g | verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    index = {letter: g for letter, g in zip(result.letters, result.groups, strict=True)}
    for la, lb, _fields, c in result.pairs:
        pair = (
            f"{names.get((index[lb].key.latency, index[lb].batch), lb)} vs "
            f"{names.get((index[la].key.latency, index[la].batch), la)}"
        )
        for metric, t in c.tests.items():
            ci = "" if t.diff_ci is None else f" ({t.diff_ci[0]:+.1f} .. {t.diff_ci[1]:+.1f})"
            significant = "significant: " if t.significant else ""
            p = "-" if t.p_value is None else f"{t.p_value:.3g}"
            print(
                f"| {pair} | {metric} | {fmt(t.mean_a)} | {fmt(t.mean_b)} "
                f"| {fmt(t.diff)}{ci} | {p} | {fmt(t.effect_size, 2)} "
                f"| {significant}{t.verdict} |"
            )


def one_round(
    settings: Settings, catalog: Catalog, r: redis.Redis, args: argparse.Namespace, seed: int
) -> dict[str, str]:
    """Two sweeps, executed in one blocked order on one warm cluster, then compared;
    returns the TPOT verdict per pair ("delay" and "batches")."""
    base: dict[str, Any] = {
        "model": MODEL,
        "nodes": 3,
        "threads": 1,
        "max_tokens": args.max_tokens,
        "prompts": [PROMPT],
        "repetitions": args.runs,
    }
    sweep_a = create_sweep(
        settings,
        catalog,
        {**base, "name": "significance A", "latency": ["0ms", args.delay], "warmup": 1},
    )
    sweep_b = create_sweep(settings, catalog, {**base, "name": "significance B", "latency": "0ms"})
    runs_a, runs_b = sweep_runs(settings, sweep_a), sweep_runs(settings, sweep_b)
    warmups = [rid for rid, _label, warm in runs_a if warm]
    batches = {
        "A 0ms": [rid for rid, label, warm in runs_a if label == "0ms" and not warm],
        f"A {args.delay}": [rid for rid, label, warm in runs_a if label != "0ms" and not warm],
        "B 0ms": [rid for rid, _label, warm in runs_b if not warm],
    }
    order, labels = blocked_order(batches, seed)
    labels.update({rid: "warm-up" for rid in warmups})
    order = warmups + order
    print(
        f"\n3 nodes x 1 thread, {MODEL}, {args.max_tokens} tokens, {args.runs} runs per "
        f"batch; sweeps A #{sweep_a} (0ms, {args.delay}) and B #{sweep_b} (0ms); one warm "
        f"cluster, run_group path; order seed {seed}; load {loadavg()}"
    )
    print("order: " + ", ".join(labels[rid] for rid in order))
    t0 = time.monotonic()
    result = run_group(settings, r, order, sweep_id=sweep_a, catalog=catalog)
    wall = time.monotonic() - t0
    with session_scope(settings.database_url) as s:
        done = {
            rid: (status, tpot, contended)
            for rid, status, tpot, contended in s.execute(
                select(Run.id, Run.status, Run.tpot_ms, Run.contended).where(Run.id.in_(order))
            )
        }
    print(
        f"{sum(1 for v in done.values() if v[0] == 'succeeded')}/{len(order)} succeeded in "
        f"{wall:.0f} s, model loads {result.model_loads}; load after {loadavg()}"
    )
    print(
        "TPOT ms in execution order: "
        + ", ".join(
            f"{labels[rid]} {fmt(done[rid][1])}{'*' if done[rid][2] else ''}" for rid in order
        )
        + "  (* contended)"
    )
    for rid in order:
        if done[rid][0] != "succeeded":
            print(f"  run {rid} ({labels[rid]}): {done[rid][0]}")
    compared = [rid for ids in batches.values() for rid in ids]
    with session_scope(settings.database_url) as s:
        analysis = compare_runs(s, compared)
    names: dict[tuple[str | None, int | None], str] = {
        ("0ms", sweep_a): "A 0ms (batch 1)",
        (args.delay, sweep_a): f"A {args.delay}",
        ("0ms", sweep_b): "B 0ms (batch 2)",
    }
    report(analysis, names)
    by_batch = {(g.key.latency, g.batch): g for g in analysis.groups}
    verdicts: dict[str, str] = {}
    for pair, (a, b) in {
        "delay": (("0ms", sweep_a), (args.delay, sweep_a)),
        "batches": (("0ms", sweep_a), ("0ms", sweep_b)),
    }.items():
        if a in by_batch and b in by_batch:
            verdicts[pair] = compare_groups(by_batch[a], by_batch[b]).verdict
    return verdicts


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per batch")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--delay", default="5ms", help="one-way delay of the second config")
    parser.add_argument("--seed", type=int, default=1, help="seeds the run order")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="the whole experiment this many times (order seeds seed, seed+1, ...): how "
        "often each verdict comes out",
    )
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgelab-significance-bench-"))
    embedded = EmbeddedRedis(tmp / "redis")
    embedded.start()
    try:
        settings = Settings(
            data_dir=tmp / "data", models_dir=tmp / "models", redis_url=embedded.url
        )
        upgrade(settings.database_url)
        shared_dir = args.models_dir.resolve()
        shared = Catalog(path=shared_dir / "catalog.json", models_dir=shared_dir)
        catalog = Catalog(settings)  # a catalog of its own: the shared file, registered
        catalog.register(shared.fetch(MODEL))
        r = redis.Redis.from_url(embedded.url)
        rounds = [one_round(settings, catalog, r, args, args.seed + i) for i in range(args.repeats)]
        print(
            f"\nacceptance: A {args.delay} vs A 0ms should be significant (slower); "
            "B 0ms vs A 0ms (two batches of one configuration) usually no significant "
            "difference (alpha 0.05: about 1 round in 20 says 'significant' by chance). "
            "p-values are uncorrected for the three pairs."
        )
        for pair, title in (
            ("delay", f"A {args.delay} vs A 0ms"),
            ("batches", "B 0ms vs A 0ms (two batches)"),
        ):
            found = [v[pair] for v in rounds if pair in v]
            significant = sum(1 for v in found if v in ("faster", "slower"))
            print(
                f"{title}: significant in {significant}/{len(found)} round(s) ({', '.join(found)})"
            )
        return 0
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
