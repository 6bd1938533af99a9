"""Metric definitions on hand-made token timelines."""

from __future__ import annotations

import pytest

from edgelab.metrics.timeline import compute, net_bytes_per_token, percentile


def test_metrics_of_a_regular_timeline() -> None:
    # First token after 100 ms, then one every 20 ms: 5 tokens end at 180 ms.
    m = compute([100.0, 120.0, 140.0, 160.0, 180.0], prompt_tokens=10)
    assert m.ttft_ms == 100.0
    assert m.e2el_ms == 180.0
    assert m.tpot_ms == pytest.approx(20.0)
    assert m.itl_mean_ms == pytest.approx(20.0)
    assert m.itl_p50_ms == pytest.approx(20.0)
    assert m.itl_p99_ms == pytest.approx(20.0)
    assert m.output_tokens == 5
    assert m.prefill_tps == pytest.approx(100.0)  # 10 tokens in 0.1 s
    assert m.decode_tps == pytest.approx(50.0)  # 4 tokens in 0.08 s


def test_itl_percentiles_see_a_slow_token() -> None:
    offsets = [0.0]
    for i in range(1, 101):
        offsets.append(offsets[-1] + (110.0 if i == 100 else 10.0))
    m = compute(offsets, prompt_tokens=1)
    assert m.itl_p50_ms == pytest.approx(10.0)
    assert m.itl_p90_ms == pytest.approx(10.0)
    assert m.itl_p99_ms == pytest.approx(11.0)  # interpolated between rank 98 and 99
    assert m.itl_mean_ms == pytest.approx(11.0)
    assert m.tpot_ms == pytest.approx(m.itl_mean_ms)


def test_single_token_has_no_decode_metrics() -> None:
    m = compute([42.0], prompt_tokens=3)
    assert m.ttft_ms == m.e2el_ms == 42.0
    assert m.tpot_ms is None
    assert m.itl_p50_ms is None
    assert m.decode_tps is None
    assert m.output_tokens == 1


def test_no_tokens() -> None:
    m = compute([], prompt_tokens=3)
    assert m.output_tokens == 0
    assert m.ttft_ms is None
    assert m.prefill_tps is None


def test_offsets_must_not_go_backwards() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        compute([10.0, 5.0], prompt_tokens=1)


def test_percentile_edges() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


def test_net_bytes_per_token() -> None:
    assert net_bytes_per_token(1000, 4) == 250.0
    assert net_bytes_per_token(1000, 0) is None
