"""The analysis functions on synthetic run sets whose answers are known.

Each set is generated here with fixed seeds, so every bound below is either an
exact expected value or a stated tolerance around one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from edgelab.analysis import (
    RunRecord,
    analyze,
    compare,
    compare_groups,
    fit_model,
    group_records,
    load_records,
    scaling,
    summarize,
    welch,
)
from edgelab.analysis.model import group_residuals
from edgelab.analysis.records import rtt_delay_ms
from edgelab.analysis.stats import bootstrap_diff_ci, ratio_ci, t_quantile

_ids: Iterator[int] = iter(range(1, 10**9))


def rec(
    nodes: int, tpot: float, *, latency_ms: float = 0.0, ttft: float = 100.0, **kw: Any
) -> RunRecord:
    """A succeeded run at ``nodes`` nodes, fixed one-way delay ``latency_ms``."""
    metrics = {
        "ttft_ms": ttft,
        "tpot_ms": tpot,
        "itl_p50_ms": tpot,
        "itl_p99_ms": tpot * 1.5,
        "decode_tps": 1000.0 / tpot,
        "e2el_ms": ttft + 31 * tpot,
    }
    metrics.update(kw.pop("metrics", {}))
    return RunRecord(
        id=next(_ids),
        nodes=nodes,
        metrics=metrics,
        latency=kw.pop("latency", f"{latency_ms:g}ms"),
        rtt_delay_ms=2 * latency_ms if nodes > 1 else 0.0,
        **kw,
    )


# --- summaries and CIs ------------------------------------------------------------------------


def test_summary_of_three_runs_is_the_student_t_interval() -> None:
    s = summarize([10.0, 12.0, 14.0])
    half = 4.302652729749462 * 2.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (s.n, s.mean, s.sd) == (3, 12.0, 2.0)
    assert s.cv == pytest.approx(2 / 12)
    assert s.ci_low == pytest.approx(12 - half, rel=1e-12)
    assert s.ci_high == pytest.approx(12 + half, rel=1e-12)
    assert s.noisy
    one = summarize([5.0])
    assert (one.n, one.mean, one.sd, one.ci_low) == (1, 5.0, None, None)
    assert summarize([]).mean is None


def test_ci_coverage_on_normal_data_is_95_percent() -> None:
    """4,000 seeded samples of n = 5 from N(50, 3): the 95 % CI covers 50 in 95 % ± 1.5 %
    of them (3 binomial standard errors: sqrt(0.95 * 0.05 / 4000) = 0.34 %)."""
    rng = np.random.default_rng(2026)
    trials = 4000
    covered = 0
    for sample in rng.normal(50.0, 3.0, size=(trials, 5)):
        s = summarize(sample.tolist())
        assert s.ci_low is not None
        assert s.ci_high is not None
        covered += s.ci_low <= 50.0 <= s.ci_high
    assert abs(covered / trials - 0.95) <= 0.015


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    for na, nb, shift in ((3, 3, 0.0), (5, 4, 1.5), (10, 3, -0.7), (2, 8, 3.0)):
        a = rng.normal(20, 1.0, na).tolist()
        b = rng.normal(20 + shift, 2.5, nb).tolist()
        ours = welch(a, b)
        ref = sps.ttest_ind(b, a, equal_var=False)
        assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-12, abs=1e-15)
        assert ours.t == pytest.approx(float(ref.statistic), rel=1e-12)
        if hasattr(ref, "df"):
            assert ours.df == pytest.approx(float(ref.df), rel=1e-9)


def test_t_quantile_matches_scipy_stats() -> None:
    """stats.py computes Student's t with scipy.special (scipy.stats is slow to import);
    the quantiles must be scipy.stats.t's, fractional Welch df included."""
    for df in (1, 2, 4, 9, 29, 3.7, 11.25):
        assert t_quantile(df) == pytest.approx(float(sps.t.ppf(0.975, df)), rel=1e-12)
    assert t_quantile(4, 0.9) == pytest.approx(float(sps.t.ppf(0.95, 4)), rel=1e-12)


