"""Tests for the openvino backend on a tiny random BERT (fp32 and Q/DQ ONNX): the f32 precision
pin, runtime precisions read from the compiled graph, agreement with onnxruntime, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")

from qdqbench.backends import get_backend  # noqa: E402
from qdqbench.backends.openvino import effective_precision  # noqa: E402
from qdqbench.errors import BackendError  # noqa: E402
from qdqbench.results import Shape  # noqa: E402
from qdqbench.timing import TimingSettings  # noqa: E402

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)


def make_feeds(batch: int = 2, seq: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 2:] = 0
    return {"input_ids": rng.integers(0, 100, (batch, seq), dtype=np.int64),
            "attention_mask": mask, "token_type_ids": np.zeros((batch, seq), np.int64)}


def export_tiny_bert(path: Path) -> Path:
    """A 1-layer random BERT (hidden 32) exported with the TorchScript exporter, dynamic axes."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    model = BertModel._from_config(config, attn_implementation="eager").eval()

    class Wrapped(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    args = tuple(torch.from_numpy(a) for a in make_feeds().values())
    axes = {n: {0: "batch", 1: "seq"} for n in INPUTS + ["output"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter and tracer warnings, expected here
        torch.onnx.export(Wrapped(model), args, str(path), dynamo=False, opset_version=17,
                          input_names=INPUTS, output_names=["output"], dynamic_axes=axes)
    return path


def quantize_qdq(src: Path, dst: Path) -> Path:
    """Static Q/DQ quantization of the MatMuls only (see test_onnxruntime.quantize_qdq)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([make_feeds(1, 8, seed=s) for s in range(4)])

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"])
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ov_models")
    fp32 = export_tiny_bert(d / "bert_fp32.onnx")
    return {"fp32": fp32, "qdq": quantize_qdq(fp32, d / "bert_qdq.onnx")}


def ort_out(path: Path, feeds) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_fp32_is_pinned_to_f32_and_agrees_with_ort(models):
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


def test_qdq_runs_int8_matmuls(models):
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


def test_time_in_process(models):
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
