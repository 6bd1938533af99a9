"""Time of ``edgelab report`` for a 1,000-run sweep (issue 12), beside the sweep's JSON export.

Fills a fresh SQLite database with one finished synthetic sweep — nodes 1-4 x
one-way delay 0/5/10/20/40 ms x 50 repetitions = 1,000 runs, TPOT from a known
model with 3 % noise, TTFT and ITL to match, 32 token events and the links'
per-token timing per run (what the time breakdown reads) — then measures, in one process and
side by side, round-robin so that load on the host hits every target alike:

* ``read+analyze``: :func:`edgelab.reports.build_report` (the runs, their 32k token
  events and link timing in three queries; :func:`edgelab.analysis.analyze`: groups,
  scaling, fit, break-even; per-run breakdowns; hold-out refits);
* ``html``: :func:`edgelab.reports.render_html` (figures as inline SVG + template);
* ``md``: :func:`edgelab.reports.render_markdown` (PNG at 200 dpi + SVG per figure);
* ``sweep page``: ``GET /sweeps/<id>`` through Flask's test client (the same analysis,
  rendered for the browser; bench/analysis_bench.py times it in depth);
* ``export json``: the sweep's JSON export through the test client, as a yardstick
  (the cheapest thing one can do with every run of the sweep);

and, as a user sees it, the whole ``edgelab report SWEEP -o r.html`` command in a
fresh process (Python start-up and imports included), beside a fresh process that
only imports what the command imports (the CLI, SQLAlchemy models, the report's
content and render modules with numpy and matplotlib, and what the analysis imports
on its first t quantile) and exits.

``--baseline-src DIR`` also runs both fresh-process steps against another checkout
of edgelab (``git worktree add DIR main``, or ``git archive REV | tar -x -C DIR``),
first on ``PYTHONPATH``, alternating with this one: before/after measured side by
side on the same load.

    .venv/bin/python bench/report_bench.py [--repetitions 50] [--rounds 7] [--cli-rounds 3]
        [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from edgelab.models import LinkStat, Sweep, TokenEvent  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.netem.profile import LatencyProfile  # noqa: E402
from edgelab.reports import build_report, render_html, render_markdown  # noqa: E402
from edgelab.runs.config import RunConfig  # noqa: E402
from edgelab.runs.executor import create_run  # noqa: E402
from edgelab.service import create_app  # noqa: E402
from edgelab.settings import Settings  # noqa: E402

# What a new `edgelab report` process imports before it does any work: the command's
# own imports, then what the analysis imports on its first t quantile (scipy).
JUST_IMPORTS = (
    "import edgelab.cli, edgelab.reports.cli, edgelab.models.db, edgelab.reports.content,"
    " edgelab.reports.render, edgelab.analysis.stats as s; s.t_quantile(3)"
)
NODES = (1, 2, 3, 4)
DELAYS_MS = (0, 5, 10, 20, 40)


def tpot_model(nodes: int, delay_ms: float) -> float:
    return 6.0 + 40.0 / nodes + 0.7 * (nodes - 1) + (nodes - 1) * 2 * delay_ms


TOKENS = 32


def timing_rows(run_id: int, nodes: int, delay_ms: float, tpot: float) -> tuple[list, list]:
    """Token events and per-link timing like a real 32-token run's (what the breakdown reads)."""
    tokens = [
        {"run_id": run_id, "index": i, "offset_ms": 90.0 + tpot * i, "text": " t", "detail": None}
        for i in range(TOKENS)
    ]
    steps = TOKENS - 1
    links = [
        {
            "run_id": run_id,
            "link": f"root<->worker{w}",
            "bytes_up": 150_000 * steps,
            "bytes_down": 2_000 * steps,
            "chunks_up": 2 * steps,
            "chunks_down": 2 * steps,
            "delay_total_ms_up": delay_ms * steps,
            "delay_total_ms_down": delay_ms * steps,
            "delay_max_ms": delay_ms,
            "timing": {
                "source": "proxy",
                "complete": True,
                "per_token": {
                    "worker_ms": [40.0 / nodes] * steps,
                    "injected_ms": [2.0 * delay_ms] * steps,
                    "transfer_ms": [0.4] * steps,
                    "round_trips": [1.0] * steps,
                    "bytes": [152_000.0] * steps,
                },
            },
        }
        for w in range(1, nodes)
    ]
    return tokens, links


