"""Memory and load time of one engine cell, measured in the worker process around prepare/time.

``measure_session`` runs ``prepare`` then ``time`` and returns, besides the session and the
latency, the resources the cell used:

* ``peak_rss_mb``: the worker's peak resident memory after prepare and timing
  (``core.memory.peak_rss_mb``: VmHWM on Linux, never the parent's memory);
* ``baseline_rss_mb``: the worker's resident memory right before ``prepare`` (Python, numpy, the
  engine's library imported, the feeds loaded);
* ``model_rss_mb``: peak minus baseline, the share of the peak the prepared model and its
  inference buffers account for;
* ``load_s``: seconds of the engine's ``prepare`` (ONNX Runtime session creation, OpenVINO read +
  compile, TensorRT build or deserialize, the torch module load), with ``engine_cache_hit`` (and
  ``build_s``) where the engine has a cache and says so in its ``info``;
* ``peak_gpu_mem_mb`` on CUDA: ``torch.cuda.max_memory_allocated`` for the torch engine; for other
  engines the NVML device memory in use after timing minus before prepare (device-wide, so other
  processes on the GPU count too), when ``pynvml`` imports.

* ``energy``: joules over the timed loop from NVML (CUDA) or RAPL (CPU) where readable, else why
  not (``engines.energy``).

A counter the engine or machine does not offer is named in ``notes`` ("not available on this
engine/machine: why"); it never fails the cell.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from qdqbench.core.errors import one_line
from qdqbench.core.memory import NOT_AVAILABLE, current_rss_mb, peak_rss_mb, peak_rss_method
from qdqbench.engines import energy
from qdqbench.engines.timing import loop_probe

# The resource figures a latency record carries as metrics: (name, unit); all lower-is-better.
RESOURCE_METRICS = (("peak_rss_mb", "MB"), ("model_rss_mb", "MB"), ("load_s", "s"),
                    ("peak_gpu_mem_mb", "MB"), ("energy_j_per_inference", "J"))
# Figures only some machines have: absent without a note of their own in ``notes`` (the GPU
# memory of a CPU engine; energy, whose ``energy`` entry says why not).
OPTIONAL_METRICS = ("peak_gpu_mem_mb", "energy_j_per_inference")


def _nvml_used_mb() -> tuple[float | None, str]:
    """(MiB in use on the worker's first visible GPU, or None; why not)."""
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not importable"
    try:
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(visible)) if visible.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(visible))
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / (1024 * 1024), ""
    except Exception as exc:  # NVML missing driver, no GPU, bad index: a note, not a failure
        return None, f"NVML: {one_line(exc, 120, typed=False, join=True)}"


def on_cuda(backend: str, info: dict[str, Any]) -> bool:
    """Whether a prepared session runs on an NVIDIA GPU (from its backend name and facts)."""
    if backend == "tensorrt" or backend.startswith("onnxruntime@"):
        return True
    if str(info.get("device", "")).startswith("cuda"):
        return True
    providers = info.get("providers") or []
    return any("CUDA" in str(p) or "Tensorrt" in str(p) for p in providers)


def _torch_peak_mb() -> tuple[float | None, str]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None, "torch CUDA was not initialised in this worker"
    return torch.cuda.max_memory_allocated() / (1024 * 1024), ""


def energy_of(meter: Any, stats: Any) -> dict[str, Any]:
    """The meter's result for the timed loop of ``stats`` (a stats object without samples: none)."""
    n, batch = getattr(stats, "n", 0), getattr(stats, "batch", 1)
    if not isinstance(n, int):
        return meter.result(0, 1)
    return meter.result(n, batch)


def measure_session(backend: str, prepare: Callable[[], Any], time_it: Callable[[Any], Any]
                    ) -> tuple[Any, Any, dict[str, Any]]:
    """(session, stats, resources) of ``prepare()`` then ``time_it(session)`` in this process."""
    notes: dict[str, str] = {}
    base = current_rss_mb()
    gpu_before, gpu_why = _nvml_used_mb() if backend != "torch" else (None, "")
    t0 = time.perf_counter()
    session = prepare()
    load_s = time.perf_counter() - t0
    info = getattr(session, "info", {}) or {}
    meter = energy.meter_for(on_cuda(backend, info))
    with loop_probe(meter):
        stats = time_it(session)
    peak = peak_rss_mb()
    res: dict[str, Any] = {"load_s": round(load_s, 4)}
    if peak is None:
        notes["peak_rss_mb"] = f"{NOT_AVAILABLE}: neither VmHWM nor getrusage ru_maxrss offered"
    else:
        res["peak_rss_mb"] = round(peak, 2)
    if base is None or peak is None:
        notes["model_rss_mb"] = f"{NOT_AVAILABLE}: current resident memory not readable (no /proc)"
    else:
        res["baseline_rss_mb"] = round(base, 2)
        res["model_rss_mb"] = round(max(peak - base, 0.0), 2)
    if "cache_hit" in info:
        res["engine_cache_hit"] = bool(info["cache_hit"])
        if info.get("build_s") is not None:
            res["build_s"] = info["build_s"]
    if on_cuda(backend, info):
        if backend == "torch":
            gpu, why = _torch_peak_mb()
            method = "torch.cuda.max_memory_allocated (the torch allocator's peak)"
        else:
            after, why = _nvml_used_mb() if gpu_before is not None else (None, gpu_why)
            gpu = None if after is None or gpu_before is None else max(after - gpu_before, 0.0)
            method = ("NVML device memory used after timing minus before prepare (device-wide, "
                      "not a peak)")
        if gpu is None:
            notes["peak_gpu_mem_mb"] = f"{NOT_AVAILABLE}: {why}"
        else:
            res["peak_gpu_mem_mb"] = round(gpu, 2)
            res["gpu_mem_method"] = method
    res["energy"] = energy_of(meter, stats)
    if res["energy"]["status"] == "ok":
        res["energy_j_per_inference"] = res["energy"]["joules_per_inference"]
    res["rss_method"] = (f"{peak_rss_method()} after prepare+timing; model share = peak minus "
                         "/proc/self/statm RSS right before prepare")
    if notes:
        res["notes"] = notes
    return session, stats, res
