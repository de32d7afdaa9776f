"""Fixtures of the engine tests: the tiny ONNX models of ``tiny_onnx.py``, built once per session.

``tiny_onnx.py`` is loaded by path (it works under any pytest import mode); the models are
exported and quantized once and shared by every engine test that runs on them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def _load_tiny_onnx() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_qdqbench_tiny_onnx", Path(__file__).with_name("tiny_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TINY = _load_tiny_onnx()


@pytest.fixture(scope="session")
def make_feeds():
    """``make_feeds(batch=2, seq=8, seed=0)``: int64 BERT feeds with some padding."""
    return _TINY.make_feeds


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A 1-layer random BERT as fp32 ONNX (``fp32``), as Q/DQ ONNX (``qdq``, ORT static
    quantization of its MatMuls) and 2×8 feeds saved as npz (``feeds``)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    d = tmp_path_factory.mktemp("tiny_onnx")
    fp32 = _TINY.export_tiny_bert(d / "bert_fp32.onnx")
    feeds = d / "feeds.npz"
    np.savez(feeds, **_TINY.make_feeds(2, 8))
    return {"fp32": fp32, "qdq": _TINY.quantize_qdq(fp32, d / "bert_qdq.onnx"), "feeds": feeds}