def fill(settings: Settings, repetitions: int, seed: int = 7) -> int:
    """One finished sweep of len(NODES) x len(DELAYS_MS) x ``repetitions`` runs, each with
    32 token events and its links' per-token timing."""
    rng = random.Random(seed)
    tokens: list[dict[str, object]] = []
    links: list[dict[str, object]] = []
    with session_scope(settings.database_url) as s:
        sweep = Sweep(
            name="bench-1000",
            spec={"nodes": list(NODES), "latency": [f"{d}ms" for d in DELAYS_MS]},
            status="succeeded",
            total_cells=len(NODES) * len(DELAYS_MS) * repetitions,
        )
        s.add(sweep)
        s.flush()
        for rep in range(repetitions):
            for n in NODES:
                for d in DELAYS_MS:
                    run = create_run(
                        s,
                        RunConfig(
                            prompt="Name three planets.",
                            model="smollm2-135m",
                            nodes=n,
                            threads=1,
                            latency=LatencyProfile.parse(f"{d}ms"),
                            max_tokens=32,
                            repetition=rep,
                        ),
                        sweep_id=sweep.id,
                    )
                    tpot = tpot_model(n, d) * (1 + rng.gauss(0, 0.03))
                    run.status = "succeeded"
                    run.tpot_ms = tpot
                    run.ttft_ms = 90.0 + 2 * (n - 1) * d * (1 + rng.gauss(0, 0.03))
                    run.e2el_ms = run.ttft_ms + 31 * tpot
                    run.itl_p50_ms, run.itl_p99_ms = tpot * 0.98, tpot * 1.4
                    run.decode_tps = 1000.0 / tpot
                    run.output_tokens, run.prompt_tokens = 32, 6
                    run.host_cpu, run.host_cores = "bench CPU", 8
                    run.engine_version = "llama.cpp bench"
                    t, k = timing_rows(run.id, n, d, tpot)
                    tokens += t
                    links += k
        s.execute(insert(TokenEvent), tokens)
        s.execute(insert(LinkStat), links)
        return sweep.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=50, help="runs per cell (50 -> 1000)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cli-rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", models_dir=Path(tmp) / "models")
        upgrade(settings.database_url)
        started = time.perf_counter()
        sweep_id = fill(settings, args.repetitions)
        runs = len(NODES) * len(DELAYS_MS) * args.repetitions
        print(f"filled {runs} runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        client = create_app(settings, {"TESTING": True}).test_client()

        def analyze() -> None:
            with session_scope(settings.database_url) as s:
                build_report(s, sweep_id)

        with session_scope(settings.database_url) as s:
            data = build_report(s, sweep_id)
        sizes = {"html": len(render_html(data).encode())}
        text, files = render_markdown(data, "figs")
        sizes["md"] = len(text.encode()) + sum(len(b) for b in files.values())

        def page() -> None:
            resp = client.get(f"/sweeps/{sweep_id}")
            assert resp.status_code == 200
            resp.get_data()

        def export() -> None:
            resp = client.get(f"/export/sweeps/{sweep_id}.json")
            assert resp.status_code == 200
            resp.get_data()

        targets: dict[str, Callable[[], object]] = {
            "read+analyze": analyze,
            "html": lambda: render_html(data),
            "md": lambda: render_markdown(data, "figs"),
            "sweep page": page,
            "export json": export,
        }
        for fn in targets.values():  # warm-up: imports, font cache, first query
            fn()
        times: dict[str, list[float]] = {k: [] for k in targets}
        for i in range(args.rounds):
            names = list(targets)
            names = names[i % len(names) :] + names[: i % len(names)]  # rotate: no position bias
            for name in names:
                t0 = time.perf_counter()
                targets[name]()
                times[name].append(time.perf_counter() - t0)

        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
        env.update(
            EDGELAB_DATA_DIR=str(settings.data_dir), EDGELAB_DATABASE_URL=settings.database_url
        )
        sources: dict[str, dict[str, str]] = {"this checkout": env}
        if args.baseline_src is not None:
            base = args.baseline_src.resolve()
            sources = {f"baseline {base}": env | {"PYTHONPATH": str(base)}, **sources}
        cli: dict[str, list[float]] = {k: [] for k in sources}
        imports: dict[str, list[float]] = {k: [] for k in sources}
        out = f"{tmp}/r.html"
        for label, source_env in sources.items():
            # From the temp dir: `python -m`/`-c` put the working directory first on
            # sys.path, which from the repo root would shadow PYTHONPATH's checkout.
            where = subprocess.run(
                [sys.executable, "-c", "import edgelab; print(edgelab.__file__)"],
                env=source_env,
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            print(f"{label}: imports {where}", file=sys.stderr)
        for _ in range(args.cli_rounds):
            for label, source_env in sources.items():
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "edgelab", "report", str(sweep_id), "-o", out],
                    env=source_env,
                    cwd=tmp,
                    check=True,
                    capture_output=True,
                )
                cli[label].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-c", JUST_IMPORTS], env=source_env, cwd=tmp, check=True
                )
                imports[label].append(time.perf_counter() - t0)

    export_median = statistics.median(times["export json"])
    print(f"sweep of {runs} runs, {len(data.analysis.groups)} configurations, ", end="")
    print(f"{len(data.analysis.fits)} fit(s); rounds {args.rounds}, load {os.getloadavg()[0]:.1f}")
    print("| step | median ms | max ms | x export json | output |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        out = f"{sizes[name] / 1000:,.0f} kB" if name in sizes else ""
        print(
            f"| {name} | {1000 * statistics.median(values):,.0f} | {1000 * max(values):,.0f} "
            f"| {statistics.median(values) / export_median:.1f} | {out} |"
        )
    for label in cli:
        suffix = f" ({label})" if len(cli) > 1 else ""
        for name, values, out in (
            ("`edgelab report` (new process)", cli[label], "html"),
            ("of which start-up and imports", imports[label], ""),
        ):
            print(
                f"| {name}{suffix} | {1000 * statistics.median(values):,.0f} "
                f"| {1000 * max(values):,.0f} | {statistics.median(values) / export_median:.1f} "
                f"| {out} |"
            )


if __name__ == "__main__":
    main()
