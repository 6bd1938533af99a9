"""The break-even search: the largest one-way delay at which N nodes still beat 1 node.

A sweep kind next to the grid. The spec::

    name: break-even
    search: break_even
    model: smollm2-135m
    nodes: [2, 3]                 # the node counts to search (1 node is the baseline)
    threads: 1
    latency_range: ["0ms", "40ms"]
    tolerance: "2ms"
    repetitions: 3
    max_tokens: 32
    prompts: ["Name three planets."]

For each N the search keeps a bracket ``[lo, hi]``: N nodes are faster than one
at ``lo`` and not faster at ``hi``. It first measures both ends (if N is not
faster even at ``lo`` the answer is "never", if still faster at ``hi`` it is
"always within the range") and then bisects: it measures the midpoint and moves
the end on its side. It stops when the bracket is narrower than the tolerance
("converged", break-even = the bracket's middle) or when the midpoint's TPOT
cannot be told apart from the baseline's, i.e. their 95 % confidence intervals
overlap ("indistinct", break-even = that midpoint: the delay at which the
difference vanishes into the noise). "Faster" compares mean TPOT, and with two
or more repetitions requires the CIs not to overlap.

Cells are created as results arrive: the state is a pure function of the
measured TPOTs (:func:`plan`), so a resumed sweep, or a second worker, computes
the same next probes from the database; :func:`advance` creates the runs for
probes that have none yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from edgelab.analysis.stats import summarize
from edgelab.models import Sweep
from edgelab.netem.profile import LatencyProfile, ProfileError
from edgelab.store.status import RunStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from edgelab.catalog import Catalog
    from edgelab.store.store import Store
    from edgelab.sweeps.spec import Cell, SweepSpec

KIND = "break_even"
DEFAULT_REPETITIONS = 3
#: Delays are rounded to this (ms) so probes have stable labels and fingerprints.
RESOLUTION_MS = 0.01

Probe = tuple[int, float]  # (nodes, one-way delay ms)


@dataclass(frozen=True)
class SearchSpec:
    nodes: tuple[int, ...]
    lo_ms: float
    hi_ms: float
    tolerance_ms: float
    repetitions: int

    @property
    def max_steps(self) -> int:
        """Midpoints needed at most to shrink the range below the tolerance."""
        span = self.hi_ms - self.lo_ms
        return max(0, math.ceil(math.log2(span / self.tolerance_ms))) if span > 0 else 0


@dataclass
class ProbeResult:
    delay_ms: float
    n: int
    tpot_ms: float | None
    ci_ms: tuple[float, float] | None
    verdict: str  # "faster" | "slower" | "indistinct" | "pending"


@dataclass
class Bracket:
    """Where the search for one node count stands."""

    nodes: int
    lo_ms: float
    hi_ms: float
    status: str  # "waiting" | "searching" | "converged" | "indistinct" | "never" | "always"
    break_even_ms: float | None = None
    next_probe_ms: float | None = None
    probes: list[ProbeResult] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in ("converged", "indistinct", "never", "always")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchState:
    baseline: ProbeResult
    brackets: list[Bracket]
    wanted: list[Probe]  # probes that must be measured now (repetitions each)

    @property
    def done(self) -> bool:
        return all(b.done for b in self.brackets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": asdict(self.baseline),
            "brackets": [b.to_dict() for b in self.brackets],
            "wanted": [list(p) for p in self.wanted],
            "done": self.done,
        }


def rounded(delay_ms: float) -> float:
    return round(round(delay_ms / RESOLUTION_MS) * RESOLUTION_MS, 6)


def delay_label(delay_ms: float) -> str:
    return f"{rounded(delay_ms):g}ms"


# -- the pure search ---------------------------------------------------------------------


def _summary(values: Sequence[float]) -> tuple[float | None, tuple[float, float] | None]:
    if not values:
        return None, None
    s = summarize(values)
    ci = (s.ci_low, s.ci_high) if s.ci_low is not None and s.ci_high is not None else None
    return s.mean, ci


def _verdict(
    values: Sequence[float], baseline: Sequence[float], repetitions: int
) -> tuple[str, float | None, tuple[float, float] | None]:
    mean, ci = _summary(values)
    if len(values) < repetitions or len(baseline) < repetitions or mean is None:
        return "pending", mean, ci
    base_mean, base_ci = _summary(baseline)
    assert base_mean is not None
    if ci is not None and base_ci is not None:
        if ci[1] < base_ci[0]:
            return "faster", mean, ci
        if ci[0] > base_ci[1]:
            return "slower", mean, ci
        return "indistinct", mean, ci
    # One repetition: no CI to speak of, compare the means.
    return ("faster" if mean < base_mean else "slower"), mean, ci


def plan(spec: SearchSpec, tpot: Mapping[Probe, Sequence[float]]) -> SearchState:
    """The search's state from the TPOTs measured so far (succeeded runs per probe)."""
    base_values = list(tpot.get((1, 0.0), []))
    base_mean, base_ci = _summary(base_values)
    base_ready = len(base_values) >= spec.repetitions
    baseline = ProbeResult(
        0.0, len(base_values), base_mean, base_ci, "measured" if base_ready else "pending"
    )
    wanted: list[Probe] = [] if base_ready else [(1, 0.0)]
    brackets: list[Bracket] = []
    for n in spec.nodes:
        bracket = _walk(spec, n, tpot, base_values)
        brackets.append(bracket)
        if bracket.status == "waiting":
            wanted.extend((n, d) for d in (spec.lo_ms, spec.hi_ms))
        elif bracket.next_probe_ms is not None:
            wanted.append((n, bracket.next_probe_ms))
    return SearchState(baseline=baseline, brackets=brackets, wanted=wanted)


