"""Uncertainty of accuracy numbers: bootstrap confidence intervals over examples.

A dev set of a few hundred examples makes a 1% accuracy drop hard to tell from noise, so every
accuracy record carries a percentile-bootstrap interval, and every INT8−fp32 delta a *paired*
one: both models are scored on the same resampled examples, which cancels the shared
per-example difficulty and gives a much narrower interval than two independent ones. Resampling
is over examples with replacement, driven by a seeded ``numpy.random.Generator`` so that a rerun
gives the same interval. ``metric_fn`` is any ``fn(predictions, labels) -> float`` from
``qdqbench.tasks.metrics``; it is called once per resample (about 1,000 calls).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]

# Resample indices are drawn in blocks of at most this many entries (int32: 32 MiB), so that
# 1,000 resamples of QQP's 40k dev examples do not allocate a 160 MiB index matrix at once.
_MAX_INDEX_BLOCK = 1 << 23


def _check(n: int, n_resamples: int, confidence: float) -> None:
    """ValueError for an empty sample, no resamples, or a confidence outside (0, 1)."""
    if n == 0:
        raise ValueError("bootstrap needs at least one example")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _same_length(*arrays: np.ndarray) -> int:
    """The common first dimension of the arrays, else ValueError."""
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"predictions and labels differ in length: {sorted(lengths)}")
    return lengths.pop()


def _resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Rows of an (n_resamples, n) matrix of indices drawn with replacement, generated in blocks."""
    rng = np.random.default_rng(seed)
    dtype = np.int32 if n < 2**31 else np.int64
    rows_per_block = max(1, _MAX_INDEX_BLOCK // n)
    done = 0
    while done < n_resamples:
        rows = min(rows_per_block, n_resamples - done)
        yield from rng.integers(0, n, size=(rows, n), dtype=dtype)
        done += rows


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of the bootstrap values (NaN if any value is NaN)."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_distribution(
    metric_fn: MetricFn,
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The metric on each of ``n_resamples`` resamples of the examples (for a standard error)."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    n = _same_length(predictions, labels)
    _check(n, n_resamples, 0.5)
    indices = _resample_indices(n, n_resamples, seed)
    return np.array([metric_fn(predictions[idx], labels[idx]) for idx in indices], dtype=np.float64)


def bootstrap_ci(
    metric_fn: MetricFn,
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap ``(low, high)`` interval of ``metric_fn(predictions, labels)``."""
    _check(len(labels), n_resamples, confidence)
    values = bootstrap_distribution(
        metric_fn, predictions, labels, n_resamples=n_resamples, seed=seed
    )
    return _interval(values, confidence)


def paired_bootstrap_delta(
    metric_fn: MetricFn,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(delta, low, high)`` of metric(a) − metric(b), resampling the same examples for both."""
    pred_a = np.asarray(pred_a)
    pred_b = np.asarray(pred_b)
    labels = np.asarray(labels)
    n = _same_length(pred_a, pred_b, labels)
    _check(n, n_resamples, confidence)
    delta = float(metric_fn(pred_a, labels) - metric_fn(pred_b, labels))
    deltas = np.array(
        [
            metric_fn(pred_a[idx], labels[idx]) - metric_fn(pred_b[idx], labels[idx])
            for idx in _resample_indices(n, n_resamples, seed)
        ],
        dtype=np.float64,
    )
    low, high = _interval(deltas, confidence)
    return delta, low, high


def changed_predictions(
    pred_a: np.ndarray, pred_b: np.ndarray, *, regression_tolerance: float | None = None
) -> int:
    """How many examples got another prediction (|a − b| > tolerance for regression scores)."""
    a = np.asarray(pred_a)
    b = np.asarray(pred_b)
    if a.shape != b.shape:
        raise ValueError(f"predictions differ in shape: {a.shape} and {b.shape}")
    if regression_tolerance is None:
        # Exact comparison: right for class ids; for float scores pass a tolerance instead.
        return int(np.count_nonzero(a != b))
    if regression_tolerance < 0:
        raise ValueError(f"regression_tolerance must be >= 0, got {regression_tolerance}")
    difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
    # Written as "not within tolerance" so that a NaN score counts as changed.
    return int(np.count_nonzero(~(difference <= regression_tolerance)))


# ----------------------------------------------------------------------------------------------
# Significance of a difference between two stored summaries (no per-example data needed). The
# run comparison (``review.comparison``) and the report's claims (``report.claims``) both use
# these, so "significant", "beats" and "faster" mean one thing across the project.

LATENCY_Z = 2.0  # standard errors of the difference of two means (≈ 95% two-sided)


def intervals_disjoint(
    a: tuple[float, float] | None, b: tuple[float, float] | None
) -> bool | None:
    """Whether two ``(low, high)`` intervals do not overlap; None when either is missing."""
    if a is None or b is None:
        return None
    return a[1] < b[0] or b[1] < a[0]


def latency_differs(
    a: tuple[float, float, int] | None, b: tuple[float, float, int] | None, z: float = LATENCY_Z
) -> bool | None:
    """Whether two mean latencies differ by more than ``z`` standard errors of their difference.

    ``a`` and ``b`` are ``(mean, std, iterations)`` as a latency cell stores them:
    ``|mean_a − mean_b| > z·sqrt(std_a²/n_a + std_b²/n_b)``. None when either is missing.
    """
    if a is None or b is None:
        return None
    se = math.sqrt(a[1] ** 2 / a[2] + b[1] ** 2 / b[2])
    return abs(a[0] - b[0]) > z * se
