"""qdqbench.quant.registry: the one place for calibration methods, groups and the bit range."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qdqbench.quant import registry
from qdqbench.quant.registry import (
    CALIBRATION_METHODS,
    CALIBRATORS,
    GROUPS,
    MAX_BITS,
    MIN_BITS,
    calibrator_class,
    calibrator_entry,
    check_bits,
    parse_calibrator,
)


def test_registry_and_the_suite_schema_import_no_runtime():
    code = ("import sys, qdqbench.quant.registry, qdqbench.config.suite; "
            "print([m for m in ('torch', 'onnx', 'onnxruntime', 'transformers', 'openvino') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_method_has_a_calibrator_class_that_computes_it():
    from qdqbench.quant.calib import Calibrator, make_calibrator

    assert CALIBRATION_METHODS == ("max", "entropy", "percentile", "mse")
    for method, entry in CALIBRATORS.items():
        cls = calibrator_class(method)
        assert issubclass(cls, Calibrator) and method in cls.methods
        assert isinstance(make_calibrator(method), cls)
        assert entry.method == method
    # Methods sharing a statistic share a class, so one collected model finishes all of them.
    assert {e.statistic for e in CALIBRATORS.values()} == {"max", "histogram"}


def test_calibrator_base_class_is_abstract():
    from qdqbench.quant.calib import Calibrator

    with pytest.raises(TypeError):
        Calibrator()
    assert {"collect", "reset", "compute_amax", "from_options"} <= Calibrator.__abstractmethods__


def test_parse_calibrator_fills_and_checks_parameters():
    assert parse_calibrator("max") == ("max", {})
    assert parse_calibrator("percentile") == ("percentile", {"percentile": 99.99})
    assert parse_calibrator("percentile:99.999") == ("percentile", {"percentile": 99.999})
    with pytest.raises(ValueError, match="unknown calibrator 'minmax'"):
        parse_calibrator("minmax")
    with pytest.raises(ValueError, match="max takes no parameter"):
        parse_calibrator("max-3")
    with pytest.raises(ValueError, match="did you mean 'entropy'"):
        calibrator_entry("entrop")


def test_one_bit_range_for_schemes_settings_and_quantizers():
    from qdqbench.quant.qdqbert import QDQSettings
    from qdqbench.quant.quantizer import TensorQuantizer

    assert (MIN_BITS, MAX_BITS) == (4, 8)
    for bits in (MIN_BITS - 1, MAX_BITS + 1):
        with pytest.raises(ValueError, match=f"bits must be in {MIN_BITS}..{MAX_BITS}"):
            check_bits(bits)
        with pytest.raises(ValueError, match="bits must be in 4..8"):
            QDQSettings(bits=bits)
        with pytest.raises(ValueError, match="weight_bits must be in 4..8"):
            QDQSettings(weight_bits=bits)
        with pytest.raises(ValueError, match="num_bits must be in 4..8"):
            TensorQuantizer(num_bits=bits)
    for bits in (MIN_BITS, MAX_BITS):
        assert QDQSettings(bits=bits, weight_bits=bits).bits == bits
        assert TensorQuantizer(num_bits=bits).num_bits == bits


def test_groups_and_methods_are_checked_by_qdq_settings():
    from qdqbench.quant.qdqbert import GROUPS as QDQBERT_GROUPS
    from qdqbench.quant.qdqbert import QDQSettings

    assert QDQBERT_GROUPS is GROUPS
    with pytest.raises(ValueError, match="unknown Q/DQ group"):
        QDQSettings(groups=("linear", "softmax"))
    with pytest.raises(ValueError, match="did you mean 'entropy'"):
        QDQSettings(calib_method="entrop")


def test_auto_calibrator_specs_follow_the_registry():
    from qdqbench.quant.auto import DEFAULT_CALIBRATORS, CalibratorSpec

    assert tuple(s.name for s in DEFAULT_CALIBRATORS) == registry.DEFAULT_AUTO_CALIBRATORS
    for method in CALIBRATION_METHODS:
        spec = CalibratorSpec.parse(method)
        assert spec.method == method and spec.statistic == CALIBRATORS[method].statistic
    assert CalibratorSpec.parse("percentile").params == {"percentile": 99.99}
