"""Small, dependency-light statistics for judging benchmark differences.

Accuracy differences between two models on the same images are judged with
Wilson intervals and the exact McNemar test; latency differences with median
ratios, paired bootstrap intervals and the Mann-Whitney U test. Pure Python and
numpy so that the harness never needs scipy at run time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from fractions import Fraction

import numpy as np


def _normal_quantile(p: float) -> float:
    """Standard normal quantile, so interval widths need no scipy."""
    return statistics.NormalDist().inv_cdf(p)


def _normal_sf(z: float) -> float:
    """Upper tail of the standard normal; erfc keeps precision far in the tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion, as fractions in [0, 1].

    Preferred over the normal (Wald) interval because it stays inside [0, 1]
    and keeps its coverage near 0 % and 100 % accuracy.
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= correct <= max(n, 0):
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0  # no evidence: anything is possible
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # At p = 0 (p = 1) the bound is exactly 0 (1); avoid rounding residue.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts b and c.

    b counts items the old model got right and the new one wrong, c the
    reverse. Exact binomial arithmetic on integers, so n = b + c in the tens of
    thousands neither underflows nor loses the tail.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail, term = 0, 1  # term = C(n, i), updated incrementally (cheaper than comb per i)
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def discordant_counts(labels: np.ndarray, old_pred: np.ndarray, new_pred: np.ndarray) -> tuple[int, int]:
    """(b, c) for McNemar: b = old right & new wrong, c = old wrong & new right."""
    labels, old_pred, new_pred = (np.asarray(a) for a in (labels, old_pred, new_pred))
    if not labels.shape == old_pred.shape == new_pred.shape:
        raise ValueError(
            "labels, old_pred and new_pred must have the same length, got "
            f"{labels.shape}, {old_pred.shape}, {new_pred.shape}"
        )
    old_ok, new_ok = old_pred == labels, new_pred == labels
    return int(np.sum(old_ok & ~new_ok)), int(np.sum(~old_ok & new_ok))


def _mid_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties given their mean rank, plus the tie-group sizes."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each group's first member
    return (first + (counts + 1) / 2.0)[inverse], counts


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(U of x, two-sided p) by the normal approximation.

    Tie- and continuity-corrected, matching scipy.stats.mannwhitneyu with
    method="asymptotic", use_continuity=True; no distribution assumption on
    latencies, which are skewed and heavy-tailed.
    """
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xa.size == 0 or ya.size == 0:
        raise ValueError("mann_whitney_u needs two non-empty samples")
    n1, n2 = xa.size, ya.size
    n = n1 + n2
    ranks, ties = _mid_ranks(np.concatenate([xa, ya]))
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    u = max(u1, n1 * n2 - u1)  # the larger U gives the two-sided tail
    tie_term = float(np.sum(ties.astype(float) ** 3 - ties)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if ties.size == 1 or var <= 0.0:
        return u1, 1.0  # all values identical: no evidence of a shift
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u1, min(1.0, max(0.0, 2.0 * _normal_sf(z)))


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)


def _paired_arrays(a: Sequence[float], b: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length, non-empty 1-D float arrays, else ValueError naming ``what``."""
    aa, ba = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if aa.size != ba.size:
        raise ValueError(f"{what} must be paired round by round: lengths {aa.size} != {ba.size}")
    if aa.size == 0:
        raise ValueError(f"{what} must not be empty")
    return aa, ba


def bootstrap_ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(numerator) / median(denominator).

    Rounds are resampled as pairs, since reference and case were timed
    alternately and share each round's machine state (e.g. speed-up =
    reference time / case time).
    """
    _check_confidence(confidence)
    num, den = _paired_arrays(numerator, denominator, "numerator and denominator")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(resamples, num.size))  # one row per resample
    ratios = np.median(num[idx], axis=1) / np.median(den[idx], axis=1)
    return _percentile_interval(ratios, confidence)


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range: robust centre and spread for timings."""
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("median_iqr needs at least one value")
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])  # linear interpolation (numpy default)
    return float(q50), float(q75 - q25)


def relative_change(
    old_case: Sequence[float],
    old_ref: Sequence[float],
    new_case: Sequence[float],
    new_ref: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Change in a case's latency relative to each run's own reference.

    Dividing by the reference timed in the same round cancels machine-wide
    drift between runs. Returns {"ratio", "ci95", "p"}: ratio of median
    relative latencies (new / old; > 1 is slower), its bootstrap interval
    (old and new rounds resampled independently) and the Mann-Whitney p.
    """
    _check_confidence(confidence)
    oc, orf = _paired_arrays(old_case, old_ref, "old_case and old_ref")
    nc, nrf = _paired_arrays(new_case, new_ref, "new_case and new_ref")
    old_r, new_r = oc / orf, nc / nrf
    rng = np.random.default_rng(seed)
    old_idx = rng.integers(0, old_r.size, size=(resamples, old_r.size))
    new_idx = rng.integers(0, new_r.size, size=(resamples, new_r.size))
    boot = np.median(new_r[new_idx], axis=1) / np.median(old_r[old_idx], axis=1)
    low, high = _percentile_interval(boot, confidence)
    return {
        "ratio": float(np.median(new_r) / np.median(old_r)),
        "ci95": [low, high],
        "p": mann_whitney_u(old_r, new_r)[1],
    }


def wilson_half_width(n: int, confidence: float = 0.95) -> float:
    """The widest half-width a Wilson interval takes for ``n`` items (at a proportion of 1/2)."""
    low, high = wilson_interval(n // 2, n, confidence) if n else (0.0, 1.0)
    return (high - low) / 2
