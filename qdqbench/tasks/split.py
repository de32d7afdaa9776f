"""The selection/test split of an evaluation set, for ``recipe: auto`` (one place for the rule).

``recipe: auto`` must choose its variant on data its verdict never sees. By default the evaluation
set is split by a stable hash into a *selection* part (what ``auto`` chooses on) and a *test* part
(what its verdict is taken on). An example's part depends only on its content and the seed —
never on its position — so the split is the same across runs, machine, ``eval_limit`` and file
order, and two identical examples (GLUE dev sets hold a few duplicates) always fall in the same
part, so no copy of a selection example leaks into the test part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qdqbench.core.errors import TaskError

# Fewer examples than this in either part give a bootstrap interval too wide to decide anything
# (on 100 binary examples one flipped prediction is a full point).
MIN_PART_EXAMPLES = 100

_BUCKETS = 2**32


def example_key(text_a: str, text_b: str | None = None) -> str:
    """An example's identity for the split: its text (a pair's two sides kept apart)."""
    return text_a if text_b is None else f"{text_a}\x1f{text_b}"


def _bucket(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from the key and the seed (sha256: the same on every machine)."""
    digest = hashlib.sha256(f"qdqbench-selection\x00{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / _BUCKETS


def example_keys(examples) -> list[str]:
    """``example_key`` of each ``TextExample``, in order."""
    return [example_key(e.text_a, e.text_b) for e in examples]


@dataclass(frozen=True)
class SelectionSplit:
    """Example indices of the selection part and of the test part (disjoint, together all)."""

    selection: np.ndarray
    test: np.ndarray
    fraction: float
    seed: int

    def describe(self) -> dict[str, object]:
        """What the split is, for a record."""
        return {"rule": "sha256 of each example's text and the seed; below the fraction: selection",
                "fraction": self.fraction, "seed": self.seed,
                "selection_examples": int(len(self.selection)), "test_examples": int(len(self.test))}


def split_examples(keys: Sequence[str], fraction: float, seed: int) -> SelectionSplit:
    """Split examples (by their ``example_key``) into a selection part of about ``fraction``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the selection fraction must be in (0, 1), got {fraction}")
    in_selection = np.array([_bucket(k, seed) < fraction for k in keys], dtype=bool)
    idx = np.arange(len(keys))
    return SelectionSplit(idx[in_selection], idx[~in_selection], fraction, seed)


def part_problem(task: str, split: SelectionSplit, minimum: int = MIN_PART_EXAMPLES) -> str | None:
    """One line when either part has fewer than ``minimum`` examples, naming the task; else None."""
    small = [(name, len(ix)) for name, ix in (("selection", split.selection), ("test", split.test))
             if len(ix) < minimum]
    if not small:
        return None
    name, count = min(small, key=lambda s: s[1])
    total = len(split.selection) + len(split.test)
    return (f"task '{task}': selection fraction {split.fraction:g} leaves {count} of {total} evaluation "
            f"examples in the {name} part (at least {minimum} are needed for a meaningful interval)")


def check_parts(task: str, split: SelectionSplit, minimum: int = MIN_PART_EXAMPLES) -> SelectionSplit:
    """``split`` itself, or a TaskError when a part is too small (``part_problem``)."""
    problem = part_problem(task, split, minimum)
    if problem:
        raise TaskError(problem)
    return split


__all__ = ["MIN_PART_EXAMPLES", "SelectionSplit", "check_parts", "example_key", "part_problem",
           "split_examples", "example_keys"]
