"""Plain run records: the only shape the analysis functions read.

Every analysis function takes :class:`RunRecord` values instead of ORM rows, so
the API, the pages, the CLI, the report and the tests share one code path and a
test can build a synthetic sweep without a database. :func:`load_records` is the
one place that turns ``Run`` rows into records.

Fields that other parts of edgelab record only in newer schemas (round trips per
token, host contention, oversubscription, warm-up runs) are read when the column
exists and are ``None``/absent otherwise, so the analysis works on old databases
and says "not recorded" rather than inventing a value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, Text, cast, func, select
from sqlalchemy.orm import Session

from edgelab.models import LinkStat, Run
from edgelab.store.status import RunStatus

#: Per-run metrics the statistics summarise, in the order tables show them
#: (the names are :mod:`edgelab.metrics.timeline`'s and the API's).
METRICS: tuple[str, ...] = (
    "ttft_ms",
    "tpot_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "decode_tps",
    "e2el_ms",
)
#: Metrics where a smaller value is better (everything but throughput).
LOWER_IS_BETTER: frozenset[str] = frozenset(METRICS) - {"decode_tps"}
#: Run flags the analysis understands. ``contended`` and ``oversubscribed`` come from
#: the run's host measurements; ``warmup`` runs are stored but never counted.
FLAG_NAMES: tuple[str, ...] = ("contended", "oversubscribed", "warmup")


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One stored run as the analysis sees it: configuration, metrics, flags.

    ``rtt_delay_ms`` is the mean injected delay of one root<->worker round trip
    (up + down) implied by the latency profile; ``round_trips_per_token`` is the
    measured number of round trips per generated token summed over the links
    (``None`` when the link proxies did not record it). ``flags`` holds any of
    :data:`FLAG_NAMES`.
    """

    id: int
    nodes: int
    metrics: Mapping[str, float | None]
    sweep_id: int | None = None
    status: str = RunStatus.SUCCEEDED
    engine: str = "llamacpp"
    backend: str = "local"
    model: str = "smollm2-135m"
    threads: int = 1
    latency: str = "0ms"
    rtt_delay_ms: float = 0.0
    bandwidth_bps: int | None = None
    max_tokens: int = 32
    prompt: str = ""
    temperature: float = 0.0
    seed: int = 0
    repetition: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    host_cores: int | None = None
    net_bytes_per_token: float | None = None
    round_trips_per_token: float | None = None
    flags: frozenset[str] = frozenset()
    #: ``Topology.label``: devices and links that differ from the cluster-wide values.
    topology: str = "uniform"

    def metric(self, name: str) -> float | None:
        """A metric's value, ``None`` when missing or not a finite number."""
        value = self.metrics.get(name)
        if value is None or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def oversubscribed(self) -> bool:
        """More threads over all nodes than the host has cores (compute cannot scale).

        The run's own flag when recorded; otherwise derived from ``host_cores``.
        """
        if "oversubscribed" in self.flags:
            return True
        return self.host_cores is not None and self.nodes * self.threads > self.host_cores

    @property
    def counted(self) -> bool:
        """Whether the run enters statistics: succeeded and not a warm-up."""
        return self.status == RunStatus.SUCCEEDED and "warmup" not in self.flags


def one_way_mean_ms(profile: Mapping[str, Any] | None) -> float:
    """Mean delay of one direction of a stored latency profile (``LatencyProfile.to_dict``).

    Uniform: the midpoint; normal: the mean of the normal truncated at 0 (the proxy
    redraws negative samples), which is above the nominal mean when jitter is large.
    """
    if not profile:
        return 0.0
    kind = profile.get("kind", "fixed")
    base = float(profile.get("delay_ms") or 0.0)
    if kind == "uniform":
        return (base + float(profile.get("max_ms") or base)) / 2
    if kind == "normal":
        sigma = float(profile.get("jitter_ms") or 0.0)
        if sigma <= 0:
            return base
        alpha = -base / sigma
        pdf = math.exp(-alpha * alpha / 2) / math.sqrt(2 * math.pi)
        tail = 0.5 * math.erfc(alpha / math.sqrt(2))  # P(X >= 0)
        return base + sigma * pdf / tail
    return base


def rtt_delay_ms(profile: Mapping[str, Any] | None) -> float:
    """Mean injected delay of one round trip: up one way plus down (``down`` or the same)."""
    if not profile:
        return 0.0
    up = one_way_mean_ms(profile)
    down_profile = profile.get("down")
    down = one_way_mean_ms(down_profile) if down_profile else up
    return up + down


