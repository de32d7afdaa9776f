"""recipe: auto on a split dev set: it chooses on the selection part, its verdict is the test part's."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from qdqbench.cli import main
from qdqbench.core.results import load_records
from qdqbench.tasks.base import PreparedTask
from qdqbench.tasks.split import example_key, split_examples

from ..conftest import WORDS


def _only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def wide_glue(tmp_path_factory) -> Path:
    """An SST-2 folder whose dev set has 240 distinct sentences (enough for two parts of 100+)."""
    root = tmp_path_factory.mktemp("glue-wide")
    d = root / "SST-2"
    d.mkdir()
    sentences = [" ".join(w) for w in itertools.islice(itertools.permutations(WORDS[:12], 3), 240)]
    rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences))
    (d / "train.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return root


def _suite(tmp_path: Path, checkpoint: Path, glue: Path, auto: dict) -> Path:
    p = tmp_path / "auto.yaml"
    p.write_text(yaml.safe_dump({
        "name": "auto-split", "seed": 3,
        "models": {"tiny": {"path": str(checkpoint), "tasks": ["sst2"], "max_length": 16}},
        "tasks": {"sst2": {"data_dir": str(glue), "eval_batch_size": 64}},
        "schemes": {"fp32": {"kind": "fp32"},
                    "auto": {"recipe": "auto", "calibration": {"samples": 8},
                             "auto": {"calibrators": ["max"], "max_evaluations": 4, "qat": False, **auto}}},
        "backends": ["torch"], "accuracy": {"bootstrap": 50},
    }, sort_keys=False), encoding="utf-8")
    return p


def test_a_fraction_leaving_a_small_part_is_a_validate_error_naming_the_task_and_count(
        make_tiny_suite, capsys):
    suite = make_tiny_suite(schemes={"fp32": {"kind": "fp32"}, "a": {"recipe": "auto"}})  # 12 dev examples
    assert main(["validate", str(suite)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("schemes.a.auto.selection.fraction: task 'sst2'")
    assert "of 12 evaluation examples" in line and "at least 100" in line


def test_the_verdict_is_taken_on_examples_auto_never_saw(tiny_checkpoint, wide_glue, tmp_path, monkeypatch):
    seen: list[np.ndarray] = []
    original = PreparedTask.eval_part

    def spy(self, indices):  # the only way recipe: auto reaches evaluation examples
        seen.append(np.asarray(indices).copy())
        return original(self, indices)

    monkeypatch.setattr(PreparedTask, "eval_part", spy)
    suite = _suite(tmp_path, tiny_checkpoint, wide_glue, {"selection": {"source": "dev-split", "fraction": 0.5}})
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    run_dir = _only_run_dir(out)
    rec = {r.cell: r for r in load_records(run_dir)}["tiny/sst2/auto/torch/accuracy"]
    assert rec.status == "ok"

    # The split, recomputed independently from the dev file and the suite's seed.
    lines = (wide_glue / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    keys = [example_key(line.split("\t")[0]) for line in lines]
    labels = np.array([int(line.split("\t")[1]) for line in lines])
    split = split_examples(keys, 0.5, seed=3)
    assert seen and all(set(s.tolist()) == set(split.selection.tolist()) for s in seen)
    assert not set(split.selection.tolist()) & set(split.test.tolist())

    # The record's verdict and metrics are the test part's, recomputed from the saved outputs.
    out_q = np.load(run_dir / "artifacts/tiny/sst2/auto/torch-outputs.npy")
    out_f = np.load(run_dir / "artifacts/tiny/sst2/fp32/torch-outputs.npy")
    acc = lambda o, ix: float(np.mean(np.argmax(o[ix], axis=1) == labels[ix]))  # noqa: E731
    assert rec.verdict.value == pytest.approx(acc(out_q, split.test))
    assert rec.verdict.baseline == pytest.approx(acc(out_f, split.test))
    assert rec.metric(rec.primary_metric).value == pytest.approx(acc(out_q, split.test))
    parts = rec.details["evaluation_parts"]
    assert parts["verdict_on"] == "test" and rec.details["examples"] == len(split.test)
    assert parts["test"]["examples"] == len(split.test) and parts["selection"]["examples"] == len(split.selection)
    assert parts["selection"]["value"] == pytest.approx(acc(out_q, split.selection))
    assert parts["full"]["value"] == pytest.approx(acc(out_q, np.arange(len(keys))))
    assert "never saw" in parts["test"]["contains"] and "chose on" in parts["selection"]["contains"]
    recipe = rec.details["recipe"]
    assert recipe["selection_data"]["source"] == "dev-split"
    assert recipe["selection_data"]["selection_examples"] == len(split.selection)
    # Every candidate's acceptance was decided on the interval of its drop, recorded in the trace.
    evaluated = [t for t in recipe["trace"] if t["value"] is not None]
    assert evaluated and all(t["rule"] == "ci-upper" and t["drop_ci_high"] is not None for t in evaluated)
    assert all(t["passed"] == (t["drop_ci_high"] <= t["allowed_drop"] + 1e-12) for t in evaluated)
    # The report's accuracy section shows every part, labelled with what it holds.
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    line = next(x for x in md.splitlines() if x.startswith("- tiny · sst2 · auto · torch:"))
    assert f"test part ({len(split.test)} examples: evaluation examples recipe: auto never saw" in line
    assert f"selection part ({len(split.selection)} examples" in line and f"full set ({len(keys)} examples" in line
    assert "test part" in (run_dir / "report.html").read_text(encoding="utf-8")
    assert "; candidates scored in fake-quant torch." in md
    # The fp32 baseline keeps its verdict-free full-set record.
    fp32 = {r.cell: r for r in load_records(run_dir)}["tiny/sst2/fp32/torch/accuracy"]
    assert fp32.details["examples"] == len(keys) and "evaluation_parts" not in fp32.details
    # ...and its score on auto's test part beside it, so the two are compared on the same examples.
    assert fp32.details["test_part"]["auto_scheme"] == "auto"
    assert fp32.details["test_part"]["examples"] == len(split.test)
    assert fp32.details["test_part"]["value"] == pytest.approx(acc(out_f, split.test))
    lead = next(i for i, x in enumerate(md.splitlines()) if "every scheme on the same test part" in x)
    same = md.splitlines()[lead + 1:lead + 3]
    assert same[0].startswith("- fp32: ") and same[1].startswith("- auto: ")
    assert f"{100 * acc(out_q, split.test):.2f}" in same[1] and f"{100 * acc(out_f, split.test):.2f}" in same[0]


def test_train_selection_never_touches_the_dev_set(tiny_checkpoint, wide_glue, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(PreparedTask, "eval_part", lambda self, ix: seen.append(ix))
    suite = _suite(tmp_path, tiny_checkpoint, wide_glue, {"selection": {"source": "train", "examples": 32}})
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    rec = {r.cell: r for r in load_records(_only_run_dir(out))}["tiny/sst2/auto/torch/accuracy"]
    assert rec.status == "ok" and not seen
    assert rec.details["examples"] == 240 and "evaluation_parts" not in rec.details
    assert "held-out training examples" in rec.details["recipe"]["selection_split"]


def test_squad_auto_chooses_on_some_questions_and_is_judged_on_the_others(tiny_qa_checkpoint, tmp_path, monkeypatch):
    """SQuAD splits by question (its id); the verdict is the test part's, over every window of its questions."""
    _squad_data(tmp_path / "data", 100)  # 300 dev questions
    seen: list[np.ndarray] = []
    original = PreparedTask.eval_part
    monkeypatch.setattr(PreparedTask, "eval_part",
                        lambda self, ix: seen.append(np.asarray(ix).copy()) or original(self, ix))
    suite = _squad_suite(tmp_path, tiny_qa_checkpoint)
    assert main(["validate", str(suite)]) == 0
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    run_dir = _only_run_dir(out)
    rec = {r.cell: r for r in load_records(run_dir)}["tiny/squad/auto/torch/accuracy"]
    assert rec.status == "ok" and rec.verdict is not None and rec.verdict.metric == "f1"

    ids = [f"dev{a}-{q}" for a in range(100) for q in range(3)]
    split = split_examples([example_key(i) for i in ids], 0.5, seed=3)
    assert seen and all(s.tolist() == split.selection.tolist() for s in seen)
    parts = rec.details["evaluation_parts"]
    assert parts["verdict_on"] == "test" and rec.details["examples"] == len(split.test)
    assert parts["test"]["examples"] == len(split.test) and parts["selection"]["examples"] == len(split.selection)
    assert parts["full"]["examples"] == 300 and len(split.test) >= 100 and len(split.selection) >= 100
    assert rec.verdict.value == pytest.approx(parts["test"]["value"])
    # The test part's F1, recomputed from the saved outputs of every window over the test questions only.
    from transformers import AutoTokenizer

    from qdqbench.tasks.squad import SquadTask

    task = SquadTask()
    questions = task.load("dev", tmp_path / "data")
    features = task.prepare_features(AutoTokenizer.from_pretrained(tiny_qa_checkpoint), questions, 24, 4, 8)
    test = [questions[i] for i in split.test]
    for scheme, value in (("auto", rec.verdict.value), ("fp32", rec.verdict.baseline)):
        answers = task.postprocess(features, np.load(run_dir / f"artifacts/tiny/squad/{scheme}/torch-outputs.npy"))
        assert value == pytest.approx(task.score(answers, test)["f1"])
    assert rec.details["recipe"]["selection_data"]["source"] == "dev-split"


