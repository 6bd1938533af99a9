"""Synthetic stored sweeps whose answers are known, for tests, benchmarks and demos.

:func:`insert_synthetic_sweep` writes a finished sweep of ``Run`` rows whose TPOT
follows the performance model of :mod:`edgelab.analysis.model` with the given
parameters plus seeded normal noise, so a test can check that the analysis
recovers what went in, and the page benchmark can time a 1,000-run sweep without
running 1,000 generations. Rows are marked as synthetic in ``options`` so they
can never be mistaken for measurements.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from edgelab.models import LinkStat, Run, Sweep, TokenEvent
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.store.status import RunStatus, SweepStatus


@dataclass(frozen=True)
class TrueModel:
    """TPOT = base + compute/N + per_worker*(N-1) + delay_factor*(N-1)*2d (no bandwidth cap)."""

    base_ms: float = 8.0
    compute_ms: float = 20.0
    per_worker_ms: float = 1.0
    delay_factor: float = 1.0

    def tpot(self, nodes: int, delay_ms: float) -> float:
        return (
            self.base_ms
            + self.compute_ms / nodes
            + self.per_worker_ms * (nodes - 1)
            + self.delay_factor * (nodes - 1) * 2 * delay_ms
        )


def insert_synthetic_sweep(
    session: Session,
    *,
    name: str = "synthetic",
    nodes: Sequence[int] = (1, 2, 3),
    latencies_ms: Sequence[float] = (0.0, 5.0, 10.0, 20.0),
    repetitions: int = 3,
    truth: TrueModel | None = None,
    noise: float = 0.01,
    tokens: int = 32,
    seed: int = 0,
    host_cores: int | None = 64,
    model: str = "smollm2-135m",
    threads: int = 1,
    extra: Mapping[int, float] | None = None,
    prompts: Sequence[str] = ("Name three planets.",),
    breakdown: bool = False,
) -> int:
    """A succeeded sweep over nodes x latencies x repetitions; returns its id.

    ``noise`` is the relative sd of each run's TPOT (and TTFT) around the truth.
    ``extra`` maps a node count to milliseconds added to its TPOT (a "slow" cell set).
    Several ``prompts`` make more configurations (one per prompt) of the same model.
    ``breakdown``: also store token events and per-link timing (one round trip per
    worker per token: worker compute ``compute/N``, injected ``2d``, the rest on the
    root), as the link proxies record them, so the per-token breakdown has data.
    The caller commits.
    """
    truth = truth or TrueModel()
    rng = random.Random(seed)
    cells = len(nodes) * len(latencies_ms) * repetitions * len(prompts)
    sweep = Sweep(
        name=name,
        spec={
            "name": name,
            "model": [model],
            "nodes": list(nodes),
            "threads": [threads],
            "latency": [f"{d:g}ms" for d in latencies_ms],
            "prompts": list(prompts),
            "repetitions": repetitions,
            "synthetic": True,
        },
        status=SweepStatus.SUCCEEDED,
        total_cells=cells,
    )
    session.add(sweep)
    session.flush()
    rows = []
    grid = [(p, n, d) for p in prompts for n in nodes for d in latencies_ms]
    for rep in range(repetitions):
        for prompt, n, delay in grid:
            profile = LatencyProfile.fixed(delay)
            config = RunConfig(
                prompt=prompt,
                model=model,
                nodes=n,
                threads=threads,
                latency=profile,
                max_tokens=tokens,
                repetition=rep,
                options={"synthetic": True},
            )
            tpot = truth.tpot(n, delay) + (extra or {}).get(n, 0.0)
            tpot *= 1 + rng.gauss(0, noise)
            ttft = (60.0 + 4 * tpot) * (1 + rng.gauss(0, noise))
            e2el = ttft + (tokens - 1) * tpot
            rows.append(
                Run(
                    sweep_id=sweep.id,
                    status=RunStatus.SUCCEEDED,
                    engine=config.engine,
                    backend=config.backend,
                    model=model,
                    nodes=n,
                    threads=threads,
                    latency=profile.to_dict(),
                    latency_label=profile.label,
                    bandwidth_bps=None,
                    max_tokens=tokens,
                    prompt=config.prompt,
                    repetition=rep,
                    options=dict(config.options),
                    fingerprint=config.fingerprint(),
                    ttft_ms=ttft,
                    e2el_ms=e2el,
                    tpot_ms=tpot,
                    itl_mean_ms=tpot,
                    itl_p50_ms=tpot * 0.98,
                    itl_p90_ms=tpot * 1.1,
                    itl_p99_ms=tpot * 1.3,
                    prompt_tokens=6,
                    output_tokens=tokens,
                    prefill_tps=6 / (ttft / 1000),
                    decode_tps=1000.0 / tpot,
                    net_bytes_per_token=2300.0 * (n - 1) if n > 1 else None,
                    host_cores=host_cores,
                    host_cpu="synthetic",
                )
            )
    session.add_all(rows)
    session.flush()
    if breakdown:
        for run in rows:
            _add_timing(session, run, truth)
        session.flush()
    return sweep.id


def _add_timing(session: Session, run: Run, truth: TrueModel) -> None:
    """Token events and link timing consistent with the run's TPOT (see the docstring)."""
    tokens = run.output_tokens or 0
    tpot, ttft = float(run.tpot_ms or 0.0), float(run.ttft_ms or 0.0)
    session.add_all(
        TokenEvent(run_id=run.id, index=i, offset_ms=ttft + i * tpot, text=f" t{i}")
        for i in range(tokens)
    )
    delay = float(run.latency.get("delay_ms") or 0.0)
    decode = tokens - 1
    for w in range(1, run.nodes):
        per_token = {
            "worker_ms": [truth.compute_ms / run.nodes] * decode,
            "injected_ms": [2 * delay] * decode,
            "transfer_ms": [0.05] * decode,
            "round_trips": [1] * decode,
            "bytes": [2300] * decode,
        }
        session.add(
            LinkStat(
                run_id=run.id,
                link=f"root<->worker{w}",
                bytes_up=1200 * tokens,
                bytes_down=1100 * tokens,
                chunks_up=2 * tokens,
                chunks_down=2 * tokens,
                delay_total_ms_up=delay * 2 * tokens,
                delay_total_ms_down=delay * 2 * tokens,
                delay_max_ms=delay,
                round_trips_decode=decode,
                timing={"per_token": per_token, "complete": True},
            )
        )
