"""Configurations and their repetitions: n, mean, sd, CV, 95 % CI and flags per metric.

A *configuration* is what ``Run.fingerprint`` identifies (everything but the
repetition index) with one exception: a 1-node run has no links, so its latency
profile and bandwidth cannot matter, and 1-node runs that differ only there are
one configuration. Grouping by the raw fingerprint would split them into as many
"configurations" as latency columns and invent differences between them (the
50 % spread issue 12 started from).

Flags of a group:

- ``too few``: fewer than :data:`MIN_RUNS` counted runs, so the CI is missing or
  too wide to trust;
- ``noisy``: the coefficient of variation of TTFT, TPOT, decode tokens/s or E2EL
  is above 5 % (AIPerf's convention); ``noisy_metrics`` names which;
- ``contended``: at least one run was measured while other processes used the
  host's CPU (the run's own ``contended`` flag);
- ``oversubscribed``: threads over all nodes exceed the host's cores, so adding
  nodes cannot add compute on this host.

Runs that did not succeed and warm-up runs are not counted; the group says how
many were left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgelab.analysis.records import METRICS, RunRecord
from edgelab.analysis.stats import Summary, summarize

MIN_RUNS = 3
#: Metrics whose CV decides the ``noisy`` flag (ITL percentiles are noisy by nature).
NOISE_METRICS: tuple[str, ...] = ("ttft_ms", "tpot_ms", "decode_tps", "e2el_ms")
#: How the ``noisy`` flag names its metrics where it is shown as text.
NOISE_TITLES: dict[str, str] = {
    "ttft_ms": "TTFT",
    "tpot_ms": "TPOT",
    "decode_tps": "decode",
    "e2el_ms": "E2EL",
}
GROUP_FLAGS: tuple[str, ...] = ("too few", "noisy", "contended", "oversubscribed")


@dataclass(frozen=True, order=True)
class ConfigKey:
    """The configuration of a group of runs (``latency``/``bandwidth_bps`` are ``None`` for
    1 node, where they cannot matter)."""

    engine: str
    backend: str
    model: str
    nodes: int
    threads: int
    latency: str | None
    bandwidth_bps: int | None
    max_tokens: int
    prompt: str
    temperature: float
    seed: int
    options: str  # canonical JSON, so the key stays hashable and sortable
    # The run fingerprint for multi-node runs ("" for 1 node): whatever else the
    # fingerprint separates (e.g. a non-uniform topology) stays separate here too.
    fingerprint: str = ""
    #: The cluster's devices and links where they differ from the cluster-wide values.
    topology: str = "uniform"

    @classmethod
    def of(cls, record: RunRecord) -> ConfigKey:
        alone = record.nodes == 1
        return cls(
            engine=record.engine,
            backend=record.backend,
            model=record.model,
            nodes=record.nodes,
            threads=record.threads,
            latency=None if alone else record.latency,
            bandwidth_bps=None if alone else record.bandwidth_bps,
            max_tokens=record.max_tokens,
            prompt=record.prompt,
            temperature=record.temperature,
            seed=record.seed,
            # "{}" written out: most runs have no options, and a 1,000-run page asks 1,000 times.
            options=(
                json.dumps(dict(record.options), sort_keys=True, default=str)
                if record.options
                else "{}"
            ),
            fingerprint="" if alone else record.fingerprint,
            topology=record.topology,
        )

    @property
    def label(self) -> str:
        """Short human text, e.g. ``3 nodes × 1 thread · 20ms`` (fields that vary in a
        sweep; :meth:`to_dict` has all of them)."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        net = "no links" if self.latency is None else self.latency
        if self.bandwidth_bps is not None and self.latency is not None and "@" not in net:
            net += f" @{self.bandwidth_bps} bit/s"
        shape = "" if self.topology == "uniform" else f" · {self.topology}"
        return f"{self.nodes} node{'s' if self.nodes != 1 else ''} × {threads} · {net}{shape}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "backend": self.backend,
            "model": self.model,
            "nodes": self.nodes,
            "threads": self.threads,
            "latency": self.latency,
            "bandwidth_bps": self.bandwidth_bps,
            "max_tokens": self.max_tokens,
            "prompt": self.prompt,
            "temperature": self.temperature,
            "seed": self.seed,
            "options": json.loads(self.options),
            "topology": self.topology,
        }


