"""Benchmarks for qdqbench.quant.calib: histogram collect throughput and compute_amax latency.

Run with ``.venv/bin/python -m pytest benchmarks/test_calib_bench.py --benchmark-only``. Shapes
are BERT-base activations for batch 16, sequence 128: the 384-wide one is a MiniLM/QKV slice,
the 1536-wide one the FFN intermediate of a 384-hidden model. CUDA cases synchronize inside the
timed call (collect already syncs once to read the batch max) and skip without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from qdqbench.quant.calib import HistogramCalibrator, MaxCalibrator

SHAPES = [(16, 128, 384), (16, 128, 1536)]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ),
]


def _activation(shape, device):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return x.to(device)


def _synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _report_throughput(benchmark, x):
    benchmark.extra_info["elements"] = x.numel()
    benchmark.extra_info["Melem_per_s"] = round(x.numel() / benchmark.stats.stats.mean / 1e6, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_histogram_collect(benchmark, shape, device):
    x = _activation(shape, device)
    calib = HistogramCalibrator()
    calib.collect(x)  # fix the range first: the steady state is collecting into existing bins

    def collect():
        calib.collect(x)
        _synchronize(device)

    benchmark(collect)
    _report_throughput(benchmark, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_max_collect(benchmark, shape, device):
    x = _activation(shape, device)
    calib = MaxCalibrator()

    def collect():
        calib.collect(x)
        _synchronize(device)

    benchmark(collect)
    _report_throughput(benchmark, x)


def _filled(grown: bool) -> HistogramCalibrator:
    calib = HistogramCalibrator()
    x = _activation((16, 128, 384), "cpu")
    calib.collect(x)
    if grown:
        calib.collect(x * 1.9)  # ~1.9x the range: ~3900 bins, the largest a histogram gets
    return calib


@pytest.mark.parametrize("grown", [False, True], ids=["2048bins", "grown"])
@pytest.mark.parametrize("method", ["entropy", "mse", "percentile"])
def test_compute_amax(benchmark, method, grown):
    calib = _filled(grown)
    benchmark.extra_info["bins"] = calib.histogram[0].numel()
    amax = benchmark(calib.compute_amax, method)
    assert torch.isfinite(amax) and amax > 0
