"""Metric definitions computed from a run's token timeline.

All offsets are milliseconds on the root's monotonic clock, measured from the
moment the root received the generation request:

- ``ttft_ms``: offset of the first output token (time to first token);
- ``e2el_ms``: offset of the last output token (end-to-end latency, "TTLT");
- ``tpot_ms``: (e2el - ttft) / (output_tokens - 1), time per output token after the first;
- inter-token latencies (ITL): differences between consecutive token offsets,
  summarised as mean and p50/p90/p99 (linear interpolation between ranks);
- ``prefill_tps``: prompt_tokens / ttft, the rate at which the prompt was processed;
- ``decode_tps``: (output_tokens - 1) / (e2el - ttft), the steady generation rate;
- ``net_bytes_per_token``: bytes that crossed all links during the decode phase
  (after the first token) divided by the decode tokens (output tokens - 1), so
  neither weight streaming nor the prompt's prefill inflates it (see
  :mod:`edgelab.metrics.linktiming` for the phases).

Metrics that need more tokens than there are (a TPOT with one token) are ``None``
rather than zero, so averages over runs never silently include a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any


@dataclass(frozen=True)
class TimelineMetrics:
    ttft_ms: float | None
    e2el_ms: float | None
    tpot_ms: float | None
    itl_mean_ms: float | None
    itl_p50_ms: float | None
    itl_p90_ms: float | None
    itl_p99_ms: float | None
    prompt_tokens: int
    output_tokens: int
    prefill_tps: float | None
    decode_tps: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def compute(token_offsets_ms: Sequence[float], prompt_tokens: int) -> TimelineMetrics:
    """Metrics of one generation from its token offsets (ms, non-decreasing)."""
    if any(b < a for a, b in pairwise(token_offsets_ms)):
        raise ValueError("token offsets must be non-decreasing")
    n = len(token_offsets_ms)
    if n == 0:
        return TimelineMetrics(
            None, None, None, None, None, None, None, prompt_tokens, 0, None, None
        )
    ttft = token_offsets_ms[0]
    e2el = token_offsets_ms[-1]
    itls = [b - a for a, b in pairwise(token_offsets_ms)]
    decode_ms = e2el - ttft
    return TimelineMetrics(
        ttft_ms=ttft,
        e2el_ms=e2el,
        tpot_ms=decode_ms / (n - 1) if n > 1 else None,
        itl_mean_ms=sum(itls) / len(itls) if itls else None,
        itl_p50_ms=percentile(itls, 50) if itls else None,
        itl_p90_ms=percentile(itls, 90) if itls else None,
        itl_p99_ms=percentile(itls, 99) if itls else None,
        prompt_tokens=prompt_tokens,
        output_tokens=n,
        prefill_tps=prompt_tokens / (ttft / 1000) if ttft > 0 and prompt_tokens else None,
        decode_tps=(n - 1) / (decode_ms / 1000) if n > 1 and decode_ms > 0 else None,
    )


def net_bytes_per_token(total_link_bytes: int, output_tokens: int) -> float | None:
    """All bytes on all links / output tokens: the fallback when a backend has no
    per-chunk trace to split the traffic into phases (it then includes load and
    prefill traffic)."""
    return total_link_bytes / output_tokens if output_tokens else None
