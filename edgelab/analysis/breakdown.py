"""Where a token's time goes: root compute, each worker's compute, injected delay, transfer.

A pure function of one run's stored data, in the shape of
:func:`edgelab.runs.views.run_detail` (``metrics``, ``tokens``, ``links`` with
their ``timing``), so the API, the run page, the report and the tests compute
it the same way from the same JSON.

Two sources, chosen per run:

- ``proxy`` (llama.cpp, and dllama in warm mode): the link proxies' per-token
  series (:mod:`edgelab.metrics.linktiming`). For each decode token interval
  (the time between two consecutive tokens leaving the root) the links give
  each worker's compute (request delivered -> reply started), the injected
  delay and the transfer on that link; the **root compute** is what no link
  covered: the root's own layers, sampling, detokenizing and streaming. The
  parts therefore add up to the interval, and their means to TPOT.
- ``dllama`` (per-run ``dllama inference`` mode): dllama's own per-token
  numbers (``TokenEvent.detail``): ``compute_ms`` is the root's forward pass,
  ``sync_ms`` the time it spent exchanging activations with the workers, i.e.
  the network plus waiting for the slowest worker. ``sync`` is split into
  injected, transfer and worker wait in the proportions the proxies measured
  on the same tokens (when they did), and the proxies' own per-token network
  time is returned beside it as a cross-check. What dllama's two numbers do not
  cover (its whole-millisecond rounding, printing, edgelab's parsing) is
  ``other_ms``.

Only decode tokens count (token 1 onwards; token 0 is the prefill's), the same
tokens TPOT is defined over (:mod:`edgelab.metrics.timeline`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

SOURCES = ("proxy", "dllama")


@dataclass(frozen=True)
class LinkShare:
    """One link's part of an average decode token."""

    worker: str
    worker_compute_ms: float
    injected_ms: float
    transfer_ms: float
    round_trips_per_token: float
    bytes_per_token: float


