"""The GEMM floor (qdqbench.engines.floor): the model's GEMM shapes, one-MatMul models, timing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from qdqbench.core.errors import BackendError
from qdqbench.engines import floor
from qdqbench.engines.timing import TimingSettings

HERE = Path(__file__).parent
FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location("_qdqbench_tiny_onnx", HERE / "tiny_onnx.py")
    t = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(t)
    d = tmp_path_factory.mktemp("floor_models")
    fp32 = t.export_tiny_bert(d / "bert_fp32.onnx")
    return {"fp32": fp32, "qdq": t.quantize_qdq(fp32, d / "bert_qdq.onnx")}


@pytest.mark.parametrize("which", ["fp32", "qdq"])
def test_gemm_shapes_of_a_bert(tiny, which):
    shapes = floor.gemm_shapes(tiny[which])
    # hidden 32, intermediate 64, 1 layer: Q, K, V, O (32×32), up (32×64), down (64×32) per token;
    # attention matmuls (activation × activation) are not GEMMs.
    by = {(s["rows"], s["k"], s["n"]): s["count"] for s in shapes}
    assert by == {("tokens", 32, 32): 4, ("tokens", 32, 64): 1, ("tokens", 64, 32): 1}


def test_gemm_shapes_of_a_per_sequence_gemm(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # A classifier head: Gemm(x [batch, 32], W [8, 32], transB=1) → M = batch, K = 32, N = 8.
    w = numpy_helper.from_array(np.zeros((8, 32), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    path = tmp_path / "head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert floor.gemm_shapes(path) == [{"rows": "sequences", "k": 32, "n": 8, "count": 1}]


def test_floor_of_sums_count_times_time():
    shapes = [{"rows": "tokens", "k": 8, "n": 4, "count": 3}, {"rows": "sequences", "k": 8, "n": 8, "count": 1}]
    timed = {(2 * 16, 8, 4): 0.5, (2, 8, 8): 0.25}
    assert floor.floor_of(shapes, timed, 2, 16) == pytest.approx(1.75)


@pytest.mark.parametrize("precision, expect", [("fp32", "fp32"), ("int8", "int8")])
def test_one_matmul_models_run_as_their_precision_on_ort(tmp_path, precision, expect):
    from qdqbench.engines.onnxruntime import OnnxRuntimeBackend

    path = floor.gemm_model(tmp_path / "g.onnx", 16, 32, 8, precision)
    sess = OnnxRuntimeBackend().prepare(path, precision, [], threads=1)
    assert sess.precision == expect
    x = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    assert sess.predict({"x": x}).shape == (16, 8)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_int8_io_form_computes_the_requantized_gemm(tmp_path, backend):
    """int8 in, int8 out: DequantizeLinear · MatMul · QuantizeLinear of the model's own initializers."""
    import onnx
    from onnx import numpy_helper

    from qdqbench.engines import get_backend

    pytest.importorskip(backend)
    path = floor.gemm_model(tmp_path / "g.onnx", 16, 32, 8, "int8", form="int8-io")
    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    x_q = np.clip(np.round(np.random.default_rng(0).standard_normal((16, 32)) / init["x_scale"]), -128, 127)
    y = (x_q * init["x_scale"]) @ (init["w_q"].astype(np.float32) * init["w_scale"])
    expect = np.clip(np.round(y / init["y_scale"]), -128, 127)
    session = get_backend(backend).prepare(path, "int8", [], threads=1)
    close = np.abs(session.predict({"x": x_q.astype(np.int8)}) - expect) <= 1  # one step: float rounding
    assert np.abs(expect).max() < 127  # the output scale leaves headroom: nothing saturates
    if session.precision == "int8":
        # A real int8 kernel: without VNNI (AVX2's VPMADDUBSW) pairs of products saturate at int16,
        # which full-range int8 weights reach on a few outputs (README, "Measured here").
        assert close.mean() >= 0.9, close.mean()
    else:
        assert close.all()  # run in float (ONNX Runtime does not fuse int8-in/int8-out on x86)


