"""The break-even search: bisection on a synthetic TPOT surface, and its cells in a database."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import select, update

from edgelab.catalog import Catalog
from edgelab.models import Run, Sweep
from edgelab.models.db import session_scope
from edgelab.settings import Settings
from edgelab.store.store import Store
from edgelab.sweeps import SpecError, control, expand, parse_spec
from edgelab.sweeps.search import Probe, SearchSpec, SearchState, advance, plan, state_of

BASE_TPOT = 100.0


def surface(nodes: int, delay_ms: float) -> float:
    """TPOT of a layer split: compute shrinks with nodes, each worker costs one round trip.

    Break-even where 62 + 2 (N - 1) d = 100: d* = 19 ms for 2 nodes, 9.5 ms for 3.
    """
    if nodes == 1:
        return BASE_TPOT
    return 62.0 + 2.0 * (nodes - 1) * delay_ms


def run_search(
    spec: SearchSpec, tpot: Callable[[int, float], float], noise: float = 0.0, seed: int = 1
) -> tuple[SearchState, int]:
    """Measure every wanted probe until the search is done; return it and the probes used."""
    rng = random.Random(seed)
    measured: dict[Probe, list[float]] = {}
    for _ in range(100):
        state = plan(spec, measured)
        if state.done:
            return state, len(measured)
        assert state.wanted, "a search that is not done must want a probe"
        for probe in state.wanted:
            assert probe not in measured, "a measured probe is never wanted again"
            measured[probe] = [
                tpot(*probe) + rng.gauss(0.0, noise) for _ in range(spec.repetitions)
            ]
    raise AssertionError("the search did not finish")


def test_bisection_converges_on_the_break_even_of_each_node_count() -> None:
    spec = SearchSpec(nodes=(2, 3), lo_ms=0.0, hi_ms=40.0, tolerance_ms=0.5, repetitions=3)

    state, probes = run_search(spec, surface)

    by_nodes = {b.nodes: b for b in state.brackets}
    assert by_nodes[2].status == "converged"
    assert by_nodes[2].break_even_ms == pytest.approx(19.0, abs=0.5)
    assert by_nodes[3].break_even_ms == pytest.approx(9.5, abs=0.5)
    assert by_nodes[2].hi_ms - by_nodes[2].lo_ms <= 0.5
    # baseline + 2 ends + ceil(log2(40 / 0.5)) = 7 midpoints per node count
    assert probes == 1 + 2 * (2 + 7)


def test_with_noise_it_stops_within_the_tolerance_or_where_the_cis_overlap() -> None:
    spec = SearchSpec(nodes=(2, 3), lo_ms=0.0, hi_ms=40.0, tolerance_ms=0.5, repetitions=3)
    for seed in range(5):
        state, probes = run_search(spec, surface, noise=0.3, seed=seed)

        by_nodes = {b.nodes: b for b in state.brackets}
        assert {b.status for b in state.brackets} <= {"converged", "indistinct"}
        # Where the CIs overlap the two TPOTs differ by ~1 ms, i.e. d is within ~0.5 ms.
        assert by_nodes[2].break_even_ms == pytest.approx(19.0, abs=1.0)
        assert by_nodes[3].break_even_ms == pytest.approx(9.5, abs=1.0)
        assert probes <= 1 + 2 * (2 + 7)


def test_never_and_always_when_the_break_even_is_outside_the_range() -> None:
    spec = SearchSpec(nodes=(2, 3), lo_ms=12.0, hi_ms=16.0, tolerance_ms=1.0, repetitions=2)

    state, _ = run_search(spec, surface, noise=0.1)

    by_nodes = {b.nodes: b.status for b in state.brackets}
    assert by_nodes == {2: "always", 3: "never"}
    assert all(b.break_even_ms is None for b in state.brackets)


def test_the_search_stops_where_the_difference_drowns_in_noise() -> None:
    # A flat surface just below the baseline, with noise far larger than the gap.
    spec = SearchSpec(nodes=(2,), lo_ms=0.0, hi_ms=40.0, tolerance_ms=0.1, repetitions=3)

    def flat(nodes: int, delay_ms: float) -> float:
        return (
            BASE_TPOT
            if nodes == 1
            else (50.0 if delay_ms == 0 else 150.0 if delay_ms == 40 else 99.9)
        )

    state, probes = run_search(spec, flat, noise=5.0)

    (bracket,) = state.brackets
    assert bracket.status == "indistinct"
    assert bracket.break_even_ms == 20.0  # the first midpoint already overlaps
    assert probes == 1 + 3


def test_one_repetition_compares_means() -> None:
    spec = SearchSpec(nodes=(2,), lo_ms=0.0, hi_ms=40.0, tolerance_ms=1.0, repetitions=1)

    state, _ = run_search(spec, surface)

    assert state.brackets[0].break_even_ms == pytest.approx(19.0, abs=1.0)


# --- through the database ---------------------------------------------------------------


SPEC = {
    "name": "be",
    "search": "break_even",
    "model": "tiny",
    "nodes": [2, 3],
    "latency_range": ["0ms", "40ms"],
    "tolerance": "5ms",
    "repetitions": 2,
    "prompts": ["x"],
    "max_tokens": 4,
}


def _finish_queued(settings: Settings, sweep_id: int) -> int:
    """Play the worker: every queued cell run succeeds with the surface's TPOT."""
    done = 0
    with session_scope(settings.database_url) as s:
        for run in s.scalars(select(Run).where(Run.sweep_id == sweep_id, Run.status == "queued")):
            tpot = surface(run.nodes, float(run.latency["delay_ms"]))
            run.status = "succeeded"
            run.tpot_ms = tpot + 0.01 * run.repetition  # a little spread for the CIs
            done += 1
    return done


