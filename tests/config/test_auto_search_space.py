"""recipe: auto's search-space settings: defaults and one-line errors for bad values."""

from __future__ import annotations

import pytest

from qdqbench.config.suite import SuiteValidationError, parse_suite


def _suite(auto: dict):
    return parse_suite({"name": "t", "models": {"m": {"hub": "org/bert", "tasks": ["sst2"]}}, "tasks": {"sst2": {}},
                        "schemes": {"fp32": {"kind": "fp32"}, "a": {"recipe": "auto", "auto": auto}}}, "s.yaml")


def test_the_finer_search_space_is_the_default_and_each_part_can_be_switched_off():
    auto = _suite({}).schemes["a"].auto
    assert (auto.granularity, auto.weight_bits, auto.group_calibrators, auto.residual) == (
        "quantizer", [7], True, "measure")
    auto = _suite({"granularity": "part", "weight_bits": [], "group_calibrators": False, "residual": "keep"}
                  ).schemes["a"].auto
    assert (auto.granularity, auto.weight_bits, auto.group_calibrators, auto.residual) == ("part", [], False, "keep")


@pytest.mark.parametrize("auto, words", [
    ({"weight_bits": [3]}, ("auto.weight_bits must be in 4..8", "got 3")),
    ({"granularity": "op"}, ("granularity", "'quantizer'")),
    ({"residual": "drop"}, ("residual", "'measure'")),
])
def test_a_bad_search_space_setting_is_an_error_naming_it(auto, words):
    with pytest.raises(SuiteValidationError) as info:
        _suite(auto)
    text = "\n".join(info.value.problems)
    assert all(w in text for w in words), text
