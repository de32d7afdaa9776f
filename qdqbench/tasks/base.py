"""What every task provides: examples, how its labels map to a checkpoint, and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class TextExample:
    """One example of a sentence or sentence-pair task; ``label`` is a class id or a float score."""

    text_a: str
    text_b: str | None = None
    label: int | float | None = None
    guid: str = ""


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, its function ``fn(predictions, labels) -> float`` and its direction."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True


class TextTask(Protocol):
    """A text-classification or regression task (GLUE-style)."""

    name: str  # registry key, e.g. "sst2"
    label_names: Sequence[str] | None  # class names in label-id order; None for regression
    is_regression: bool
    primary_metric: str  # the metric the verdict uses
    metrics: Sequence[MetricSpec]
    calibration_split: str  # e.g. "train": never the split being scored
    eval_split: str  # e.g. "dev" or "dev_matched"

    def load(self, split: str, data_dir: Path | None) -> list[TextExample]:
        """Examples of a split from ``data_dir`` (GLUE TSV layout) or the Hub when None."""
        ...

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """Class ids (argmax) or regression scores from model outputs of shape (n, num_labels)."""
        ...

    def score(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric of the task, as fractions in [0, 1] (correlations in [-1, 1])."""
        ...
