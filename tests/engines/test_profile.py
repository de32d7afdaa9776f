"""Where the time goes: per-op profiles (qdqbench.engines.profile) of each engine, after timing."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from qdqbench.core.memory import NOT_AVAILABLE
from qdqbench.engines import profile as prof
from qdqbench.engines.profile import CATEGORIES, OpTime, categorize, run_op_profile, summarize
from qdqbench.engines.timing import TimingSettings, measure_in_subprocess

HERE = Path(__file__).parent
FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)


def _tiny_module():
    spec = importlib.util.spec_from_file_location("_qdqbench_tiny_onnx", HERE / "tiny_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    t = _tiny_module()
    d = tmp_path_factory.mktemp("prof_models")
    fp32 = t.export_tiny_bert(d / "bert_fp32.onnx")
    feeds = d / "feeds.npz"
    np.savez(feeds, **t.make_feeds(2, 8))
    return {"fp32": fp32, "qdq": t.quantize_qdq(fp32, d / "bert_qdq.onnx"), "feeds": feeds}


# --------------------------------------------------------------------------- the mapping table


@pytest.mark.parametrize("op, ranks, name, expected", [
    ("MatMulIntegerToFloat", (3, 0, 1), "", "matmul"),
    ("QLinearMatMul", (4, 4, 0, 0), "", "attention"),  # Q·Kᵀ: two batched activations
    ("MatMul", (4, 4), "", "attention"),
    ("FullyConnected", (3, 2), "", "matmul"),  # OpenVINO's weight GEMM
    ("Attention", (), "", "attention"),
    ("SkipLayerNormalization", (), "", "layernorm"),
    ("MVN", (), "", "layernorm"),
    ("BiasGelu", (), "", "gelu"),
    ("SoftMax", (), "", "softmax"),  # capitalisation differs by engine
    ("DequantizeLinear", (), "", "qdq"),
    ("FakeQuantize", (), "", "qdq"),
    ("Eltwise", (), "/bert/encoder/layer.0/intermediate/intermediate_act_fn/Erf", "gelu"),
    ("Subgraph", (), "/encoder/layer.0/attention/output/LayerNorm/Add", "layernorm"),
    ("Eltwise", (), "/encoder/layer.0/output/Add", "other"),
    ("Reshape", (), "softmax_reshape", "other"),  # a typed op never reads name hints
    ("Subgraph", (), "/bert/encoder/layer.0/attention/self/Transpose_3", "attention"),  # OV MHA
    ("FullyConnectedQuantizedLegacy", (3, 2), "", "matmul"),
    ("FullyConnectedQuantizedLegacy", (3, 2, 3, 3), "", "matmul"),  # rank-3 scales: still a GEMM
    ("aten::addmm", (2, 2, 2), "", "matmul"),
    ("Myelin", (), "{ForeignNode[/l0/attention/self/MatMul.../l0/attention/self/Softmax]}",
     "attention"),
    ("Myelin", (), "{ForeignNode[/l0/attention/self/MatMul.../l0/output/LayerNorm/Add]}", "other"),
    ("CaskGemmMatrixMultiply", (2, 2), "", "matmul"),
    ("aten::bmm", (3, 3), "", "attention"),
])
def test_categorize(op, ranks, name, expected):
    assert categorize(op, input_ranks=ranks, name=name) == expected


def test_summarize_aggregates_per_op_and_precision_per_iteration():
    times = [OpTime("MatMulIntegerToFloat", 6.0, "int8", input_ranks=(3, 0)),
             OpTime("MatMulIntegerToFloat", 2.0, "int8", input_ranks=(3, 0)),
             OpTime("QLinearMatMul", 1.0, "int8", input_ranks=(4, 4)),
             OpTime("Softmax", 0.5, "fp32"), OpTime("Reshape", 0.5, "int64")]
    out = summarize(times, 2, "test")
    assert out["status"] == "ok" and out["iterations"] == 2
    assert out["total_ms"] == pytest.approx(5.0)
    assert out["by_category"]["matmul"] == pytest.approx(4.0)
    assert out["by_category"]["attention"] == pytest.approx(0.5)
    assert set(out["shares"]) == set(CATEGORIES)
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    top = out["ops"][0]
    assert (top["op"], top["precision"], top["category"], top["ms"]) == ("MatMulIntegerToFloat", "int8", "matmul", 4.0)
    assert top["nodes"] == 1  # two node events over two iterations


def test_recorded_ort_cpu_profile_parses_with_the_one_parser():
    from qdqbench.engines.onnxruntime import op_times, provider_summary, read_profile

    events = read_profile(HERE / "ort_profile_cpu.json")
    times = op_times(events)
    # The same kernel events the provider read-back counts (one run, 112 nodes).
    assert len(times) == sum(provider_summary(events)["nodes"].values()) == 112
    out = summarize(times, 1, "recorded")
    cats = out["by_category"]
    kernel_us = sum(e["dur"] for e in events if e.get("cat") == "Node")
    assert out["total_ms"] == pytest.approx(kernel_us / 1000, abs=1e-3)
    assert cats["matmul"] > 0 and cats["attention"] > 0 and cats["layernorm"] > 0
    assert cats["gelu"] > 0 and cats["softmax"] > 0 and cats["qdq"] > 0
    by_op = {(o["op"], o["category"]): o for o in out["ops"]}
    assert by_op[("MatMulIntegerToFloat", "matmul")]["precision"] == "int8"
    assert ("QLinearMatMul", "attention") in by_op  # P·V of the recorded graph
    assert by_op[("LayerNormalization", "layernorm")]["precision"] == "fp32"
    # Leaving out the only run leaves nothing.
    assert op_times(events, skip_runs=1) == []


# --------------------------------------------------------------------------- outcomes


class _Raising:
    backend = "fake"

    def op_profile(self, feeds, iterations, reprepare):
        raise RuntimeError("profiler exploded\nsecond line")


def test_profile_failure_and_absence_are_records_not_errors():
    failed = run_op_profile(_Raising(), {}, 3, None)
    assert failed["status"] == "failed" and "profiler exploded" in failed["error"]
    assert "\n" not in failed["error"]
    missing = run_op_profile(object(), {}, 3, None)
    assert missing["status"] == NOT_AVAILABLE and missing["why"].startswith(NOT_AVAILABLE)
    off = run_op_profile(_Raising(), {}, 0, None)
    assert off["status"] == NOT_AVAILABLE and "profile_iters: 0" in off["why"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("model", ["fp32", "qdq"])
def test_worker_records_an_op_profile_after_timing(tiny, backend, model):
    pytest.importorskip(backend)
    precision = "fp32" if model == "fp32" else "int8"
    stats, meta = measure_in_subprocess(backend, tiny[model], precision, tiny["feeds"], FAST,
                                        threads=1, timeout_s=300, profile_iters=3)
    op = meta["op_profile"]
    assert op["status"] == "ok", op
    assert op["iterations"] == 3 and op["total_ms"] > 0
    assert op["by_category"]["matmul"] > 0 and op["by_category"]["softmax"] + op["by_category"]["attention"] > 0
    precisions = {o["precision"] for o in op["ops"] if o["category"] == "matmul"}
    # The linear layers' GEMMs are the larger part of the matmul time (never filed as attention).
    assert op["by_category"]["matmul"] > op["by_category"]["attention"] or backend == "onnxruntime"
    if model == "qdq":
        assert "int8" in precisions  # both engines run the linear layers in int8
    else:
        assert "int8" not in precisions and op["by_category"]["qdq"] == 0
    # The timed loop itself is untouched: its sample count follows the settings alone.
    assert stats.n >= 5
    json.dumps(op)


def test_worker_without_profile_iters_says_so(tiny):
    _, meta = measure_in_subprocess("onnxruntime", tiny["fp32"], "fp32", tiny["feeds"], FAST,
                                    threads=1, timeout_s=300)
    assert meta["op_profile"]["status"] == NOT_AVAILABLE


def test_a_failing_profile_run_leaves_the_latency_intact(tiny, monkeypatch):
    # The worker in-process, with ORT's profile run failing after the timed loop.
    from qdqbench.engines import onnxruntime, worker

    def boom(self, feeds, iterations, reprepare):
        raise RuntimeError("injected profile failure")

    monkeypatch.setattr(onnxruntime.OnnxRuntimeSession, "op_profile", boom)
    args = argparse.Namespace(backend="onnxruntime", artifact=tiny["qdq"], precision="int8",
                              feeds=tiny["feeds"], settings=json.dumps(FAST.to_dict()), threads=1,
                              options="{}", profile_iters=2, out="-", parent_pid=None)
    result = worker.run(args)
    assert result["op_profile"] == {"status": "failed",
                                    "error": "profile run failed: RuntimeError: injected profile failure"}
    assert len(result["stats"]["samples_ms"]) >= 5 and result["precision"] == "int8"
    assert result["resources"]["peak_rss_mb"] > 0


def test_ort_profile_comes_from_a_second_session(tiny):
    from qdqbench.engines.onnxruntime import OnnxRuntimeBackend

    made = []
    backend = OnnxRuntimeBackend()

    def reprepare(extra):
        made.append(extra)
        return backend.prepare(tiny["qdq"], "int8", [], threads=1, **extra)

    session = backend.prepare(tiny["qdq"], "int8", [], threads=1)
    t = _tiny_module()
    out = session.op_profile(t.make_feeds(2, 8), 2, reprepare)
    assert out["status"] == "ok" and len(made) == 1 and "profile_prefix" in made[0]
    # The timed session itself never profiles.
    assert not session._sess.get_session_options().enable_profiling


def test_tensorrt_profile_is_skipped_with_a_reason_without_tensorrt():
    from qdqbench.engines.tensorrt import TensorRTBackend

    reason = TensorRTBackend().unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is usable here: tests/engines/test_tensorrt.py covers its profiler")
    assert "TensorRT" in reason or "CUDA" in reason or "torch" in reason


def test_not_available_helper_names_why():
    out = prof.not_available("no profiler")
    assert out == {"status": NOT_AVAILABLE, "why": f"{NOT_AVAILABLE}: no profiler"}
