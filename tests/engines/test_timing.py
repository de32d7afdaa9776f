"""Tests for qdqbench.engines.timing: LatencyStats math, the measure() loop, CUDA-event timing with fake
events, and end-to-end timing in a worker subprocess on a tiny hand-built ONNX graph."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qdqbench.core.errors import BackendError
from qdqbench.engines.timing import (
    THREAD_ENV_VARS,
    LatencyStats,
    TimingSettings,
    measure,
    measure_cuda,
    measure_in_subprocess,
    thread_env,
)

FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0,
                      max_iters=1000, max_duration_s=5.0)


def tiny_onnx(path: Path) -> Path:
    """A three-input int64 graph (output = ids + mask + type ids as float), no torch needed."""
    import onnx
    from onnx import TensorProto, helper

    names = ["input_ids", "attention_mask", "token_type_ids"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in names]
    nodes = [helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in names]
    nodes += [helper.make_node("Add", ["input_ids_f", "attention_mask_f"], ["s"]),
              helper.make_node("Add", ["s", "token_type_ids_f"], ["output"])]
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "seq"])
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime/openvino this project supports
    onnx.save(model, str(path))
    return path


def write_feeds(path: Path, batch: int = 2, seq: int = 8) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, input_ids=rng.integers(0, 100, (batch, seq), dtype=np.int64),
             attention_mask=np.ones((batch, seq), np.int64),
             token_type_ids=np.zeros((batch, seq), np.int64))
    return path


# ---- LatencyStats ---------------------------------------------------------------------------

def test_stats_match_numpy():
    rng = np.random.default_rng(1)
    samples = list(rng.gamma(2.0, 1.5, size=997))
    st = LatencyStats(samples_ms=samples, wall_s=2.5, batch=4, seq=128, warmup_iters=10,
                      method="synthetic")
    arr = np.asarray(samples)
    assert st.mean == pytest.approx(arr.mean())
    assert st.std == pytest.approx(arr.std())
    assert st.min == arr.min() and st.max == arr.max()
    assert st.median == pytest.approx(np.median(arr))
    for q in (50, 90, 95, 99):
        assert st.percentile(q) == pytest.approx(np.percentile(arr, q))
    assert st.cov == pytest.approx(arr.std() / arr.mean())
    # Throughput comes from the wall time of the loop, not from the mean latency.
    assert st.throughput == pytest.approx(4 * 997 / 2.5)
    assert st.throughput != pytest.approx(4 * 1000 / arr.mean())


def test_to_metrics_names_units_directions():
    st = LatencyStats(samples_ms=[1.0, 2.0, 3.0, 4.0], wall_s=0.02, batch=2, seq=8,
                      warmup_iters=1, method="synthetic")
    metrics = {m.name: m for m in st.to_metrics()}
    latency = ["latency_mean_ms", "latency_median_ms", "latency_p90_ms", "latency_p95_ms",
               "latency_p99_ms", "latency_min_ms", "latency_max_ms", "latency_std_ms"]
    assert list(metrics) == latency + ["cov", "throughput"]
    for name in latency:
        assert metrics[name].unit == "ms" and metrics[name].higher_is_better is False
    assert metrics["cov"].unit == "ratio" and metrics["cov"].higher_is_better is False
    assert metrics["throughput"].unit == "seq/s" and metrics["throughput"].higher_is_better is True
    assert metrics["throughput"].value == pytest.approx(2 * 4 / 0.02)
    assert metrics["latency_p90_ms"].value == pytest.approx(np.percentile([1, 2, 3, 4], 90))


def test_stats_and_settings_round_trip():
    st = LatencyStats(samples_ms=[1.5, 2.5], wall_s=0.01, batch=1, seq=8, warmup_iters=3,
                      method="m", extra={"h2d_mean_ms": 0.1})
    assert LatencyStats.from_dict(json.loads(json.dumps(st.to_dict()))) == st
    s = TimingSettings(warmup_s=0.5, min_iters=7)
    assert TimingSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError):
        TimingSettings.from_dict({"warmup": 1})


def test_empty_stats_raise():
    with pytest.raises(ValueError):
        _ = LatencyStats(samples_ms=[], wall_s=0.0, batch=1, seq=1, warmup_iters=0, method="m").mean


# ---- measure() ------------------------------------------------------------------------------

def test_measure_respects_min_iters():
    calls = []
    st = measure(lambda: calls.append(1), FAST, batch=3, seq=16)
    assert st.n == 5 and st.warmup_iters == 2 and len(calls) == 7
    assert st.batch == 3 and st.seq == 16 and all(s >= 0 for s in st.samples_ms)
    assert st.throughput == pytest.approx(3 * 5 / st.wall_s)


def test_measure_respects_min_duration_and_warmup_time():
    s = TimingSettings(warmup_s=0.02, warmup_iters=1, min_iters=1, min_duration_s=0.05,
                       max_iters=100000, max_duration_s=5.0)
    t0 = time.perf_counter()
    st = measure(lambda: time.sleep(0.0005), s, batch=1, seq=1)
    elapsed = time.perf_counter() - t0
    assert st.wall_s >= 0.05 and elapsed >= 0.07
    assert st.warmup_iters > 1  # the warm-up ran until its time was up, not just once
    assert st.n > 1


def test_measure_caps_at_max_iters_and_max_duration():
    s = TimingSettings(warmup_s=0.0, warmup_iters=0, min_iters=50, min_duration_s=10.0,
                       max_iters=20, max_duration_s=10.0)
    assert measure(lambda: None, s, batch=1, seq=1).n == 20
    s = TimingSettings(warmup_s=0.0, warmup_iters=0, min_iters=10**6, min_duration_s=10.0,
                       max_iters=10**6, max_duration_s=0.05)
    st = measure(lambda: time.sleep(0.001), s, batch=1, seq=1)
    assert 0.05 <= st.wall_s < 1.0 and st.n < 10**6


def test_measure_calls_sync_each_iteration():
    syncs = []
    st = measure(lambda: None, FAST, batch=1, seq=1, sync=lambda: syncs.append(1), method="x")
    assert len(syncs) == st.n + st.warmup_iters and st.method == "x"


def test_measure_samples_are_per_iteration_ms():
    s = TimingSettings(warmup_s=0.0, warmup_iters=0, min_iters=5, min_duration_s=0.0)
    st = measure(lambda: time.sleep(0.004), s, batch=1, seq=1)
    assert all(3.5 <= x < 100 for x in st.samples_ms)


class _FakeEvent:
    """Stands in for torch.cuda.Event: records host time, elapsed_time in ms."""

    def __init__(self) -> None:
        self.t = 0.0

    def record(self, stream=None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _FakeEvent) -> float:
        return (other.t - self.t) * 1e3


def test_measure_cuda_with_fake_events():
    st = measure_cuda(lambda: time.sleep(0.002), FAST, batch=2, seq=4, stream=None,
                      event_factory=_FakeEvent)
    assert st.n == 5 and st.warmup_iters == 2
    assert all(1.5 <= x < 100 for x in st.samples_ms)
    assert st.extra["host_latency_mean_ms"] >= st.mean * 0.9


# ---- subprocess worker ----------------------------------------------------------------------

def test_thread_env_pins_every_pool():
    env = thread_env(3, base={"PATH": "/bin"})
    assert all(env[v] == "3" for v in THREAD_ENV_VARS) and env["PATH"] == "/bin"
    assert "OMP_NUM_THREADS" not in thread_env(None, base={})


def test_worker_help():
    out = subprocess.run([sys.executable, "-m", "qdqbench.engines.worker", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--backend" in out.stdout and "--feeds" in out.stdout


def test_measure_in_subprocess_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    feeds = write_feeds(tmp_path / "feeds.npz", batch=2, seq=8)
    stats, meta = measure_in_subprocess("onnxruntime", model, "fp32", feeds, FAST, threads=1,
                                        timeout_s=120)
    assert stats.n == 5 and stats.batch == 2 and stats.seq == 8
    assert meta["precision"] == "fp32"
    assert meta["info"]["intra_op_num_threads"] == 1
    assert meta["info"]["provider"] == "CPUExecutionProvider"


def test_measure_in_subprocess_openvino(tmp_path):
    pytest.importorskip("openvino")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    feeds = write_feeds(tmp_path / "feeds.npz", batch=1, seq=4)
    stats, meta = measure_in_subprocess("openvino", model, "fp32", feeds, FAST, threads=1,
                                        timeout_s=120)
    assert stats.n == 5 and meta["info"]["inference_num_threads"] == 1


def test_worker_failure_on_corrupt_onnx_is_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf model" * 20)
    feeds = write_feeds(tmp_path / "feeds.npz")
    with pytest.raises(BackendError) as err:
        measure_in_subprocess("onnxruntime", bad, "fp32", feeds, FAST, threads=1, timeout_s=120)
    msg = str(err.value)
    assert "\n" not in msg and "corrupt.onnx" in msg


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_worker_failure_on_garbage_and_missing_file(tmp_path, backend):
    pytest.importorskip(backend)
    feeds = write_feeds(tmp_path / "feeds.npz")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 4)
    for path in (garbage, tmp_path / "missing.onnx"):
        with pytest.raises(BackendError) as err:
            measure_in_subprocess(backend, path, "fp32", feeds, FAST, threads=1, timeout_s=120)
        assert "\n" not in str(err.value) and path.name in str(err.value)


def test_worker_names_a_truncated_feeds_file(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    feeds = write_feeds(tmp_path / "feeds.npz")
    feeds.write_bytes(feeds.read_bytes()[:40])  # what a run killed mid-write used to leave behind
    with pytest.raises(BackendError, match="cannot read feeds .*feeds.npz") as err:
        measure_in_subprocess("onnxruntime", model, "fp32", feeds, FAST, threads=1, timeout_s=120)
    assert "\n" not in str(err.value)


def test_worker_unknown_backend(tmp_path):
    feeds = write_feeds(tmp_path / "feeds.npz")
    with pytest.raises(BackendError, match="did you mean 'openvino'"):
        measure_in_subprocess("openvin", tmp_path / "m.onnx", "fp32", feeds, FAST, threads=None)


def test_worker_timeout_raises(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    feeds = write_feeds(tmp_path / "feeds.npz")
    # A 60 s warm-up has no iteration cap, so the worker is still busy when the timeout hits.
    endless = TimingSettings(warmup_s=60.0, warmup_iters=0, min_iters=1, min_duration_s=60.0,
                             max_duration_s=60.0)
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match="timed out"):
        measure_in_subprocess("onnxruntime", model, "fp32", feeds, endless, threads=1,
                              timeout_s=3)
    assert time.perf_counter() - t0 < 30
