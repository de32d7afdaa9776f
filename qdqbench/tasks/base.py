"""What every task provides: examples, how its labels map to a checkpoint, and its metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


# --------------------------------------------------------------------------- a task prepared for a run


@dataclass(frozen=True)
class TaskSettings:
    """What a suite says about one task for one model (the runner builds it from the suite's entry)."""

    key: str  # the suite's key of the task
    model_name: str  # the suite's key of the model (for messages)
    max_length: int  # tokenizer truncation: the task's, else the model's
    seed: int = 0
    data_dir: Path | None = None  # local data; None: the Hub
    eval_limit: int | None = None  # score only the first N evaluation examples
    calibration_samples: int = 0  # the largest calibration sample any scheme needs
    doc_stride: int | None = None  # SQuAD windows
    max_query_length: int | None = None
    allow_dev_calibration: bool = False  # SQuAD without train: calibrate on held-out dev
    texts: int = 256  # embedding fidelity: evaluation texts


class Batched(Protocol):
    """Tokenized inputs that split into ``(row indices, feeds)`` batches (Encoded, QAFeatures)."""

    def batches(self, batch_size: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Batches of at most ``batch_size`` rows."""
        ...


@dataclass(frozen=True)
class CalibrationPool:
    """Where calibration samples come from: ``size`` candidates, ``take(indices)`` tokenizes some."""

    size: int
    take: Callable[[list[int]], Batched]


@dataclass
class PreparedTask:
    """A task's evaluation data, calibration pool and scorer for one loaded model (``Task.prepare``).

    The runner needs nothing else from a task: it never asks which kind of task it is.
    """

    model: Any  # the fp32 transformers model (never modified: variants are deep copies)
    tokenizer: Any
    output: str  # "logits", "qa_logits" (start/end stacked) or "last_hidden_state"
    eval_inputs: Batched
    calibration: CalibrationPool
    texts: list[str]  # real text for timing inputs
    max_length: int
    task: Any = None  # the task object (metrics, primary_metric); None for embedding fidelity
    scorer: Any = None  # scoring.GlueScorer / QAScorer; None: outputs are compared, not scored
    reduce: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray] | None = None  # per-batch output reduction
    training: Any = None  # labelled training examples (QAT, recipe: auto); None when the task has none
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. a calibration-data deviation
    task_key: str = ""  # the suite's key of the task
    # Each evaluation example's identity (``tasks.split.example_key``), in evaluation order: what
    # ``recipe: auto``'s selection/test split hashes. None: the task cannot be split that way.
    eval_keys: list[str] | None = None

    def eval_part(self, indices: np.ndarray) -> tuple[Batched, Any, np.ndarray]:
        """(inputs, scorer, output rows) of the evaluation examples at ``indices``.

        Needs ``eval_keys`` and a scorer with ``part``; ``indices`` are example indices (GLUE: one
        output row each; SQuAD: questions, whose windows all go with them).
        """
        from qdqbench.core.errors import TaskError

        part = getattr(self.scorer, "part", None)
        take = getattr(self.eval_inputs, "subset", None)
        if self.eval_keys is None or part is None or take is None:
            raise TaskError(f"task '{self.task_key}' cannot split its evaluation set for recipe: auto; "
                            "use auto.selection: {source: train}")
        scorer, rows = part(indices)
        return take(rows), scorer, rows
