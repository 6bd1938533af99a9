"""A performance model of TPOT over nodes, delay and bandwidth, fitted to stored runs.

The model (per engine x model x threads x backend)::

    TPOT(N, d, bw) = base + compute / N + per_worker * (N - 1)
                     + delay_factor * R(N) * 2d
                     + transfer_factor * 8 * B(N) / bw

    N   nodes (root included)          d   one-way injected delay (ms)
    R   round trips per token          B   bytes per token over all links
    bw  per-link bandwidth (bit/s; the term is 0 without a cap)

What the terms mean, and which are measured rather than assumed:

- ``base``: per-token work that does not split over nodes (sampling, the output
  layer on the root, Python and HTTP overhead);
- ``compute``: work that splits over nodes (llama.cpp's layer split gives each
  node ~1/N of the layers). On an oversubscribed host (more threads than cores)
  this term cannot shrink in reality; the fit then says so through its flags;
- ``per_worker``: the fixed cost of each worker per token without injected delay
  (RPC serialisation, loopback TCP, the proxy's own hop);
- ``R(N)``: round trips per token on the critical path. Measured per run by the
  link proxies when recorded (``round_trips_per_token``, summed over links: the
  critical path for llama.cpp, divided by the workers for dllama, whose links
  overlap; see :func:`critical_round_trips`); otherwise assumed
  ``N - 1`` for llama.cpp (its layer split visits the workers one after the other,
  one request/response per worker per token) and ``1`` for dllama with N > 1 (its
  syncs go to all workers at once; ``delay_factor`` then counts the syncs). For
  predictions R(N) = r * shape(N), with r fitted to the measured values (1 if none);
- ``delay_factor``: how much of each injected round-trip delay lands on the token's
  critical path (1.0 = all of it). Fitted rather than fixed at 1, so a run that
  overlaps delay with compute, or pays more round trips than assumed, shows it;
- ``B(N)``: bytes per token (``net_bytes_per_token``, measured per run); predicted
  as b * (N - 1); ``transfer_factor`` is 1.0 when bytes pass at the cap's rate.

Terms the data cannot identify are left out of the fit and listed in ``dropped``
(e.g. ``per_worker`` needs three node counts, ``delay_factor`` two delays,
``transfer_factor`` runs with a bandwidth cap). Least squares over per-run TPOT;
reported with the parameters and their standard errors: residuals per
configuration, R² over the configuration means (``r2_means``: how well the model
explains the effect of nodes, delay and bandwidth) and R² over the runs (``r2``:
lower by the repetitions' own noise, which no model of a configuration explains).

On llama.cpp's layer split the nodes compute one after the other for a single
sequence, so ``compute`` comes out near 0 (splitting the layers does not shorten a
token) unless the nodes really compute in parallel; the term is kept so the same
model fits engines that do split compute (dllama's tensor parallelism).

Break-even latency d*(N): the largest one-way delay at which N nodes still beat
1 node, i.e. the root of TPOT(N, d) = TPOT(1). TPOT is linear in d, so
d* = (TPOT(1) - TPOT(N, 0)) / (delay_factor * 2 * R(N)); "never" when N nodes are
slower even at 0 ms, "always within the range tried" when d* lies beyond the
largest delay measured (the value is then an extrapolation, given as such).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from edgelab.analysis.groups import Group
from edgelab.analysis.records import RunRecord

TERMS: tuple[str, ...] = (
    "base_ms",
    "compute_ms",
    "per_worker_ms",
    "delay_factor",
    "transfer_factor",
)
FORMULA = (
    "TPOT(N, d, bw) = base + compute/N + per_worker*(N-1) + delay_factor*R(N)*2d"
    " + transfer_factor*8*B(N)/bw"
)
BreakEvenVerdict = Literal[
    "break-even", "never", "always within the range tried", "not delay-sensitive", "unknown"
]


def round_trip_shape(engine: str, nodes: int) -> float:
    """Assumed round trips per token before scaling by the fitted/measured ``r``."""
    if nodes <= 1:
        return 0.0
    return 1.0 if engine == "dllama" else float(nodes - 1)


def critical_round_trips(engine: str, nodes: int, measured_sum: float) -> float:
    """Round trips on a token's critical path from the count summed over all links.

    llama.cpp visits the workers one after the other, so every link's round trips
    wait in turn (the sum). dllama talks to all workers at once, so the links' round
    trips overlap and the critical path pays one link's worth (the mean per link).
    """
    if engine == "dllama" and nodes > 1:
        return measured_sum / (nodes - 1)
    return measured_sum


def _transfer_ms(bytes_per_token: float | None, bandwidth_bps: int | None) -> float:
    if not bandwidth_bps or not bytes_per_token:
        return 0.0
    return 8.0 * bytes_per_token / bandwidth_bps * 1000.0


def _row(
    nodes: int, rtt_ms: float, round_trips: float, transfer_ms: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([1.0, 1.0 / nodes, nodes - 1.0, rtt_ms * round_trips, transfer_ms])


@dataclass(frozen=True)
class Residual:
    """Measured mean vs model for one configuration of the fit."""

    nodes: int
    latency: str | None
    bandwidth_bps: int | None
    n: int
    measured_ms: float
    predicted_ms: float

    @property
    def residual_ms(self) -> float:
        return self.measured_ms - self.predicted_ms

    @property
    def relative(self) -> float:
        return self.residual_ms / self.measured_ms if self.measured_ms else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"residual_ms": self.residual_ms, "relative": self.relative}


@dataclass(frozen=True)
class BreakEven:
    """Largest one-way delay (ms) at which ``nodes`` nodes still beat 1 node."""

    nodes: int
    verdict: BreakEvenVerdict
    delay_ms: float | None  # d*, also when it lies beyond the range tried (extrapolated)
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelFit:
    """The fitted model of one engine x model x threads x backend (see module doc)."""

    engine: str
    model: str
    threads: int
    backend: str
    params: dict[str, float]  # fitted terms only; dropped terms are 0 in predictions
    stderr: dict[str, float | None]
    dropped: tuple[str, ...]
    r2: float | None  # over per-run TPOT: includes the runs' own noise
    rmse_ms: float
    n_runs: int
    residuals: tuple[Residual, ...]
    round_trips_per_unit: float  # r in R(N) = r * shape(N)
    round_trips_measured: bool
    bytes_per_worker: float | None  # b in B(N) = b * (N - 1); None if no bytes recorded
    nodes_tried: tuple[int, ...]
    max_delay_tried_ms: float  # largest one-way delay among the fitted runs
    bandwidths_tried: tuple[int | None, ...]
    oversubscribed: bool
    notes: tuple[str, ...]

    @property
    def r2_means(self) -> float | None:
        """R² over the configurations' mean TPOT (each configuration weighs the same).

        What the model is meant to explain is how TPOT moves with nodes, delay and
        bandwidth; the spread between repetitions of one configuration is noise no
        model of the configuration can explain (on a contended host it dominates the
        per-run ``r2``). ``None`` with fewer than 3 configurations.
        """
        if len(self.residuals) < 3:
            return None
        means = [r.measured_ms for r in self.residuals]
        centre = sum(means) / len(means)
        ss_tot = sum((m - centre) ** 2 for m in means)
        ss_res = sum(r.residual_ms**2 for r in self.residuals)
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else None

    def param(self, name: str) -> float:
        return self.params.get(name, 0.0)

    def round_trips(self, nodes: int) -> float:
        return self.round_trips_per_unit * round_trip_shape(self.engine, nodes)

    def bytes_per_token(self, nodes: int) -> float | None:
        if self.bytes_per_worker is None:
            return None
        return self.bytes_per_worker * (nodes - 1)

    def predict(self, nodes: int, delay_ms: float = 0.0, bandwidth_bps: int | None = None) -> float:
        """Predicted TPOT (ms) at ``nodes`` nodes, one-way delay ``delay_ms`` on every link
        and an optional per-link cap (any N, also beyond what this host can run)."""
        if nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {nodes}")
        if delay_ms < 0:
            raise ValueError(f"delay must be >= 0 ms, got {delay_ms}")
        row = _row(
            nodes,
            2.0 * delay_ms if nodes > 1 else 0.0,
            self.round_trips(nodes),
            _transfer_ms(self.bytes_per_token(nodes), bandwidth_bps),
        )
        return float(row @ self._vector())

    def _vector(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([self.param(t) for t in TERMS])

    def break_even(self, nodes: int, bandwidth_bps: int | None = None) -> BreakEven:
        """d*(nodes): see the module doc for the verdicts."""
        if nodes < 2:
            raise ValueError("break-even needs at least 2 nodes")
        single = self.predict(1)
        at_zero = self.predict(nodes, 0.0, bandwidth_bps)
        slope = self.param("delay_factor") * 2.0 * self.round_trips(nodes)
        if at_zero >= single:
            return BreakEven(
                nodes,
                "never",
                None,
                f"{nodes} nodes are slower than 1 node even without delay "
                f"({at_zero:.1f} vs {single:.1f} ms/token)",
            )
        if "delay_factor" in self.dropped:
            return BreakEven(
                nodes, "unknown", None, "the fitted runs do not vary the delay: cannot solve"
            )
        if slope <= 0:
            return BreakEven(
                nodes,
                "not delay-sensitive",
                None,
                f"{nodes} nodes beat 1 node and the fit finds no cost of delay",
            )
        d_star = (single - at_zero) / slope
        if d_star > self.max_delay_tried_ms:
            return BreakEven(
                nodes,
                "always within the range tried",
                d_star,
                f"{nodes} nodes beat 1 node at every delay tried (up to "
                f"{self.max_delay_tried_ms:g} ms); the model puts break-even at "
                f"{d_star:.1f} ms (extrapolated)",
            )
        return BreakEven(
            nodes,
            "break-even",
            d_star,
            f"{nodes} nodes beat 1 node up to {d_star:.1f} ms one-way delay",
        )

    def curves(self, points: int = 21) -> list[dict[str, Any]]:
        """Predicted TPOT over one-way delay 0..1.25 x the largest tried, per node count and
        bandwidth tried (what a chart draws over the measured points)."""
        top = max(self.max_delay_tried_ms, 1.0) * 1.25
        delays = [top * i / (points - 1) for i in range(points)]
        out = []
        for bandwidth in self.bandwidths_tried:
            for nodes in self.nodes_tried:
                if nodes == 1 and bandwidth is not None:
                    continue
                out.append(
                    {
                        "nodes": nodes,
                        "bandwidth_bps": bandwidth,
                        "delay_ms": delays,
                        "tpot_ms": [self.predict(nodes, d, bandwidth) for d in delays],
                    }
                )
        return out

    def to_dict(self, predict_nodes: Sequence[int] = ()) -> dict[str, Any]:
        nodes = sorted({*self.nodes_tried, *predict_nodes} - {1})
        return {
            "engine": self.engine,
            "model": self.model,
            "threads": self.threads,
            "backend": self.backend,
            "formula": FORMULA,
            "params": self.params,
            "stderr": self.stderr,
            "dropped": list(self.dropped),
            "r2": self.r2,
            "r2_means": self.r2_means,
            "rmse_ms": self.rmse_ms,
            "n_runs": self.n_runs,
            "residuals": [r.to_dict() for r in self.residuals],
            "round_trips_per_unit": self.round_trips_per_unit,
            "round_trips_measured": self.round_trips_measured,
            "bytes_per_worker": self.bytes_per_worker,
            "nodes_tried": list(self.nodes_tried),
            "max_delay_tried_ms": self.max_delay_tried_ms,
            "bandwidths_tried": list(self.bandwidths_tried),
            "curves": self.curves(),
            "predictions": [
                {"nodes": n, "delay_ms": 0.0, "tpot_ms": self.predict(n)} for n in nodes
            ],
            "oversubscribed": self.oversubscribed,
            "notes": list(self.notes),
            "break_even": [self.break_even(n).to_dict() for n in nodes],
        }


def _fit_shape_factor(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope through the origin of y = k * x (None without usable points)."""
    den = sum(x * x for x in xs)
    return sum(x * y for x, y in zip(xs, ys, strict=True)) / den if den else None