def _fake_worker(times: dict[str, tuple[float, str]]):
    """A measure_in_subprocess stand-in: per form (by model file name) a mean and engine precision."""
    from qdqbench.engines.timing import LatencyStats

    def worker(backend, model, precision, feeds, settings, **kw):
        form = "int8-io" if "int8io" in Path(model).name else "float-io"
        if times[form] is None:
            raise BackendError(f"{form} refused")
        mean, prec = times[form]
        return (LatencyStats(samples_ms=[mean] * 5, wall_s=mean * 5e-3, batch=1, seq=1, warmup_iters=0,
                             method="fake"), {"precision": prec})
    return worker


def test_gemm_floor_keeps_the_fastest_int8_form_the_engine_ran_in_int8(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr("qdqbench.engines.timing.measure_in_subprocess",
                        _fake_worker({"float-io": (2.0, "int8"), "int8-io": (1.5, "int8")}))
    out = floor.gemm_floor(tiny["qdq"], "openvino", "int8", 2, 8, FAST, threads=1, options=None,
                           cache_dir=tmp_path / "a")
    assert all(g["form"] == "int8-io" and g["mean_ms"] == 1.5 for g in out["gemms"])
    assert all(g["forms"] == {"float-io": 2.0, "int8-io": 1.5} for g in out["gemms"])
    assert out["floor_ms"] == pytest.approx(6 * 1.5)
    # A form the engine ran in float is no INT8 floor: recorded, left out.
    monkeypatch.setattr("qdqbench.engines.timing.measure_in_subprocess",
                        _fake_worker({"float-io": (2.0, "int8"), "int8-io": (0.5, "fp32 (Q/DQ not fused)")}))
    out = floor.gemm_floor(tiny["qdq"], "onnxruntime", "int8", 2, 8, FAST, threads=1, options=None,
                           cache_dir=tmp_path / "b")
    assert all(g["form"] == "float-io" and g["forms"]["int8-io"] == "ran as fp32 (Q/DQ not fused)"
               for g in out["gemms"])
    # A form the engine refuses: recorded; none left: one line naming the shape and each reason.
    monkeypatch.setattr("qdqbench.engines.timing.measure_in_subprocess",
                        _fake_worker({"float-io": (2.0, "int8"), "int8-io": None}))
    out = floor.gemm_floor(tiny["qdq"], "openvino", "int8", 2, 8, FAST, threads=1, options=None,
                           cache_dir=tmp_path / "c")
    assert all(g["form"] == "float-io" and "int8-io refused" in g["forms"]["int8-io"] for g in out["gemms"])
    monkeypatch.setattr("qdqbench.engines.timing.measure_in_subprocess",
                        _fake_worker({"float-io": (2.0, "fp32"), "int8-io": None}))
    with pytest.raises(BackendError, match=r"GEMM floor int8-m16k32n32 on openvino: float-io: ran as fp32; "
                                           r"int8-io: .*int8-io refused"):
        floor.gemm_floor(tiny["qdq"], "openvino", "int8", 2, 8, FAST, threads=1, options=None,
                         cache_dir=tmp_path / "d")


def test_gemm_floor_times_each_shape_once_and_caches(tiny, tmp_path, monkeypatch):
    out = floor.gemm_floor(tiny["qdq"], "onnxruntime", "int8", 2, 8, FAST, threads=1, options=None,
                           cache_dir=tmp_path / "floor")
    assert out["precision"] == "int8" and out["floor_ms"] > 0
    assert all(g["engine_precision"] == "int8" and g["gops"] > 0 for g in out["gemms"])
    assert out["floor_ms"] == pytest.approx(sum(g["count"] * g["mean_ms"] for g in out["gemms"]))
    assert {g["m"] for g in out["gemms"]} == {16}  # every GEMM of the tiny BERT is per token: 2×8

    def no_worker(*a, **k):
        raise AssertionError("cached GEMMs must not be timed again")

    monkeypatch.setattr("qdqbench.engines.timing.measure_in_subprocess", no_worker)
    again = floor.gemm_floor(tiny["qdq"], "onnxruntime", "int8", 2, 8, FAST, threads=1, options=None,
                             cache_dir=tmp_path / "floor")
    assert again["floor_ms"] == out["floor_ms"]


def test_gemm_floor_refuses_other_precisions(tiny, tmp_path):
    with pytest.raises(BackendError, match="fp32 and int8 only"):
        floor.gemm_floor(tiny["fp32"], "onnxruntime", "bf16", 1, 8, FAST, threads=1, options=None,
                         cache_dir=tmp_path)