def _walk(
    spec: SearchSpec, n: int, tpot: Mapping[Probe, Sequence[float]], base: Sequence[float]
) -> Bracket:
    """Replay the bisection for ``n`` nodes over what has been measured."""
    lo, hi = rounded(spec.lo_ms), rounded(spec.hi_ms)
    bracket = Bracket(nodes=n, lo_ms=lo, hi_ms=hi, status="waiting")

    def probe(delay: float) -> str:
        verdict, mean, ci = _verdict(list(tpot.get((n, delay), [])), base, spec.repetitions)
        bracket.probes.append(ProbeResult(delay, len(tpot.get((n, delay), [])), mean, ci, verdict))
        return verdict

    at_lo, at_hi = probe(lo), probe(hi)
    if "pending" in (at_lo, at_hi):
        return bracket
    if at_lo != "faster":
        bracket.status = "never"
        return bracket
    if at_hi == "faster":
        bracket.status = "always"
        return bracket
    bracket.status = "searching"
    while hi - lo > spec.tolerance_ms:
        mid = rounded((lo + hi) / 2)
        if mid in (lo, hi):  # below the delay resolution: as narrow as it gets
            break
        verdict = probe(mid)
        if verdict == "pending":
            bracket.lo_ms, bracket.hi_ms, bracket.next_probe_ms = lo, hi, mid
            return bracket
        if verdict == "indistinct":
            bracket.lo_ms, bracket.hi_ms = lo, hi
            bracket.status = "indistinct"
            bracket.break_even_ms = mid
            return bracket
        if verdict == "faster":
            lo = mid
        else:
            hi = mid
    bracket.lo_ms, bracket.hi_ms = lo, hi
    bracket.status = "converged"
    bracket.break_even_ms = rounded((lo + hi) / 2)
    return bracket


# -- the spec ----------------------------------------------------------------------------


def _delay_ms(text: Any, field_name: str, errors: dict[str, str]) -> float | None:
    try:
        profile = LatencyProfile.parse(str(text))
    except ProfileError as exc:
        errors[field_name] = str(exc)
        return None
    if profile.kind != "fixed" or profile.down is not None or profile.bandwidth_bps is not None:
        errors[field_name] = f"must be a fixed one-way delay such as '20ms', got {text!r}"
        return None
    return float(profile.delay_ms)


def parse_search(data: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any] | None:
    """The canonical search fields of a spec, or None with ``errors`` filled in."""
    if data.get("search") != KIND:
        errors["search"] = f"the only search is {KIND!r}, got {data.get('search')!r}"
        return None
    if "latency" in data:
        errors["latency"] = "a search chooses the delays itself: give latency_range instead"
    raw_range = data.get("latency_range")
    if isinstance(raw_range, str) and ".." in raw_range:
        raw_range = raw_range.split("..", 1)
    if not isinstance(raw_range, list | tuple) or len(raw_range) != 2:
        errors["latency_range"] = "give the delays to search between, e.g. ['0ms', '40ms']"
        return None
    lo = _delay_ms(raw_range[0], "latency_range", errors)
    hi = _delay_ms(raw_range[1], "latency_range", errors)
    if lo is None or hi is None:
        return None
    if not hi > lo:
        errors["latency_range"] = f"the upper delay must exceed the lower one, got {raw_range!r}"
        return None
    tolerance = _delay_ms(data.get("tolerance", f"{(hi - lo) / 16:g}ms"), "tolerance", errors)
    if tolerance is None:
        return None
    if not RESOLUTION_MS <= tolerance <= hi - lo:
        errors["tolerance"] = (
            f"must be between {RESOLUTION_MS:g}ms and the range's width ({hi - lo:g}ms)"
        )
        return None
    nodes = data.get("nodes")
    values = nodes if isinstance(nodes, list) else [nodes]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in values):
        errors["nodes"] = "give the node counts to search, each 2 or more (1 is the baseline)"
    if isinstance(data.get("model"), dict):
        errors["model"] = "a break-even search takes one model (search one configuration)"
    for axis in ("engine", "model", "threads", "bandwidth", "max_tokens", "prompts"):
        if isinstance(data.get(axis), list) and len(data[axis]) > 1:
            errors[axis] = "a break-even search takes one value (search one configuration)"
    return {
        "search": KIND,
        "latency_range": [delay_label(lo), delay_label(hi)],
        "tolerance": delay_label(tolerance),
    }


