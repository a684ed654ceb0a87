"""The seed statistics against textbook numbers, worked out here rather than by the module's own helpers.

Student t quantiles t_0.975(df) come from a printed table (4 decimals); for a non-integer Welch df
the quantile is scipy's ``stats.t.ppf(0.975, df)``, written down as a literal.
"""

from __future__ import annotations

import math
import statistics

import pytest

from prove_jobs.report.stats import METHOD, SeedStats, difference_ci95, interval_text, summarize, verdict

T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 10: 2.2281, 30: 2.0423}


def _summary(values: list[float]) -> SeedStats:
    stats = summarize(values)
    assert stats is not None
    return stats


def test_summarize_one_seed_reads_as_the_report_does_today() -> None:
    stats = _summary([76.84])
    assert stats == SeedStats(n=1, mean=76.84, std=None, min=76.84, max=76.84, values=(76.84,))
    assert stats.cell() == "76.84%"


def test_summarize_several_seeds_uses_the_sample_std() -> None:
    values = [76.84, 77.31, 76.50]
    stats = _summary(values)
    assert stats.n == 3
    assert stats.mean == pytest.approx(sum(values) / 3)
    assert stats.std == pytest.approx(statistics.stdev(values))
    by_hand = math.sqrt(sum((v - sum(values) / 3) ** 2 for v in values) / 2)
    assert stats.std == pytest.approx(by_hand)
    assert (stats.min, stats.max, stats.values) == (76.50, 77.31, (76.84, 77.31, 76.50))
    assert stats.cell() == f"{sum(values) / 3:.2f} ± {by_hand:.2f} (n=3)"
    assert _summary([76.0, 77.0, 77.5]).cell() == "76.83 ± 0.76 (n=3)"


def test_summarize_nothing_is_none() -> None:
    assert summarize([]) is None


def test_to_json_rounds_to_four_decimals() -> None:
    assert _summary([1.234567, 2.0]).to_json() == {  # |2 - 1.234567| / sqrt(2)
        "n": 2, "mean": 1.6173, "std": 0.5412, "min": 1.2346, "max": 2.0, "values": [1.2346, 2.0]}
    assert _summary([76.84]).to_json()["std"] is None


@pytest.mark.parametrize("n", [2, 3, 6, 16])
def test_equal_n_equal_variance_gives_the_table_quantile(n: int) -> None:
    """Equal sizes and sample variances: Welch's df is exactly 2(n-1), so the interval uses the table value."""
    ref = [70.0 + 0.37 * i + (0.9 if i % 2 else 0.0) for i in range(n)]
    shift = -4.0
    other = [v + shift for v in ref]
    df = 2 * (n - 1)
    half = T_TABLE[df] * math.sqrt(2 * statistics.variance(ref) / n)
    ci = difference_ci95(ref, other)
    assert ci is not None
    low, high = ci
    assert (low + high) / 2 == pytest.approx(shift)
    assert (high - low) / 2 == pytest.approx(half, rel=5e-5)


def test_one_side_without_spread_leaves_the_other_sides_df() -> None:
    """Other has no spread: df = n_ref - 1 = 1, the heaviest tail in the table."""
    ci = difference_ci95([0.0, 2.0], [5.0, 5.0])
    assert ci is not None
    half = T_TABLE[1] * math.sqrt(2.0 / 2)
    assert ci == pytest.approx((4.0 - half, 4.0 + half), rel=1e-5)


def test_unequal_variances_integer_welch_df() -> None:
    ref, other = [0.0, 2.0], [9.0, 9.0, 9.0, 13.0]
    v_ref, v_other = 2.0 / 2, 4.0 / 4  # sample variances 2 and 4
    assert (statistics.variance(ref), statistics.variance(other)) == (2.0, 4.0)
    df = (v_ref + v_other) ** 2 / (v_ref**2 / 1 + v_other**2 / 3)
    assert df == pytest.approx(3.0)
    half = 3.182 * math.sqrt(v_ref + v_other)
    ci = difference_ci95(ref, other)
    assert ci is not None
    assert ci == pytest.approx((9.0 - half, 9.0 + half), abs=1e-3)


def test_unequal_variances_non_integer_welch_df() -> None:
    ref, other = [76.84, 77.31, 76.50], [74.20, 71.95, 73.40]
    v_ref, v_other = statistics.variance(ref) / 3, statistics.variance(other) / 3
    df = (v_ref + v_other) ** 2 / (v_ref**2 / 2 + v_other**2 / 2)
    assert df == pytest.approx(2.5006, abs=1e-4)
    t = 3.574038  # scipy.stats.t.ppf(0.975, 2.500603)
    d = statistics.fmean(other) - statistics.fmean(ref)
    half = t * math.sqrt(v_ref + v_other)
    ci = difference_ci95(ref, other)
    assert ci == pytest.approx((d - half, d + half), abs=1e-5)
    assert ci == pytest.approx((-6.198648, -1.201352), abs=1e-5)  # scipy ttest_ind(equal_var=False)


def test_zero_variance_on_both_sides_is_n_a() -> None:
    # issue 19: no spread is nothing to judge by (Welch's df is 0/0), not a certain difference
    assert difference_ci95([75.0, 75.0], [76.5, 76.5, 76.5]) is None
    assert verdict(1.5, None, 2, 3) == "n/a (no spread between seeds)"


def test_fewer_than_two_seeds_gives_no_interval() -> None:
    assert difference_ci95([75.0], [76.0, 77.0]) is None
    assert difference_ci95([75.0, 76.0], [77.0]) is None
    assert difference_ci95([], []) is None


def test_verdicts() -> None:
    assert verdict(1.0, None, 1, 3) == "single run"
    assert verdict(1.0, (0.5, 1.5), 1, 3) == "single run"
    assert verdict(0.2, (-0.3, 0.7), 3, 3) == "within noise"
    assert verdict(0.0, (0.0, 0.0), 2, 2) == "within noise"
    assert verdict(1.0, (0.2, 1.8), 3, 3) == "better than reference"
    assert verdict(-4.0, (-5.1, -2.9), 3, 3) == "worse than reference"


def test_interval_text() -> None:
    assert interval_text(-4.0, (-5.1, -2.9)) == "-4.00 [-5.1, -2.9]"
    assert interval_text(0.5, (-0.26, 1.26)) == "+0.50 [-0.3, 1.3]"
    assert interval_text(-4.0, None) == "-4.00"


def test_method_is_quoted() -> None:
    assert METHOD == "Welch's t (unequal variances), 95%"
