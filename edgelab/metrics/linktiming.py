"""Per-link, per-token timing of one run, from the link proxies' chunk traces.

The proxies record every chunk they forward (:mod:`edgelab.netem.trace`); the
root reports the time boundaries of the generation (when the request arrived,
where token offsets count from, when each token was emitted). This module
joins the two, once per run, into what is stored with the run's links.

Definitions (all on CLOCK_MONOTONIC, shared by the root and the proxies):

- **Phases.** A chunk belongs to the phase in which its first byte reached the
  proxy: *load* before the root's timing origin (weights and set-up; dllama
  streams its weights there at every request), *prefill* from the origin to the
  first token, *decode* after it. The cluster's own start-up traffic is charged
  to the load phase of the first run on the cluster (see the executor).
- **Exchange (round trip).** Per connection, a turn of the conversation: a run
  of root -> worker chunks followed by the worker -> root chunks that come back
  before the root speaks again. Fire-and-forget messages (llama.cpp's RPC
  ``set_tensor`` and ``graph_compute`` carry no reply) merge into the request
  they precede, so an exchange is exactly one wait for the network: the thing
  that costs ``2 x one-way delay``. An exchange is counted in the token interval
  where its request began.
- **Where the time goes.** Each exchange is cut into segments: the request leg
  (first byte in -> last byte out of the proxy), the worker's compute (last
  request byte delivered -> first reply byte back) and the reply leg. A leg is
  split into *injected* delay (the sampled delay of the chunk that decided when
  the leg ended: with in-order delivery a chunk may also wait for the one ahead,
  and that wait is charged to injected delay too, because it is delay the
  profile caused) and *transfer* (the rest: the sender's own writing, bandwidth
  pacing, the proxy's lateness). Segments are laid on the timeline; where
  several overlap (parallel links, as in dllama's tensor split) each instant is
  shared equally among them, so the parts of a token interval never add up to
  more than the interval. Whatever no segment covers is the root's own work
  (compute, sampling, detokenizing, streaming), computed by
  :mod:`edgelab.analysis.breakdown` as the remainder.
- **Whose bytes.** A link carries the root's conversation with its worker and,
  in dllama's full mesh, other workers' traffic to that worker too (each worker
  reaches its peers through their proxies). ``bytes`` and the per-token series
  count everything that crossed the link (the network's cost); ``root_bytes``
  counts only connections opened by the root's processes (what the root itself
  sent and received, the figure dllama's own Sent/Recv lines report).
- **Effective one-way delay per message**: ``out - arrival`` of each chunk (one
  proxy read, about one sender write), as p50/p99/max per direction. It exceeds
  the configured delay when a chunk waits behind a slower one (in-order
  delivery) or behind a bandwidth cap.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from edgelab.metrics.timeline import percentile
from edgelab.netem.trace import UP, ChunkTrace

PHASES = ("load", "prefill", "decode")
KINDS = ("worker", "injected", "transfer")


@dataclass(frozen=True)
class RootClock:
    """The generation's boundaries as the root reported them (monotonic seconds)."""

    origin: float  # token offsets count from here; before it: load
    token_offsets_ms: Sequence[float]

    def token_time(self, index: int) -> float:
        return self.origin + self.token_offsets_ms[index] / 1000.0

    @property
    def first_token(self) -> float | None:
        return self.token_time(0) if self.token_offsets_ms else None


@dataclass
class LinkTiming:
    """What one link did during one run; ``per_token`` lists cover decode tokens 1..n-1."""

    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    # Only the root's own connections (None: the root's addresses were unknown).
    root_bytes: dict[str, int] | None = None
    round_trips: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    # Milliseconds per phase and kind (prefill and decode only: load has no tokens).
    ms: dict[str, dict[str, float]] = field(
        default_factory=lambda: {p: dict.fromkeys(KINDS, 0.0) for p in ("prefill", "decode")}
    )
    per_token: dict[str, list[float]] = field(default_factory=dict)
    # Effective one-way delay per chunk, ms: {"up": {"p50":..., "p99":..., "max":..., "n":...}}.
    delay: dict[str, dict[str, float | None]] = field(default_factory=dict)
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        """The ``LinkStat.timing`` JSON (everything not kept in its own column)."""
        return {
            "source": "proxy",
            "complete": self.complete,
            "bytes": self.bytes,
            "root_bytes": self.root_bytes,
            "round_trips": self.round_trips,
            "ms": self.ms,
            "per_token": self.per_token,
            "delay": self.delay,
        }


