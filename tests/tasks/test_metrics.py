"""Metrics against hand-computed values, scikit-learn/scipy on random data, and degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from qdqbench.tasks import metrics


def test_hand_computed_values():
    predictions = np.array([1, 1, 0, 0, 1])
    labels = np.array([1, 0, 0, 1, 1])
    # tp=2, fp=1, fn=1, tn=1
    assert metrics.accuracy(predictions, labels) == pytest.approx(3 / 5)
    assert metrics.f1(predictions, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
        (2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2)
    )
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([2.0, 4.0, 7.0])
    # deviations (-1, 0, 1) and (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114/9)
    assert metrics.pearson(x, y) == pytest.approx(5 / np.sqrt(2 * 114 / 9))
    # rank differences (0, 1, 1, 0): rho = 1 - 6 * 2 / (4 * (16 - 1))
    assert metrics.spearman(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(0.8)
    assert metrics.spearman(x, -y) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 500))
    labels = rng.integers(0, 2, n)
    predictions = np.where(rng.random(n) < 0.7, labels, 1 - labels)
    assert metrics.accuracy(predictions, labels) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions), abs=1e-12
    )
    assert metrics.f1(predictions, labels) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions), abs=1e-12
    )
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-12
    )
    # multiclass MCC (MNLI has three classes), with a class the predictions never use
    labels3 = rng.integers(0, 3, n)
    predictions3 = np.where(rng.random(n) < 0.6, labels3, rng.integers(0, 2, n))
    assert metrics.matthews_corrcoef(predictions3, labels3) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels3, predictions3), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 2000))
    labels = rng.uniform(0, 5, n)
    predictions = labels + rng.normal(0, 1 + seed, n)
    assert metrics.pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions, labels).statistic, abs=1e-12
    )
    assert metrics.spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels).statistic, abs=1e-12
    )
    # ties, as in STS-B's scores on a 0.2 grid: averaged ranks like spearmanr
    tied = np.round(labels * 5) / 5
    rounded = np.round(predictions)
    assert metrics.spearman(rounded, tied) == pytest.approx(
        scipy.stats.spearmanr(rounded, tied).statistic, abs=1e-12
    )
    assert metrics.pearson(predictions.astype(np.float32), labels) == pytest.approx(
        scipy.stats.pearsonr(predictions.astype(np.float32), labels).statistic, abs=1e-6
    )


def test_degenerate_inputs_are_zero_without_warnings():
    labels = np.array([0, 1, 1, 0, 1])
    constant = np.ones(5, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.matthews_corrcoef(constant, labels) == 0.0
        assert metrics.matthews_corrcoef(labels, constant) == 0.0
        assert metrics.pearson(constant.astype(float), labels.astype(float)) == 0.0
        assert metrics.spearman(labels, constant) == 0.0
        zeros = np.zeros(5, dtype=int)
        assert metrics.f1(zeros, zeros) == 0.0
        assert metrics.pearson(np.array([1.0]), np.array([2.0])) == 0.0
    assert sklearn.metrics.matthews_corrcoef(labels, constant) == 0.0
    assert sklearn.metrics.f1_score(zeros, zeros, zero_division=0.0) == 0.0
    assert metrics.f1(zeros, labels) == 0.0  # positives present, none predicted


def test_nan_scores_give_nan_correlations():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    broken = np.array([1.0, np.nan, 3.0, 4.0])
    assert np.isnan(metrics.pearson(broken, labels))
    assert np.isnan(metrics.spearman(broken, labels))


@pytest.mark.parametrize(
    "predictions, labels",
    [
        (np.array([1, 0]), np.array([1, 0, 1])),
        (np.array([]), np.array([])),
        (np.ones((2, 2)), np.ones((2, 2))),
    ],
)
def test_bad_shapes_raise(predictions, labels):
    for fn in metrics.METRICS.values():
        with pytest.raises(ValueError, match="1-D"):
            fn(predictions, labels)


def test_f1_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="0/1"):
        metrics.f1(np.array([0, 1, 2]), np.array([0, 1, 1]))


def test_registry_names():
    assert set(metrics.METRICS) == {"accuracy", "f1", "mcc", "pearson", "spearman"}
