"""Tests for the onnxruntime backend on a tiny random BERT exported to ONNX, in fp32 and as a Q/DQ
model from onnxruntime's static quantizer: effective precision, fused ops, predict vs plain ORT,
errors, and the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from qdqbench.core.errors import BackendError  # noqa: E402
from qdqbench.core.results import Shape  # noqa: E402
from qdqbench.engines import BACKEND_NAMES, BACKENDS, get_backend  # noqa: E402
from qdqbench.engines.timing import TimingSettings  # noqa: E402

FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)


@pytest.fixture(scope="module")
def models(tiny_models) -> dict[str, Path]:
    return tiny_models


def direct(path: Path, feeds) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_fp32_reports_fp32_and_matches_plain_ort(models, make_feeds):
    sess = get_backend("onnxruntime").prepare(models["fp32"], "fp32", [Shape(batch=2, seq=8)],
                                              threads=1)
    assert sess.backend == "onnxruntime" and sess.precision == "fp32"
    assert sess.info["provider"] == "CPUExecutionProvider"
    assert sess.info["intra_op_num_threads"] == 1 and not sess.info["model_has_qdq"]
    fused = sess.info["fused_ops"]
    assert not any(fused[op] for op in ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger"))
    feeds = make_feeds()
    out = sess.predict(feeds)
    assert out.dtype == np.float32 and out.shape == (2, 8, 32)
    np.testing.assert_allclose(out, direct(models["fp32"], feeds), rtol=1e-5, atol=1e-5)


def test_qdq_runs_integer_kernels(models, make_feeds):
    sess = get_backend("onnxruntime").prepare(models["qdq"], "int8", [Shape(batch=2, seq=8)],
                                              threads=1)
    fused = sess.info["fused_ops"]
    assert fused["MatMulIntegerToFloat"] + fused["QLinearMatMul"] > 0, fused
    assert sess.precision == "int8" and sess.info["model_has_qdq"]
    feeds = make_feeds(batch=3, seq=5)  # another shape than prepared: dynamic axes
    out = sess.predict(feeds)
    assert out.shape == (3, 5, 32)
    np.testing.assert_allclose(out, direct(models["qdq"], feeds), rtol=1e-5, atol=1e-5)
    # Fake-quant numerics stay near fp32 on a random tiny model (an SQNR-style sanity check).
    ref = direct(models["fp32"], feeds)
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    assert sqnr > 15


def test_int8_request_on_float_model_is_honest(models):
    sess = get_backend("onnxruntime").prepare(models["fp32"], "int8", [Shape(batch=1, seq=8)])
    assert sess.precision == "fp32"


def test_time_in_process(models, make_feeds):
    sess = get_backend("onnxruntime").prepare(models["qdq"], "int8", [Shape(batch=2, seq=8)],
                                              threads=1)
    st = sess.time(make_feeds(), FAST)
    assert st.n == 5 and st.batch == 2 and st.seq == 8 and st.mean > 0
    assert "run_with_iobinding" in st.method


def test_transformer_fusion_baseline(models, make_feeds):
    sess = get_backend("onnxruntime").prepare(models["fp32"], "fp32", [Shape(batch=2, seq=8)],
                                              transformer_fusion=True, num_heads=2, hidden_size=32)
    assert sess.info["transformer_fusion"] is True
    assert sess.info["fused_ops"]["Attention"] == 1
    assert sess.info["fused_ops"]["SkipLayerNormalization"] >= 1
    feeds = make_feeds()
    np.testing.assert_allclose(sess.predict(feeds), direct(models["fp32"], feeds), atol=1e-4)


def test_missing_corrupt_and_wrong_inputs(models, tmp_path, make_feeds):
    backend = get_backend("onnxruntime")
    with pytest.raises(BackendError, match="not found: .*nope.onnx"):
        backend.prepare(tmp_path / "nope.onnx", "fp32", [Shape(batch=1, seq=8)])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(BackendError) as err:
        backend.prepare(bad, "fp32", [Shape(batch=1, seq=8)])
    assert "bad.onnx" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BackendError, match="did you mean 'fp32'"):
        backend.prepare(models["fp32"], "fp23", [Shape(batch=1, seq=8)])
    sess = backend.prepare(models["fp32"], "fp32", [Shape(batch=1, seq=8)])
    with pytest.raises(BackendError, match="token_type_ids"):
        sess.predict({k: v for k, v in make_feeds().items() if k != "token_type_ids"})


def test_fp16_needs_a_gpu_build():
    from qdqbench.engines.onnxruntime import choose_providers

    assert choose_providers("int8", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="TensorRT execution provider"):
        choose_providers("fp16", ["CPUExecutionProvider"])
    providers = choose_providers("fp16", ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                          "CPUExecutionProvider"])
    assert providers[0][0] == "TensorrtExecutionProvider"


def test_registry():
    assert BACKEND_NAMES == ("torch", "onnxruntime", "openvino", "tensorrt")
    assert set(BACKENDS) == set(BACKEND_NAMES)
    with pytest.raises(BackendError, match="did you mean 'onnxruntime'"):
        get_backend("onnxrntime")
    assert get_backend("torch").name == "torch"
    assert get_backend("onnxruntime").unavailable_reason() is None


def test_importing_registry_imports_no_runtime():
    import subprocess
    import sys

    code = ("import sys, qdqbench.engines, qdqbench.engines.base, qdqbench.engines.timing;"
            "import qdqbench.engines.onnxruntime, qdqbench.engines.openvino,"
            " qdqbench.engines.tensorrt;"
            "print([m for m in ('onnxruntime', 'openvino', 'tensorrt', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