def _select_columns(x: np.ndarray[Any, np.dtype[np.float64]]) -> list[int]:
    """Columns that each add rank, in TERMS order (scaled so units do not matter)."""
    norms = np.linalg.norm(x, axis=0)
    scaled = x / np.where(norms == 0, 1.0, norms)
    keep: list[int] = []
    for j in range(x.shape[1]):
        if norms[j] == 0:
            continue
        trial = [*keep, j]
        if np.linalg.matrix_rank(scaled[:, trial], tol=1e-9) == len(trial):
            keep.append(j)
    return keep


def fit_model(records: Sequence[RunRecord]) -> ModelFit | None:
    """Fit the model to counted runs of ONE engine x model x threads x backend.

    Returns ``None`` with fewer than 2 usable runs (no TPOT, failed or warm-up runs
    are skipped). Use :func:`fit_models` to split a mixed set first.
    """
    runs = [r for r in records if r.counted and r.metric("tpot_ms") is not None]
    if len(runs) < 2:
        return None
    first = runs[0]
    engine = first.engine
    measured_rt = [r for r in runs if r.nodes > 1 and r.round_trips_per_token is not None]
    if measured_rt:
        k = _fit_shape_factor(
            [round_trip_shape(engine, r.nodes) for r in measured_rt],
            [
                critical_round_trips(engine, r.nodes, float(r.round_trips_per_token or 0.0))
                for r in measured_rt
            ],
        )
        r_unit = k if k is not None else 1.0
    else:
        r_unit = 1.0
    with_bytes = [r for r in runs if r.nodes > 1 and r.net_bytes_per_token is not None]
    b_unit = _fit_shape_factor(
        [r.nodes - 1.0 for r in with_bytes], [float(r.net_bytes_per_token or 0) for r in with_bytes]
    )

    def trips(r: RunRecord) -> float:
        if r.round_trips_per_token is not None:
            return critical_round_trips(engine, r.nodes, r.round_trips_per_token)
        return r_unit * round_trip_shape(engine, r.nodes)

    def transfer(r: RunRecord) -> float:
        measured = r.net_bytes_per_token
        if measured is None and b_unit is not None:
            measured = b_unit * (r.nodes - 1)
        return _transfer_ms(measured, r.bandwidth_bps)

    x = np.array([_row(r.nodes, r.rtt_delay_ms, trips(r), transfer(r)) for r in runs])
    y = np.array([float(r.metric("tpot_ms") or 0.0) for r in runs])
    cols = _select_columns(x)
    coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
    fitted = x[:, cols] @ coef
    resid = y - fitted
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    dof = len(runs) - len(cols)
    stderr: dict[str, float | None] = {}
    if dof > 0:
        s2 = ss_res / dof
        cov = s2 * np.linalg.pinv(x[:, cols].T @ x[:, cols])
        stderr = {TERMS[j]: float(math.sqrt(max(cov[i, i], 0.0))) for i, j in enumerate(cols)}
    else:
        stderr = {TERMS[j]: None for j in cols}
    notes = []
    if dof <= 0:
        notes.append("as many parameters as runs: the fit is exact and R² means nothing")
    if not any(r.nodes == 1 for r in runs):
        notes.append("no 1-node runs: TPOT(1) and break-even rest on extrapolation")
    if not measured_rt:
        notes.append(
            "round trips per token not recorded by the link proxies: assumed "
            + ("1 per token (dllama)" if engine == "dllama" else "N-1 (one per worker)")
        )
    over = any(r.oversubscribed for r in runs)
    if over:
        notes.append(
            "some runs are oversubscribed (threads over all nodes > host cores): the "
            "compute/N term describes this host's contention, not the cluster's scaling"
        )
    params = {TERMS[j]: float(c) for j, c in zip(cols, coef, strict=True)}
    fit = ModelFit(
        engine=engine,
        model=first.model,
        threads=first.threads,
        backend=first.backend,
        params=params,
        stderr=stderr,
        dropped=tuple(t for j, t in enumerate(TERMS) if j not in cols),
        r2=1.0 - ss_res / ss_tot if ss_tot > 0 else None,
        rmse_ms=math.sqrt(ss_res / len(runs)),
        n_runs=len(runs),
        residuals=(),
        round_trips_per_unit=r_unit,
        round_trips_measured=bool(measured_rt),
        bytes_per_worker=b_unit,
        nodes_tried=tuple(sorted({r.nodes for r in runs})),
        max_delay_tried_ms=max(r.rtt_delay_ms for r in runs) / 2,
        bandwidths_tried=tuple(
            sorted({r.bandwidth_bps for r in runs if r.nodes > 1}, key=lambda b: b or 0)
        )
        or (None,),
        oversubscribed=over,
        notes=tuple(notes),
    )
    # Residuals per configuration, at each run's own (measured) design row.
    per_config: dict[tuple[int, float, int | None, str], list[tuple[float, float]]] = {}
    labels: dict[tuple[int, float, int | None, str], str | None] = {}
    vector = fit._vector()
    for r, row, measured in zip(runs, x, y, strict=True):
        ck = (r.nodes, r.rtt_delay_ms if r.nodes > 1 else 0.0, r.bandwidth_bps, r.latency)
        if r.nodes == 1:
            ck = (1, 0.0, None, "")
        labels[ck] = None if r.nodes == 1 else r.latency
        per_config.setdefault(ck, []).append((float(measured), float(row @ vector)))
    residuals = tuple(
        Residual(
            nodes=ck[0],
            latency=labels[ck],
            bandwidth_bps=ck[2],
            n=len(pairs),
            measured_ms=sum(m for m, _ in pairs) / len(pairs),
            predicted_ms=sum(p for _, p in pairs) / len(pairs),
        )
        for ck, pairs in sorted(per_config.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    )
    return replace(fit, residuals=residuals)


def fit_models(records: Sequence[RunRecord]) -> list[ModelFit]:
    """One fit per engine x model x threads x backend present in ``records``."""
    parts: dict[tuple[str, str, int, str], list[RunRecord]] = {}
    for r in records:
        parts.setdefault((r.engine, r.model, r.threads, r.backend), []).append(r)
    fits = [fit_model(parts[k]) for k in sorted(parts)]
    return [f for f in fits if f is not None]


def group_residuals(fit: ModelFit, groups: Sequence[Group]) -> list[Residual]:
    """Residuals of other configurations (e.g. held-out cells) under ``fit``."""
    out = []
    for g in groups:
        mean = g.stats["tpot_ms"].mean
        if mean is None:
            continue
        trips = (
            critical_round_trips(fit.engine, g.key.nodes, g.round_trips_per_token)
            if g.round_trips_per_token is not None
            else fit.round_trips(g.key.nodes)
        )
        nbt = g.net_bytes_per_token
        if nbt is None:
            nbt = fit.bytes_per_token(g.key.nodes)
        row = _row(g.key.nodes, g.rtt_delay_ms, trips, _transfer_ms(nbt, g.key.bandwidth_bps))
        out.append(
            Residual(
                g.key.nodes,
                g.key.latency,
                g.key.bandwidth_bps,
                g.n,
                mean,
                float(row @ fit._vector()),
            )
        )
    return out