def test_welch_without_spread() -> None:
    assert welch([5.0, 5.0], [5.0, 5.0]).p_value == 1.0
    assert welch([5.0, 5.0], [6.0, 6.0]).p_value == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        welch([1.0], [1.0, 2.0])


def test_bootstrap_is_seeded_and_brackets_the_difference() -> None:
    a, b = [10.0, 11.0, 12.0, 10.5], [14.0, 15.0, 13.5, 14.5]
    first = bootstrap_diff_ci(a, b)
    assert first == bootstrap_diff_ci(a, b)
    assert first is not None
    assert first[0] < 3.375 < first[1]


def test_ratio_ci_covers_the_true_ratio() -> None:
    """Delta-method CI of a ratio of two 5-run means covers the true ratio 2.0 in
    95 % ± 2 % of 2,000 seeded trials (it is approximate, hence the wider tolerance)."""
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(2000):
        num = summarize(rng.normal(40.0, 2.0, 5).tolist())
        den = summarize(rng.normal(20.0, 1.0, 5).tolist())
        ci = ratio_ci(num, den)
        assert ci is not None
        covered += ci[0] <= 2.0 <= ci[1]
    assert abs(covered / 2000 - 0.95) <= 0.02


def test_round_trip_delay_of_profiles() -> None:
    assert rtt_delay_ms({"kind": "fixed", "delay_ms": 20.0}) == 40.0
    assert rtt_delay_ms({"kind": "uniform", "delay_ms": 10.0, "max_ms": 50.0}) == 60.0
    down = {"kind": "fixed", "delay_ms": 5.0}
    assert rtt_delay_ms({"kind": "fixed", "delay_ms": 20.0, "down": down}) == 25.0
    # Normal truncated at 0: mean 0, sd 10 -> half-normal mean 10 * sqrt(2/pi) each way.
    assert rtt_delay_ms({"kind": "normal", "delay_ms": 0.0, "jitter_ms": 10.0}) == pytest.approx(
        2 * 10 * math.sqrt(2 / math.pi)
    )


# --- groups -----------------------------------------------------------------------------------


def test_groups_merge_one_node_latencies_and_flag() -> None:
    records = [
        rec(1, 10.0, latency_ms=0),
        rec(1, 10.2, latency_ms=20),
        rec(1, 9.9, latency_ms=20),
        rec(2, 30.0, latency_ms=20),
        rec(2, 40.0, latency_ms=20, flags=frozenset({"contended"})),
        rec(2, 1.0, latency_ms=20, status="failed", metrics={"tpot_ms": None}),
        rec(3, 50.0, latency_ms=20, host_cores=2),
    ]
    groups = group_records(records)
    assert [(g.key.nodes, g.key.latency, g.n) for g in groups] == [
        (1, None, 3),
        (2, "20ms", 2),
        (3, "20ms", 1),
    ]
    one, two, three = groups
    assert one.latencies == ("0ms", "20ms")
    assert one.flags == ()
    assert one.stats["tpot_ms"].mean == pytest.approx(10.033333333333333)
    assert two.flags == ("too few", "noisy", "contended")
    assert two.excluded_runs == 1
    assert two.contended_runs == 1
    assert "tpot_ms" in two.noisy_metrics
    assert three.flags == ("too few", "oversubscribed")
    notes = analyze(records).notes
    assert notes == (
        "1 node × 1 thread · no links: runs at 2 latency profiles (0ms, 20ms) are one "
        "configuration (1 node has no links)",
    )


def test_warmup_runs_are_not_counted() -> None:
    records = [rec(2, 20.0), rec(2, 21.0), rec(2, 50.0, flags=frozenset({"warmup"}))]
    (g,) = group_records(records)
    assert g.n == 2
    assert g.excluded_runs == 1
    assert g.stats["tpot_ms"].mean == 20.5
    counts = analyze(records).counts.to_dict()
    assert counts == {"runs": 3, "counted": 2, "not_succeeded": 0, "warmup": 1}


