"""Small-sample statistics: summaries with Student-t intervals, Welch's test, bootstrap.

Experiments here have a handful of repetitions per configuration (3-10), so
intervals use Student's t rather than the normal quantile (which would be ~30 %
too narrow at n = 3), and differences use Welch's t-test, which does not assume
the two configurations are equally noisy (a 3-node run over a jittery link is
noisier than a 1-node run). Bootstraps use a fixed seed so the same stored runs
always give the same numbers on every page, the API and the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

CONFIDENCE = 0.95
#: Coefficient of variation above which a configuration is flagged "noisy" (AIPerf's 5 %).
NOISY_CV = 0.05
BOOTSTRAP_SEED = 12
BOOTSTRAP_RESAMPLES = 4000


def _special() -> Any:
    # Student's t from scipy.special (the C functions scipy.stats.t itself calls), on
    # first use: importing scipy.stats costs ~2 s on this host (~0.5 s for
    # scipy.special), which every `edgelab report` and `runs compare` paid at start-up.
    from scipy import special

    return special


@lru_cache(maxsize=512)
def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value (cached: pages ask for the same few df)."""
    return float(_special().stdtrit(df, 0.5 + confidence / 2))


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom (as scipy's t-tests)."""
    return float(2.0 * _special().stdtr(df, -abs(t)))


@dataclass(frozen=True)
class Summary:
    """n, mean, sample sd, CV and a two-sided Student-t CI of the mean.

    With n = 1 only the mean is known (``sd``, ``cv`` and the CI are ``None``);
    with n = 0 everything but ``n`` is ``None``. ``cv`` is sd / |mean|.
    """

    n: int
    mean: float | None
    sd: float | None
    cv: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2

    @property
    def noisy(self) -> bool:
        return self.cv is not None and self.cv > NOISY_CV

    def to_dict(self) -> dict[str, Any]:
        # Written out: dataclasses.asdict deep-copies and costs ~10x on a 1,000-run page.
        return {
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "cv": self.cv,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "half_width": self.half_width,
        }


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Summary of one configuration's per-run values (finite numbers only)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None, None, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, None, None, None, None, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(n - 1, confidence) * sd / math.sqrt(n)
    cv = sd / abs(mean) if mean != 0 else None
    return Summary(n, mean, sd, cv, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of mean(b) - mean(a)."""

    t: float
    df: float
    p_value: float


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's t-test, two-sided; needs at least 2 values on each side.

    Identical, zero-spread samples are "no difference" (p = 1); zero-spread
    samples with different means are a certain difference (p = 0) - scipy
    returns NaN for both, which no page could show.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least 2 runs on each side")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    diff = float(xb.mean() - xa.mean())
    if va + vb == 0:
        if diff == 0:
            return WelchResult(0.0, float(len(xa) + len(xb) - 2), 1.0)
        return WelchResult(math.copysign(math.inf, diff), float(len(xa) + len(xb) - 2), 0.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    return WelchResult(float(t), float(df), t_two_sided_p(t, df))


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standardised mean difference (b - a) / pooled sd with Hedges' small-sample correction.

    ``None`` when the pooled sd is 0 (no spread to measure the difference against).
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = math.sqrt(((na - 1) * xa.var(ddof=1) + (nb - 1) * xb.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return None
    correction = 1 - 3 / (4 * (na + nb) - 9)
    return float((xb.mean() - xa.mean()) / pooled * correction)


def bootstrap_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of mean(b) - mean(a), resampling runs within each side.

    Seeded, so it is reproducible. With very few runs the bootstrap is too narrow
    (it cannot see spread it never sampled); the Welch p-value is the verdict and
    this interval is shown beside it.
    """
    if not a or not b:
        return None
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ma = xa[rng.integers(0, len(xa), size=(resamples, len(xa)))].mean(axis=1)
    mb = xb[rng.integers(0, len(xb), size=(resamples, len(xb)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(mb - ma, [tail, 100 - tail])
    return float(low), float(high)


def ratio_ci(
    num: Summary, den: Summary, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """CI of mean(num) / mean(den) by the delta method on the log ratio.

    Var(log(m_num / m_den)) ~ cv_num^2 / n_num + cv_den^2 / n_den; the t quantile
    uses Welch-Satterthwaite degrees of freedom of those two terms, so a ratio of
    two 3-run means gets an honest (wide) interval. Deterministic, and cheap enough
    for a 1,000-run sweep page. ``None`` if either side has fewer than 2 runs or a
    non-positive mean.
    """
    if num.n < 2 or den.n < 2 or not num.mean or not den.mean:
        return None
    if num.mean <= 0 or den.mean <= 0 or num.sd is None or den.sd is None:
        return None
    vn = (num.sd / num.mean) ** 2 / num.n
    vd = (den.sd / den.mean) ** 2 / den.n
    ratio = num.mean / den.mean
    if vn + vd == 0:
        return ratio, ratio
    df = (vn + vd) ** 2 / (vn**2 / (num.n - 1) + vd**2 / (den.n - 1))
    half = t_quantile(df, confidence) * math.sqrt(vn + vd)
    return ratio * math.exp(-half), ratio * math.exp(half)
