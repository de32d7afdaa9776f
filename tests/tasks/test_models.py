"""Model folders that look loadable but are not: no tokenizer, a tokenizer that does not fit,
a classifier head for another label count, and sequence lengths beyond the position embeddings.
Each is one line naming the folder (or the suite key), at validate time where possible."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from qdqbench.cli import main
from qdqbench.config.suite import load_suite, parse_suite
from qdqbench.core.errors import ModelResolutionError
from qdqbench.run.preflight import max_positions, preflight
from qdqbench.tasks import models

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """A private copy of the tiny checkpoint (tests damage copies of it)."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def _copy(checkpoint: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    return folder


def _tiny_suite(make_tiny_suite, folder: Path, sets=(), **kwargs):
    """The conftest tiny suite over ``folder``, with ``--set`` overrides."""
    return load_suite(make_tiny_suite(**kwargs), sets=list(sets), model_paths={"tiny": str(folder)})


def _spec(folder: Path, **extra):
    return parse_suite({
        "name": "t", "models": {"tiny": {"path": str(folder), "tasks": ["sst2"], **extra}},
        "tasks": {"sst2": {}}, "schemes": {"fp32": {"kind": "fp32"}},
    }).models["tiny"]


def _load(folder: Path, head: str = "classification"):
    return models.load_model(models.ResolvedModel("tiny", folder, f"local folder {folder}"), head)


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")


def test_the_checkpoint_passes_every_check(checkpoint, make_tiny_suite):
    assert models.check("tiny", _spec(checkpoint)) is None
    assert preflight(_tiny_suite(make_tiny_suite, checkpoint)) == []
    model, tok = _load(checkpoint)
    assert model.config.num_labels == 2
    assert tok.convert_ids_to_tokens(tok("the movie was great")["input_ids"]) == [
        "[CLS]", "the", "movie", "was", "great", "[SEP]"]


# -- tokenizer ---------------------------------------------------------------------------------


def test_no_tokenizer_is_a_check_problem_and_a_load_error(checkpoint, tmp_path):
    folder = _copy(checkpoint, tmp_path)
    for f in TOKENIZER_FILES:
        (folder / f).unlink(missing_ok=True)
    problem = models.check("tiny", _spec(folder))
    assert problem == (f"model 'tiny': path {folder} has no tokenizer (none of tokenizer.json, vocab.txt, "
                       "tokenizer.model, spiece.model, sentencepiece.bpe.model, sentencepiece.model, "
                       "vocab.json); without one every word would become [UNK]")
    with pytest.raises(ModelResolutionError) as info:
        _load(folder)
    assert str(info.value).startswith(f"model 'tiny': {folder} has no tokenizer (none of tokenizer.json")
    with pytest.raises(ModelResolutionError, match="has no tokenizer"):
        models.resolve("tiny", _spec(folder))


def test_no_tokenizer_stops_validate_with_one_line(checkpoint, make_tiny_suite, tmp_path, capsys):
    folder = _copy(checkpoint, tmp_path)
    for f in TOKENIZER_FILES:
        (folder / f).unlink(missing_ok=True)
    assert main(["validate", str(make_tiny_suite()), "--model-path", f"tiny={folder}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"model 'tiny': path {folder} has no tokenizer")


def test_an_empty_vocab_txt_is_a_check_problem(checkpoint, tmp_path):
    folder = _copy(checkpoint, tmp_path)
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("\n\n", encoding="utf-8")
    assert models.check("tiny", _spec(folder)) == f"model 'tiny': path {folder} has an empty vocab.txt"


def test_a_tokenizer_of_special_tokens_only_is_refused(checkpoint, tmp_path):
    # What BertTokenizerFast(vocab_file=...) saves under transformers 5: every word is [UNK],
    # fp32 scores like a constant classifier and every INT8 scheme "passes".
    from transformers import BertTokenizerFast

    folder = _copy(checkpoint, tmp_path)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(specials)}).save_pretrained(str(folder))
    expected = (f"{folder} has a tokenizer.json whose vocabulary is only the special tokens [CLS], "
                "[MASK], [PAD], [SEP], [UNK]; every word would become [UNK] (a tokenizer saved "
                "without its vocabulary?)")
    assert models.check("tiny", _spec(folder)) == f"model 'tiny': path {expected}"
    with pytest.raises(ModelResolutionError) as info:
        _load(folder)
    assert str(info.value) == f"model 'tiny': {expected}"
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("\n".join(specials) + "\n", encoding="utf-8")
    assert "has a vocab.txt whose vocabulary is only the special tokens" in models.check("tiny", _spec(folder))


