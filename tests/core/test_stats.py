"""Bootstrap intervals (coverage in simulation, pairing, reproducibility, speed); changed predictions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qdqbench.core import stats
from qdqbench.tasks import metrics


def _classifier(
    rng: np.random.Generator, n: int, p_correct: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random 0/1 labels and predictions that are right with probability ``p_correct``."""
    labels = rng.integers(0, 2, n)
    predictions = np.where(rng.random(n) < p_correct, labels, 1 - labels)
    return predictions, labels


def test_ci_covers_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(1234)
    repetitions, covered = 200, 0
    for repetition in range(repetitions):
        predictions, labels = _classifier(rng, 300, 0.8)
        low, high = stats.bootstrap_ci(
            metrics.accuracy, predictions, labels, n_resamples=500, seed=repetition
        )
        covered += low <= 0.8 <= high
    assert 0.90 <= covered / repetitions <= 0.99


def test_ci_brackets_the_estimate_and_narrows_with_confidence():
    predictions, labels = _classifier(np.random.default_rng(0), 400, 0.85)
    estimate = metrics.accuracy(predictions, labels)
    low95, high95 = stats.bootstrap_ci(metrics.accuracy, predictions, labels)
    low80, high80 = stats.bootstrap_ci(metrics.accuracy, predictions, labels, confidence=0.8)
    assert low95 <= low80 <= estimate <= high80 <= high95
    # binomial standard error sqrt(p(1-p)/n) ~ 0.018: a 95% interval ~ 0.07 wide
    assert 0.04 < high95 - low95 < 0.10


def test_fixed_seed_is_reproducible():
    predictions, labels = _classifier(np.random.default_rng(0), 300, 0.8)
    first = stats.bootstrap_ci(metrics.f1, predictions, labels, seed=7)
    assert stats.bootstrap_ci(metrics.f1, predictions, labels, seed=7) == first
    assert stats.bootstrap_ci(metrics.f1, predictions, labels, seed=8) != first
    pred_b = predictions.copy()
    pred_b[:10] = 1 - pred_b[:10]
    paired = stats.paired_bootstrap_delta(metrics.f1, predictions, pred_b, labels, seed=3)
    assert stats.paired_bootstrap_delta(metrics.f1, predictions, pred_b, labels, seed=3) == paired


def test_paired_delta_uses_the_same_examples_for_both():
    predictions, labels = _classifier(np.random.default_rng(0), 300, 0.8)
    # Identical predictions give exactly zero on every resample only if a and b share indices.
    same = predictions.copy()
    assert stats.paired_bootstrap_delta(metrics.accuracy, predictions, same, labels) == (0, 0, 0)


def test_paired_delta_is_narrower_than_unpaired_for_correlated_predictions():
    rng = np.random.default_rng(5)
    pred_b, labels = _classifier(rng, 500, 0.85)
    pred_a = pred_b.copy()
    flip = rng.random(500) < 0.03  # an INT8 model that changes 3% of fp32's predictions
    pred_a[flip] = 1 - pred_a[flip]
    delta, low, high = stats.paired_bootstrap_delta(metrics.accuracy, pred_a, pred_b, labels)
    expected = metrics.accuracy(pred_a, labels) - metrics.accuracy(pred_b, labels)
    assert delta == pytest.approx(expected)
    assert low <= delta <= high
    unpaired = stats.bootstrap_distribution(
        metrics.accuracy, pred_a, labels, seed=1
    ) - stats.bootstrap_distribution(metrics.accuracy, pred_b, labels, seed=2)
    unpaired_low, unpaired_high = np.quantile(unpaired, [0.025, 0.975])
    assert high - low < 0.5 * (unpaired_high - unpaired_low)


def test_many_examples_are_resampled_in_blocks(monkeypatch):
    monkeypatch.setattr(stats, "_MAX_INDEX_BLOCK", 1000)  # 3 resamples of 300 per block
    predictions, labels = _classifier(np.random.default_rng(0), 300, 0.8)
    values = stats.bootstrap_distribution(metrics.accuracy, predictions, labels, n_resamples=10)
    assert values.shape == (10,)
    assert len(set(values.tolist())) > 1


def test_spearman_interval_over_1500_examples_is_fast():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 1500)
    predictions = labels + rng.normal(0, 1, 1500)
    metrics.spearman(predictions, labels)  # import scipy.stats outside the timed part
    start = time.perf_counter()
    low, high = stats.bootstrap_ci(metrics.spearman, predictions, labels, n_resamples=1000)
    elapsed = time.perf_counter() - start
    assert low < metrics.spearman(predictions, labels) < high
    # ~0.6 s on a 2-core CPU; the bound leaves room for a loaded CI machine
    assert elapsed < 3.0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"confidence": 1.0}, "confidence"), ({"n_resamples": 0}, "n_resamples")],
)
def test_bad_arguments_raise(kwargs, match):
    predictions, labels = _classifier(np.random.default_rng(0), 20, 0.8)
    with pytest.raises(ValueError, match=match):
        stats.bootstrap_ci(metrics.accuracy, predictions, labels, **kwargs)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="length"):
        stats.bootstrap_ci(metrics.accuracy, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="length"):
        stats.paired_bootstrap_delta(metrics.accuracy, np.zeros(3), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ci(metrics.accuracy, np.zeros(0), np.zeros(0))


def test_changed_predictions():
    assert stats.changed_predictions(np.array([0, 1, 2, 1]), np.array([0, 2, 2, 0])) == 2
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([1.05, 2.5, 3.0, 4.0])
    assert stats.changed_predictions(a, b, regression_tolerance=0.1) == 2  # 2.0/2.5 and the NaN
    assert stats.changed_predictions(a, b, regression_tolerance=1.0) == 1
    with pytest.raises(ValueError, match="shape"):
        stats.changed_predictions(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="tolerance"):
        stats.changed_predictions(a, b, regression_tolerance=-1.0)
