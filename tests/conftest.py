"""Shared fixtures: a tiny random BERT checkpoint with a real tokenizer, tiny GLUE data, ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

WORDS = (
    "the a movie film was is great good bad awful boring fun plot actors story acting not very "
    "really best worst i loved hated it this that and but of to with funny sad long short music"
).split()

SENTENCES = [
    ("the movie was great", 1), ("a boring film", 0), ("i loved this story", 1),
    ("the acting was awful", 0), ("really fun and funny", 1), ("the worst plot", 0),
    ("very good music", 1), ("i hated it", 0), ("the best film", 1), ("not good , not fun", 0),
    ("a long and sad story", 0), ("great actors and great acting", 1),
]


def _shared_path(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is only beside CI and developer checkouts)")
    return p


@pytest.fixture()
def shared_path():
    """``shared_path('models', 'x')``: a path under ../shared, or skip when it is absent."""
    return _shared_path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer random BERT sequence classifier (2 labels) saved with a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", "."] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qa_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny BERT of ``tiny_checkpoint`` with a random question-answering head (qa_outputs)."""
    import shutil

    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    folder = tmp_path_factory.mktemp("tiny-bert-qa")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_checkpoint / name).is_file():
            shutil.copy(tiny_checkpoint / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tiny_checkpoint)
    BertForQuestionAnswering(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    """A GLUE-layout folder with a small SST-2 train/dev split."""
    root = tmp_path_factory.mktemp("glue")
    d = root / "SST-2"
    d.mkdir()
    rows = "".join(f"{s} \t{y}\n" for s, y in SENTENCES)
    (d / "train.tsv").write_text("sentence\tlabel\n" + rows * 3, encoding="utf-8")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return root


def _tiny_suite_yaml(checkpoint: Path, glue: Path, *, backends=("torch", "onnxruntime"), schemes=None,
                     timing=None) -> str:
    """A suite over the tiny checkpoint with tiny timing settings (seconds end to end)."""
    schemes = schemes or {
        "fp32": {"kind": "fp32"},
        "int8-max": {"calibration": {"method": "max", "samples": 16, "batch_size": 8}},
    }
    import yaml

    return yaml.safe_dump({
        "name": "tiny",
        "models": {"tiny": {"path": str(checkpoint), "tasks": ["sst2"], "max_length": 32}},
        "tasks": {"sst2": {"data_dir": str(glue), "eval_batch_size": 4}},
        "schemes": schemes,
        "backends": list(backends),
        "shapes": {"batch": [1, 2], "seq": [16]},
        "accuracy": {"bootstrap": 50},
        "timing": {"warmup_s": 0.0, "warmup_iters": 1, "min_iters": 3, "min_duration_s": 0.0, "threads": 1,
                   **(timing or {})},
    }, sort_keys=False)


@pytest.fixture()
def make_tiny_suite(tmp_path, tiny_checkpoint, tiny_glue):
    """``make_tiny_suite(backends=..., schemes=...)`` writes a tiny suite file and returns its path."""
    def make(**kwargs) -> Path:
        p = tmp_path / "tiny.yaml"
        p.write_text(_tiny_suite_yaml(tiny_checkpoint, tiny_glue, **kwargs), encoding="utf-8")
        return p
    return make


@pytest.fixture()
def tiny_suite(make_tiny_suite) -> Path:
    """A suite file over the tiny checkpoint and data (torch + onnxruntime, fp32 + int8-max)."""
    return make_tiny_suite()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the Hugging Face Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