def test_a_foreign_vocabulary_fails_to_load(checkpoint, tmp_path):
    # The files look fine (real words), but no word of a plain English sentence is known.
    folder = _copy(checkpoint, tmp_path)
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nzug\nqat\n", encoding="utf-8")
    assert models.check("tiny", _spec(folder)) is None
    with pytest.raises(ModelResolutionError) as info:
        _load(folder)
    assert str(info.value) == (f"model 'tiny': {folder}: the tokenizer maps every token of "
                               f"{models.PROBE_TEXT!r} to [UNK] (an empty or foreign vocabulary)")


def test_a_tokenizer_larger_than_the_embeddings_is_refused(checkpoint, tmp_path):
    from transformers import AutoTokenizer

    folder = _copy(checkpoint, tmp_path)
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_tokens([f"extra{i}" for i in range(10)])
    tok.save_pretrained(str(folder))
    assert len(tok) == vocab_size + 10
    assert models.check("tiny", _spec(folder)) == (
        f"model 'tiny': path {folder} has a tokenizer.json of {vocab_size + 10} tokens but config.json "
        f"vocab_size is {vocab_size} (not this model's tokenizer?)")
    # load_model checks the loaded tokenizer against the loaded model's config.
    with pytest.raises(ModelResolutionError) as info:
        _load(folder)
    assert str(info.value) == (f"model 'tiny': {folder}: the tokenizer has {vocab_size + 10} tokens but "
                               f"config.json vocab_size is {vocab_size} (not this model's tokenizer?)")


def test_unreadable_config_json_is_one_line(checkpoint, tmp_path):
    folder = _copy(checkpoint, tmp_path)
    (folder / "config.json").write_text("{\"vocab_size\": 30,\n", encoding="utf-8")
    problem = models.check("tiny", _spec(folder))
    assert problem.startswith(f"model 'tiny': {folder / 'config.json'} is not valid JSON (line 2")


# -- labels ------------------------------------------------------------------------------------


def test_label_count_mismatch_names_both_numbers(checkpoint, make_tiny_suite, tmp_path):
    folder = _copy(checkpoint, tmp_path)
    _edit_config(folder, id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2})
    expected = (f"model 'tiny': {folder}: config.json says 3 labels but the classifier weights have 2 "
                "(classifier.weight [2, 32])")
    with pytest.raises(ModelResolutionError) as info:
        _load(folder)
    assert str(info.value) == expected
    # ... and validate says it before any loading.
    assert preflight(_tiny_suite(make_tiny_suite, folder)) == [expected]
    # An encoder-only use never loads the head: no problem there.
    model, _ = _load(folder, "encoder")
    assert model.config.num_labels == 3


# -- sequence lengths against the position embeddings ------------------------------------------


def test_seq_and_max_length_beyond_positions_are_reported(checkpoint, make_tiny_suite):
    why = (f"is longer than model 'tiny' supports (max_position_embeddings 64 in "
           f"{checkpoint / 'config.json'})")
    suite = _tiny_suite(make_tiny_suite, checkpoint, ["shapes.seq=[16, 64, 512]", "models.tiny.max_length=128"])
    assert preflight(suite) == [f"shapes.seq: 512 {why}", f"models.tiny.max_length: 128 {why}"]
    # A task's own max_length is the one tokenized with, and the one named.
    suite = _tiny_suite(make_tiny_suite, checkpoint, ["models.tiny.max_length=128", "tasks.sst2.max_length=100"])
    assert preflight(suite) == [f"tasks.sst2.max_length: 100 {why}"]
    suite = _tiny_suite(make_tiny_suite, checkpoint, ["models.tiny.max_length=128", "tasks.sst2.max_length=64"])
    assert preflight(suite) == []


def test_untimed_shapes_are_not_checked(checkpoint, make_tiny_suite):
    # torch alone without timing.torch has no latency cells: shapes.seq is never run.
    suite = _tiny_suite(make_tiny_suite, checkpoint, ["shapes.seq=[512]"], backends=("torch",))
    assert preflight(suite) == []
    suite = _tiny_suite(make_tiny_suite, checkpoint, ["shapes.seq=[512]", "timing.torch={}"], backends=("torch",))
    assert [p.split(" is ")[0] for p in preflight(suite)] == ["shapes.seq: 512"]


