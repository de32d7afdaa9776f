"""The tiny calibrated QDQ BERT the quant tests build, its feeds, and the ONNX Runtime helpers
that read its export: written once, shared through ``tests/quant/conftest.py`` (which loads this
file by path, so it works under pytest's importlib import mode) as the module ``tiny_qdq``."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from qdqbench.quant.qdqbert import QDQSettings, quantize_bert
from qdqbench.quant.quantizer import calibrating, finish_calibration


def tiny_bert(layers: int = 2, kind: str = "bert"):
    """A random tiny BERT (or DistilBERT) sequence classifier, fp32, eval mode."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "distilbert":
        config = tf.DistilBertConfig(vocab_size=60, dim=32, n_layers=layers, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=64)
        return tf.DistilBertForSequenceClassification._from_config(config, attn_implementation="eager").eval()
    config = tf.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    return tf.BertForSequenceClassification._from_config(config, attn_implementation="eager").eval()


def feeds(batch: int, seq: int, seed: int, token_types: bool = True) -> dict[str, torch.Tensor]:
    """Random int64 feeds with padding in the first row."""
    g = torch.Generator().manual_seed(seed)
    out = {"input_ids": torch.randint(5, 60, (batch, seq), generator=g),
           "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    out["attention_mask"][0, max(1, seq - 3):] = 0  # padding in the first row
    if token_types:
        out["token_type_ids"] = (torch.arange(seq) >= seq // 2).long().expand(batch, seq).clone()
    return out


DEFAULT_SETTINGS = QDQSettings()


def build(settings: QDQSettings = DEFAULT_SETTINGS, layers: int = 2, kind: str = "bert"):
    """The tiny model made a QDQBERT variant and calibrated on four batches."""
    model = quantize_bert(tiny_bert(layers, kind), settings)
    with calibrating(model), torch.no_grad():
        for i in range(4):
            model(**feeds(4, 12, seed=i, token_types=kind != "distilbert"))
    finish_calibration(model)
    return model


def session(path: Path, level: str = "all", optimized: Path | None = None, disabled=()):
    """A one-thread CPU session of ``path`` (``optimized``: save the graph ORT optimized)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    if optimized is not None:
        # Up to EXTENDED: what ALL adds (NCHWc layouts) is for convolutions and is machine-specific.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(optimized)
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def op_counts(path: Path) -> dict[str, int]:
    """Op-type counts of an ONNX file."""
    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts
