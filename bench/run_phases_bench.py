"""Where does a warm topology group spend the time that is not generation? (issues 12, 14)

Executes one topology group - ``--runs`` runs of the same cluster (latency
alternating 0 ms / 10 ms, so every run changes the warm cluster's links) - through
``run_group``, the function a Celery group task calls, with the host lock and the
leases on a real Redis. The edgelab functions at the phase boundaries are wrapped
(nothing else changes) to time, per run:

* ``before``: from ``execute_run`` being called to the request leaving for the root
  (claim, configuration, latency change, provenance, ``running``, samplers);
* ``gen+``: from the request to the last token on edgelab's side, minus the root's
  own E2E latency (HTTP, the stream reader thread, handling each token);
* ``after``: from the last token to ``execute_run`` returning (end of stream,
  sampler/feed threads stopping, link counters, per-token link timing, storing;
  the wait for the stream's end event is printed on its own);
* ``between``: from one ``execute_run`` returning to the next one being called
  (status, lease release, the next run's cancel check).

Each phase is printed as wall time and the CPU time of the thread that runs the
group (``time.thread_time``): wall well above CPU is waiting (sleeps, polls,
thread joins, fsyncs), not work. ``--profile FILE`` writes a cProfile of the group.

``--compare REV`` runs the same group first with edgelab as of git revision REV
(a temporary detached worktree, same venv), then with this tree, alternating
``--rounds`` times, and prints both side by side: the old and new code paths on
one host in one invocation.

    .venv/bin/python bench/run_phases_bench.py [--engine llamacpp|dllama] [--runs 6]
        [--max-tokens 16] [--nodes 3] [--compare REV] [--rounds 1]
        [--redis-url redis://127.0.0.1:6379/0] [--models-dir var/models] [--profile FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is this script's folder, first on sys.path before --tree puts a checkout there.
from phases import install_standin

BENCH_REPO = Path(__file__).resolve().parent.parent
PROMPT = "Write a short story about a robot who learns to paint."
PHASES = ("before", "gen+", "after", "between")


class Marks:
    """Timestamps (wall: monotonic, cpu: this thread's CPU time) at the phase boundaries."""

    def __init__(self) -> None:
        self.runs: list[dict[str, tuple[float, float]]] = []

    def mark(self, name: str) -> None:
        if name == "call":
            self.runs.append({})
        if self.runs:
            self.runs[-1].setdefault(name, (time.monotonic(), time.thread_time()))

    def last_token(self) -> None:
        if self.runs:
            self.runs[-1]["token"] = (time.monotonic(), time.thread_time())


def _instrument(marks: Marks) -> None:
    """Wrap the boundary functions; works on any edgelab revision that has them."""
    from edgelab.engines.client import RootClient
    from edgelab.tasks import runner

    original_execute = runner.execute_run

    def execute_run(*args: Any, **kwargs: Any) -> Any:
        marks.mark("call")
        try:
            return original_execute(*args, **kwargs)
        finally:
            marks.mark("return")

    runner.execute_run = execute_run  # type: ignore[assignment]

    original_generate = RootClient.generate

    def generate(self: RootClient, *args: Any, **kwargs: Any) -> Any:
        marks.mark("request")
        for event in original_generate(self, *args, **kwargs):
            if event.get("type") == "token":
                marks.last_token()
            elif event.get("type") == "end":
                marks.mark("end")
            yield event

    RootClient.generate = generate  # type: ignore[method-assign]


#: Functions inside the phases timed one by one with ``--detail`` (missing ones skipped,
#: so the list also works on older revisions).
DETAIL = (
    "edgelab.store.store:Store.claim_run",
    "edgelab.store.store:Store.run_config",
    "edgelab.store.store:Store.mark_running",
    "edgelab.cluster.local:LocalCluster.set_latency",
    "edgelab.cluster.local:LocalCluster.provenance",
    "edgelab.cluster.local:LocalCluster.sample_sources",
    "edgelab.cluster.local:LocalCluster.link_stats",
    "edgelab.cluster.local:LocalCluster.link_chunks",
    "edgelab.cluster.local:LocalCluster.root_clients",
    "edgelab.metrics.sampler:NodeSampler.start",
    "edgelab.metrics.sampler:NodeSampler.stop",
    "edgelab.runs.executor:_LiveFeed.start",
    "edgelab.runs.executor:_LiveFeed.stop",
    "edgelab.runs.executor:_TokenWriter.flush",
    "edgelab.metrics.linktiming:compute",
    "edgelab.store.store:Store.succeed_run",
    "edgelab.tasks.locks:RunLeases.release",
    "edgelab.tasks.events:RunPublisher.__call__",  # every live event (Redis pipeline)
    "edgelab.tasks.events:cancel_check",
    "edgelab.metrics.host:HostMonitor.start",
    "edgelab.metrics.host:HostMonitor.stop",
    "sqlalchemy.orm.session:Session.commit",  # every commit of the group, any caller
    "edgelab.store.store:Store.add_token_events",
    "edgelab.cluster.local:LocalCluster.close",
    "edgelab.cluster.local:_Node.stop",
    "edgelab.netem.proxy:LinkProxy.close",
)


def _instrument_detail(totals: dict[str, list[float]]) -> None:
    """Wrap every DETAIL function: total wall and CPU (this thread) over the group."""
    import functools
    import importlib

    for target in DETAIL:
        module_name, qual = target.split(":")
        try:
            owner: Any = importlib.import_module(module_name)
            *path, attr = qual.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = getattr(owner, attr)
        except (ImportError, AttributeError):
            continue

        def wrapped(*a: Any, _f: Any = original, _k: str = qual, **kw: Any) -> Any:
            w, c = time.monotonic(), time.thread_time()
            try:
                return _f(*a, **kw)
            finally:
                t = totals.setdefault(_k, [0.0, 0.0, 0])
                t[0] += time.monotonic() - w
                t[1] += time.thread_time() - c
                t[2] += 1

        setattr(owner, attr, functools.wraps(original)(wrapped))


def measure(args: argparse.Namespace, tree: Path) -> dict[str, Any]:
    """One group on ``tree``'s edgelab (already first on sys.path); phases per run."""
    import redis
    from sqlalchemy import select

    from edgelab.catalog import Catalog
    from edgelab.models import Run
    from edgelab.models.db import session_scope, upgrade
    from edgelab.settings import Settings
    from edgelab.sweeps import control, expand, parse_spec
    from edgelab.tasks.runner import run_group

    tmp = Path(tempfile.mkdtemp(prefix="edgelab-phases-bench-"))
    settings = Settings(data_dir=tmp / "data", models_dir=tmp / "models", redis_url=args.redis_url)
    upgrade(settings.database_url)
    shared_dir = Path(args.models_dir).resolve()
    shared = Catalog(path=shared_dir / "catalog.json", models_dir=shared_dir)
    catalog = Catalog(settings)
    catalog.register(shared.fetch("smollm2-135m"))
    spec_data: dict[str, Any] = {
        "name": "phases",
        "nodes": args.nodes,
        "threads": 1,
        "latency": ["0ms", "10ms"],
        "max_tokens": args.max_tokens,
        "prompts": [PROMPT],
        "repetitions": max(1, args.runs // 2),
        "engine": args.engine,
    }
    if args.engine == "dllama":
        from edgelab.engines.dllama.synthetic import SyntheticShape, write_synthetic_model

        os.environ["EDGELAB_DLLAMA_BIN"] = str(install_standin(tmp / "bin"))
        os.environ.pop("EDGELAB_DLLAMA_API_BIN", None)
        shape = SyntheticShape(dim=512, hidden_dim=1024, n_layers=4, n_heads=8, n_kv_heads=4)
        model, _ = write_synthetic_model(settings.models_dir, shape)
        catalog.add(model, name="standin-38mb")
        spec_data["model"] = "standin-38mb"
        settings = Settings(
            data_dir=settings.data_dir,
            models_dir=settings.models_dir,
            redis_url=args.redis_url,
            dllama_bin=os.environ["EDGELAB_DLLAMA_BIN"],
        )
    else:
        spec_data["model"] = "smollm2-135m"
    spec = parse_spec(spec_data, max_cells=1000)
    cells = expand(spec, catalog)
    with session_scope(settings.database_url) as s:
        sweep_id = control.create_sweep(s, spec, cells).id
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Run.id).where(Run.sweep_id == sweep_id).order_by(Run.id)))
    marks = Marks()
    _instrument(marks)
    detail: dict[str, list[float]] = {}
    if args.detail:
        _instrument_detail(detail)
    r = redis.Redis.from_url(args.redis_url)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.monotonic()
    result = run_group(settings, r, ids, sweep_id=sweep_id, catalog=catalog)
    wall = time.monotonic() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    with session_scope(settings.database_url) as s:
        e2el = {
            run.id: (run.status, run.e2el_ms or 0.0, run.output_tokens or 0)
            for run in s.scalars(select(Run).where(Run.id.in_(ids)))
        }
    shutil.rmtree(tmp, ignore_errors=True)  # database, models, cluster work dirs
    rows = []
    for i, (rid, m) in enumerate(zip(ids, marks.runs, strict=False)):
        status, e2el_ms, tokens = e2el[rid]
        row: dict[str, Any] = {"run": rid, "status": status, "tokens": tokens, "e2el": e2el_ms}
        for phase, (a, b) in (
            ("before", ("call", "request")),
            ("after", ("token", "return")),
            ("end", ("token", "end")),
        ):
            row[phase] = [
                (m[b][k] - m[a][k]) * 1000 if a in m and b in m else float("nan") for k in (0, 1)
            ]
        if "request" in m and "token" in m:
            row["gen+"] = [
                (m["token"][0] - m["request"][0]) * 1000 - e2el_ms,
                (m["token"][1] - m["request"][1]) * 1000,
            ]
        else:
            row["gen+"] = [float("nan")] * 2
        nxt = marks.runs[i + 1] if i + 1 < len(marks.runs) else None
        row["between"] = (
            [(nxt["call"][k] - m["return"][k]) * 1000 for k in (0, 1)]
            if nxt is not None and "return" in m
            else [float("nan")] * 2
        )
        rows.append(row)
    start = (marks.runs[0]["call"][0] - t0) if marks.runs else wall
    return {
        "tree": str(tree),
        "wall_s": wall,
        "start_s": start,
        "gen_s": sum(row["e2el"] for row in rows) / 1000,
        "model_loads": result.model_loads,
        "rows": rows,
        "stop_s": (t0 + wall - marks.runs[-1]["return"][0]) if marks.runs else 0.0,
        "detail": detail,
    }