# --- scaling ----------------------------------------------------------------------------------


def _noisy(rng: random.Random, value: float, n: int, sd: float) -> list[float]:
    return [value + rng.gauss(0, sd) for _ in range(n)]


def test_speedup_and_efficiency_with_ci() -> None:
    rng = random.Random(3)
    records = [rec(1, v) for v in _noisy(rng, 30.0, 5, 0.3)]
    for latency in (0.0, 10.0):
        records += [rec(2, v, latency_ms=latency) for v in _noisy(rng, 20.0 + latency, 5, 0.3)]
        records += [rec(3, v, latency_ms=latency) for v in _noisy(rng, 15.0 + latency, 5, 0.3)]
    series = scaling(group_records(records))
    assert [s.latency for s in series] == ["0ms", "10ms"]
    zero = series[0]
    assert zero.baseline_nodes == 1
    assert zero.baseline_note is None
    assert zero.measurable
    assert [p.nodes for p in zero.points] == [1, 2, 3]
    base, two, three = zero.points
    assert base.speedup == 1.0
    assert two.speedup == pytest.approx(1.5, rel=0.03)
    assert three.speedup == pytest.approx(2.0, rel=0.03)
    assert three.efficiency == pytest.approx(three.speedup / 3)
    assert three.speedup_ci is not None
    assert three.speedup_ci[0] < 2.0 < three.speedup_ci[1]
    slow = series[1].points[2]
    assert slow.speedup == pytest.approx(30 / 25, rel=0.03)


def test_scaling_without_one_node_says_so_and_oversubscription_is_not_a_curve() -> None:
    records = [rec(2, 20.0 + i / 10, host_cores=2) for i in range(3)]
    records += [rec(3, 18.0 + i / 10, host_cores=2) for i in range(3)]
    (series,) = scaling(group_records(records))
    assert series.baseline_nodes == 2
    assert series.baseline_note == (
        "no 1-node runs: speedup is relative to the fewest nodes present (2)"
    )
    assert series.points[1].efficiency == pytest.approx(series.points[1].speedup * 2 / 3)
    assert not series.measurable
    assert series.note is not None
    assert series.note.startswith("oversubscribed: 3 nodes × 1 threads = 3 threads on a 2-core")
    assert "compute speedup cannot be measured" in series.note


# --- performance model ------------------------------------------------------------------------

TRUE = {
    "base_ms": 6.0,
    "compute_ms": 24.0,
    "per_worker_ms": 1.5,
    "delay_factor": 1.0,
    "transfer_factor": 1.0,
}
BYTES_PER_WORKER = 12_000.0


def true_tpot(nodes: int, delay_ms: float, bandwidth: int | None) -> float:
    t = TRUE
    transfer = 8 * BYTES_PER_WORKER * (nodes - 1) / bandwidth * 1000 if bandwidth else 0.0
    return (
        t["base_ms"]
        + t["compute_ms"] / nodes
        + t["per_worker_ms"] * (nodes - 1)
        + t["delay_factor"] * (nodes - 1) * 2 * delay_ms
        + t["transfer_factor"] * transfer
    )


def synthetic_sweep(
    *, noise_ms: float = 0.05, reps: int = 3, delays: tuple[float, ...] = (0, 5, 10, 20)
) -> list[RunRecord]:
    rng = random.Random(42)
    records = []
    for nodes in (1, 2, 3, 4):
        for bandwidth in (None, 10_000_000, 50_000_000):
            for delay in delays:
                if nodes == 1 and (delay or bandwidth):
                    continue
                for _ in range(reps):
                    records.append(
                        rec(
                            nodes,
                            true_tpot(nodes, delay, bandwidth) + rng.gauss(0, noise_ms),
                            latency_ms=delay,
                            bandwidth_bps=bandwidth if nodes > 1 else None,
                            net_bytes_per_token=BYTES_PER_WORKER * (nodes - 1),
                        )
                    )
    return records


