"""Tests for the tensorrt backend. The pure parts (build plan per TensorRT version, optimization
profile, engine cache key, inspector parsing) run anywhere; building and timing an engine needs
TensorRT and a CUDA GPU and skips with the reason otherwise (marker ``tensorrt``)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qdqbench.core.errors import BackendError
from qdqbench.core.results import Shape
from qdqbench.engines import get_backend
from qdqbench.engines.tensorrt import (
    BuildPlan,
    _effective_precision,
    build_plan,
    engine_cache_key,
    file_sha256,
    layer_precisions,
    optimization_profile,
)
from qdqbench.engines.timing import TimingSettings

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


# ---- pure functions: run everywhere ---------------------------------------------------------

def test_profile_spans_shapes_and_opt_is_a_timed_shape():
    shapes = [Shape(batch=1, seq=128), Shape(batch=8, seq=64), Shape(batch=4, seq=384)]
    prof = optimization_profile(shapes, INPUTS)
    assert set(prof) == set(INPUTS)
    lo, opt, hi = prof["input_ids"]
    assert lo == (1, 64) and hi == (8, 384)
    assert opt == (4, 384)  # most tokens among the given shapes
    assert all(prof[n] == prof["input_ids"] for n in INPUTS)


def test_profile_single_shape_is_static():
    prof = optimization_profile([Shape(batch=32, seq=128)], ["input_ids"])
    assert prof["input_ids"] == ((32, 128), (32, 128), (32, 128))


def test_profile_rejects_empty_and_nonpositive():
    with pytest.raises(BackendError):
        optimization_profile([], INPUTS)
    with pytest.raises(BackendError):
        optimization_profile([Shape(batch=0, seq=8)], INPUTS)


def test_cache_key_changes_with_every_ingredient():
    prof = optimization_profile([Shape(batch=1, seq=128)], INPUTS)
    plan = build_plan(10, "int8")
    base = dict(trt_version="10.9.0", gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability=(9, 0), profile=prof, plan=plan)
    key = engine_cache_key("ab" * 32, **base)
    assert len(key) == 64 and key == engine_cache_key("ab" * 32, **base)  # deterministic
    variants = [
        engine_cache_key("cd" * 32, **base),
        engine_cache_key("ab" * 32, **{**base, "trt_version": "11.0.0"}),
        engine_cache_key("ab" * 32, **{**base, "gpu_name": "NVIDIA H200"}),
        engine_cache_key("ab" * 32, **{**base, "compute_capability": (8, 0)}),
        engine_cache_key("ab" * 32, **{**base, "profile": optimization_profile(
            [Shape(batch=1, seq=64)], INPUTS)}),
        engine_cache_key("ab" * 32, **{**base, "plan": build_plan(10, "int8",
                                                                   strongly_typed=False)}),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_file_sha256(tmp_path):
    import hashlib

    p = tmp_path / "m.onnx"
    p.write_bytes(b"x" * 3_000_000)
    assert file_sha256(p) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_build_plan_tensorrt10():
    assert build_plan(10, "int8") == BuildPlan(strongly_typed=True)
    assert build_plan(10, "int8", has_strongly_typed_flag=False) == \
        BuildPlan(strongly_typed=False, flags=("INT8", "FP16"), float_precision="fp16")
    assert build_plan(10, "int8", strongly_typed=False).flags == ("INT8", "FP16")
    assert build_plan(10, "fp16") == BuildPlan(strongly_typed=False, flags=("FP16",),
                                               float_precision="fp16")
    assert build_plan(10, "bf16").flags == ("BF16",)
    fp32 = build_plan(10, "fp32")
    assert fp32.flags == () and fp32.tf32 is False
    with pytest.raises(BackendError):
        build_plan(10, "int8", has_strongly_typed_flag=False, strongly_typed=True)
    # tensorrt@fp16 / @bf16: INT8 with the float flag, weakly typed, on TensorRT 10 only.
    assert build_plan(10, "int8", int8_float="fp16") == BuildPlan(strongly_typed=False, flags=("INT8", "FP16"),
                                                                  float_precision="fp16")
    assert build_plan(10, "int8", int8_float="bf16").flags == ("INT8", "BF16")
    with pytest.raises(BackendError, match="applies to int8 only"):
        build_plan(10, "fp32", int8_float="fp16")
    with pytest.raises(BackendError, match="strongly_typed=False"):
        build_plan(10, "int8", int8_float="fp16", strongly_typed=True)
    with pytest.raises(BackendError, match="TensorRT 11 is strongly typed"):
        build_plan(11, "int8", int8_float="fp16")


def test_build_plan_tensorrt11_is_always_strongly_typed():
    for precision in ("fp32", "int8", "fp16", "bf16"):
        plan = build_plan(11, precision)
        assert plan.strongly_typed and plan.flags == ()
    assert build_plan(11, "fp16").convert_to == "fp16"
    assert build_plan(11, "int8").convert_to is None
    with pytest.raises(BackendError, match="TensorRT 11"):
        build_plan(11, "int8", strongly_typed=False)


def test_layer_precisions_reads_both_inspector_schemas():
    trt10 = {"Layers": [
        {"Name": "l0", "LayerType": "CaskGemmMatrixMultiply",
         "Inputs": [{"Name": "a", "Format/Datatype": "Row major linear INT8 format (kLINEAR)"}]},
        {"Name": "l1", "LayerType": "CaskGemmMatrixMultiply",
         "Inputs": [{"Name": "b", "Format/Datatype": "Row major linear FP16 format (kLINEAR)"}]},
        "bare-name-only-layer",
    ]}
    assert layer_precisions(trt10) == {"CaskGemmMatrixMultiply": {"int8": 1, "fp16": 1}}
    trt11 = {"Layers": [{"LayerType": "Myelin", "Inputs": [{"DataType": "Int64"}]},
                        {"LayerType": "Gemm", "Outputs": [{"DataType": "Float"}]}]}
    assert layer_precisions(trt11) == {"Myelin": {"int64": 1}, "Gemm": {"fp32": 1}}


def test_effective_precision_is_honest():
    plan = build_plan(10, "int8")
    assert _effective_precision("int8", plan, {"Gemm": {"int8": 3}}) == "int8"
    assert _effective_precision("int8", plan, {"Gemm": {"fp32": 3}}) == "fp32 (Q/DQ not fused)"
    assert _effective_precision("int8", plan, {"Myelin": {"int64": 1}}) == "int8 (unverified)"
    assert _effective_precision("int8", plan, None) == "int8 (unverified)"
    assert _effective_precision("fp16", build_plan(10, "fp16"), {}) == "fp16"


def test_unavailable_reason_is_one_line():
    reason = get_backend("tensorrt").unavailable_reason()
    assert reason is None or ("\n" not in reason and reason)


def test_prepare_without_tensorrt_raises_the_reason(tmp_path):
    backend = get_backend("tensorrt")
    reason = backend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is usable here")
    with pytest.raises(BackendError, match=re.escape(reason.split(" (")[0])):
        backend.prepare(tmp_path / "m.onnx", "int8", [Shape(batch=1, seq=8)])


# ---- real engine: TensorRT + CUDA GPU only --------------------------------------------------

def _require_tensorrt() -> None:
    reason = get_backend("tensorrt").unavailable_reason()
    if reason:
        pytest.skip(f"tensorrt backend unavailable: {reason}")


@pytest.fixture(scope="module")
def tiny_models(tiny_models):
    """The shared tiny models (tests/engines/conftest.py), where TensorRT can run."""
    _require_tensorrt()
    return tiny_models


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("name,precision", [("fp32", "fp16"), ("qdq", "int8")])
def test_engine_builds_predicts_times_and_caches(tiny_models, name, precision):
    import onnxruntime as ort

    shapes = [Shape(batch=2, seq=8), Shape(batch=4, seq=16)]
    backend = get_backend("tensorrt")
    sess = backend.prepare(tiny_models[name], precision, shapes, cuda_graph=True)
    assert sess.info["cache_hit"] is False and sess.precision.startswith(precision)
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 100, (2, 8), dtype=np.int64),
             "attention_mask": np.ones((2, 8), np.int64),
             "token_type_ids": np.zeros((2, 8), np.int64)}
    out = sess.predict(feeds)
    ref = ort.InferenceSession(str(tiny_models["fp32"]),
                               providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert out.shape == ref.shape
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    assert sqnr > 15
    st = sess.time(feeds, TimingSettings(warmup_s=0.0, warmup_iters=3, min_iters=10,
                                         min_duration_s=0.0))
    assert st.n == 10 and st.mean > 0 and "CUDA" in st.method
    assert {"h2d_mean_ms", "d2h_mean_ms", "host_latency_mean_ms"} <= set(st.extra)
    again = backend.prepare(tiny_models[name], precision, shapes)
    assert again.info["cache_hit"] is True
    # Accuracy batches outside the profile are fitted to it: batch 6 > max 4 runs as 4 + 2.
    big = again.predict({k: np.tile(v, (3, 1)) for k, v in feeds.items()})
    want = np.tile(out, (3, 1, 1))
    assert big.shape == want.shape
    assert 10 * np.log10(np.sum(want**2) / max(np.sum((want - big) ** 2), 1e-30)) > 30
    with pytest.raises(BackendError, match="longer than the engine profile"):
        again.predict({k: np.tile(v, (1, 3)) for k, v in feeds.items()})  # seq 24 > max 16


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_op_profile_from_the_layer_profiler_after_timing(tiny_models):
    shapes = [Shape(batch=2, seq=8)]
    sess = get_backend("tensorrt").prepare(tiny_models["qdq"], "int8", shapes, rebuild=True)
    feeds = {"input_ids": np.ones((2, 8), np.int64), "attention_mask": np.ones((2, 8), np.int64),
             "token_type_ids": np.zeros((2, 8), np.int64)}
    sess.time(feeds, TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0))
    out = sess.op_profile(feeds, 3, None)
    assert out["status"] == "ok" and out["iterations"] == 3 and out["total_ms"] > 0
    assert all(o["op"] for o in out["ops"])
    # The context works as before once the profiler is detached.
    st = sess.time(feeds, TimingSettings(warmup_s=0.0, warmup_iters=1, min_iters=3, min_duration_s=0.0))
    assert st.n == 3


def test_layer_table_reads_inspector_layers():
    from qdqbench.engines.tensorrt import layer_table

    info = {"Layers": [
        {"Name": "/l0/query/MatMul", "LayerType": "CaskGemmMatrixMultiply",
         "Inputs": [{"Dimensions": [16, 32], "Format/Datatype": "Row major linear INT8 format"}]},
        {"Name": "{ForeignNode[/l0/attention/self/MatMul.../Softmax]}", "LayerType": "Myelin",
         "Inputs": [{"Dimensions": [2, 8, 32], "DataType": "Half"}]},
        "bare-name-only",
    ]}
    table = layer_table(info)
    assert table["/l0/query/MatMul"] == ("CaskGemmMatrixMultiply", "int8", (2,))
    assert table["{ForeignNode[/l0/attention/self/MatMul.../Softmax]}"] == ("Myelin", "fp16", (3,))
    assert len(table) == 2


# ---- the build sequence against a recording stand-in for the tensorrt module -----------------

class _Flag:
    """Stands in for a pybind enum: int() works, names are attributes."""

    def __init__(self, names):
        for i, n in enumerate(names):
            setattr(self, n, i)


class _FakeTRT:
    """Records what TensorRTBackend._build asks of the TensorRT API (names as in TensorRT 10)."""

    def __init__(self, parse_ok=True, build_ok=True):
        self.calls = []
        self.NetworkDefinitionCreationFlag = _Flag(["STRONGLY_TYPED"])
        self.BuilderFlag = _Flag(["FP16", "INT8", "TF32", "BF16"])
        self.ProfilingVerbosity = _Flag(["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
        fake = self

        class Network:
            num_inputs = len(INPUTS)

            def get_input(self, i):
                return type("T", (), {"name": INPUTS[i]})()

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, lo, opt, hi))

        class Config:
            def set_flag(self, flag):
                fake.calls.append(("set_flag", flag))

            def clear_flag(self, flag):
                fake.calls.append(("clear_flag", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_optimization_profile",))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"ENGINE" if build_ok else None

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", path))
                return parse_ok

            def get_error(self, i):
                return "In node 3 (Foo): unsupported op"

        self.Builder, self.OnnxParser = Builder, Parser


def _logger(errors=()):
    return type("L", (), {"errors": list(errors)})()


def test_build_sequence_int8_strongly_typed(tmp_path):
    from qdqbench.engines.tensorrt import TensorRTBackend

    trt = _FakeTRT()
    prof = optimization_profile([Shape(batch=1, seq=8), Shape(batch=4, seq=16)], INPUTS)
    info = {}
    blob = TensorRTBackend()._build(trt, _logger(), tmp_path / "m.onnx", build_plan(10, "int8"),
                                    prof, info)
    assert blob == b"ENGINE"
    assert ("create_network", 1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) in trt.calls
    assert not [c for c in trt.calls if c[0] == "set_flag"]  # strongly typed: no precision flags
    shapes = [c for c in trt.calls if c[0] == "set_shape"]
    assert [c[1] for c in shapes] == INPUTS
    assert shapes[0][2:] == ((1, 8), (4, 16), (4, 16))


def test_build_sequence_weakly_typed_flags_and_errors(tmp_path):
    from qdqbench.engines.tensorrt import TensorRTBackend

    prof = optimization_profile([Shape(batch=1, seq=8)], INPUTS)
    trt = _FakeTRT()
    TensorRTBackend()._build(trt, _logger(), tmp_path / "m.onnx",
                             build_plan(10, "int8", strongly_typed=False), prof, {})
    assert ("create_network", 0) in trt.calls
    assert ("set_flag", trt.BuilderFlag.INT8) in trt.calls
    assert ("set_flag", trt.BuilderFlag.FP16) in trt.calls
    trt = _FakeTRT()
    TensorRTBackend()._build(trt, _logger(), tmp_path / "m.onnx", build_plan(10, "fp32"), prof, {})
    assert ("clear_flag", trt.BuilderFlag.TF32) in trt.calls
    with pytest.raises(BackendError, match="cannot parse .*m.onnx: In node 3"):
        TensorRTBackend()._build(_FakeTRT(parse_ok=False), _logger(), tmp_path / "m.onnx",
                                 build_plan(10, "int8"), prof, {})
    with pytest.raises(BackendError, match="build failed for .*m.onnx: out of memory"):
        TensorRTBackend()._build(_FakeTRT(build_ok=False), _logger(["out of memory"]),
                                 tmp_path / "m.onnx", build_plan(10, "int8"), prof, {})
