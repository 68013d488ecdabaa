"""slimbench.stats against hand-computed values (arithmetic shown beside each literal)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slimbench.stats import (
    bootstrap_ratio_ci,
    discordant_counts,
    mann_whitney_u,
    mcnemar_exact,
    median_iqr,
    relative_change,
    wilson_interval,
)

# z = Phi^-1(0.975) = 1.959964, z^2 = 3.841459


# --- Wilson -----------------------------------------------------------------


def test_wilson_8_of_10():
    # p = 0.8, n = 10: denom = 1 + 3.841459/10 = 1.384146
    # centre = (0.8 + 3.841459/20) / 1.384146 = 0.992073 / 1.384146 = 0.716740
    # half = 1.959964 / 1.384146 * sqrt(0.8*0.2/10 + 3.841459/400)
    #      = 1.416009 * sqrt(0.016 + 0.0096036) = 1.416009 * 0.160011 = 0.226578
    # -> (0.716740 - 0.226578, 0.716740 + 0.226578) = (0.490162, 0.943318)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_zero_correct_has_lower_bound_exactly_zero():
    # p = 0: centre = half = (3.841459/20) / 1.384146 = 0.138766 -> upper = 0.277533
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)


def test_wilson_all_correct_has_upper_bound_exactly_one():
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(1 - 0.2775, abs=1e-4)  # mirror image of 0 of 10


def test_wilson_no_images():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_1000_images_at_half_is_about_3_points():
    # centre = 0.5 exactly; half = 1.959964 / 1.003841 * sqrt(0.25/1000 + 3.841459/4e6)
    #        = 1.952464 * sqrt(0.000250960) = 1.952464 * 0.0158417 = 0.030930
    low, high = wilson_interval(500, 1000)
    assert (low + high) / 2 == pytest.approx(0.5, abs=1e-12)
    assert (high - low) / 2 == pytest.approx(0.03093, abs=1e-4)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


# --- McNemar ----------------------------------------------------------------


def test_mcnemar_small_cases():
    # n = 6, k = 1: 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * (1 + 6) / 64 = 0.21875
    assert mcnemar_exact(1, 5) == 0.21875
    assert mcnemar_exact(5, 1) == 0.21875  # symmetric in b and c
    # n = 6, k = 0: 2 * 1 / 64 = 0.03125
    assert mcnemar_exact(0, 6) == 0.03125


def test_mcnemar_equal_counts_capped_at_one():
    # b = c = 3: 2 * (1 + 6 + 15 + 20) / 64 = 84/64 > 1 -> capped at 1
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_mcnemar_large_counts_stay_finite():
    # 2^1900 overflows a float; exact integers keep a sensible p (about 0.023).
    p = mcnemar_exact(900, 1000)
    assert math.isfinite(p)
    assert 0.0 < p < 1.0
    assert 0.01 < p < 0.05


def test_discordant_counts():
    labels = np.array([0, 1, 2, 3, 4, 5])
    old = np.array([0, 1, 9, 9, 4, 5])  # right on items 0, 1, 4, 5
    new = np.array([0, 9, 2, 9, 9, 9])  # right on items 0, 2
    # b = old right & new wrong: items 1, 4, 5 -> 3; c = old wrong & new right: item 2 -> 1
    assert discordant_counts(labels, old, new) == (3, 1)
    assert discordant_counts(labels, new, old) == (1, 3)  # swapping the models swaps b and c
    assert discordant_counts(labels, old, labels) == (0, 2)  # an oracle fixes items 2, 3


def test_discordant_counts_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        discordant_counts(np.zeros(3), np.zeros(3), np.zeros(4))


# --- Mann-Whitney -----------------------------------------------------------


def test_mann_whitney_separated_samples():
    # U_x = (1+2+3) - 3*4/2 = 0; mu = 3*3/2 = 4.5; sigma = sqrt(3*3*7/12) = sqrt(5.25) = 2.291288
    # z = (|0 - 4.5| - 0.5) / 2.291288 = 1.745743; p = 2 * (1 - Phi(1.745743)) = 0.080856
    u, p = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert u == 0.0
    assert p == pytest.approx(0.080856, abs=1e-6)
    u_rev, p_rev = mann_whitney_u([4, 5, 6], [1, 2, 3])
    assert u_rev == 9.0  # n_x * n_y - 0
    assert p_rev == pytest.approx(p)


def test_mann_whitney_with_ties():
    # pooled 1, 2, 2, 2, 3, 4 -> ranks 1, 3, 3, 3, 5, 6 (three 2s share (2+3+4)/3 = 3)
    # R_x = 1 + 3 + 3 = 7 -> U_x = 7 - 6 = 1; larger U = 9 - 1 = 8
    # tie term = (3^3 - 3) / (6*5) = 0.8; sigma^2 = 9/12 * (7 - 0.8) = 4.65, sigma = 2.156386
    # z = (8 - 4.5 - 0.5) / 2.156386 = 1.391217; p = 2 * (1 - Phi(1.391217)) = 0.164160
    u, p = mann_whitney_u([1, 2, 2], [2, 3, 4])
    assert u == 1.0
    assert p == pytest.approx(0.164160, abs=1e-6)


def test_mann_whitney_identical_values():
    assert mann_whitney_u([3.0, 3.0], [3.0, 3.0, 3.0]) == (3.0, 1.0)  # all share mid-rank 3: U_x = 3+3 - 2*3/2 = 3; var = 0


def test_mann_whitney_empty():
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


def test_mann_whitney_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(0.0, 1.0, 17), 1)  # rounding creates ties
    y = np.round(rng.normal(0.4, 1.0, 23), 1)
    ref = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
    u, p = mann_whitney_u(x, y)
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


# --- bootstrap, median/IQR, relative change ---------------------------------


def test_bootstrap_constant_ratio_is_exact():
    assert bootstrap_ratio_ci([2.0] * 10, [1.0] * 10) == (2.0, 2.0)


def _noisy_rounds(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = 1.0 + 0.05 * rng.random(n)
    case = 0.5 * ref * (1.0 + 0.1 * rng.standard_normal(n))
    return ref, case


def test_bootstrap_is_deterministic_and_contains_point_estimate():
    ref, case = _noisy_rounds()
    first = bootstrap_ratio_ci(ref, case, seed=7)
    assert first == bootstrap_ratio_ci(ref, case, seed=7)
    point = np.median(ref) / np.median(case)  # speed-up, about 2
    low, high = first
    assert low < point < high
    assert 1.5 < low and high < 2.5


def test_bootstrap_length_mismatch():
    with pytest.raises(ValueError, match="paired"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0])


def test_median_iqr():
    # sorted 1..5: median 3; Q1 = 2, Q3 = 4 (linear interpolation at positions 1 and 3) -> IQR 2
    assert median_iqr([5, 1, 4, 2, 3]) == (3.0, 2.0)


def test_relative_change_identical_runs():
    ref, case = _noisy_rounds()
    out = relative_change(case, ref, case, ref)
    assert out["ratio"] == 1.0
    assert out["p"] == 1.0  # U = n^2 / 2 exactly: continuity correction caps p at 1
    low, high = out["ci95"]
    assert low <= 1.0 <= high


def test_relative_change_detects_slowdown():
    ref, case = _noisy_rounds(seed=0)
    new_ref, new_case = _noisy_rounds(seed=1)
    out = relative_change(case, ref, 1.5 * new_case, new_ref)
    assert out["ratio"] == pytest.approx(1.5, rel=0.1)
    low, high = out["ci95"]
    assert 1.0 < low <= out["ratio"] <= high
    assert out["p"] < 0.01


def test_relative_change_cancels_machine_drift():
    # Same case/ref ratio, but the whole machine is 2x slower in the new run.
    ref, case = _noisy_rounds(seed=0)
    new_ref, new_case = _noisy_rounds(seed=1)
    out = relative_change(case, ref, 2.0 * new_case, 2.0 * new_ref)
    assert out["ratio"] == pytest.approx(1.0, abs=0.1)
    low, high = out["ci95"]
    assert low < 1.0 < high