@dataclass(frozen=True)
class _Segment:
    start: float
    end: float
    link: str
    kind: str


def _leg_segments(
    trace: ChunkTrace, idx: list[int], link: str, out: list[_Segment]
) -> tuple[float, float]:
    """Segments of one leg; returns (first arrival, last out)."""
    a0 = min(trace.arrival[i] for i in idx)
    o1 = max(trace.out[i] for i in idx)
    wall = max(0.0, o1 - a0)
    # The chunk whose own due time was last decided when the leg ended; on a tie
    # (to the microsecond) the larger sampled delay, since that is what it waited for.
    critical = max(
        idx, key=lambda i: (round((trace.ready[i] + trace.delay[i]) * 1e6), trace.delay[i])
    )
    injected = min(wall, max(0.0, trace.delay[critical]))
    if wall - injected > 0:
        out.append(_Segment(a0, a0 + wall - injected, link, "transfer"))
    if injected > 0:
        out.append(_Segment(o1 - injected, o1, link, "injected"))
    return a0, o1


def exchanges(trace: ChunkTrace) -> list[tuple[list[int], list[int]]]:
    """Per connection, (request chunk indexes, reply chunk indexes) for every turn.

    Chunks are taken in order of arrival at the proxy. A reply that arrives
    before any request on its connection forms an exchange without request.
    """
    by_conn: dict[int, list[int]] = {}
    for i in range(len(trace)):
        by_conn.setdefault(trace.conn[i], []).append(i)
    result: list[tuple[list[int], list[int]]] = []
    for idx in by_conn.values():
        idx.sort(key=lambda i: (trace.arrival[i], trace.out[i]))
        up: list[int] = []
        down: list[int] = []
        for i in idx:
            if trace.direction[i] == UP:
                if down:  # the root speaks again: the previous turn is over
                    result.append((up, down))
                    up, down = [], []
                up.append(i)
            else:
                down.append(i)
        if up or down:
            result.append((up, down))
    return result


