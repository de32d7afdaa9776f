"""Batched inference over a task's examples, on a torch model or an engine session.

Examples are tokenized once, sorted by length and batched with padding to each batch's longest
sequence (bucketing), then outputs are put back in the original order. Length sorting is what
makes evaluation fast (most GLUE sentences are far shorter than max_length) and it changes no
number: padded positions are masked. Also builds the real-text inputs used for timing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from qdqbench.tasks.base import TextExample

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Encoded:
    """Token ids per example (unpadded) and the order that sorts them by length."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    pad_id: int

    def subset(self, indices) -> Encoded:
        """The examples at ``indices``, in that order."""
        return Encoded([self.input_ids[int(i)] for i in indices],
                       [self.token_type_ids[int(i)] for i in indices], self.pad_id)

    def batches(self, batch_size: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(example indices, int64 feeds) per batch, longest-first, padded to the batch maximum."""
        lengths = np.array([len(x) for x in self.input_ids])
        order = np.argsort(-lengths, kind="stable")
        out = []
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = lengths[i]
                ids[row, :n] = self.input_ids[i]
                mask[row, :n] = 1
                types[row, :n] = self.token_type_ids[i]
            out.append((idx, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}))
        return out


def encode(tokenizer, examples: Sequence[TextExample], max_length: int) -> Encoded:
    """Tokenize sentences or pairs (truncation longest_first) without padding."""
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples]
    if any(x is not None for x in b):
        enc = tokenizer(a, b, truncation=True, max_length=max_length, return_token_type_ids=True)
    else:
        enc = tokenizer(a, truncation=True, max_length=max_length, return_token_type_ids=True)
    return Encoded(list(enc["input_ids"]), list(enc["token_type_ids"]), tokenizer.pad_token_id or 0)


def run_batches(
    encoded: Encoded,
    batch_size: int,
    forward: Callable[[dict[str, np.ndarray]], np.ndarray],
    reduce: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray] | None = None,
) -> np.ndarray:
    """Run ``forward`` on every batch; outputs (optionally reduced per batch) in example order."""
    results: list[np.ndarray | None] = [None] * len(encoded.input_ids)
    for idx, feeds in encoded.batches(batch_size):
        out = forward(feeds)
        if reduce is not None:
            out = reduce(out, feeds)
        for row, i in enumerate(idx):
            results[i] = out[row]
    return np.stack(results)


def torch_forward(model, output: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """A ``forward`` for ``run_batches`` that runs a transformers model under no_grad on its device."""
    import torch

    device = next(model.parameters()).device

    def forward(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            t = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
            return getattr(model(**t), output).float().cpu().numpy()

    return forward


def timing_feeds(tokenizer, texts: Sequence[str], batch: int, seq: int) -> dict[str, np.ndarray]:
    """Real text of exactly (batch, seq) tokens: [CLS] + a window of a token stream + [SEP].

    The stream is the given texts tokenized back to back, so every position is a real token and
    the attention mask is all ones (zeros would time a different, cheaper input on some engines).
    """
    if seq < 3:
        raise ValueError(f"sequence length {seq} is too short for [CLS] ... [SEP]")
    stream: list[int] = []
    for t in texts:
        stream.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if len(stream) >= batch * (seq - 2) + 1:
            break
    if not stream:
        raise ValueError("no text to build timing inputs from")
    while len(stream) < batch * (seq - 2):
        stream = stream + stream
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else 101
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else 102
    body = seq - 2
    ids = np.array([[cls_id, *stream[r * body:(r + 1) * body], sep_id] for r in range(batch)], dtype=np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