def test_model_recovers_known_parameters_within_1_percent() -> None:
    fit = fit_model(synthetic_sweep())
    assert fit is not None
    assert fit.dropped == ()
    for name, value in TRUE.items():
        assert fit.params[name] == pytest.approx(value, rel=0.01), name
    assert fit.r2 is not None
    assert fit.r2 > 0.999
    assert fit.bytes_per_worker == pytest.approx(BYTES_PER_WORKER)
    assert not fit.round_trips_measured
    assert fit.nodes_tried == (1, 2, 3, 4)
    assert max(abs(r.relative) for r in fit.residuals) < 0.01
    # Beyond the host: 8 nodes, 3 ms, 100 Mbit/s.
    assert fit.predict(8, 3.0, 100_000_000) == pytest.approx(
        true_tpot(8, 3.0, 100_000_000), rel=0.01
    )


def test_model_uses_measured_round_trips() -> None:
    """Runs that recorded 2 round trips per worker per token: the delay term follows them."""
    rng = random.Random(5)
    records = []
    for nodes in (1, 2, 3):
        for delay in (0.0, 5.0, 10.0):
            for _ in range(3):
                trips = 2.0 * (nodes - 1)
                tpot = 10 + 20 / nodes + trips * 2 * delay + rng.gauss(0, 0.02)
                records.append(rec(nodes, tpot, latency_ms=delay, round_trips_per_token=trips))
    fit = fit_model(records)
    assert fit is not None
    assert fit.round_trips_measured
    assert fit.round_trips_per_unit == pytest.approx(2.0)
    assert fit.params["delay_factor"] == pytest.approx(1.0, rel=0.01)
    assert fit.predict(5, 4.0) == pytest.approx(10 + 4 + 8 * 8, rel=0.01)


def test_terms_the_data_cannot_identify_are_dropped() -> None:
    records = [rec(2, 20.0 + i * 0.01, latency_ms=5) for i in range(3)]
    records += [rec(3, 25.0 + i * 0.01, latency_ms=5) for i in range(3)]
    fit = fit_model(records)
    assert fit is not None
    assert set(fit.dropped) == {"per_worker_ms", "delay_factor", "transfer_factor"}
    assert fit.break_even(3).verdict == "never"
    assert "no 1-node runs: TPOT(1) and break-even rest on extrapolation" in fit.notes
    assert fit_model(records[:1]) is None


def test_break_even_on_a_synthetic_surface() -> None:
    fit = fit_model(synthetic_sweep(noise_ms=0.01))
    assert fit is not None
    for nodes in (2, 3, 4):
        # TPOT(1) = TPOT(N, 0) + 2 * d * (N - 1)  =>  d* = (TPOT(1) - TPOT(N, 0)) / (2 (N - 1))
        expected = (true_tpot(1, 0, None) - true_tpot(nodes, 0, None)) / (2 * (nodes - 1))
        be = fit.break_even(nodes)
        assert be.verdict == "break-even"
        assert be.delay_ms == pytest.approx(expected, rel=0.01)
        assert fit.predict(nodes, be.delay_ms or 0) == pytest.approx(fit.predict(1), rel=1e-9)
    # 20 nodes: the per-worker cost outweighs the split, slower even at 0 ms.
    assert true_tpot(20, 0, None) > true_tpot(1, 0, None)
    assert fit.break_even(20).verdict == "never"


def test_break_even_beyond_the_range_tried() -> None:
    fit = fit_model(synthetic_sweep(noise_ms=0.01, delays=(0, 0.5, 1)))
    assert fit is not None
    be = fit.break_even(2)
    assert be.verdict == "always within the range tried"
    assert be.delay_ms == pytest.approx(
        (true_tpot(1, 0, None) - true_tpot(2, 0, None)) / 2, rel=0.01
    )
    assert "(extrapolated)" in be.text


def test_refit_without_some_cells_predicts_them() -> None:
    records = synthetic_sweep(noise_ms=0.3)
    held_out = [r for r in records if r.rtt_delay_ms == 20.0]
    fit = fit_model([r for r in records if r.rtt_delay_ms != 20.0])
    assert fit is not None
    for res in group_residuals(fit, group_records(held_out)):
        assert abs(res.relative) < 0.02