def _delay_summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {
        "p50": round(percentile(values, 50), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def _is_root(client: str | None, root_clients: set[str]) -> bool:
    if client is None:
        return False
    return client in root_clients or client.rsplit(":", 1)[0] in root_clients


def compute(
    traces: dict[str, ChunkTrace], clock: RootClock, root_clients: set[str] | None = None
) -> dict[str, LinkTiming]:
    """Every link's timing for one run (see the module docstring for definitions).

    ``root_clients``: the root's addresses (see ``Cluster.root_clients``); without
    them ``root_bytes`` stays None.
    """
    offsets = clock.token_offsets_ms
    n = len(offsets)
    first = clock.first_token
    # Bins on the timeline: 0 = prefill (origin, first token], k = decode token k.
    edges = [clock.origin] + [clock.token_time(i) for i in range(n)]
    decode_tokens = max(0, n - 1)

    def phase(t: float) -> str:
        if t < clock.origin:
            return "load"
        if first is None or t <= first:
            return "prefill"
        return "decode"

    def token_bin(t: float) -> int | None:
        """1..n-1 for a time inside decode token k's interval, else None."""
        if n < 2 or t <= edges[1] or t > edges[-1]:
            return None
        return bisect.bisect_left(edges, t) - 1

    result: dict[str, LinkTiming] = {}
    segments: list[_Segment] = []
    for link, trace in traces.items():
        lt = LinkTiming(complete=trace.complete)
        if root_clients:
            lt.root_bytes = dict.fromkeys(PHASES, 0)
        per_token: dict[str, list[float]] = {
            "round_trips": [0.0] * decode_tokens,
            "bytes": [0.0] * decode_tokens,
            "root_bytes": [0.0] * decode_tokens,
            **{f"{kind}_ms": [0.0] * decode_tokens for kind in KINDS},
        }
        delays: dict[str, list[float]] = {"up": [], "down": []}
        for i in range(len(trace)):
            a = trace.arrival[i]
            lt.bytes[phase(a)] += trace.nbytes[i]
            from_root = bool(root_clients) and _is_root(
                trace.clients.get(trace.conn[i]), root_clients or set()
            )
            if from_root and lt.root_bytes is not None:
                lt.root_bytes[phase(a)] += trace.nbytes[i]
            delays["up" if trace.direction[i] == UP else "down"].append(
                max(0.0, trace.out[i] - a) * 1000.0
            )
            k = token_bin(a)
            if k is not None:
                per_token["bytes"][k - 1] += trace.nbytes[i]
                if from_root:
                    per_token["root_bytes"][k - 1] += trace.nbytes[i]
        for up, down in exchanges(trace):
            if up:
                a0, o1 = _leg_segments(trace, up, link, segments)
                if down:
                    reply_first = min(trace.arrival[i] for i in down)
                    if reply_first > o1:
                        segments.append(_Segment(o1, reply_first, link, "worker"))
                lt.round_trips[phase(a0)] += 1
                k = token_bin(a0)
                if k is not None:
                    per_token["round_trips"][k - 1] += 1
            if down:
                _leg_segments(trace, down, link, segments)
        lt.per_token = per_token
        lt.delay = {d: _delay_summary(v) for d, v in delays.items()}
        result[link] = lt

    _share_time(segments, edges, result)
    for lt in result.values():
        for phase_name in ("prefill", "decode"):
            for kind in KINDS:
                lt.ms[phase_name][kind] = round(lt.ms[phase_name][kind], 4)
        for key, values in lt.per_token.items():
            lt.per_token[key] = [round(v, 4) if key.endswith("_ms") else v for v in values]
    return result


def _share_time(
    segments: list[_Segment], edges: list[float], result: dict[str, LinkTiming]
) -> None:
    """Give each elementary interval of the timeline to the segments covering it.

    Only [origin, last token] counts (prefill and decode bins); an interval
    covered by m segments gives each 1/m of its length.
    """
    if len(edges) < 2 or not segments:
        return
    lo, hi = edges[0], edges[-1]
    points = sorted(
        {lo, hi, *edges}
        | {s.start for s in segments if lo < s.start < hi}
        | {s.end for s in segments if lo < s.end < hi}
    )
    starts = sorted(segments, key=lambda s: s.start)
    active: list[_Segment] = []
    nxt = 0
    for left, right in pairwise(points):
        if right <= left:
            continue
        while nxt < len(starts) and starts[nxt].start <= left:
            active.append(starts[nxt])
            nxt += 1
        active = [s for s in active if s.end > left]
        covering = [s for s in active if s.start <= left and s.end >= right]
        if not covering:
            continue
        share_ms = (right - left) * 1000.0 / len(covering)
        k = bisect.bisect_right(edges, left) - 1  # bin index: 0 prefill, k decode token
        phase_name = "prefill" if k == 0 else "decode"
        for s in covering:
            lt = result[s.link]
            lt.ms[phase_name][s.kind] += share_ms
            if k >= 1:
                lt.per_token[f"{s.kind}_ms"][k - 1] += share_ms


def round_trips_per_token(timings: dict[str, LinkTiming]) -> float | None:
    """Round trips on all links during the decode token intervals / decode tokens."""
    tokens = max((len(lt.per_token.get("round_trips", [])) for lt in timings.values()), default=0)
    if not tokens:
        return None
    return sum(sum(lt.per_token["round_trips"]) for lt in timings.values()) / tokens


def decode_bytes_per_token(timings: dict[str, LinkTiming]) -> float | None:
    """Bytes on all links during the decode token intervals / decode tokens."""
    counts = [len(lt.per_token.get("bytes", [])) for lt in timings.values()]
    tokens = max(counts, default=0)
    if not tokens:
        return None
    total = sum(sum(lt.per_token["bytes"]) for lt in timings.values())
    return total / tokens