def _flags_of(row: Mapping[Any, Any]) -> frozenset[str]:
    found = {name for name in FLAG_NAMES if row.get(name)}
    extra = row.get("flags")  # a JSON list/dict of flags, if the schema has one
    if isinstance(extra, Mapping):
        found.update(k for k, v in extra.items() if v and k in FLAG_NAMES)
    elif isinstance(extra, Sequence) and not isinstance(extra, str):
        found.update(str(f) for f in extra if str(f) in FLAG_NAMES)
    return frozenset(found)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def record_from_run(
    run: Run | Row[Any] | Mapping[str, Any], decode_round_trips: float | None = None
) -> RunRecord:
    """The record of one ``Run`` (an ORM row, or a row or dict of the columns
    :func:`load_records` selects; no relationship is loaded).

    ``decode_round_trips``: round trips of the decode phase summed over the run's links
    (what :func:`load_records` reads from ``link_stats``); divided by the decode
    tokens (all but the first) it is ``round_trips_per_token``.
    """
    row: Mapping[Any, Any]
    if isinstance(run, Row):
        row = run._mapping
    elif isinstance(run, Run):
        row = {c: getattr(run, c) for c in _column_names()}
    else:
        row = run
    trips = _finite(row.get("round_trips_per_token"))
    tokens = row["output_tokens"] or 0
    if trips is None and decode_round_trips is not None and tokens > 1:
        trips = decode_round_trips / (tokens - 1)
    nodes = row["nodes"]
    return RunRecord(
        id=row["id"],
        sweep_id=row["sweep_id"],
        status=row["status"],
        engine=row["engine"],
        backend=row["backend"],
        model=row["model"],
        nodes=nodes,
        threads=row["threads"],
        latency=row["latency_label"],
        rtt_delay_ms=rtt_delay_ms(row["latency"]) if nodes > 1 else 0.0,
        bandwidth_bps=row["bandwidth_bps"],
        max_tokens=row["max_tokens"],
        prompt=row["prompt"],
        temperature=row["temperature"],
        seed=row["seed"],
        repetition=row["repetition"],
        options=dict(row["options"] or {}),
        fingerprint=row["fingerprint"],
        metrics={m: row[m] for m in METRICS},
        host_cores=row["host_cores"],
        net_bytes_per_token=row["net_bytes_per_token"],
        round_trips_per_token=trips,
        flags=_flags_of(row),
        topology=row.get("topology_label") or "uniform",
    )


def records_from_runs(
    runs: Iterable[Run | Row[Any] | Mapping[str, Any]],
    decode_round_trips: Mapping[int, float] | None = None,
) -> list[RunRecord]:
    trips = decode_round_trips or {}
    return [
        record_from_run(r, trips.get(r["id"] if isinstance(r, Mapping) else r.id)) for r in runs
    ]


def _decode_round_trips(session: Session, run_ids: Sequence[int]) -> dict[int, float]:
    """Decode-phase round trips per run, summed over its links (empty on schemas or
    runs without link timing)."""
    column = getattr(LinkStat, "round_trips_decode", None)
    if column is None or not run_ids:
        return {}
    out: dict[int, float] = {}
    for start in range(0, len(run_ids), 500):  # stay under SQLite's bound-parameter limit
        chunk = list(run_ids[start : start + 500])
        rows = session.execute(
            select(LinkStat.run_id, func.sum(column), func.count(column))
            .where(LinkStat.run_id.in_(chunk))
            .group_by(LinkStat.run_id)
        )
        for run_id, total, counted in rows:
            if counted:  # every link NULL: not recorded (not zero round trips)
                out[int(run_id)] = float(total)
    return out


_BASE_COLUMNS = (
    "id",
    "sweep_id",
    "status",
    "engine",
    "backend",
    "model",
    "nodes",
    "threads",
    "latency",
    "latency_label",
    "bandwidth_bps",
    "max_tokens",
    "prompt",
    "temperature",
    "seed",
    "repetition",
    "options",
    "fingerprint",
    "host_cores",
    "net_bytes_per_token",
    "output_tokens",
    *METRICS,
)
#: Columns read when the schema has them (newer measurement hygiene and link timing).
_OPTIONAL_COLUMNS = (*FLAG_NAMES, "flags", "round_trips_per_token", "topology_label")


def _column_names() -> list[str]:
    return [*_BASE_COLUMNS, *(c for c in _OPTIONAL_COLUMNS if c in Run.__table__.columns)]


#: JSON columns read as text and decoded once per distinct value: a sweep's runs share a
#: handful of latency profiles and options, and decoding them row by row was about half
#: of reading a 1,000-run sweep.
_JSON_AS_TEXT = frozenset({"latency", "options"})


def _columns() -> list[Any]:
    return [
        cast(Run.__table__.columns[name], Text).label(name)
        if name in _JSON_AS_TEXT
        else Run.__table__.columns[name]
        for name in _column_names()
    ]


def _decode_json_columns(rows: list[dict[str, Any]]) -> None:
    decoded: dict[str, Any] = {}
    for row in rows:
        for name in _JSON_AS_TEXT:
            raw = row[name]
            if raw is not None:
                if raw not in decoded:
                    decoded[raw] = json.loads(raw)
                row[name] = decoded[raw]  # shared between records: read, never changed


def load_records(
    session: Session, *, sweep_id: int | None = None, run_ids: Sequence[int] | None = None
) -> list[RunRecord]:
    """Records of a sweep's runs and/or of given run ids, in id order.

    Every run is returned (failed and warm-up ones too, which the statistics skip
    and count), so a caller can say how many runs were left out and why.
    """
    if sweep_id is None and run_ids is None:
        raise ValueError("give a sweep_id or run_ids")
    # Columns, not ORM objects: a 1,000-run sweep page loads them in a few ms instead of
    # building 1,000 instrumented instances with their provenance and log columns.
    stmt = select(*_columns()).order_by(Run.id)
    if sweep_id is not None:
        stmt = stmt.where(Run.sweep_id == sweep_id)
    if run_ids is not None:
        stmt = stmt.where(Run.id.in_(list(run_ids)))
    result = session.execute(stmt)
    # Plain dicts: a Row's mapping goes through collections.abc on every lookup (~20
    # per run), which cost more than the query on a 1,000-run sweep page.
    keys = tuple(result.keys())
    runs = [dict(zip(keys, row, strict=True)) for row in result]
    _decode_json_columns(runs)
    # Runs store round_trips_per_token themselves; link_stats are the fallback for
    # multi-node runs recorded before that column was filled.
    missing = [r["id"] for r in runs if r["nodes"] > 1 and r.get("round_trips_per_token") is None]
    return records_from_runs(runs, _decode_round_trips(session, missing))
