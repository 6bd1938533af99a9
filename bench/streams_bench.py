"""Issue 13: /api/health latency with open event streams, gevent (what ``edgelab serve``
runs now) vs gthread with 16 threads (what it ran before), side by side.

Each server is the one ``tests/integration/test_live_api.py`` starts (own
redis-server, SQLite, no worker, so the streamed run stays queued): clients open
``/api/runs/<id>/events`` and hold them, then ``/api/health`` is timed 15 times. A
call that gets no answer within 5 s counts as 5 s (the thread pool is full).

``--cold-vocab``: /api/health while a submit waits for a model's vocabulary to be
read (llama.cpp, the first count per model and web worker), this checkout (counts in
the tokenizer thread, default model warmed at start) beside the code before that
change (``--before``, served from ``git archive`` of that commit). One worker each;
a thread polls health back to back while each submit runs: first the default model
(``smollm2-135m``: the "before" server loads llama.cpp and its vocabulary now),
then three more catalog names for the same GGUF (symlinks: a vocabulary not loaded
yet in that process, read from the page cache).

    .venv/bin/python bench/streams_bench.py [--streams 100]
    .venv/bin/python bench/streams_bench.py --cold-vocab [--before f147931]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import test_live_api as live

from edgelab.catalog import Catalog
from edgelab.settings import Settings

TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parent.parent
#: The last commit whose web workers counted prompt tokens on the event loop.
BEFORE_TOKENIZER_THREAD = "f147931"
COLD_NAMES = ("cold-1", "cold-2", "cold-3")


def health_times(app: live.LiveApp, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        with contextlib.suppress(OSError):  # no answer in time: counted as TIMEOUT_S
            live._get(app.base + "/api/health", timeout=TIMEOUT_S)
        out.append(min(TIMEOUT_S, time.perf_counter() - started))
    return out


def measure(streams: int, *, gthread: bool) -> tuple[float, float, float, int]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        live.serve(Path(tmp), stream_idle_s=600, gthread=gthread) as app,
    ):
        run_id = live._queued_run(app)
        health_times(app, 1)  # the first asks Celery for workers
        idle = statistics.median(health_times(app, 15))
        opened = []
        for _ in range(streams):
            try:
                opened.append(live._open_stream(app, run_id))
            except OSError:
                break
        try:
            times = health_times(app, 15)
        finally:
            for s in opened:
                s.close()
        ok = sum(1 for s in opened if s.status == 200)
        return idle, statistics.median(times), max(times), ok


def _bench_catalog(settings: Settings) -> None:
    """The real SmolLM2 as the default model, and three more names for it (symlinks)."""
    models = Path(os.environ.get("EDGELAB_TEST_MODELS_DIR", REPO / "var" / "models"))
    real = Catalog(models_dir=models, path=models / "catalog.json").get("smollm2-135m")
    catalog = Catalog(settings)
    catalog.register(dataclasses.replace(real, path=Path(real.path).resolve()))
    for name in COLD_NAMES:
        link = settings.models_dir.resolve() / f"{name}.gguf"
        link.symlink_to(Path(real.path).resolve())
        catalog.register(dataclasses.replace(real, name=name, path=link))


def _submit_with_health(app: live.LiveApp, model: str) -> tuple[float, float, int]:
    """(submit seconds, worst health seconds overlapping it, health calls overlapping it).

    Without a Celery worker, health asks Celery for workers every 2 s, and that call
    waits Celery's whole 0.5 s ping timeout (not a stall: other requests go on). The
    submit is sent right after such a call, so the calls overlapping it are cheap ones
    unless the worker stalls.
    """
    calls: list[tuple[float, float]] = []
    stop, asked_celery = threading.Event(), threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            with contextlib.suppress(OSError):
                live._get(app.base + "/api/health", timeout=30)
            calls.append((started, time.perf_counter()))
            if calls[-1][1] - started >= 0.4:
                asked_celery.set()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    asked_celery.wait(10)
    body = json.dumps({"prompt": "Name three planets.", "model": model, "nodes": 1}).encode()
    req = urllib.request.Request(
        app.base + "/api/runs", data=body, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 202, resp.read()
    ended = time.perf_counter()
    stop.set()
    poller.join(40)
    overlapping = [b - a for a, b in calls if b > started and a < ended]
    return ended - started, max(overlapping, default=0.0), len(overlapping)


def cold_vocab(code: Path | None) -> list[tuple[str, tuple[float, float, int]]]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        live.serve(Path(tmp), stream_idle_s=600, prepare=_bench_catalog, code=code) as app,
    ):
        health_times(app, 1)  # the first asks Celery for workers
        time.sleep(2.0)  # as a researcher would: the page first, then a submit
        return [(model, _submit_with_health(app, model)) for model in ("smollm2-135m", *COLD_NAMES)]


def _checkout(rev: str, into: Path) -> Path:
    """``edgelab/`` of commit ``rev`` under ``into`` (importable ahead of this checkout)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "edgelab"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    found = subprocess.run(
        [sys.executable, "-c", "import edgelab; print(edgelab.__file__)"],
        env={**os.environ, "PYTHONPATH": str(into)},
        cwd=into,  # as serve() runs gunicorn: the working directory is first on sys.path
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found.startswith(str(into)), found  # the old code is what gunicorn will import
    return into


def cold_vocab_main(before: str, rounds: int) -> None:
    rows: list[tuple[str, list[tuple[str, tuple[float, float, int]]]]] = []
    with tempfile.TemporaryDirectory() as old:
        code = _checkout(before, Path(old))
        for _ in range(rounds):  # alternating, so both see the same load
            rows.append(("this checkout", cold_vocab(None)))
            rows.append((f"before ({before})", cold_vocab(code)))
    print("/api/health while a submit reads a model's vocabulary (1 web worker)")
    print(f"{'server':<20} {'model':<14} {'submit':>9} {'health max':>11} {'calls':>6}")
    for server, results in rows:
        for model, (submit, worst, n) in results:
            print(f"{server:<20} {model:<14} {submit * 1000:>7.1f}ms {worst * 1000:>9.1f}ms {n:>6}")
    for label, names in (("default model", ("smollm2-135m",)), ("cold names", COLD_NAMES)):
        worst: dict[str, list[float]] = {}
        for server, results in rows:  # every round of a side together
            worst.setdefault(server, []).extend(r[1] for m, r in results if m in names)
        now = statistics.median(worst["this checkout"])
        prior = statistics.median(worst[f"before ({before})"])
        print(
            f"{label}: median health max during the submit {prior * 1000:.1f} ms before, "
            f"{now * 1000:.1f} ms now ({prior / now:.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--cold-vocab", action="store_true", help="the tokenizer bench only")
    parser.add_argument("--before", default=BEFORE_TOKENIZER_THREAD, help="commit to compare")
    parser.add_argument("--rounds", type=int, default=2, help="--cold-vocab servers per side")
    args = parser.parse_args()
    if args.cold_vocab:
        cold_vocab_main(args.before, args.rounds)
        return
    rows = [
        ("gevent (edgelab serve)", measure(args.streams, gthread=False)),
        ("gthread, 16 threads (before)", measure(args.streams, gthread=True)),
    ]
    print(f"/api/health with {args.streams} event streams held open")
    print(f"{'server':<30} {'streams up':>10} {'idle med':>9} {'median':>9} {'max':>9}")
    for name, (idle, med, worst, ok) in rows:
        print(
            f"{name:<30} {ok:>10} {idle * 1000:>7.1f}ms {med * 1000:>7.1f}ms {worst * 1000:>7.1f}ms"
        )
    print(f"health median with streams, gthread / gevent: {rows[1][1][1] / rows[0][1][1]:.0f}x")


if __name__ == "__main__":
    main()
