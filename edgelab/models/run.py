"""A run: one prompt on one cluster configuration, with everything measured about it.

Token events are one row per token rather than a packed column: a run has at most
1024 of them, rows let a late viewer replay the stream with a plain range query
(``index > last_seen``), and the history view never loads them. Node samples and
link statistics are rows for the same reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edgelab.models.base import Base, StrEnumColumn, utcnow
from edgelab.store.status import RUN_TERMINAL, RunStatus

if TYPE_CHECKING:
    from edgelab.models.sweep import Sweep

# Kept for callers of the old names; the states themselves live in edgelab.store.status.
RUN_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
TERMINAL_STATUSES: frozenset[RunStatus] = RUN_TERMINAL


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"))
    status: Mapped[RunStatus] = mapped_column(StrEnumColumn(RunStatus), default=RunStatus.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)

    # Configuration.
    engine: Mapped[str] = mapped_column(String(32), default="llamacpp")
    backend: Mapped[str] = mapped_column(String(16), default="local")
    model: Mapped[str] = mapped_column(String(200))
    nodes: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    latency: Mapped[dict[str, Any]] = mapped_column(JSON)  # LatencyProfile.to_dict()
    latency_label: Mapped[str] = mapped_column(String(64))  # compact form, e.g. "10ms..50ms"
    bandwidth_bps: Mapped[int | None] = mapped_column(BigInteger)
    max_tokens: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    temperature: Mapped[float] = mapped_column(Float, default=0.0)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    repetition: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # backend extras
    # Same configuration (repetition excluded) -> same fingerprint: groups repeats, drives resume.
    fingerprint: Mapped[str] = mapped_column(String(64))

    # Timings.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Metrics (see edgelab.metrics.timeline for definitions).
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    e2el_ms: Mapped[float | None] = mapped_column(Float)
    tpot_ms: Mapped[float | None] = mapped_column(Float)
    itl_mean_ms: Mapped[float | None] = mapped_column(Float)
    itl_p50_ms: Mapped[float | None] = mapped_column(Float)
    itl_p90_ms: Mapped[float | None] = mapped_column(Float)
    itl_p99_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    prefill_tps: Mapped[float | None] = mapped_column(Float)
    decode_tps: Mapped[float | None] = mapped_column(Float)
    load_ms: Mapped[float | None] = mapped_column(Float)
    # Decode-phase bytes on all links / decode tokens (see edgelab.metrics.timeline).
    net_bytes_per_token: Mapped[float | None] = mapped_column(Float)
    # Link bytes by phase, summed over links (edgelab.metrics.linktiming): load is the
    # weights and set-up (the cluster start-up counts towards the first run on it).
    net_load_bytes: Mapped[int | None] = mapped_column(BigInteger)
    net_prefill_bytes: Mapped[int | None] = mapped_column(BigInteger)
    net_decode_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Decode round trips on all links / decode tokens (measured by the link proxies).
    round_trips_per_token: Mapped[float | None] = mapped_column(Float)
    output_text: Mapped[str | None] = mapped_column(Text)

    # Measurement hygiene (edgelab.metrics.host): what else used the host during
    # generation, and whether the cluster asked for more threads than the host has.
    host_contention: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    contended: Mapped[bool | None] = mapped_column(Boolean)
    oversubscribed: Mapped[bool | None] = mapped_column(Boolean)
    # A sweep's warm-up run: executed and stored, excluded from statistics.
    warmup: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Provenance.
    engine_version: Mapped[str | None] = mapped_column(String(64))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    image_ids: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host_cpu: Mapped[str | None] = mapped_column(String(200))
    host_cores: Mapped[int | None] = mapped_column(Integer)
    edgelab_version: Mapped[str | None] = mapped_column(String(32))
    # One entry per node: device, layer range, model buffer size (engine-reported).
    layer_split: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # How this run was measured: the engine's mode (dllama: warm dllama-api or one
    # dllama inference per run), where per-token detail came from, and the cluster
    # that served it (start-up ms, runs it served before this one).
    measurement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Devices per node and links (``Topology.to_dict()``); NULL = a uniform cluster.
    topology: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    topology_label: Mapped[str | None] = mapped_column(String(200))
    #: What the backend applied per node (threads, cpus, mem): provenance, not config.
    node_limits: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    node_logs: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # last lines per node on failure

    sweep: Mapped[Sweep | None] = relationship(back_populates="runs")
    token_events: Mapped[list[TokenEvent]] = relationship(
        back_populates="run", order_by="TokenEvent.index", cascade="all, delete-orphan"
    )
    node_samples: Mapped[list[NodeSample]] = relationship(
        back_populates="run", order_by="NodeSample.offset_ms", cascade="all, delete-orphan"
    )
    link_stats: Mapped[list[LinkStat]] = relationship(
        back_populates="run", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_runs_created_at", "created_at"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_model", "model"),
        Index("ix_runs_nodes", "nodes"),
        Index("ix_runs_sweep_id", "sweep_id"),
        Index("ix_runs_fingerprint", "fingerprint"),
    )


class TokenEvent(Base):
    __tablename__ = "token_events"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset_ms: Mapped[float] = mapped_column(Float)  # root-side monotonic, from request start
    text: Mapped[str] = mapped_column(Text)
    # Engine-specific per-token detail (dllama: compute/sync ms, sent/recv kB).
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="token_events")


class NodeSample(Base):
    __tablename__ = "node_samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # root | worker
    offset_ms: Mapped[float] = mapped_column(Float)  # same clock origin as TokenEvent
    cpu_percent: Mapped[float] = mapped_column(Float)
    rss_bytes: Mapped[int] = mapped_column(BigInteger)
    net_rx_bytes: Mapped[int | None] = mapped_column(BigInteger)
    net_tx_bytes: Mapped[int | None] = mapped_column(BigInteger)

    run: Mapped[Run] = relationship(back_populates="node_samples")

    __table_args__ = (Index("ix_node_samples_run_id", "run_id"),)


class LinkStat(Base):
    __tablename__ = "link_stats"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    link: Mapped[str] = mapped_column(String(64))  # e.g. "root<->worker1"
    bytes_up: Mapped[int] = mapped_column(BigInteger)  # root -> worker
    bytes_down: Mapped[int] = mapped_column(BigInteger)  # worker -> root
    chunks_up: Mapped[int] = mapped_column(Integer)
    chunks_down: Mapped[int] = mapped_column(Integer)
    delay_total_ms_up: Mapped[float] = mapped_column(Float)
    delay_total_ms_down: Mapped[float] = mapped_column(Float)
    delay_max_ms: Mapped[float] = mapped_column(Float)
    # Link queues (issue 15): the most bytes a direction held at once (the link's
    # running maximum) and how long its readers waited on a full queue this run,
    # i.e. how long TCP pushed back on the sender. None: run before the bounds.
    queue_max_bytes_up: Mapped[int | None] = mapped_column(BigInteger)
    queue_max_bytes_down: Mapped[int | None] = mapped_column(BigInteger)
    pushback_ms_up: Mapped[float | None] = mapped_column(Float)
    pushback_ms_down: Mapped[float | None] = mapped_column(Float)
    # TCP retransmissions on this link during the run (the node's network namespace
    # counters); None when the backend could not read them.
    retransmits: Mapped[int | None] = mapped_column(Integer)
    # Packets the link's loss rules dropped during the run (their nftables counters):
    # exact, where retransmits can count a lossless link's spurious resends too. 0 for a
    # lossless link of a lossy cluster; None when not read (no loss anywhere, or before).
    dropped_packets: Mapped[int | None] = mapped_column(Integer)
    # From the proxy's chunk trace (edgelab.metrics.linktiming); None when the
    # backend had no trace. Bytes and round trips by phase:
    bytes_load: Mapped[int | None] = mapped_column(BigInteger)
    bytes_prefill: Mapped[int | None] = mapped_column(BigInteger)
    bytes_decode: Mapped[int | None] = mapped_column(BigInteger)
    round_trips_prefill: Mapped[int | None] = mapped_column(Integer)
    round_trips_decode: Mapped[int | None] = mapped_column(Integer)
    # Decode-phase time on this link's critical path, summed over decode tokens.
    decode_worker_ms: Mapped[float | None] = mapped_column(Float)
    decode_injected_ms: Mapped[float | None] = mapped_column(Float)
    decode_transfer_ms: Mapped[float | None] = mapped_column(Float)
    # Effective one-way delay per chunk during the run (in-order waits included).
    eff_delay_p50_ms_up: Mapped[float | None] = mapped_column(Float)
    eff_delay_p99_ms_up: Mapped[float | None] = mapped_column(Float)
    eff_delay_max_ms_up: Mapped[float | None] = mapped_column(Float)
    eff_delay_p50_ms_down: Mapped[float | None] = mapped_column(Float)
    eff_delay_p99_ms_down: Mapped[float | None] = mapped_column(Float)
    eff_delay_max_ms_down: Mapped[float | None] = mapped_column(Float)
    # LinkTiming.to_json(): per-token series, prefill split, completeness.
    timing: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="link_stats")

    __table_args__ = (Index("ix_link_stats_run_id", "run_id"),)