def search_spec(spec: SweepSpec) -> SearchSpec:
    assert spec.search is not None
    lo, hi = (LatencyProfile.parse(v).delay_ms for v in spec.search["latency_range"])
    return SearchSpec(
        nodes=tuple(int(n) for n in spec.axes["nodes"]),
        lo_ms=float(lo),
        hi_ms=float(hi),
        tolerance_ms=float(LatencyProfile.parse(spec.search["tolerance"]).delay_ms),
        repetitions=spec.repetitions,
    )


def max_cells(spec: SweepSpec) -> int:
    """An upper bound on the cells a search creates (the sweep-size limit applies to it)."""
    s = search_spec(spec)
    return (1 + len(s.nodes) * (2 + s.max_steps)) * s.repetitions


def probe_cells(
    spec: SweepSpec, probes: Sequence[Probe], catalog: Catalog, *, default_backend: str
) -> list[Cell]:
    """The cells (every repetition) of ``probes``; ``SpecError`` names bad fields."""
    from edgelab.runs.config import ConfigError
    from edgelab.sweeps.spec import Cell, SpecError, config_cell

    cells: list[Cell] = []
    errors: dict[str, str] = {}
    for nodes, delay in probes:
        values = {axis: spec.axes[axis][0] for axis in spec.axes}
        values["model"] = spec.models_for(values["engine"])[0]
        values.update(nodes=nodes, latency=delay_label(delay))
        for repetition in range(spec.repetitions):
            try:
                config = config_cell(
                    spec, values, repetition, catalog, default_backend=default_backend
                )
            except ConfigError as exc:
                for name, message in exc.errors.items():
                    key = "prompts" if name == "prompt" else name
                    errors.setdefault(
                        key, f"{nodes} nodes: {message}" if key == "nodes" else message
                    )
                break
            cells.append(Cell(index=len(cells), config=config))
    if errors:
        raise SpecError(errors)
    return cells


def initial_cells(spec: SweepSpec, catalog: Catalog, *, default_backend: str) -> list[Cell]:
    """The first probes: the 1-node baseline and both ends of the range per node count."""
    state = plan(search_spec(spec), {})
    return probe_cells(spec, state.wanted, catalog, default_backend=default_backend)


# -- the database side -------------------------------------------------------------------


def observations(session: Session, sweep_id: int) -> tuple[dict[Probe, list[float]], set[Probe]]:
    """TPOT of the succeeded cell runs per probe, and every probe that has runs."""
    from edgelab.sweeps.control import latest_runs

    tpot: dict[Probe, list[float]] = {}
    known: set[Probe] = set()
    for run in latest_runs(session, sweep_id).values():
        delay = rounded(float((run.latency or {}).get("delay_ms") or 0.0))
        probe = (run.nodes, delay)
        known.add(probe)
        if run.status == RunStatus.SUCCEEDED and run.tpot_ms is not None:
            tpot.setdefault(probe, []).append(float(run.tpot_ms))
    return tpot, known


def state_of(session: Session, sweep_id: int, spec: SweepSpec) -> SearchState:
    tpot, _known = observations(session, sweep_id)
    return plan(search_spec(spec), tpot)


def known_cells(
    session: Session, sweep_id: int, spec: SweepSpec, catalog: Catalog, *, default_backend: str
) -> list[Cell]:
    """The cells of every probe the search has created so far (what resume re-checks)."""
    _tpot, known = observations(session, sweep_id)
    probes = sorted(known | set(plan(search_spec(spec), {}).wanted))
    return probe_cells(spec, probes, catalog, default_backend=default_backend)


def advance(
    store: Store, sweep_id: int, catalog: Catalog, *, default_backend: str = "local"
) -> list[int]:
    """Create the runs of every wanted probe that has none yet; return their ids."""
    from edgelab.sweeps.spec import parse_spec

    def plan_cells(session: Session) -> list[Cell]:
        sweep = session.get_one(Sweep, sweep_id)
        spec = parse_spec(sweep.spec, max_cells=2**62)
        if spec.search is None:
            return []
        tpot, known = observations(session, sweep_id)
        missing = [p for p in plan(search_spec(spec), tpot).wanted if p not in known]
        return probe_cells(spec, missing, catalog, default_backend=default_backend)

    return store.extend_sweep(sweep_id, plan_cells)


__all__ = [
    "KIND",
    "Bracket",
    "ProbeResult",
    "SearchSpec",
    "SearchState",
    "advance",
    "delay_label",
    "initial_cells",
    "known_cells",
    "max_cells",
    "parse_search",
    "plan",
    "state_of",
]
