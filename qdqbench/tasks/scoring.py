"""How a task family turns model outputs into predictions, scores and bootstrap inputs.

The runner scores every family the same way — metrics with bootstrap intervals, the paired
interval of the drop against fp32, the count of changed predictions — and asks a ``Scorer`` for
the family-specific parts: GLUE takes argmax/regression outputs against labels; SQuAD
post-processes start/end logits into answer texts and bootstraps over per-example EM/F1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class GlueScorer:
    """Classification/regression outputs (n, num_labels), checkpoint columns permuted to task order."""

    task: Any
    labels: np.ndarray
    label_perm: np.ndarray | None

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Class ids or regression scores."""
        logits = outputs[:, self.label_perm] if self.label_perm is not None else outputs
        return self.task.predictions(logits)

    def scores(self, preds: np.ndarray) -> dict[str, float]:
        """Every metric of the task."""
        return self.task.score(preds, self.labels)

    def part(self, indices: np.ndarray) -> tuple[GlueScorer, np.ndarray]:
        """A scorer of the examples at ``indices`` and their output rows (one row per example)."""
        rows = np.asarray(indices, dtype=np.int64)
        return GlueScorer(self.task, self.labels[rows], self.label_perm), rows

    def bootstrap_inputs(self, preds: np.ndarray, metric: str) -> tuple[Callable, np.ndarray, np.ndarray]:
        """(metric fn, predictions, labels) to resample together."""
        spec = next(s for s in self.task.metrics if s.name == metric)
        return spec.fn, preds, self.labels

    def changed(self, a: np.ndarray, b: np.ndarray) -> int:
        """Examples whose prediction differs (a regression score 'changes' when it moves > 0.05)."""
        from qdqbench.core.stats import changed_predictions

        # 0.05 is 1% of the STS-B 0–5 scale; any float difference would count every example.
        tol = 0.05 if self.task.is_regression else None
        return int(changed_predictions(a, b, regression_tolerance=tol))

    def count(self, preds: np.ndarray) -> int:
        """Number of scored examples."""
        return int(len(preds))


@dataclass
class QAScorer:
    """SQuAD: stacked start/end logits (features, seq, 2) → answer texts → per-example EM/F1."""

    task: Any
    features: Any  # squad.QAFeatures
    examples: Sequence[Any]

    def predictions(self, outputs: np.ndarray) -> dict[str, str]:
        """{example id: answer text} by n-best span search."""
        return self.task.postprocess(self.features, outputs)

    def scores(self, preds: dict[str, str]) -> dict[str, float]:
        """exact_match and f1 (official SQuAD v1.1 normalisation)."""
        return self.task.score(preds, self.examples)

    def part(self, indices: np.ndarray) -> tuple[QAScorer, np.ndarray]:
        """A scorer of the questions at ``indices`` and the output rows of all their windows."""
        rows = self.features.rows_of(indices)
        features = self.features.subset(rows)
        return QAScorer(self.task, features, features.examples), rows

    def bootstrap_inputs(self, preds: dict[str, str], metric: str) -> tuple[Callable, np.ndarray, np.ndarray]:
        """(mean, per-example scores, unused labels): both metrics are means over examples."""
        spec = next(s for s in self.task.metrics if s.name == metric)  # squad.mean_score
        per = self.task.per_example_scores(preds, self.examples)[metric]
        return spec.fn, per, np.zeros(len(per))

    def changed(self, a: dict[str, str], b: dict[str, str]) -> int:
        """Questions whose answer text differs."""
        return int(self.task.changed(a, b))

    def count(self, preds: dict[str, str]) -> int:
        """Number of scored questions."""
        return len(self.examples)
