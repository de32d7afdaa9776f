"""SQuAD on a real checkpoint: the partial train split, QAT targets and loss, and (with ../shared)
the fp32 reproduction of minilm-l6-squad on a fixed slice of dev, in torch and ONNX Runtime."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qdqbench.core.errors import ModelResolutionError, TaskError
from qdqbench.tasks.base import TaskSettings
from qdqbench.tasks.squad import PARTIAL_TRAIN, SquadTask

TASK = SquadTask()


def _document(articles: int, questions: int = 2, tag: str = "a") -> dict:
    data = []
    for a in range(articles):
        context = (f"the movie {tag}{a} was great and the music was very good , i loved this story but "
                   "the plot was boring")
        qas = [{"id": f"{tag}{a}-{q}", "question": f"what was great {q}",
                "answers": [{"text": "the movie", "answer_start": 0}]} for q in range(questions)]
        data.append({"title": f"T{a}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def _zip(folder: Path, member: str, document: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{member}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, json.dumps(document))
    return path


def test_the_partial_train_file_is_the_train_split(tmp_path):
    _zip(tmp_path / "squad", "dev-v1.1.json", _document(3, tag="dev"))
    with pytest.raises(TaskError, match=re.escape(PARTIAL_TRAIN)):
        TASK.calibration_examples(tmp_path, 2, seed=0)  # neither train file: the error names both
    partial = _zip(tmp_path / "squad", PARTIAL_TRAIN, _document(4, tag="train"))
    split = TASK.calibration_examples(tmp_path, 5, seed=0)
    assert split.source == "train" and len(split.calibration) == 5
    assert all(e.id.startswith("train") for e in split.calibration)
    assert all(e.id.startswith("dev") for e in split.evaluation) and len(split.evaluation) == 6
    assert TASK.split_source("train", tmp_path) == f"{partial} (a leading part of train-v1.1.json, not the whole split)"
    # The whole file, when present, is preferred and recorded as such.
    whole = _zip(tmp_path, "train-v1.1.json", _document(5, tag="whole"))
    assert TASK.split_source("train", tmp_path) == str(whole)
    assert len(TASK.load("train", tmp_path)) == 10


@pytest.fixture()
def prepared(tmp_path, tiny_qa_checkpoint):
    from qdqbench.tasks.models import ResolvedModel, load_model

    _zip(tmp_path, "dev-v1.1.json", _document(2, tag="dev"))
    _zip(tmp_path, PARTIAL_TRAIN, _document(6, tag="train"))
    model, tokenizer = load_model(ResolvedModel("tiny", tiny_qa_checkpoint, "test"), "question-answering")
    settings = TaskSettings(key="squad", model_name="tiny", max_length=24, data_dir=tmp_path,
                            calibration_samples=4, doc_stride=4, max_query_length=8)
    return TASK.prepare(model, tokenizer, settings)


def test_training_targets_are_the_gold_answer_tokens(prepared):
    training = prepared.training
    assert training is not None and training.loss == "question-answering"
    assert prepared.notes["calibration_source"] == "train" and PARTIAL_TRAIN in prepared.notes["train_data"]
    features, targets = training.sample(None, seed=3)
    assert len(targets) == 12  # questions; long contexts give more windows than that
    positions = np.asarray(targets)
    assert positions.shape == (len(features), 2) and len(features) > 12
    inside = 0
    for f, (start, end) in enumerate(positions):
        context = features.examples[features.example_index[f]].context
        if start == 0:  # [CLS]: the answer is not in this window
            context_offsets = features.offsets[f][features.offsets[f][:, 0] >= 0]
            assert end == 0 and context_offsets[0, 0] > 0  # a later window of the context
            continue
        inside += 1
        assert context[features.offsets[f][start, 0]:features.offsets[f][end, 1]] == "the movie"
    assert inside == 12  # each question's answer is in exactly its first window
    # The same seed gives the same questions; exclude skips the first ones of that order.
    again, _ = training.sample(None, seed=3)
    assert [e.id for e in again.examples] == [e.id for e in features.examples]
    rest, _ = training.sample(None, seed=3, exclude=5)
    assert [e.id for e in rest.examples] == [e.id for e in features.examples][5:]
    # Logits that put all their mass on the gold tokens score EM 1 on the selection.
    outputs = [np.zeros((len(ids), 2)) for ids in features.input_ids]
    for f, (start, end) in enumerate(positions):
        outputs[f][start, 0] = outputs[f][end, 1] = 10.0 if start else 0.0
    scorer = training.scorer(targets)
    assert scorer.scores(scorer.predictions(outputs)) == {"exact_match": 1.0, "f1": 1.0}


def test_qat_trains_the_qa_head_on_start_and_end_positions(prepared):
    import copy

    import torch

    from qdqbench.quant.qat import LOSSES, finetune, qa_loss, train_batches

    features, targets = prepared.training.sample(None, seed=0)
    batches = train_batches(features, targets, 8)
    assert sum(len(b["labels"]) for b in batches) == len(features) and batches[0]["labels"].shape[1] == 2
    model = copy.deepcopy(prepared.model)
    batch = {k: torch.from_numpy(v) for k, v in batches[0].items()}
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    logits, labels = out.qa_logits, batch["labels"]
    by_hand = sum(torch.nn.functional.cross_entropy(logits[..., i], labels[:, i]) for i in (0, 1)) / 2
    assert float(qa_loss(out, batch)) == pytest.approx(float(by_hand))
    assert LOSSES["question-answering"] is qa_loss
    before = model.inner.qa_outputs.weight.detach().clone()
    result = finetune(model, batches, steps=3, lr=1e-3, loss_fn=qa_loss)
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert not torch.equal(before, model.inner.qa_outputs.weight)


# -- the real checkpoint in ../shared -------------------------------------------------------------

SUBSET = 32  # the first dev questions (one window each): seconds per engine on 2 cores


@pytest.mark.shared_data
def test_minilm_squad_fp32_agrees_on_torch_and_onnxruntime(shared_path, tmp_path):
    """The fp32 reproduction on a fixed slice: torch and ONNX Runtime give the same answers, and
    the scores this pipeline measured on it (the whole dev set is in README: too long for CI)."""
    import torch

    from qdqbench.engines import engine_request
    from qdqbench.engines.onnxruntime import OnnxRuntimeBackend
    from qdqbench.quant.export import export_onnx
    from qdqbench.quant.qat import QATPlan
    from qdqbench.tasks.evaluate import run_batches, torch_forward
    from qdqbench.tasks.models import ResolvedModel, head_problem, load_model

    folder = shared_path("models", "minilm-l6-squad")
    data = shared_path("data", "squad")
    assert head_problem(folder, "question-answering") is None
    model, tokenizer = load_model(ResolvedModel("minilm-l6-squad", folder, "shared"), "question-answering")
    examples = TASK.load("dev", data)[:SUBSET]
    features = TASK.prepare_features(tokenizer, examples)
    assert len(features) == SUBSET
    torch_out = run_batches(features, 64, torch_forward(model, "qa_logits"), reduce=features.pad_output)
    _, sample = features.batches(2)[0]
    onnx = export_onnx(model, tmp_path / "fp32.onnx", {k: torch.from_numpy(v) for k, v in sample.items()},
                       output="qa_logits").path
    request = engine_request("onnxruntime", "fp32")
    session = OnnxRuntimeBackend().prepare(onnx, request.precision, [], threads=2, **request.options)
    ort_out = run_batches(features, 64, session.predict, reduce=features.pad_output)
    answers = {name: TASK.postprocess(features, out) for name, out in (("torch", torch_out), ("ort", ort_out))}
    assert TASK.changed(answers["torch"], answers["ort"]) == 0
    assert np.abs(torch_out - ort_out).max() < 1e-3
    scores = TASK.score(answers["torch"], examples)
    # Measured with this pipeline on 2026-11-29 (torch, 2 threads): 19/32 exact, F1 0.69479. One
    # question may flip on another CPU's float rounding; more is a change in the pipeline.
    assert abs(scores["exact_match"] - 19 / SUBSET) <= 1 / SUBSET + 1e-9
    assert abs(scores["f1"] - 0.69479) <= 1 / SUBSET
    # QAT's schedule counts the fine-tuning's windows: 10% of its 180 steps.
    finetune = json.loads((folder / "finetune.json").read_text(encoding="utf-8"))
    assert QATPlan.from_finetune(finetune).steps == 18


@pytest.mark.shared_data
def test_a_classification_checkpoint_is_refused_for_squad(shared_path):
    from qdqbench.tasks.models import ResolvedModel, head_problem, load_model

    folder = shared_path("models", "minilm-l6-sst2")
    problem = head_problem(folder, "question-answering")
    assert problem is not None and "qa_outputs" in problem and "classifier" in problem
    with pytest.raises(ModelResolutionError) as info:
        load_model(ResolvedModel("minilm-l6-sst2", folder, "shared"), "question-answering")
    message = str(info.value)
    assert "\n" not in message and str(folder) in message and "no question-answering head" in message


def test_qat_and_auto_run_on_squad_from_the_partial_train_file(tmp_path, tiny_qa_checkpoint):
    """The runner end to end: calibration, QAT and auto's selection read the train file, never dev."""
    import yaml

    from qdqbench.cli import main
    from qdqbench.core.results import load_records

    _zip(tmp_path / "data", "dev-v1.1.json", _document(3, tag="dev"))
    _zip(tmp_path / "data", PARTIAL_TRAIN, _document(10, tag="train"))
    suite = tmp_path / "qa.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "qa",
        "models": {"tiny": {"path": str(tiny_qa_checkpoint), "tasks": ["squad"]}},
        "tasks": {"squad": {"kind": "squad", "data_dir": str(tmp_path / "data"), "max_length": 24,
                            "doc_stride": 4, "max_query_length": 8}},
        "schemes": {"fp32": {"kind": "fp32"},
                    "int8-qat": {"calibration": {"samples": 4, "batch_size": 4},
                                 "qat": {"steps": 2, "lr": 1e-4, "batch_size": 4}},
                    "int8-auto": {"recipe": "auto", "calibration": {"samples": 4, "batch_size": 4},
                                  "qat": {"steps": 1, "lr": 1e-4, "batch_size": 4},
                                  "auto": {"calibrators": ["max"], "max_evaluations": 3, "selection_examples": 16}}},
        "backends": ["torch"],
        "accuracy": {"bootstrap": 20},
    }), encoding="utf-8")
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    records = {r.cell: r for r in load_records(run_dir)}
    qat = records["tiny/squad/int8-qat/torch/accuracy"]
    assert qat.status == "ok" and qat.details["qat"]["steps"] == 2
    assert all(np.isfinite(qat.details["qat"]["loss_curve"]["values"]))
    assert qat.details["calibration"]["calibration_source"] == "train"
    assert PARTIAL_TRAIN in qat.details["train_data"] and qat.details["examples"] == 6  # every dev question
    auto = records["tiny/squad/int8-auto/torch/accuracy"]
    assert auto.status == "ok" and auto.verdict is not None and auto.verdict.metric == "f1"
    assert "training examples" in auto.details["recipe"]["selection_split"]