def test_a_search_sweep_creates_its_cells_as_results_arrive_and_resumes(
    tiny_settings: Settings, tiny_catalog: Catalog
) -> None:
    spec = parse_spec(SPEC, max_cells=1000)
    cells = expand(spec, tiny_catalog)
    assert {(c.config.nodes, c.config.latency.label) for c in cells} == {
        (1, "0ms"),
        (2, "0ms"),
        (2, "40ms"),
        (3, "0ms"),
        (3, "40ms"),
    }
    with session_scope(tiny_settings.database_url) as s:
        sweep = control.create_sweep(s, spec, cells)
        sweep_id = sweep.id
        assert sweep.total_cells == (1 + 2 * (2 + 3)) * 2  # the bound the limit applies to
    store = Store(tiny_settings.database_url)
    rounds = 0
    while True:
        assert _finish_queued(tiny_settings, sweep_id) > 0
        status = store.refresh_sweep(sweep_id)
        new = advance(store, sweep_id, tiny_catalog)
        rounds += 1
        if not new:
            break
        assert status == "running"  # never "succeeded" while probes are still wanted
        assert len(new) == 2 * 2  # one midpoint per node count, 2 repetitions each
    assert store.refresh_sweep(sweep_id) == "succeeded"
    with session_scope(tiny_settings.database_url) as s:
        state = state_of(s, sweep_id, parse_spec(s.get_one(Sweep, sweep_id).spec, max_cells=10**6))
        detail = control.sweep_detail(s, sweep_id)
    assert rounds == 1 + 3  # the ends, then ceil(log2(40 / 5)) midpoints
    by_nodes = {b.nodes: b for b in state.brackets}
    assert by_nodes[2].break_even_ms == pytest.approx(19.0, abs=5.0)
    assert by_nodes[3].break_even_ms == pytest.approx(9.5, abs=5.0)
    assert detail["search"]["done"] is True
    assert detail["progress"]["total"] == (1 + 2 * 5) * 2

    # A failed probe is re-created by resume; nothing else is.
    with session_scope(tiny_settings.database_url) as s:
        victim = s.scalars(select(Run).where(Run.sweep_id == sweep_id, Run.nodes == 3)).first()
        assert victim is not None
        s.execute(update(Run).where(Run.id == victim.id).values(status="failed"))
    result = control.resume(store, sweep_id, tiny_catalog, tiny_settings)
    assert len(result.created) == 1


def test_a_cancelled_search_creates_no_more_cells(
    tiny_settings: Settings, tiny_catalog: Catalog
) -> None:
    spec = parse_spec(SPEC, max_cells=1000)
    with session_scope(tiny_settings.database_url) as s:
        sweep_id = control.create_sweep(s, spec, expand(spec, tiny_catalog)).id
    store = Store(tiny_settings.database_url)
    _finish_queued(tiny_settings, sweep_id)
    store.cancel_sweep(sweep_id)

    assert advance(store, sweep_id, tiny_catalog) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"latency": "5ms"}, "latency"),
        ({"latency_range": ["40ms", "0ms"]}, "latency_range"),
        ({"latency_range": ["0ms", "10ms..20ms"]}, "latency_range"),
        ({"tolerance": "80ms"}, "tolerance"),
        ({"nodes": [1, 2]}, "nodes"),
        ({"search": "fastest"}, "search"),
        ({"max_tokens": [4, 8]}, "max_tokens"),
    ],
)
def test_bad_search_specs_are_refused_per_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**SPEC, **change}, max_cells=1000)
    assert field in info.value.errors
