"""How fast are faults noticed and resolved? (issue 11: detection and recovery times)

Two parts, both on real components:

1. the chaos tests (``tests/integration/chaos``: real ``edgelab worker``
   processes, real llama.cpp nodes on the small model, Redis servers of their own
   where one is restarted) run under pytest with ``EDGELAB_CHAOS_TIMINGS`` set;
   every fault a test injects is recorded there as one JSON line (``detect_s``:
   fault -> the run's status says so; ``recover_s``: fault -> the system is back to
   normal, e.g. no node process left or the next run succeeded). Any chaos test
   that records through the ``chaos_timing`` fixture appears in the table;
2. work directories: ``--runs`` short runs of which one fails (a worker node is
   killed with SIGKILL mid-generation), executed in this process; counts the
   cluster directories and bytes left afterwards (before issue 11 every run left
   its directory: ~430 runs, 319 directories, 67 MB).

The test environment (``EDGELAB_TEST_REDIS_URL``, ``EDGELAB_TEST_MODELS_DIR``, ...)
is passed through to pytest unchanged.

    .venv/bin/python bench/chaos_bench.py [--runs 8] [--skip-tests] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgelab.catalog import Catalog  # noqa: E402
from edgelab.models.db import session_scope, upgrade  # noqa: E402
from edgelab.runs.config import parse_config  # noqa: E402
from edgelab.runs.executor import create_run, execute_run  # noqa: E402
from edgelab.settings import Settings  # noqa: E402


def chaos_tests(select: str | None) -> tuple[list[dict[str, Any]], float, int]:
    """Run the chaos tests; return their timing records, wall time and exit code."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as f:
        path = Path(f.name)
    env = dict(os.environ, EDGELAB_CHAOS_TIMINGS=str(path))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "tests/integration/chaos",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    if select:
        argv += ["-k", select]
    t0 = time.monotonic()
    code = subprocess.call(argv, cwd=REPO, env=env)
    wall = time.monotonic() - t0
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.unlink()
    return records, wall, code


def _dir_usage(base: Path) -> tuple[int, int]:
    dirs = [p for p in base.iterdir() if p.is_dir()] if base.exists() else []
    size = sum(f.stat().st_size for d in dirs for f in d.rglob("*") if f.is_file())
    return len(dirs), size


def work_dirs(runs: int, models_dir: Path) -> dict[str, Any]:
    """``runs`` short 2-node runs, the last one failing; what is left on disk."""
    with tempfile.TemporaryDirectory(prefix="edgelab-chaos-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", models_dir=models_dir)
        upgrade(settings.database_url)
        catalog = Catalog(settings)
        statuses = []
        for i in range(runs):
            fail = i == runs - 1
            config, _ = parse_config(
                {
                    "prompt": "Write a long story about a robot who learns to paint.",
                    "nodes": 2,
                    "threads": 1,
                    "latency": "0ms",
                    "max_tokens": 24 if fail else 4,
                },
                catalog,
            )
            with session_scope(settings.database_url) as s:
                run_id = create_run(s, config).id
            killed: list[int] = []

            def sink(event: dict[str, Any], fail: bool = fail, killed: list[int] = killed) -> None:
                if fail and event.get("type") == "token" and not killed:
                    import psutil

                    for child in psutil.Process().children():
                        if "llamacpp.worker" in " ".join(child.cmdline()):
                            child.send_signal(signal.SIGKILL)
                            killed.append(child.pid)

            statuses.append(execute_run(settings, run_id, sink=sink, catalog=catalog).status)
        count, size = _dir_usage(settings.data_dir / "clusters")
        return {"runs": runs, "statuses": statuses, "dirs_left": count, "bytes_left": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs of the work-dir part")
    parser.add_argument("--skip-tests", action="store_true", help="only the work-dir part")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k for the chaos tests")
    args = parser.parse_args()
    models = Path(os.environ.get("EDGELAB_TEST_MODELS_DIR", REPO / "var" / "models"))

    records: list[dict[str, Any]] = []
    code = 0
    if not args.skip_tests:
        records, wall, code = chaos_tests(args.select)
        print(f"\nchaos tests: exit code {code}, {wall:.0f} s wall time\n")
    wd = work_dirs(args.runs, models)

    print("| fault | detected after (s) | recovered after (s) | how measured |")
    print("|---|---|---|---|")
    for r in records:
        detect = "-" if r.get("detect_s") is None else f"{r['detect_s']:.2f}"
        recover = "-" if r.get("recover_s") is None else f"{r['recover_s']:.2f}"
        print(f"| {r['row']} | {detect} | {recover} | {r.get('note', '')} |")
    failed = wd["statuses"].count("failed")
    print(
        f"| work dirs: {wd['runs']} runs, {failed} failed (node SIGKILLed) | - | - | "
        f"{wd['dirs_left']} dir(s), {wd['bytes_left'] / 1024:.0f} KiB left "
        f"(before: one dir per run) |"
    )
    ok = wd["dirs_left"] == failed and wd["statuses"][:-1] == ["succeeded"] * (wd["runs"] - 1)
    return code or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
