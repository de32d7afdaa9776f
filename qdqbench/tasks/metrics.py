"""Task metrics as plain functions ``fn(predictions, labels) -> float`` on 1-D numpy arrays.

Values are fractions (accuracy 0.8979, not 89.79) and correlations lie in [-1, 1]. Degenerate
inputs get scikit-learn's convention: an undefined MCC, Pearson or Spearman (a constant prediction
or label vector) is 0.0 (scipy would give NaN and a warning for the correlations), and an F1 with
no positive prediction and no positive label is 0.0. A NaN score gives a NaN correlation, never a
silent 0.0.

Each function is called ~1,000 times per bootstrap interval (``qdqbench.core.stats``), so they are
computed here with numpy, with exactly the formulas of scikit-learn and scipy, which
``tests/test_metrics.py`` checks them against on random data: a scikit-learn call spends 1–4 ms
validating its input and ``scipy.stats.spearmanr`` ~1 ms, which made a 1,000-resample paired
bootstrap of MRPC's F1 take ~8 s (scikit-learn 1.9, 2-core CPU) against ~0.1 s from confusion
counts. Spearman ranks with ``scipy.stats.rankdata`` (ties get their average rank, as in
``spearmanr``), imported lazily so that importing qdqbench.tasks needs only numpy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D arrays of the same non-zero length, else ValueError."""
    p = np.asarray(predictions)
    y = np.asarray(labels)
    if p.ndim != 1 or y.ndim != 1 or p.shape != y.shape or p.size == 0:
        raise ValueError(
            "metrics need two non-empty 1-D arrays of one length; "
            f"got shapes {p.shape} and {y.shape}"
        )
    return p, y


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to their label."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1 (values must be 0/1); 0.0 when nothing is positive."""
    p, y = _pair(predictions, labels)
    for name, values in (("predictions", p), ("labels", y)):
        if np.any((values != 0) & (values != 1)):
            raise ValueError(f"binary f1 needs 0/1 {name}; got values {np.unique(values)[:5]}")
    p1 = p == 1
    y1 = y == 1
    tp = np.count_nonzero(p1 & y1)
    fp = np.count_nonzero(p1 & ~y1)
    fn = np.count_nonzero(~p1 & y1)
    denominator = 2 * tp + fp + fn
    # scikit-learn's zero_division=0.0: nothing positive predicted or present.
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multiclass form, as scikit-learn); 0.0 when undefined."""
    p, y = _pair(predictions, labels)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = classes.size
    y_idx, p_idx = inverse[: y.size], inverse[y.size :]
    confusion = np.bincount(y_idx * k + p_idx, minlength=k * k).reshape(k, k)
    # float64 because the products below overflow int64 past a few hundred thousand examples.
    t_sum = confusion.sum(axis=1).astype(np.float64)
    p_sum = confusion.sum(axis=0).astype(np.float64)
    n_correct = float(np.trace(confusion))
    n = float(y.size)
    cov_ytyp = n_correct * n - t_sum @ p_sum
    cov_ypyp = n * n - p_sum @ p_sum
    cov_ytyt = n * n - t_sum @ t_sum
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def _constant(values: np.ndarray) -> bool:
    """True when every value is equal (a correlation with it is undefined)."""
    return bool(np.ptp(values) == 0)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two non-constant float vectors, clipped to [-1, 1] as scipy does."""
    dx = x - x.mean()
    dy = y - y.mean()
    return float(np.clip((dx @ dy) / np.sqrt((dx @ dx) * (dy @ dy)), -1.0, 1.0))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation (equal to scipy.stats.pearsonr); 0.0 when either input is constant."""
    p, y = _pair(predictions, labels)
    if p.size < 2 or _constant(p) or _constant(y):
        return 0.0
    return _correlation(p.astype(np.float64), y.astype(np.float64))


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman correlation (equal to scipy.stats.spearmanr); 0.0 when either input is constant."""
    p, y = _pair(predictions, labels)
    if p.size < 2 or _constant(p) or _constant(y):
        return 0.0
    from scipy.stats import rankdata

    return _correlation(rankdata(p), rankdata(y))


# Name -> function, the names used in result records and in each task's MetricSpec.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