def _squad_data(folder: Path, articles: int) -> None:
    """dev-v1.1.json.zip with 3 questions per article (ids dev<a>-<q>) and a small train file."""
    import json
    import zipfile

    folder.mkdir()
    for name, tag, n in (("dev-v1.1.json", "dev", articles), ("train-v1.1.json", "train", 4)):
        data = [{"title": f"T{a}", "paragraphs": [{
            "context": f"the movie {tag}{a} was great and the music was very good , i loved this story",
            "qas": [{"id": f"{tag}{a}-{q}", "question": f"what was great {q}",
                     "answers": [{"text": "the movie", "answer_start": 0}]} for q in range(3)]}]}
            for a in range(n)]
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
            archive.writestr(name, json.dumps({"version": "1.1", "data": data}))


def _squad_suite(tmp_path: Path, checkpoint: Path) -> Path:
    suite = tmp_path / "qa.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "qa-split", "seed": 3,
        "models": {"tiny": {"path": str(checkpoint), "tasks": ["squad"]}},
        "tasks": {"squad": {"kind": "squad", "data_dir": str(tmp_path / "data"), "max_length": 24,
                            "doc_stride": 4, "max_query_length": 8, "eval_batch_size": 128}},
        "schemes": {"fp32": {"kind": "fp32"},
                    "auto": {"recipe": "auto", "calibration": {"samples": 4, "batch_size": 4},
                             "auto": {"calibrators": ["max"], "max_evaluations": 3, "qat": False}}},
        "backends": ["torch"], "accuracy": {"bootstrap": 20},
    }), encoding="utf-8")
    return suite


