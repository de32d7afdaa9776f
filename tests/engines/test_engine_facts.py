"""Engine facts live in engines/: typed prepare options, fp32 configurations, availability."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qdqbench.core.errors import BackendError
from qdqbench.engines import (
    BackendUnavailable,
    available_backend,
    engine_request,
    fp32_configurations,
    fp32_timing_runs,
    get_backend,
)
from qdqbench.engines.onnxruntime import OrtOptions
from qdqbench.engines.tensorrt import TensorRTOptions


def test_options_are_typed_and_checked_in_one_place():
    opts = OrtOptions.parse("onnxruntime", {"transformer_fusion": True, "num_heads": 2})
    assert opts.transformer_fusion is True and opts.num_heads == 2 and opts.hidden_size == 0
    assert opts.to_dict() == {"transformer_fusion": True, "num_heads": 2}
    with pytest.raises(BackendError, match=r"onnxruntime: unknown options \['fusion'\]"):
        OrtOptions.parse("onnxruntime", {"fusion": True})
    with pytest.raises(BackendError, match="num_heads='2' is not int"):
        OrtOptions.parse("onnxruntime", {"num_heads": "2"})
    with pytest.raises(BackendError, match="is not bool or None"):
        TensorRTOptions.parse("tensorrt", {"strongly_typed": 1})


def test_engine_request_builds_options_the_engine_accepts():
    request = engine_request("tensorrt@fp16", "qdq")
    assert TensorRTOptions.parse("tensorrt", request.options).float_precision == "fp16"


def test_fp32_configurations_are_declared_by_the_engine():
    config = SimpleNamespace(num_attention_heads=12, hidden_size=768)
    names = [(c.name, c.options) for c in fp32_configurations("onnxruntime", config)]
    assert names == [("plain", {}),
                     ("transformer_fusion", {"transformer_fusion": True, "num_heads": 12, "hidden_size": 768})]
    # DistilBERT spells them n_heads / dim.
    fused = fp32_configurations("onnxruntime", SimpleNamespace(n_heads=4, dim=64))[1]
    assert fused.options["num_heads"] == 4 and fused.options["hidden_size"] == 64
    assert fp32_timing_runs("onnxruntime") == 2
    for name in ("onnxruntime@cuda", "onnxruntime@trt", "openvino", "tensorrt", "torch", "tensorrt@fp16"):
        assert fp32_timing_runs(name) == 1, name


def test_availability_is_checked_in_one_place():
    backend = get_backend("tensorrt")
    reason = backend.unavailable_reason()
    if reason is None:
        assert available_backend("tensorrt").name == "tensorrt"
        return
    with pytest.raises(BackendUnavailable) as err:
        available_backend("tensorrt")
    assert str(err.value) == f"tensorrt unavailable: {reason}"
