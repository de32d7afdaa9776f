"""The selection/test split of recipe: auto: disjoint, stable by content and seed, big enough parts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qdqbench.core.errors import TaskError
from qdqbench.tasks.split import MIN_PART_EXAMPLES, check_parts, example_key, part_problem, split_examples

KEYS = [example_key(f"sentence {i}", None if i % 3 else f"other side {i}") for i in range(1000)]


def _members(keys, split):
    return {keys[i] for i in split.selection}, {keys[i] for i in split.test}


def test_the_parts_are_disjoint_and_cover_every_example():
    split = split_examples(KEYS, 0.5, seed=0)
    sel, test = set(split.selection.tolist()), set(split.test.tolist())
    assert not sel & test
    assert sel | test == set(range(len(KEYS)))
    assert 400 < len(sel) < 600  # about the fraction


def test_the_split_is_the_same_for_the_same_seed_and_changes_with_another():
    a, b = split_examples(KEYS, 0.5, seed=0), split_examples(KEYS, 0.5, seed=0)
    assert np.array_equal(a.selection, b.selection) and np.array_equal(a.test, b.test)
    c = split_examples(KEYS, 0.5, seed=1)
    assert not np.array_equal(a.selection, c.selection)


def test_an_examples_part_depends_on_its_content_not_its_position():
    shuffled = KEYS[:]
    random.Random(3).shuffle(shuffled)
    assert _members(KEYS, split_examples(KEYS, 0.3, 7)) == _members(shuffled, split_examples(shuffled, 0.3, 7))
    # A prefix (eval_limit) keeps every example in its part.
    sel, test = _members(KEYS, split_examples(KEYS, 0.3, 7))
    psel, ptest = _members(KEYS[:200], split_examples(KEYS[:200], 0.3, 7))
    assert psel <= sel and ptest <= test


def test_duplicate_examples_fall_in_one_part():
    keys = KEYS[:50] * 2
    split = split_examples(keys, 0.5, 0)
    sel, test = _members(keys, split)
    assert not sel & test


def test_pair_sides_are_kept_apart_in_the_key():
    assert example_key("a b", "c") != example_key("a", "b c")


def test_a_part_under_the_minimum_is_one_line_naming_the_task_and_the_count():
    split = split_examples(KEYS[:150], 0.2, 0)
    problem = part_problem("stsb", split)
    assert problem is not None and "\n" not in problem
    assert "task 'stsb'" in problem and f"leaves {len(split.selection)} of 150" in problem
    assert "selection part" in problem and str(MIN_PART_EXAMPLES) in problem
    with pytest.raises(TaskError, match="task 'stsb'"):
        check_parts("stsb", split)
    assert part_problem("stsb", split_examples(KEYS, 0.5, 0)) is None


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        split_examples(KEYS, fraction, 0)