@dataclass(frozen=True)
class Group:
    """The counted runs of one configuration and their statistics.

    ``values[m]`` are the per-run values of metric ``m`` (runs without it left out),
    ``stats[m]`` their :class:`Summary`; ``rtt_delay_ms`` is the mean injected
    round-trip delay of the configuration's latency profile (0 for 1 node).
    """

    key: ConfigKey
    run_ids: tuple[int, ...]
    values: Mapping[str, tuple[float, ...]]
    stats: Mapping[str, Summary]
    flags: tuple[str, ...]
    noisy_metrics: tuple[str, ...]
    rtt_delay_ms: float
    latencies: tuple[str, ...]  # the latency labels merged into a 1-node group
    contended_runs: int = 0
    excluded_runs: int = 0  # failed, cancelled, unfinished or warm-up runs of this config
    fingerprints: tuple[str, ...] = field(default_factory=tuple)
    oversubscribed: bool = False
    round_trips_per_token: float | None = None  # mean over runs that recorded it
    net_bytes_per_token: float | None = None
    host_cores: int | None = None  # the fewest cores any of its runs' hosts had
    # Set when grouping by batch (see group_records): the sweep the runs came from, or
    # 0 for runs outside any sweep; None when batches were not separated.
    batch: int | None = None

    @property
    def n(self) -> int:
        return len(self.run_ids)

    @property
    def flag_labels(self) -> tuple[str, ...]:
        """The flags as shown in text: ``noisy`` names the metrics whose CV is over 5 %.

        Tables put TPOT's CV beside the flags, so a row with a small TPOT CV can still
        be noisy in TTFT or E2EL; without the names the flag would look wrong.
        """
        names = ", ".join(NOISE_TITLES.get(m, m) for m in self.noisy_metrics)
        return tuple(
            f"noisy ({names})" if flag == "noisy" and names else flag for flag in self.flags
        )

    @property
    def label(self) -> str:
        if self.batch is None:
            return self.key.label
        return self.key.label + (f" · sweep #{self.batch}" if self.batch else " · no sweep")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.to_dict(),
            "label": self.label,
            "batch": self.batch,
            "n": self.n,
            "run_ids": list(self.run_ids),
            "stats": {m: s.to_dict() for m, s in self.stats.items()},
            "flags": list(self.flags),
            "noisy_metrics": list(self.noisy_metrics),
            "rtt_delay_ms": self.rtt_delay_ms,
            "latencies": list(self.latencies),
            "contended_runs": self.contended_runs,
            "excluded_runs": self.excluded_runs,
            "oversubscribed": self.oversubscribed,
            "round_trips_per_token": self.round_trips_per_token,
            "net_bytes_per_token": self.net_bytes_per_token,
            "host_cores": self.host_cores,
        }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _build(key: ConfigKey, members: Sequence[RunRecord], batch: int | None = None) -> Group:
    counted = [r for r in members if r.counted]
    values = {m: tuple(v for r in counted if (v := r.metric(m)) is not None) for m in METRICS}
    stats = {m: summarize(values[m]) for m in METRICS}
    noisy = tuple(m for m in NOISE_METRICS if stats[m].noisy)
    contended = sum(1 for r in counted if "contended" in r.flags)
    oversubscribed = any(r.oversubscribed for r in members)
    flags = []
    if len(counted) < MIN_RUNS:
        flags.append("too few")
    if noisy:
        flags.append("noisy")
    if contended:
        flags.append("contended")
    if oversubscribed:
        flags.append("oversubscribed")
    rts = [r.round_trips_per_token for r in counted if r.round_trips_per_token is not None]
    nbt = [r.net_bytes_per_token for r in counted if r.net_bytes_per_token is not None]
    latencies = tuple(dict.fromkeys(r.latency for r in members))
    delays = [r.rtt_delay_ms for r in members]
    cores = [r.host_cores for r in members if r.host_cores]
    return Group(
        key=key,
        run_ids=tuple(r.id for r in counted),
        values=values,
        stats=stats,
        flags=tuple(flags),
        noisy_metrics=noisy,
        rtt_delay_ms=sum(delays) / len(delays) if key.nodes > 1 else 0.0,
        latencies=latencies,
        contended_runs=contended,
        excluded_runs=len(members) - len(counted),
        fingerprints=tuple(dict.fromkeys(r.fingerprint for r in members)),
        oversubscribed=oversubscribed,
        round_trips_per_token=_mean(rts),
        net_bytes_per_token=_mean(nbt),
        host_cores=min(cores) if cores else None,
        batch=batch,
    )


def group_records(records: Iterable[RunRecord], *, by_batch: bool = False) -> list[Group]:
    """One :class:`Group` per configuration, sorted by configuration (nodes, latency...).

    ``by_batch``: also split by the sweep the runs came from, so two batches of one
    configuration (two sweeps, or a sweep and re-runs outside it) can be tested
    against each other; ``Group.batch`` then names the sweep (0: no sweep).

    Groups whose runs all failed are kept (n = 0, flagged "too few") so a table can
    show that the configuration has no result rather than silently dropping it.
    """
    members: dict[tuple[ConfigKey, int | None], list[RunRecord]] = {}
    for record in records:
        batch = (record.sweep_id or 0) if by_batch else None
        members.setdefault((ConfigKey.of(record), batch), []).append(record)
    groups = (_build(key, rs, batch) for (key, batch), rs in members.items())
    return sorted(groups, key=_sort_key)


def _sort_key(group: Group) -> tuple[Any, ...]:
    # Latency by its delay, not its label ("5ms" sorts after "20ms" as text).
    key = group.key
    return (
        key.engine,
        key.model,
        key.backend,
        key.threads,
        key.prompt,
        key.max_tokens,
        key.bandwidth_bps or 0,
        key.nodes,
        group.rtt_delay_ms,
        key.latency or "",
        key.options,
        key.seed,
        key.temperature,
        group.batch or 0,
    )
