"""The offline embedding-fidelity task: how close are INT8 sentence embeddings to fp32 ones?

Used by the quickstart suite, which needs no labelled data and no network: the text is the
prose of Python's own documentation (``pydoc_data.topics``, shipped with CPython), split
deterministically into a calibration half and an evaluation half that never overlap. Embeddings
are masked mean pooling of the last hidden state (how sentence-transformers pools
all-MiniLM-L6-v2). Metrics: cosine similarity between each example's fp32 and INT8 embeddings
(mean and worst), SQNR in dB of the INT8 embeddings against fp32, and nearest-neighbour agreement
(the share of examples whose nearest other example is the same under both).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdqbench.core.results import Metric
from qdqbench.tasks.base import CalibrationPool, PreparedTask, TaskSettings, TextExample


def pydoc_paragraphs() -> list[str]:
    """Prose paragraphs (≥ 12 words, no code) of Python's documentation, in a fixed order."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if para[:1].isspace() or ">>>" in para:
                continue  # indented blocks are code samples or grammar, not prose
            text = " ".join(para.split())
            words = text.split()
            letters = sum(c.isalpha() for c in text)
            if len(words) >= 12 and letters >= 0.6 * len(text):
                out.append(text)
    return out


def split_texts(n_eval: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(calibration texts, evaluation texts): disjoint, reproducible by seed."""
    paras = pydoc_paragraphs()
    order = np.random.default_rng(seed).permutation(len(paras))
    n_eval = min(n_eval, len(paras) // 2)
    eval_idx, calib_idx = order[:n_eval], order[n_eval:]
    return [paras[i] for i in calib_idx], [paras[i] for i in eval_idx]


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over the sequence axis: (batch, seq, hidden) → (batch, hidden)."""
    m = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fidelity_metrics(reference: np.ndarray, test: np.ndarray) -> list[Metric]:
    """Cosine (mean, min), SQNR (dB) and nearest-neighbour agreement of ``test`` vs ``reference``."""
    ref, tst = reference.astype(np.float64), test.astype(np.float64)
    cos = (_normalize(ref) * _normalize(tst)).sum(1)
    noise = ((ref - tst) ** 2).sum()
    sqnr = math.inf if noise == 0 else 10 * math.log10((ref**2).sum() / noise)
    agree = float((_nearest(ref) == _nearest(tst)).mean()) if len(ref) > 1 else 1.0
    return [
        Metric(name="cosine_mean", value=float(cos.mean()), unit="ratio", higher_is_better=True),
        Metric(name="cosine_min", value=float(cos.min()), unit="ratio", higher_is_better=True),
        Metric(name="sqnr_db", value=float(sqnr), unit="dB", higher_is_better=True),
        Metric(name="nn_agreement", value=agree, unit="ratio", higher_is_better=True),
    ]


def _nearest(emb: np.ndarray) -> np.ndarray:
    e = _normalize(emb)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


@dataclass(frozen=True)
class FidelityTask:
    """The embedding-fidelity task: outputs compared with fp32 (``fidelity_metrics``), not scored."""

    name: str = "embedding-fidelity"
    head = "encoder"  # the model load_model builds: the bare encoder, no head
    suite_kind = "embedding-fidelity"
    reads_data_dir = False  # the texts ship with Python: a data_dir is never read

    def prepare(self, model: Any, tokenizer: Any, settings: TaskSettings) -> PreparedTask:
        """Documentation paragraphs split into evaluation and calibration halves, mean-pooled."""
        from qdqbench.tasks.evaluate import Encoded, encode

        calib, evals = split_texts(settings.texts, seed=settings.seed)
        pool = encode(tokenizer, [TextExample(t) for t in calib], settings.max_length)
        return PreparedTask(
            model=model, tokenizer=tokenizer, output="last_hidden_state",
            eval_inputs=encode(tokenizer, [TextExample(t) for t in evals], settings.max_length),
            calibration=CalibrationPool(len(pool.input_ids), lambda idx: Encoded(
                [pool.input_ids[i] for i in idx], [pool.token_type_ids[i] for i in idx], pool.pad_id)),
            reduce=lambda o, f: mean_pool(o, f["attention_mask"]).astype(np.float32),
            texts=evals + calib, max_length=settings.max_length, task_key=settings.key,
        )

    def data_dir_problem(self, data_dir: Any) -> str | None:
        """None: the texts ship with Python."""
        return None