def _median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def report(label: str, res: dict[str, Any]) -> dict[str, float]:
    rows = res["rows"]
    ok = sum(row["status"] == "succeeded" for row in rows)
    gen, wall, start, stop = res["gen_s"], res["wall_s"], res["start_s"], res["stop_s"]
    per_run = (wall - gen - start) / max(1, len(rows)) * 1000
    print(
        f"\n{label}: {ok}/{len(rows)} succeeded, model loads {res['model_loads']}, wall "
        f"{wall:.2f} s, cluster start {start:.2f} s, generation {gen:.2f} s -> share "
        f"{gen / wall:.3f}; overhead (wall - generation - start) {per_run:.0f} ms/run, "
        f"of which the cluster's stop {stop * 1000 / max(1, len(rows)):.0f} ms/run "
        f"({stop:.2f} s)"
    )
    print("  run  tokens  E2E ms | " + " | ".join(f"{p:>7s} wall/cpu ms" for p in PHASES))
    for row in rows:
        cells = " | ".join(f"{row[p][0]:9.1f} /{row[p][1]:6.1f}" for p in PHASES)
        print(f"  {row['run']:3d} {row['tokens']:7d} {row['e2el']:7.0f} | {cells}")
    if res.get("detail"):
        print("  inside the phases, per run (wall / cpu ms, calls per run):")
        for name, (w, c, n) in sorted(res["detail"].items(), key=lambda kv: -kv[1][0]):
            k = max(1, len(rows))
            print(f"    {name:34s} {w / k * 1000:7.1f} / {c / k * 1000:6.1f}  x{n / k:.1f}")
    medians = {p: _median([row[p][0] for row in rows]) for p in PHASES}
    cpu = {p: _median([row[p][1] for row in rows]) for p in PHASES}
    end = _median([row["end"][0] for row in rows if "end" in row])
    print(
        "  median            | "
        + " | ".join(f"{medians[p]:9.1f} /{cpu[p]:6.1f}" for p in PHASES)
        + f"   (sum of medians {sum(medians.values()):.0f} ms)"
    )
    print(f"  of 'after': last token -> the stream's end event, median {end:.1f} ms")
    return {**medians, "per_run": per_run, "share": gen / wall}


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="edgelab-phases-old-"))
    subprocess.run(
        ["git", "-C", str(BENCH_REPO), "worktree", "add", "--detach", "-q", str(path), rev],
        check=True,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("llamacpp", "dllama"), default="llamacpp")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--models-dir", default=str(BENCH_REPO / "var" / "models"))
    parser.add_argument("--profile", default="")
    parser.add_argument("--compare", default="", help="git revision of the old code path")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--detail", action="store_true", help="time functions inside phases")
    parser.add_argument("--tree", default="", help=argparse.SUPPRESS)  # child: measure only
    args = parser.parse_args()
    if args.engine == "dllama" and args.nodes not in (1, 2, 4):
        args.nodes = 4  # the stand-in's synthetic model splits over 1, 2 or 4 nodes

    if args.tree:
        sys.path.insert(0, args.tree)
        print(json.dumps(measure(args, Path(args.tree))))
        return

    embedded = None
    if not args.redis_url:
        sys.path.insert(0, str(BENCH_REPO))
        from edgelab.embedded import EmbeddedRedis

        embedded_dir = Path(tempfile.mkdtemp(prefix="edgelab-phases-redis-"))
        embedded = EmbeddedRedis(embedded_dir)
        embedded.start()
        args.redis_url = embedded.url
    trees = [("this tree", BENCH_REPO)]
    old = None
    if args.compare:
        old = _worktree(args.compare)
        trees.insert(0, (f"old ({args.compare})", old))
    print(
        f"group: {args.engine}, {args.nodes} nodes x 1 thread, {args.runs} runs x "
        f"{args.max_tokens} tokens, latency 0ms/10ms alternating, run_group path"
    )
    summary: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    try:
        for _ in range(args.rounds):
            for label, tree in trees:
                child = [sys.executable, __file__, "--tree", str(tree)]
                for key in ("engine", "runs", "max_tokens", "nodes", "redis_url", "models_dir"):
                    child += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
                if args.detail:
                    child.append("--detail")
                if args.profile:
                    child += ["--profile", f"{args.profile}.{label.split()[0]}"]
                out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                res = json.loads(out.strip().splitlines()[-1])
                summary[label].append(report(label, res))
    finally:
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(embedded_dir, ignore_errors=True)
        if old is not None:
            subprocess.run(
                ["git", "-C", str(BENCH_REPO), "worktree", "remove", "--force", str(old)],
                check=False,
            )
    if len(trees) > 1 or args.rounds > 1:
        print("\nmedian ms per run over rounds (wall)  " + "  ".join(f"{p:>8s}" for p in PHASES))
        for label, results in summary.items():
            cells = "  ".join(f"{_median([x[p] for x in results]):8.1f}" for p in PHASES)
            per_run = _median([x["per_run"] for x in results])
            share = _median([x["share"] for x in results])
            print(f"  {label:34s}  {cells}   overhead {per_run:5.0f} ms/run, share {share:.3f}")


if __name__ == "__main__":
    main()