def test_seq_beyond_positions_stops_validate(checkpoint, make_tiny_suite, capsys):
    rc = main(["validate", str(make_tiny_suite()), "--model-path", f"tiny={checkpoint}",
               "--set", "shapes.seq=[128]"])
    assert rc == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"shapes.seq: 128 is longer than model 'tiny' supports (max_position_embeddings 64 in "
                    f"{checkpoint / 'config.json'})")


def test_cached_hub_config_is_checked_without_the_network(checkpoint, make_tiny_suite, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args, **kwargs):
        raise AssertionError("validate touched the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    data = yaml.safe_load(make_tiny_suite().read_text())
    data["models"]["tiny"] = {"hub": "org/tiny", "tasks": ["sst2"], "max_length": 32}
    data["shapes"]["seq"] = [512]
    suite = parse_suite(data)
    monkeypatch.setattr(models, "cached_hub_config", lambda repo, rev: None)
    assert preflight(suite) == []  # not cached: nothing to check, and no download
    monkeypatch.setattr(models, "cached_hub_config",
                        lambda repo, rev: checkpoint / "config.json" if repo == "org/tiny" else None)
    (line,) = preflight(suite)
    assert line.startswith("shapes.seq: 512 is longer than model 'tiny' supports (max_position_embeddings 64")


def test_max_positions_of_roberta_style_models():
    assert max_positions({"max_position_embeddings": 512, "model_type": "bert"}) == 512
    assert max_positions({"max_position_embeddings": 514, "model_type": "roberta", "pad_token_id": 1}) == 512
    assert max_positions({"model_type": "bert"}) is None


# -- a task head the checkpoint does not have ----------------------------------------------------


def _squad_suite(folder: Path):
    return parse_suite({
        "name": "t", "models": {"tiny": {"path": str(folder), "tasks": ["squad"], "max_length": 48}},
        "tasks": {"squad": {"kind": "squad"}}, "schemes": {"fp32": {"kind": "fp32"}}, "backends": ["torch"],
    })


def test_a_checkpoint_without_a_qa_head_is_refused(checkpoint, tiny_qa_checkpoint):
    """transformers only warns and initialises qa_outputs at random: that must be an error."""
    head = "question-answering"
    expected = (f"model 'tiny': {checkpoint} has no question-answering head: qa_outputs.bias, "
                "qa_outputs.weight missing from its weights; it holds classifier weights instead; "
                "transformers would initialise the head at random (a checkpoint fine-tuned for this task is needed)")
    with pytest.raises(ModelResolutionError) as info:
        _load(checkpoint, head)
    assert str(info.value) == expected
    # validate says it before any loading, from the safetensors header.
    problems = preflight(_squad_suite(checkpoint))
    assert len(problems) == 1 and "has no question-answering head" in problems[0] and str(checkpoint) in problems[0]
    # A real QA checkpoint passes both checks and loads its own head.
    assert models.head_problem(tiny_qa_checkpoint, head) is None and preflight(_squad_suite(tiny_qa_checkpoint)) == []
    model, _ = _load(tiny_qa_checkpoint, head)
    assert model.inner.qa_outputs.weight.shape == (2, 32)


def test_an_encoder_only_or_bin_checkpoint_without_the_head_fails_at_load(checkpoint, tmp_path):
    """Weights without a readable header (.bin) pass the cheap check; loading still catches it."""
    import torch
    from transformers import BertModel

    folder = _copy(checkpoint, tmp_path)
    (folder / "model.safetensors").unlink()
    # transformers 5 saves only safetensors; a .bin is what older tools wrote.
    torch.save(BertModel.from_pretrained(checkpoint).state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").is_file()
    assert models.head_problem(folder, "question-answering") is None  # no header to read
    for head, missing in (("question-answering", "qa_outputs.bias, qa_outputs.weight"),
                          ("classification", "classifier.bias, classifier.weight")):
        with pytest.raises(ModelResolutionError) as info:
            _load(folder, head)
        message = str(info.value)
        assert "\n" not in message and str(folder) in message
        assert "missing from its weights (an encoder-only checkpoint?)" in message and missing in message
    # The encoder itself is all there.
    _load(folder, "encoder")
