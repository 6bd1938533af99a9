"""Issue 13: /api/health latency with open event streams, gevent (what ``edgelab serve``
runs now) vs gthread with 16 threads (what it ran before), side by side.

Each server is the one ``tests/integration/test_live_api.py`` starts (own
redis-server, SQLite, no worker, so the streamed run stays queued): clients open
``/api/runs/<id>/events`` and hold them, then ``/api/health`` is timed 15 times. A
call that gets no answer within 5 s counts as 5 s (the thread pool is full).

    .venv/bin/python bench/streams_bench.py [--streams 100]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import test_live_api as live

TIMEOUT_S = 5.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100)
    args = parser.parse_args()
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
