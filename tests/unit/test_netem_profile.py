"""Latency profile syntax, serialisation and reproducible sampling."""

from __future__ import annotations

import json
import statistics

import pytest

from edgelab.netem.profile import LatencyProfile, ProfileError, parse_bandwidth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0ms", LatencyProfile.fixed(0)),
        ("0", LatencyProfile.fixed(0)),
        ("20ms", LatencyProfile.fixed(20)),
        ("1.5ms", LatencyProfile.fixed(1.5)),
        ("250us", LatencyProfile.fixed(0.25)),
        ("1s", LatencyProfile.fixed(1000)),
        ("10ms..50ms", LatencyProfile.uniform(10, 50)),
        (" 10ms .. 50ms ", LatencyProfile.uniform(10, 50)),
        ("20ms~5ms", LatencyProfile.normal(20, 5)),
        ("20ms@100mbit", LatencyProfile.fixed(20, bandwidth_bps=100_000_000)),
        ("20ms/5ms", LatencyProfile.fixed(20, down=LatencyProfile.fixed(5))),
        (
            "10ms..50ms@1gbit/5ms~1ms",
            LatencyProfile.uniform(10, 50, bandwidth_bps=10**9, down=LatencyProfile.normal(5, 1)),
        ),
    ],
)
def test_parse_accepts_documented_forms(text: str, expected: LatencyProfile) -> None:
    assert LatencyProfile.parse(text) == expected


def test_degenerate_ranges_become_fixed_and_equal_directions_collapse() -> None:
    assert LatencyProfile.parse("20ms..20ms") == LatencyProfile.fixed(20)
    assert LatencyProfile.parse("20ms~0ms") == LatencyProfile.fixed(20)
    assert LatencyProfile.parse("20ms/20ms").down is None
    assert LatencyProfile.parse("20ms/20ms").label == "20ms"


@pytest.mark.parametrize(
    "text",
    ["", "fast", "20", "20 parsecs", "-5ms", "50ms..10ms", "1ms/2ms/3ms", "20ms@", "20ms@9mbps"],
)
def test_parse_rejects_bad_syntax_and_lists_accepted_forms(text: str) -> None:
    with pytest.raises(ProfileError) as info:
        LatencyProfile.parse(text)
    message = str(info.value)
    if "min <= max" not in message and "bandwidth" not in message:
        assert "10ms..50ms" in message
        assert "20ms~5ms" in message


def test_bandwidth_option_applies_to_both_directions_or_per_direction() -> None:
    both = LatencyProfile.parse("20ms/5ms", bandwidth="100mbit")
    assert both.direction("up").bandwidth_bps == 100_000_000
    assert both.direction("down").bandwidth_bps == 100_000_000
    split = LatencyProfile.parse("20ms", bandwidth="100mbit/10mbit")
    assert split.direction("up").bandwidth_bps == 100_000_000
    assert split.direction("down").bandwidth_bps == 10_000_000
    assert split.direction("down").delay_ms == 20


def test_bandwidth_given_twice_is_an_error() -> None:
    with pytest.raises(ProfileError, match="bandwidth given twice"):
        LatencyProfile.parse("20ms@1gbit", bandwidth="100mbit")


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100mbit", 10**8),
        ("1gbit", 10**9),
        ("500kbit", 500_000),
        ("1.5mbit", 1_500_000),
        ("64", 64),
    ],
)
def test_parse_bandwidth(text: str, bps: int) -> None:
    assert parse_bandwidth(text) == bps


@pytest.mark.parametrize("text", ["", "fast", "0mbit", "10mbps", "10MB/s", "-1mbit"])
def test_parse_bandwidth_rejects_bad_rates(text: str) -> None:
    with pytest.raises(ProfileError, match="bandwidth"):
        parse_bandwidth(text)


@pytest.mark.parametrize(
    "text",
    [
        "0ms",
        "20ms",
        "0.25ms",
        "10ms..50ms",
        "20ms~5ms",
        "20ms@100mbit",
        "1ms@1234bit/2ms..3ms@1kbit",
    ],
)
def test_label_and_dict_round_trip(text: str) -> None:
    profile = LatencyProfile.parse(text, seed=7)
    assert profile.label == text
    assert LatencyProfile.parse(profile.label, seed=7) == profile
    assert LatencyProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_constructor_validates_values() -> None:
    with pytest.raises(ProfileError, match="min <= max"):
        LatencyProfile.uniform(50, 10)
    with pytest.raises(ProfileError, match=">= 0"):
        LatencyProfile.fixed(-1)
    with pytest.raises(ProfileError, match="kind"):
        LatencyProfile.from_dict({"kind": "pareto"})
    with pytest.raises(ProfileError, match="unknown latency profile keys"):
        LatencyProfile.from_dict({"kind": "fixed", "delay": 3})
    with pytest.raises(ProfileError, match="down profile"):
        LatencyProfile.fixed(1, down=LatencyProfile.fixed(2, seed=1))


def test_same_seed_same_sequence_and_directions_independent() -> None:
    profile = LatencyProfile.parse("10ms..50ms", seed=42)
    first = [next(profile.sampler("up")) for _ in range(1)]
    a = profile.sampler("up")
    b = LatencyProfile.parse("10ms..50ms", seed=42).sampler("up")
    seq_a = [next(a) for _ in range(100)]
    assert seq_a == [next(b) for _ in range(100)]
    assert seq_a[:1] == first
    down = profile.sampler("down")
    assert seq_a != [next(down) for _ in range(100)]
    other_stream = profile.sampler("up", stream=1)
    assert seq_a != [next(other_stream) for _ in range(100)]
    other_seed = LatencyProfile.parse("10ms..50ms", seed=43).sampler("up")
    assert seq_a != [next(other_seed) for _ in range(100)]


def test_samples_stay_in_range_and_in_seconds() -> None:
    uniform = LatencyProfile.parse("10ms..50ms", seed=1).sampler("up")
    values = [next(uniform) for _ in range(2000)]
    assert all(0.010 <= v <= 0.050 for v in values)
    assert statistics.mean(values) == pytest.approx(0.030, abs=0.002)
    fixed = LatencyProfile.parse("20ms/5ms").sampler("down")
    assert next(fixed) == pytest.approx(0.005)


def test_normal_is_truncated_at_zero_not_clamped() -> None:
    sampler = LatencyProfile.parse("1ms~5ms", seed=3).sampler("up")
    values = [next(sampler) for _ in range(2000)]
    assert min(values) >= 0
    # Clamping would put a large share of the draws at exactly 0.
    assert sum(v == 0 for v in values) < 5


def test_passthrough_only_when_nothing_is_delayed_or_paced() -> None:
    assert LatencyProfile.parse("0ms").is_passthrough
    assert not LatencyProfile.parse("0ms/1ms").is_passthrough
    assert not LatencyProfile.parse("0ms", bandwidth="1gbit").is_passthrough
    assert not LatencyProfile.parse("0ms..1ms").is_passthrough