# --- significance and compare ------------------------------------------------------------------


def test_significance_verdicts() -> None:
    rng = random.Random(9)
    fast = group_records([rec(3, v) for v in _noisy(rng, 20.0, 5, 0.4)])[0]
    slow = group_records([rec(3, v, latency_ms=5) for v in _noisy(rng, 40.0, 5, 0.4)])[0]
    same = group_records([rec(3, v, latency_ms=1) for v in _noisy(rng, 20.0, 5, 0.4)])[0]
    alone = group_records([rec(3, 20.0, latency_ms=2)])[0]
    c = compare_groups(fast, slow)
    assert c.verdict == "slower"
    t = c.tests["tpot_ms"]
    assert t.p_value is not None
    assert t.p_value < 1e-6
    ref = sps.ttest_ind(slow.values["tpot_ms"], fast.values["tpot_ms"], equal_var=False)
    assert t.p_value == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert t.effect_size is not None
    assert t.effect_size > 10
    assert t.diff_ci is not None
    assert t.diff is not None
    assert t.diff_ci[0] < t.diff < t.diff_ci[1]
    assert compare_groups(slow, fast).verdict == "faster"
    assert compare_groups(fast, same).verdict == "no significant difference"
    assert c.tests["ttft_ms"].verdict == "no significant difference"  # all TTFTs are 100
    assert compare_groups(fast, alone).verdict == "too few runs"


def test_compare_groups_repetitions_and_names_only_differing_config() -> None:
    records = [rec(3, 20.0 + i / 10) for i in range(3)]
    records += [rec(3, 30.0 + i / 10, latency_ms=5) for i in range(3)]
    result = compare(records)
    assert [g.n for g in result.groups] == [3, 3]
    assert result.differing == ("latency",)
    (pair,) = result.comparisons
    assert pair.verdict == "slower"
    data = result.to_dict()
    assert data["comparisons"][0]["tests"]["tpot_ms"]["verdict"] == "slower"


def test_analyze_to_dict_is_plain_json() -> None:
    import json

    data = analyze(synthetic_sweep()).to_dict()
    text = json.dumps(data, allow_nan=False)
    assert '"break_even"' in text
    assert data["fits"][0]["r2"] > 0.999
    assert {b["nodes"] for b in data["fits"][0]["break_even"]} == {2, 3, 4, 6, 8}


# --- loading from the database -----------------------------------------------------------------


def test_load_records_from_stored_runs(tmp_path: Path) -> None:
    from sqlalchemy import select

    from edgelab.analysis import record_from_run
    from edgelab.models import Run
    from edgelab.models.db import session_scope, upgrade
    from edgelab.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path)
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        for i, (nodes, latency) in enumerate([(1, 0.0), (3, 20.0), (3, 20.0)]):
            s.add(
                Run(
                    status="succeeded" if i else "failed",
                    model="m",
                    nodes=nodes,
                    threads=1,
                    latency={"kind": "fixed", "delay_ms": latency, "max_ms": 0.0},
                    latency_label=f"{latency:g}ms",
                    max_tokens=8,
                    prompt="p",
                    repetition=i,
                    fingerprint=f"f{nodes}",
                    tpot_ms=10.0 * (i + 1),
                    host_cores=2,
                    options={"flash_attn": True} if i == 2 else {},
                )
            )
    with session_scope(settings.database_url) as s:
        records = load_records(s, run_ids=[1, 2, 3])
        # The JSON columns are read as text and decoded once per value: the same as
        # the ORM's own decoding.
        orm = [record_from_run(r) for r in s.scalars(select(Run).order_by(Run.id))]
    assert [(r.rtt_delay_ms, r.options) for r in records] == [
        (r.rtt_delay_ms, r.options) for r in orm
    ]
    assert records[2].options == {"flash_attn": True}
    assert [(r.nodes, r.status, r.rtt_delay_ms) for r in records] == [
        (1, "failed", 0.0),
        (3, "succeeded", 40.0),
        (3, "succeeded", 40.0),
    ]
    assert records[1].metric("tpot_ms") == 20.0
    assert records[1].oversubscribed
    assert records[0].metric("ttft_ms") is None
    with pytest.raises(ValueError, match="sweep_id or run_ids"):
        load_records(s)


