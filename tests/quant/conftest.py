"""Fixtures and helpers of the quant tests.

``tiny_qdq.py`` (the tiny calibrated QDQ BERT, its feeds, ONNX Runtime helpers) is loaded here by
path and registered as the module ``tiny_qdq``, so every quant test imports the one builder
(``from tiny_qdq import build``) under any pytest import mode.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _register_tiny_qdq() -> None:
    if "tiny_qdq" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("tiny_qdq", Path(__file__).with_name("tiny_qdq.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_qdq"] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:  # onnx or onnxruntime missing: the tests that need them skip on their own
        del sys.modules["tiny_qdq"]


_register_tiny_qdq()
