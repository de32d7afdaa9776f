"""Tests for the openvino backend on a tiny random BERT (fp32 and Q/DQ ONNX): the f32 precision
pin, runtime precisions read from the compiled graph, agreement with onnxruntime, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")

from qdqbench.core.errors import BackendError  # noqa: E402
from qdqbench.core.results import Shape  # noqa: E402
from qdqbench.engines import get_backend  # noqa: E402
from qdqbench.engines.openvino import effective_precision  # noqa: E402
from qdqbench.engines.timing import TimingSettings  # noqa: E402

FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)


@pytest.fixture(scope="module")
def models(tiny_models) -> dict[str, Path]:
    return tiny_models


def ort_out(path: Path, feeds) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_fp32_is_pinned_to_f32_and_agrees_with_ort(models, make_feeds):
    sess = get_backend("openvino").prepare(models["fp32"], "fp32", [Shape(batch=2, seq=8)],
                                           threads=1)
    # The compiled model's own property, not our request echoed back.
    assert sess.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert sess.info["inference_precision_hint"] == "f32"
    assert sess.info["inference_num_threads"] == 1
    assert sess.precision == "fp32"
    fc = sess.info["runtime_precisions"]["FullyConnected"]
    assert set(fc) == {"f32"}
    for batch, seq in ((2, 8), (1, 5)):
        feeds = make_feeds(batch, seq)
        out = sess.predict(feeds)
        assert out.dtype == np.float32 and out.shape == (batch, seq, 32)
        np.testing.assert_allclose(out, ort_out(models["fp32"], feeds), rtol=1e-4, atol=1e-4)


def test_qdq_runs_int8_matmuls(models, make_feeds):
    sess = get_backend("openvino").prepare(models["qdq"], "int8", [Shape(batch=2, seq=8)],
                                           threads=1)
    assert sess.precision == "int8" and sess.info["model_has_qdq"]
    assert sess.info["inference_precision_hint"] == "f32"  # non-quantized parts stay f32
    fc = sess.info["runtime_precisions"]["FullyConnected"]
    assert fc.get("i8", 0) + fc.get("u8", 0) > 0, sess.info["runtime_precisions"]
    feeds = make_feeds()
    ref = ort_out(models["fp32"], feeds)
    out = sess.predict(feeds)
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    assert sqnr > 15


def test_bf16_request_reports_what_compiled(models):
    sess = get_backend("openvino").prepare(models["fp32"], "bf16", [Shape(batch=1, seq=8)])
    caps = sess.info["optimization_capabilities"]
    if "BF16" in caps:
        assert sess.precision == "bf16"
    else:  # no native bf16: the CPU plugin compiles f32 and the session must say so
        assert sess.precision == "fp32" and "note" in sess.info


def test_int8_with_bf16_float_layers(models):
    # The openvino@bf16 variant: Q/DQ in int8, the rest under the bf16 hint (f32 without bf16).
    backend = get_backend("openvino@bf16")
    sess = backend.prepare(models["qdq"], "int8", [Shape(batch=2, seq=8)], threads=1, float_precision="bf16")
    assert sess.precision == "int8" and sess.info["requested_hint"] == "bf16"
    if "BF16" in sess.info["optimization_capabilities"]:
        assert sess.info["inference_precision_hint"] == "bf16"
    else:
        assert sess.info["inference_precision_hint"] == "f32" and "requested bf16" in sess.info["note"]
    with pytest.raises(BackendError, match="applies to int8 only"):
        backend.prepare(models["fp32"], "fp32", [Shape(batch=2, seq=8)], float_precision="bf16")


def test_time_in_process(models, make_feeds):
    sess = get_backend("openvino").prepare(models["qdq"], "int8", [Shape(batch=2, seq=8)],
                                           threads=1)
    st = sess.time(make_feeds(), FAST)
    assert st.n == 5 and st.batch == 2 and st.mean > 0 and "start_async" in st.method


def test_effective_precision_labels():
    assert effective_precision({"FullyConnected": {"i8": 6}, "MatMul": {"f32": 2}}, True,
                               "f32") == "int8"
    assert effective_precision({"FullyConnected": {"bf16": 6}}, False, "bf16") == "bf16"
    assert effective_precision({"FullyConnected": {"f32": 6}}, True, "f32") == \
        "fp32 (Q/DQ not fused)"
    assert effective_precision({}, False, "f16") == "fp16"


def test_errors_name_the_file(models, tmp_path):
    backend = get_backend("openvino")
    with pytest.raises(BackendError, match="not found: .*absent.onnx"):
        backend.prepare(tmp_path / "absent.onnx", "fp32", [Shape(batch=1, seq=8)])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(BackendError) as err:
        backend.prepare(bad, "fp32", [Shape(batch=1, seq=8)])
    assert "bad.onnx" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BackendError, match="unknown options"):
        backend.prepare(models["fp32"], "fp32", [Shape(batch=1, seq=8)], transformer_fusion=True)