@dataclass(frozen=True)
class Breakdown:
    """An average decode token of one run, in milliseconds (see the module docstring)."""

    source: str
    decode_tokens: int
    tpot_ms: float
    root_compute_ms: float
    worker_compute_ms: dict[str, float]
    injected_ms: float
    transfer_ms: float
    other_ms: float
    links: list[LinkShare]
    round_trips_per_token: float | None
    bytes_per_token: float | None
    # Per decode token: {"root_compute_ms": [...], "worker_compute_ms": [...], ...}.
    per_token: dict[str, list[float]] = field(default_factory=dict)
    # dllama: dllama's own per-token sync ms and Sent+Recv bytes beside the proxies'
    # network ms and the root's bytes on them (``proxy_root_bytes_per_token``).
    cross_check: dict[str, float | None] | None = None
    complete: bool = True

    @property
    def parts_ms(self) -> float:
        """The sum of every part; equals ``tpot_ms`` up to rounding."""
        return (
            self.root_compute_ms
            + sum(self.worker_compute_ms.values())
            + self.injected_ms
            + self.transfer_ms
            + self.other_ms
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parts_ms"] = round(self.parts_ms, 4)
        return data


def worker_of(link: str) -> str:
    """``root<->worker2`` -> ``worker2`` (the node at the far end of a link)."""
    return link.rsplit("<->", 1)[-1]


def _decode_intervals(tokens: Sequence[Mapping[str, Any]]) -> list[float]:
    offsets = [float(t["offset_ms"]) for t in sorted(tokens, key=lambda t: int(t["index"]))]
    return [b - a for a, b in pairwise(offsets)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _series(timing: Mapping[str, Any], key: str, n: int) -> list[float]:
    values = list((timing.get("per_token") or {}).get(key) or [])
    values = [float(v) for v in values[:n]]
    return values + [0.0] * (n - len(values))


def breakdown(detail: Mapping[str, Any]) -> Breakdown | None:
    """The breakdown of one run (``run_detail`` JSON), or None without decode tokens.

    A multi-node run whose links recorded no timing (an old run, or a backend
    without chunk traces) has nothing to split: None as well.
    """
    tokens = list(detail.get("tokens") or [])
    intervals = _decode_intervals(tokens)
    n = len(intervals)
    if n == 0:
        return None
    links = [
        link
        for link in detail.get("links") or []
        if isinstance(link.get("timing"), Mapping) and link["timing"].get("per_token")
    ]
    if detail.get("links") and not links:
        return None
    ordered = sorted(tokens, key=lambda t: int(t["index"]))[1:]
    dllama = all(
        isinstance(t.get("detail"), Mapping)
        and isinstance(t["detail"].get("compute_ms"), int | float)
        and isinstance(t["detail"].get("sync_ms"), int | float)
        for t in ordered
    )
    if dllama:
        return _from_dllama(ordered, intervals, links)
    return _from_proxies(intervals, links)


def _link_series(links: Sequence[Mapping[str, Any]], n: int) -> dict[str, dict[str, list[float]]]:
    return {
        link["link"]: {
            key: _series(link["timing"], key, n)
            for key in (
                "worker_ms",
                "injected_ms",
                "transfer_ms",
                "round_trips",
                "bytes",
                "root_bytes",
            )
        }
        for link in links
    }


def _shares(series: dict[str, dict[str, list[float]]]) -> list[LinkShare]:
    return [
        LinkShare(
            worker=worker_of(name),
            worker_compute_ms=round(_mean(s["worker_ms"]), 4),
            injected_ms=round(_mean(s["injected_ms"]), 4),
            transfer_ms=round(_mean(s["transfer_ms"]), 4),
            round_trips_per_token=round(_mean(s["round_trips"]), 4),
            bytes_per_token=round(_mean(s["bytes"]), 1),
        )
        for name, s in sorted(series.items())
    ]


def _totals(shares: list[LinkShare]) -> tuple[float | None, float | None]:
    if not shares:
        return None, None
    return (
        round(sum(s.round_trips_per_token for s in shares), 4),
        round(sum(s.bytes_per_token for s in shares), 1),
    )


def _complete(links: Sequence[Mapping[str, Any]]) -> bool:
    return all(bool(link["timing"].get("complete", True)) for link in links)


def _from_proxies(intervals: list[float], links: Sequence[Mapping[str, Any]]) -> Breakdown:
    n = len(intervals)
    series = _link_series(links, n)
    per_token: dict[str, list[float]] = {
        "interval_ms": [round(v, 4) for v in intervals],
        "root_compute_ms": [],
        "worker_compute_ms": [],
        "injected_ms": [],
        "transfer_ms": [],
    }
    for i, interval in enumerate(intervals):
        worker = sum(s["worker_ms"][i] for s in series.values())
        injected = sum(s["injected_ms"][i] for s in series.values())
        transfer = sum(s["transfer_ms"][i] for s in series.values())
        # The links' time is shared out within the interval, so this is >= 0 up to
        # clock rounding; never report a negative compute.
        root = max(0.0, interval - worker - injected - transfer)
        per_token["root_compute_ms"].append(round(root, 4))
        per_token["worker_compute_ms"].append(round(worker, 4))
        per_token["injected_ms"].append(round(injected, 4))
        per_token["transfer_ms"].append(round(transfer, 4))
    shares = _shares(series)
    rt, nbytes = _totals(shares)
    return Breakdown(
        source="proxy",
        decode_tokens=n,
        tpot_ms=round(_mean(intervals), 4),
        root_compute_ms=round(_mean(per_token["root_compute_ms"]), 4),
        worker_compute_ms={s.worker: s.worker_compute_ms for s in shares},
        injected_ms=round(sum(s.injected_ms for s in shares), 4),
        transfer_ms=round(sum(s.transfer_ms for s in shares), 4),
        other_ms=0.0,
        links=shares,
        round_trips_per_token=rt,
        bytes_per_token=nbytes,
        per_token=per_token,
        complete=_complete(links),
    )


def _from_dllama(
    tokens: Sequence[Mapping[str, Any]],
    intervals: list[float],
    links: Sequence[Mapping[str, Any]],
) -> Breakdown:
    n = len(intervals)
    compute = [float(t["detail"]["compute_ms"]) for t in tokens]
    # dllama prints whole kB (1024 B) sent and received by the root per token.
    dllama_bytes = [
        1024.0 * (float(t["detail"].get("sent_kb") or 0) + float(t["detail"].get("recv_kb") or 0))
        for t in tokens
    ]
    sync = [float(t["detail"]["sync_ms"]) for t in tokens]
    series = _link_series(links, n)
    shares = _shares(series)
    tpot = _mean(intervals)
    mean_compute = _mean(compute)
    mean_sync = _mean(sync)
    # The proxies' view of the same tokens: per token, the time any link was busy
    # (their shares never overlap-count, so the sum is the union).
    proxy_network = [
        sum(s["worker_ms"][i] + s["injected_ms"][i] + s["transfer_ms"][i] for s in series.values())
        for i in range(n)
    ]
    proxy_worker = sum(s.worker_compute_ms for s in shares)
    proxy_injected = sum(s.injected_ms for s in shares)
    proxy_transfer = sum(s.transfer_ms for s in shares)
    proxy_total = proxy_worker + proxy_injected + proxy_transfer
    if proxy_total > 0:
        # Split dllama's sync in the proportions the proxies measured.
        workers = {s.worker: mean_sync * s.worker_compute_ms / proxy_total for s in shares}
        injected = mean_sync * proxy_injected / proxy_total
        transfer = mean_sync * proxy_transfer / proxy_total
    else:
        # No proxy detail (or one node): the whole sync is unexplained transfer.
        workers = {s.worker: 0.0 for s in shares}
        injected = 0.0
        transfer = mean_sync
    rt, nbytes = _totals(shares)
    other = tpot - mean_compute - mean_sync
    return Breakdown(
        source="dllama",
        decode_tokens=n,
        tpot_ms=round(tpot, 4),
        root_compute_ms=round(mean_compute, 4),
        worker_compute_ms={k: round(v, 4) for k, v in workers.items()},
        injected_ms=round(injected, 4),
        transfer_ms=round(transfer, 4),
        other_ms=round(other, 4),
        links=shares,
        round_trips_per_token=rt,
        bytes_per_token=nbytes,
        per_token={
            "interval_ms": [round(v, 4) for v in intervals],
            "root_compute_ms": compute,
            "sync_ms": sync,
            "proxy_network_ms": [round(v, 4) for v in proxy_network],
        },
        cross_check={
            "sync_ms": round(mean_sync, 4),
            "proxy_network_ms": round(_mean(proxy_network), 4) if links else None,
            "dllama_bytes_per_token": round(_mean(dllama_bytes), 1),
            "proxy_root_bytes_per_token": _root_bytes(links, series),
        },
        complete=_complete(links),
    )


def _root_bytes(
    links: Sequence[Mapping[str, Any]], series: dict[str, dict[str, list[float]]]
) -> float | None:
    """The root's own bytes per decode token on all links (None if not recorded)."""
    if not links or any(link["timing"].get("root_bytes") is None for link in links):
        return None
    return round(sum(_mean(s["root_bytes"]) for s in series.values()), 1)


def adds_up(result: Breakdown, tolerance: float = 0.05) -> bool:
    """Whether the parts add up to TPOT within ``tolerance`` (a fraction)."""
    if result.tpot_ms <= 0 or not math.isfinite(result.parts_ms):
        return False
    return abs(result.parts_ms - result.tpot_ms) <= tolerance * result.tpot_ms


__all__ = ["SOURCES", "Breakdown", "LinkShare", "adds_up", "breakdown", "worker_of"]