def test_a_squad_dev_set_too_small_to_split_is_a_validate_error_naming_the_task(tiny_qa_checkpoint, tmp_path, capsys):
    _squad_data(tmp_path / "data", 4)  # 12 questions
    assert main(["validate", str(_squad_suite(tmp_path, tiny_qa_checkpoint))]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("schemes.auto.auto.selection.fraction: task 'squad'")
    assert "of 12 evaluation examples" in line


def test_score_on_engine_scores_each_candidate_on_the_engine_it_ships_on(tiny_checkpoint, wide_glue, tmp_path,
                                                                          monkeypatch):
    """score_on: engine: the candidates' selection scores are the ONNX Runtime INT8 engine's, paired
    with the verdict's own fp32 torch baseline; the chosen model's engine cell reproduces them."""
    from qdqbench.engines.onnxruntime import OnnxRuntimeBackend

    prepared: list[str] = []
    original = OnnxRuntimeBackend.prepare

    def spy(self, path, precision, *args, **kwargs):
        prepared.append(Path(path).name)
        return original(self, path, precision, *args, **kwargs)

    monkeypatch.setattr(OnnxRuntimeBackend, "prepare", spy)
    suite = _suite(tmp_path, tiny_checkpoint, wide_glue, {"selection": {"source": "dev-split", "fraction": 0.5},
                                                          "score_on": "engine", "partial": False, "weight_bits": [],
                                                          "group_calibrators": False, "residual": "keep",
                                                          "accept": "point", "headroom": 0.25})
    doc = yaml.safe_load(suite.read_text(encoding="utf-8"))
    doc["backends"], doc["shapes"] = ["torch", "onnxruntime"], {"batch": [1], "seq": [16]}
    doc["timing"] = {"warmup_s": 0, "warmup_iters": 1, "min_iters": 3, "min_duration_s": 0, "best_fp32": False}
    suite.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    run_dir = _only_run_dir(out)
    recs = {r.cell: r for r in load_records(run_dir)}
    torch_rec, ort_rec = recs["tiny/sst2/auto/torch/accuracy"], recs["tiny/sst2/auto/onnxruntime/accuracy"]
    assert torch_rec.status == "ok" and ort_rec.status == "ok"
    recipe = torch_rec.details["recipe"]
    scored = recipe["scored_on"]
    assert scored["where"] == "engine" and scored["engine"] == "onnxruntime" and scored["precision"] == "int8"
    evaluated = [t for t in recipe["trace"] if t["value"] is not None]
    assert scored["candidates"] == len(evaluated) >= 1
    # accept: point decides on the point estimate, and the trace keeps the interval beside it.
    assert all(t["rule"] == "point" and t["drop_ci_low"] <= t["drop"] <= t["drop_ci_high"] for t in evaluated)
    assert all(t["passed"] == (t["drop"] <= t["allowed_drop"] + 1e-12) for t in evaluated)
    assert recipe["selection_bound"]["headroom"] == 0.25
    # Each candidate was built on the engine under its own name before the cells' exports were.
    scored_files = [n for n in prepared if n.startswith("scored-")]
    assert scored_files == [f"scored-{i}.onnx" for i in range(1, len(evaluated) + 1)]
    assert not list((run_dir / "artifacts/tiny/sst2/auto/auto").glob("scored-*.onnx"))  # removed after use
    # The chosen (only) candidate's selection score is what its engine cell measures on the selection part.
    (chosen,) = evaluated
    parts = ort_rec.details["evaluation_parts"]
    assert chosen["value"] == pytest.approx(parts["selection"]["value"])
    # The report's trace says where the candidates were scored.
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "; candidates scored on onnxruntime (int8)." in md


def test_score_on_engine_without_an_engine_is_a_validate_error(make_tiny_suite, capsys):
    suite = make_tiny_suite(backends=["torch"], schemes={
        "fp32": {"kind": "fp32"},
        "a": {"recipe": "auto", "auto": {"score_on": "engine", "selection": {"source": "train"}}}})
    assert main(["validate", str(suite)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "schemes.a.auto.score_on: 'engine' needs an engine in backends" in line
