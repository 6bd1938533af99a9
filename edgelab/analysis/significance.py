"""Is configuration B faster than A? Welch's t-test per metric, with effect size and CI.

For each of TPOT and TTFT: Welch's unequal-variance t-test on the per-run values
(two-sided, alpha 0.05), Hedges' g as the effect size, and a seeded percentile
bootstrap CI of mean(B) - mean(A). The verdict is about B relative to A:

- ``faster`` / ``slower``: p < alpha and B's mean is lower / higher (for TPOT and
  TTFT lower is faster; for decode tokens/s higher is faster);
- ``no significant difference``: p >= alpha (this is not proof of equality: with
  few runs only large differences can be detected);
- ``too few runs``: fewer than :data:`MIN_RUNS_FOR_TEST` runs on a side.

Several pairs on one page are several tests: with 10 pairs at alpha 0.05 about
one "significant" verdict in two pages is luck. The p-values are shown so a
reader can apply a correction; none is applied here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any, Literal

from edgelab.analysis.groups import Group
from edgelab.analysis.records import LOWER_IS_BETTER
from edgelab.analysis.stats import bootstrap_diff_ci, hedges_g, welch

ALPHA = 0.05
MIN_RUNS_FOR_TEST = 2
TESTED_METRICS: tuple[str, ...] = ("tpot_ms", "ttft_ms")
Verdict = Literal["faster", "slower", "no significant difference", "too few runs"]


@dataclass(frozen=True)
class MetricTest:
    """B vs A on one metric (``diff`` = mean(B) - mean(A), ``relative`` = diff / mean(A))."""

    metric: str
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    relative: float | None
    diff_ci: tuple[float, float] | None
    t: float | None
    df: float | None
    p_value: float | None
    effect_size: float | None  # Hedges' g of B - A
    verdict: Verdict

    @property
    def significant(self) -> bool:
        return self.verdict in ("faster", "slower")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"significant": self.significant}


def compare_values(
    a: Sequence[float], b: Sequence[float], metric: str = "tpot_ms", *, alpha: float = ALPHA
) -> MetricTest:
    """Compare per-run values ``b`` against ``a`` for one metric."""
    mean_a = sum(a) / len(a) if a else None
    mean_b = sum(b) / len(b) if b else None
    diff = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    relative = diff / mean_a if diff is not None and mean_a else None
    if len(a) < MIN_RUNS_FOR_TEST or len(b) < MIN_RUNS_FOR_TEST:
        return MetricTest(
            metric, len(a), len(b), mean_a, mean_b, diff, relative,
            None, None, None, None, None, "too few runs",
        )  # fmt: skip
    result = welch(a, b)
    verdict: Verdict
    if result.p_value >= alpha or diff is None or diff == 0:
        verdict = "no significant difference"
    else:
        b_lower = diff < 0
        verdict = "faster" if b_lower == (metric in LOWER_IS_BETTER) else "slower"
    return MetricTest(
        metric=metric,
        n_a=len(a),
        n_b=len(b),
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        relative=relative,
        diff_ci=bootstrap_diff_ci(a, b),
        t=result.t,
        df=result.df,
        p_value=result.p_value,
        effect_size=hedges_g(a, b),
        verdict=verdict,
    )


@dataclass(frozen=True)
class Comparison:
    """Group B against group A on :data:`TESTED_METRICS`; ``verdict`` is TPOT's."""

    a: Group
    b: Group
    tests: dict[str, MetricTest]

    @property
    def verdict(self) -> Verdict:
        return self.tests["tpot_ms"].verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"label": self.a.label, "run_ids": list(self.a.run_ids), "n": self.a.n},
            "b": {"label": self.b.label, "run_ids": list(self.b.run_ids), "n": self.b.n},
            "verdict": self.verdict,
            "tests": {m: t.to_dict() for m, t in self.tests.items()},
        }


def compare_groups(
    a: Group, b: Group, metrics: Sequence[str] = TESTED_METRICS, *, alpha: float = ALPHA
) -> Comparison:
    """Welch tests of B vs A on each metric (TPOT first: it decides ``verdict``)."""
    names = ("tpot_ms", *[m for m in metrics if m != "tpot_ms"])
    return Comparison(
        a, b, {m: compare_values(a.values[m], b.values[m], m, alpha=alpha) for m in names}
    )


def pairwise(groups: Sequence[Group], *, alpha: float = ALPHA) -> list[Comparison]:
    """Every pair of groups (in order: the later one as B against the earlier one)."""
    return [compare_groups(a, b, alpha=alpha) for a, b in combinations(groups, 2)]
