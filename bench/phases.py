"""Per-run overhead of a sweep from its stored runs (used by sweep_bench and dllama_warm_bench).

A run's ``started_at`` is set when it is marked running (just before its samplers
start and its request goes out) and ``finished_at`` in the commit that stores its
outcome, both by the executor. So, per run of a warm group:

* *in a run, not generating* = ``finished_at - started_at - e2el_ms``: samplers and
  live feed starting, the request reaching the root, and everything after the last
  token until the run is stored (stream end, link counters and timing, the commit);
* *between runs* = the next run's ``started_at`` - this run's ``finished_at``:
  status events, lease, the next run's configuration, latency change and claim.

These need no instrumentation, so they work through the real Celery worker too;
bench/run_phases_bench.py splits the same time finer (wall and CPU per phase).
"""

from __future__ import annotations

import statistics
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

STANDIN = Path(__file__).resolve().parent.parent / "tests" / "standins" / "dllama_standin.py"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def stored_phases(runs: list[Any]) -> dict[str, float | None]:
    """Median ms per run of the two stored phases (runs of one warm group)."""
    done = sorted(
        (r for r in runs if r.started_at and r.finished_at and r.e2el_ms is not None),
        key=lambda r: r.started_at,
    )
    inside = [
        (r.finished_at - r.started_at).total_seconds() * 1000 - float(r.e2el_ms) for r in done
    ]
    between = [(b.started_at - a.finished_at).total_seconds() * 1000 for a, b in pairwise(done)]
    return {"inside": _median(inside), "between": _median(between)}


def overhead_line(wall_s: float, gen_s: float, startup_s: float, runs: list[Any]) -> str:
    """One line: generation share, per-run overhead, and its stored phases."""
    n = max(1, len(runs))
    per_run_ms = (wall_s - gen_s - startup_s) / n * 1000
    phases = stored_phases(runs)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    return (
        f"generation share {gen_s / wall_s:.3f}; per-run overhead (wall - generation - "
        f"cluster start) / {n} runs = {per_run_ms:.0f} ms; median in a run, not generating "
        f"{ms(phases['inside'])}, between runs {ms(phases['between'])}"
    )


def install_standin(directory: Path) -> Path:
    """The dllama stand-in as ``dllama`` and ``dllama-api`` in ``directory`` (as
    tests/integration/conftest.py installs it), run by this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    rest = STANDIN.read_text().split("\n", 1)[1]
    for name in ("dllama-api", "dllama"):
        path = directory / name
        path.write_text(f"#!{sys.executable}\n{rest}")
        path.chmod(0o755)
    return directory / "dllama"
