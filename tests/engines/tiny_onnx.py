"""Tiny ONNX models for the backend tests: a 1-layer random BERT in fp32 and as Q/DQ.

Loaded by path in ``tests/engines/conftest.py`` (so it works under any pytest import mode), which
builds the models once per session as the ``tiny_models`` fixture.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def make_feeds(batch: int = 2, seq: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 2:] = 0  # some padding, so the mask path is exercised
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
    # The TorchScript exporter warns that it is legacy and traces transformers' mask checks;
    # both are expected for this export path (torch 2.13, transformers 5).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(model), args, str(path), dynamo=False, opset_version=17,
                          input_names=INPUTS, output_names=["output"], dynamic_axes=axes)
    return path


def quantize_qdq(src: Path, dst: Path) -> Path:
    """Static Q/DQ quantization of the MatMuls (per-channel int8 weights, int8 activations)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([make_feeds(1, 8, seed=s) for s in range(4)])

        def get_next(self):
            return next(self._it, None)

    # Only MatMuls: quantizing every op (the default) adds Q/DQ on scalar Muls that OpenVINO
    # 2026.4's low-precision transformations reject; the MatMuls are what the test is about.
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"])
    return dst
