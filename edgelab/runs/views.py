"""The one JSON shape of a run, shared by ``edgelab run --json``, the API and exports.

Keeping it here means the CLI, ``GET /api/runs/<id>`` and CSV/JSON exports can never
disagree on a field name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from edgelab.models import LinkStat, NodeSample, Run, TokenEvent
from edgelab.models.db import session_scope
from edgelab.netem.profile import LatencyProfile
from edgelab.topology.spec import Topology, cluster_view
from edgelab.validation.fields import format_loss

CONFIG_FIELDS = (
    "engine",
    "backend",
    "model",
    "nodes",
    "threads",
    "latency_label",
    "bandwidth_bps",
    "max_tokens",
    "prompt",
    "temperature",
    "seed",
    "repetition",
)
#: The same fields as :func:`run_summary` names them in ``config`` (the API's names:
#: ``latency_label`` is ``latency``); the summary adds ``latency_profile`` and ``options``.
SUMMARY_CONFIG_FIELDS = tuple("latency" if f == "latency_label" else f for f in CONFIG_FIELDS)
METRIC_FIELDS = (
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "itl_mean_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "prompt_tokens",
    "output_tokens",
    "prefill_tps",
    "decode_tps",
    "load_ms",
    "net_bytes_per_token",
    "net_load_bytes",
    "net_prefill_bytes",
    "net_decode_bytes",
    "round_trips_per_token",
)
#: Whether this run's numbers can be trusted as they are (``hygiene`` in the JSON):
#: a sweep's warm-up run, host contention during generation, an oversubscribed host.
HYGIENE_FIELDS = ("warmup", "contended", "oversubscribed", "host_contention")
#: Per-link columns in ``links`` (besides ``link``), see ``edgelab.models.LinkStat``.
LINK_FIELDS = (
    "bytes_up",
    "bytes_down",
    "chunks_up",
    "chunks_down",
    "delay_total_ms_up",
    "delay_total_ms_down",
    "delay_max_ms",
    "queue_max_bytes_up",
    "queue_max_bytes_down",
    "pushback_ms_up",
    "pushback_ms_down",
    "retransmits",
    "dropped_packets",
    "bytes_load",
    "bytes_prefill",
    "bytes_decode",
    "round_trips_prefill",
    "round_trips_decode",
    "decode_worker_ms",
    "decode_injected_ms",
    "decode_transfer_ms",
    "eff_delay_p50_ms_up",
    "eff_delay_p99_ms_up",
    "eff_delay_max_ms_up",
    "eff_delay_p50_ms_down",
    "eff_delay_p99_ms_down",
    "eff_delay_max_ms_down",
    "timing",
)
PROVENANCE_FIELDS = (
    "engine_version",
    "model_sha256",
    "image_ids",
    "host_cpu",
    "host_cores",
    "edgelab_version",
    "layer_split",
    "measurement",
    "node_limits",
)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_topology(run: Run) -> dict[str, Any]:
    """Every node's device and every link's profile (effective values), for the JSON."""
    return cluster_view(
        run.nodes,
        run.threads,
        LatencyProfile.from_dict(run.latency),
        Topology.from_dict(run.topology),
    )


def run_summary(run: Run) -> dict[str, Any]:
    """A run without its per-token and per-sample detail (history lists, exports)."""
    config = {f: getattr(run, f) for f in CONFIG_FIELDS}
    config["latency"] = config.pop("latency_label")
    config["latency_profile"] = run.latency
    config["options"] = run.options
    config["topology"] = run_topology(run)
    # The cluster-wide loss as the run's input field has it (its links: config.topology).
    config["loss"] = format_loss(config["topology"]["loss_pct"])
    return {
        "id": run.id,
        "sweep_id": run.sweep_id,
        "status": run.status,
        "error": run.error,
        "fingerprint": run.fingerprint,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "config": config,
        "metrics": {f: getattr(run, f) for f in METRIC_FIELDS},
        "provenance": {f: getattr(run, f) for f in PROVENANCE_FIELDS},
        "hygiene": {f: getattr(run, f) for f in HYGIENE_FIELDS},
    }


def run_detail(database_url: str, run_id: int) -> dict[str, Any]:
    """Everything stored about one run; raises ``LookupError`` for an unknown id."""
    with session_scope(database_url) as s:
        run = s.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} not found")
        data = run_summary(run)
        data["output_text"] = run.output_text
        data["node_logs"] = run.node_logs
        data["tokens"] = [
            {"index": t.index, "offset_ms": t.offset_ms, "text": t.text, "detail": t.detail}
            for t in s.scalars(
                select(TokenEvent).where(TokenEvent.run_id == run_id).order_by(TokenEvent.index)
            )
        ]
        data["samples"] = [
            {
                "node": n.node,
                "role": n.role,
                "offset_ms": n.offset_ms,
                "cpu_percent": n.cpu_percent,
                "rss_bytes": n.rss_bytes,
                "net_rx_bytes": n.net_rx_bytes,
                "net_tx_bytes": n.net_tx_bytes,
            }
            for n in s.scalars(
                select(NodeSample)
                .where(NodeSample.run_id == run_id)
                .order_by(NodeSample.offset_ms, NodeSample.id)
            )
        ]
        data["links"] = [
            {"link": ls.link, **{f: getattr(ls, f) for f in LINK_FIELDS}}
            for ls in s.scalars(
                select(LinkStat).where(LinkStat.run_id == run_id).order_by(LinkStat.link)
            )
        ]
        data["nodes"] = sorted({sample["node"] for sample in data["samples"]})
        # Imported here: the analysis package loads numpy/scipy, which the run
        # executor and the CLI's start-up should not pay for.
        from edgelab.analysis.breakdown import breakdown

        found = breakdown(data)
        data["breakdown"] = found.to_dict() if found is not None else None
        return data
