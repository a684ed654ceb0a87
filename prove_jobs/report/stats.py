"""How sure the report is about a difference between recipes trained over several seeds.

A single mIoU per variant hides the seed-to-seed spread, which on Cityscapes can be as large
as the differences the report is asked about. With several seeds a variant's cell reads
``mean ± std (n=k)`` and each difference to the reference gets a 95% interval from Welch's t
(the variants need not share a variance nor a seed count). One seed on a side gives no
interval: the verdict then says ``single run`` rather than pretend.

Standard library only: the login node has no scipy, so the Student t quantile for Welch's
non-integer degrees of freedom is computed here from the regularized incomplete beta function.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

METHOD = "Welch's t (unequal variances), 95%"

_EPS = 1e-15
_TINY = 1e-300


@dataclass(frozen=True)
class SeedStats:
    """One variant's final mIoU over its seeds; ``std`` is the sample one (n-1), None below two seeds."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float
    values: tuple[float, ...]

    def cell(self) -> str:
        """The Markdown cell: one seed reads as the report always has (``76.84%``), so old reports stay comparable."""
        if self.std is None:
            return f"{self.mean:.2f}%"
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"

    def to_json(self) -> dict[str, Any]:
        """Rounded to 4 decimals: mIoU logs carry no more, and the JSON output stays diff-friendly."""
        return {"n": self.n, "mean": round(self.mean, 4), "std": None if self.std is None else round(self.std, 4),
                "min": round(self.min, 4), "max": round(self.max, 4), "values": [round(v, 4) for v in self.values]}


def summarize(values: Sequence[float]) -> SeedStats | None:
    """The seeds' statistics, or None when no seed has finished (the cell then shows the run's state)."""
    if not values:
        return None
    vals = tuple(float(v) for v in values)
    std = statistics.stdev(vals) if len(vals) >= 2 else None
    return SeedStats(n=len(vals), mean=statistics.fmean(vals), std=std, min=min(vals), max=max(vals), values=vals)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, modified Lentz (Numerical Recipes ``betacf``)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b); the fraction converges fast only below (a+1)/(a+b+2), hence the swap."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: Student's t through the incomplete beta, valid for non-integer df."""
    return 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))


def _t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, for p in (0.5, 1); bisection, as the tail is monotone and cheap."""
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        if _t_upper_tail(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


NO_SPREAD = "n/a (no spread between seeds)"


def difference_ci95(ref: Sequence[float], other: Sequence[float]) -> tuple[float, float] | None:
    """95% interval of mean(other) - mean(ref) by Welch's t; None below two seeds on a side, and where the seeds
    have no spread Welch's degrees of freedom can be computed from (all equal, or so close that the variances'
    squares underflow: seeds at mIoU 0 and 1e-90 divided 0 by 0)."""
    if len(ref) < 2 or len(other) < 2:
        return None
    d = statistics.fmean(other) - statistics.fmean(ref)
    v_ref = statistics.variance(ref) / len(ref)
    v_other = statistics.variance(other) / len(other)
    se2 = v_ref + v_other
    spread = v_ref * v_ref / (len(ref) - 1) + v_other * v_other / (len(other) - 1)
    if spread == 0.0 or not math.isfinite(spread) or not math.isfinite(d):
        return None
    # Welch's df lies between the smaller side's n-1 and n1+n2-2; rounding at the edge of float range must not
    # push it out (a df near 0 would send the quantile's search to infinity)
    df = min(max(se2 * se2 / spread, min(len(ref), len(other)) - 1.0), len(ref) + len(other) - 2.0)
    half = _t_quantile(0.975, df) * math.sqrt(se2)
    return (d - half, d + half)


def verdict(diff: float, ci: tuple[float, float] | None, n_ref: int, n_other: int) -> str:
    """What the difference means: ``single run`` when a side has one seed, so one lucky seed is not read as a win;
    n/a where the seeds have no spread to judge by."""
    if min(n_ref, n_other) < 2:
        return "single run"
    if ci is None:
        return NO_SPREAD
    low, high = ci
    if low > 0:
        return "better than reference"
    if high < 0:
        return "worse than reference"
    return "within noise"


def interval_text(diff: float, ci: tuple[float, float] | None) -> str:
    """``-4.00 [-5.1, -2.9]``: the interval with one decimal, as seed noise makes a second one meaningless."""
    if ci is None:
        return f"{diff:+.2f}"
    return f"{diff:+.2f} [{ci[0]:.1f}, {ci[1]:.1f}]"
