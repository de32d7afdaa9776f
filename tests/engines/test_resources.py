"""Memory and load time measured in the worker (qdqbench.engines.resources) and their metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdqbench.core.memory import NOT_AVAILABLE, current_rss_mb, peak_rss_mb
from qdqbench.engines import resources
from qdqbench.engines.timing import TimingSettings, measure_in_subprocess

FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)


@pytest.fixture(scope="module")
def tiny(tiny_models) -> dict[str, Path]:
    return tiny_models


def test_rss_counters_on_this_machine():
    peak, now = peak_rss_mb(), current_rss_mb()
    assert peak is not None and now is not None
    assert 10 < now <= peak + 1  # a Python process with numpy holds tens of MB


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("model", ["fp32", "qdq"])
def test_worker_result_carries_memory_and_load_time(tiny, backend, model):
    pytest.importorskip(backend)
    precision = "fp32" if model == "fp32" else "int8"
    stats, meta = measure_in_subprocess(backend, tiny[model], precision, tiny["feeds"], FAST,
                                        threads=1, timeout_s=300)
    res = meta["resources"]
    assert stats.n >= 5
    assert res["peak_rss_mb"] >= res["model_rss_mb"] > 0
    assert res["peak_rss_mb"] > res["baseline_rss_mb"] > 10
    assert res["peak_rss_mb"] < 8192  # plausible for a 1-layer hidden-32 BERT
    assert 0 < res["load_s"] < 120
    assert "peak_gpu_mem_mb" not in res and "notes" not in res  # CPU engines: no GPU counter
    assert "engine_cache_hit" not in res  # neither CPU engine has an engine cache


class _Session:
    def __init__(self, info):
        self.info, self.precision = info, "int8"


def test_missing_counters_become_notes_not_failures(monkeypatch):
    # A CUDA engine on a machine without NVML, and no getrusage / /proc: notes, never an error.
    monkeypatch.setattr(resources, "peak_rss_mb", lambda: None)
    monkeypatch.setattr(resources, "current_rss_mb", lambda: None)
    monkeypatch.setattr(resources, "_nvml_used_mb", lambda: (None, "pynvml is not importable"))
    info = {"cache_hit": True, "build_s": None}
    session, stats, res = resources.measure_session("tensorrt", lambda: _Session(info), lambda s: "stats")
    assert stats == "stats" and res["load_s"] >= 0 and res["engine_cache_hit"] is True
    notes = res["notes"]
    for name in ("peak_rss_mb", "model_rss_mb", "peak_gpu_mem_mb"):
        assert notes[name].startswith(NOT_AVAILABLE)
        assert name not in res
    assert "pynvml" in notes["peak_gpu_mem_mb"]


def test_tensorrt_cache_facts_surface(monkeypatch):
    monkeypatch.setattr(resources, "_nvml_used_mb", lambda: (1000.0, ""))
    _, _, res = resources.measure_session(
        "tensorrt", lambda: _Session({"cache_hit": False, "build_s": 12.5}), lambda s: None)
    assert res["engine_cache_hit"] is False and res["build_s"] == 12.5
    assert res["peak_gpu_mem_mb"] == 0.0 and "NVML" in res["gpu_mem_method"]


def test_resource_metrics_and_notes():
    from qdqbench.run.steps import resource_metrics

    metrics, details = resource_metrics({"peak_rss_mb": 300.0, "model_rss_mb": 40.0, "load_s": 0.5,
                                         "baseline_rss_mb": 260.0})
    by = {m.name: m for m in metrics}
    assert set(by) == {"peak_rss_mb", "model_rss_mb", "load_s"}
    assert by["load_s"].unit == "s" and not by["peak_rss_mb"].higher_is_better
    assert details["baseline_rss_mb"] == 260.0 and "notes" not in details
    # A worker that reported nothing (an engine without the counters): notes, no metrics.
    metrics, details = resource_metrics({})
    assert metrics == []
    assert all(details["notes"][n].startswith(NOT_AVAILABLE) for n in ("peak_rss_mb", "model_rss_mb", "load_s"))