@pytest.fixture()
def prepared_many(tmp_path, tiny_qa_checkpoint):
    """60 dev questions, each over several windows of 24 tokens."""
    from qdqbench.tasks.models import ResolvedModel, load_model

    _zip(tmp_path, "dev-v1.1.json", _document(20, questions=3, tag="dev"))
    _zip(tmp_path, PARTIAL_TRAIN, _document(6, tag="train"))
    model, tokenizer = load_model(ResolvedModel("tiny", tiny_qa_checkpoint, "test"), "question-answering")
    settings = TaskSettings(key="squad", model_name="tiny", max_length=24, data_dir=tmp_path,
                            calibration_samples=4, doc_stride=4, max_query_length=8)
    return TASK.prepare(model, tokenizer, settings)


def test_the_dev_split_is_over_questions_and_keeps_each_questions_windows_together(prepared_many):
    from qdqbench.tasks.split import split_examples

    p = prepared_many
    ids = [e.id for e in p.scorer.examples]
    features = p.eval_inputs
    assert len(ids) == 60 and np.bincount(features.example_index).min() >= 2  # several windows each
    assert p.eval_keys == ids  # a question's SQuAD id: stable, not its position
    split = split_examples(p.eval_keys, 0.5, seed=3)
    assert split_examples(p.eval_keys, 0.5, seed=3).selection.tolist() == split.selection.tolist()
    assert split_examples(p.eval_keys, 0.5, seed=4).selection.tolist() != split.selection.tolist()
    # File order does not move a question to the other part.
    reordered = split_examples(p.eval_keys[::-1], 0.5, seed=3)
    assert {ids[::-1][i] for i in reordered.selection} == {ids[i] for i in split.selection}
    sel, test = set(split.selection.tolist()), set(split.test.tolist())
    assert sel and test and not sel & test and sel | test == set(range(len(ids)))

    outputs = np.random.default_rng(0).normal(size=(len(features), 24, 2)).astype(np.float32)
    full = p.scorer.predictions(outputs)
    all_rows = []
    for idx in (split.selection, split.test):
        inputs, scorer, rows = p.eval_part(idx)
        questions = set(idx.tolist())
        # Every window of the part's questions, and no window of another question.
        assert set(rows.tolist()) == {f for f in range(len(features)) if int(features.example_index[f]) in questions}
        assert [e.id for e in scorer.examples] == [ids[i] for i in idx]
        assert inputs.input_ids == [features.input_ids[r] for r in rows]
        assert [ids[i] for i in np.unique(np.asarray(features.example_index)[rows])] == [e.id for e in inputs.examples]
        # A part scores its questions exactly as the full set does.
        preds = scorer.predictions(outputs[rows])
        assert preds == {ids[i]: full[ids[i]] for i in idx}
        assert scorer.count(preds) == len(idx)
        all_rows.extend(rows.tolist())
    assert sorted(all_rows) == list(range(len(features)))
