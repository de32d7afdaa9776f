"""The speed order of auto's candidates: interleaved rounds, medians, ties inside the spread."""

from __future__ import annotations

import pytest

from qdqbench.quant.auto_timing import Timing, fastest, ties, time_round_robin


def test_rounds_are_interleaved_and_earlier_measurements_count_as_the_first():
    calls = []

    def measure(k):
        calls.append(k)
        return 1.0

    rounds = time_round_robin(["a", "b", "c"], measure, 3, taken={"a": [5.0]})
    assert calls == ["b", "c", "a", "b", "c", "a", "b", "c"]  # round by round, never a run of one key
    assert rounds["a"] == [5.0, 1.0, 1.0] and len(rounds["b"]) == 3
    with pytest.raises(ValueError):
        time_round_robin(["a"], measure, 0)


def test_a_difference_beyond_the_spread_picks_the_faster_even_with_more_float_parts():
    full = Timing("full int8", 0, 0, [60.0, 61.0, 59.5])
    partial = Timing("partial", 2, 8, [51.0, 52.0, 50.5])
    chosen, tied = fastest([full, partial])
    assert chosen is partial and tied == [partial]


def test_a_difference_inside_the_spread_is_a_tie_won_by_fewer_float_parts():
    # The partial variant has the lower median, but the machine's noise covers the difference.
    full = Timing("full int8", 0, 0, [51.0, 64.0, 52.0])
    partial = Timing("partial", 2, 8, [50.0, 51.5, 63.0])
    assert ties(full, partial)
    chosen, tied = fastest([partial, full])
    assert chosen is full and set(t.label for t in tied) == {"full int8", "partial"}


def test_a_structure_without_numbers_is_never_chosen():
    a = Timing("a", 0, 0, [None, None])
    b = Timing("b", 3, 9, [70.0, None])
    assert fastest([a, b])[0] is b and a.median is None and not ties(a, b)
    with pytest.raises(ValueError):
        fastest([a])