def test_compare_two_batches_of_one_configuration() -> None:
    """Two sweeps of the same configuration are two batches: tested, usually no difference."""
    rng = random.Random(21)
    records = [rec(3, v, sweep_id=1) for v in _noisy(rng, 20.0, 5, 0.4)]
    records += [rec(3, v, sweep_id=2) for v in _noisy(rng, 20.0, 5, 0.4)]
    result = compare(records)
    assert [(g.batch, g.n) for g in result.groups] == [(1, 5), (2, 5)]
    assert result.groups[1].label == "3 nodes × 1 thread · 0ms · sweep #2"
    assert result.differing == ("sweep_id",)
    ((la, lb, fields, pair),) = result.pairs
    assert (la, lb, fields) == ("A", "B", ["sweep_id"])
    assert pair.verdict == "no significant difference"
    ref = sps.ttest_ind(
        result.groups[1].values["tpot_ms"], result.groups[0].values["tpot_ms"], equal_var=False
    )
    assert pair.tests["tpot_ms"].p_value == pytest.approx(float(ref.pvalue), rel=1e-12)
    # In a sweep analysis the batches are one configuration.
    assert [g.n for g in analyze(records).groups] == [10]


def test_dllama_round_trips_overlap_across_links() -> None:
    """dllama syncs with all workers at once: 4 round trips per link per token cost 4
    delays, not 4 x (N - 1); the fit sees the per-link count."""
    rng = random.Random(17)
    records = []
    for nodes in (1, 2, 4):
        for delay in (0.0, 2.0, 5.0):
            for _ in range(3):
                tpot = 5 + 40 / nodes + (4 * 2 * delay if nodes > 1 else 0) + rng.gauss(0, 0.01)
                summed = 4.0 * (nodes - 1)
                records.append(
                    rec(
                        nodes, tpot, latency_ms=delay, engine="dllama", round_trips_per_token=summed
                    )
                )
    fit = fit_model(records)
    assert fit is not None
    assert fit.round_trips_per_unit == pytest.approx(4.0)
    assert fit.params["delay_factor"] == pytest.approx(1.0, rel=0.01)
    assert fit.predict(8, 1.0) == pytest.approx(5 + 5 + 8, rel=0.01)


def test_r2_over_configuration_means_ignores_repetition_noise() -> None:
    """Repetitions at ± 8 ms around an exact model: per-run R² suffers, the means' does not."""
    records = []
    for nodes in (1, 2, 3):
        for delay in (0.0, 10.0, 20.0):
            if nodes == 1 and delay:
                continue
            mean = true_tpot(nodes, delay, None)
            records += [rec(nodes, mean + e, latency_ms=delay) for e in (-8.0, 0.0, 8.0)]
    fit = fit_model(records)
    assert fit is not None
    assert fit.r2 is not None
    assert fit.r2 < 0.99
    assert fit.r2_means == pytest.approx(1.0, abs=1e-9)


def test_multi_node_groups_never_merge_what_the_fingerprint_separates() -> None:
    """Same listed fields, different fingerprints (e.g. a non-uniform topology): two groups;
    1-node runs merge across latencies whatever their fingerprints."""
    records = [rec(3, 20.0 + i / 10, fingerprint="aa") for i in range(3)]
    records += [rec(3, 30.0 + i / 10, fingerprint="bb") for i in range(3)]
    records += [rec(1, 40.0, latency_ms=d, fingerprint=f"one{d}") for d in (0, 5)]
    assert [g.n for g in group_records(records)] == [2, 3, 3]
    result = compare(records[:6])
    assert result.differing == ("fingerprint",)
