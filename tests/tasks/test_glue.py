"""GLUE tasks: readers on tiny files in the real formats, the real data in ../shared, splits, Hub
fallbacks, label alignment with checkpoints, predictions and scores, and the registry."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from qdqbench.core.errors import TaskError
from qdqbench.tasks import GLUE_TASKS, TASK_NAMES, align_labels, get_task
from qdqbench.tasks.base import TextExample


def _repo_root() -> Path:
    """The folder holding pyproject.toml above this file."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError(f"no pyproject.toml above {__file__}")


SHARED = (_repo_root() / ".." / "shared").resolve()
SHARED_GLUE = SHARED / "data" / "glue"


def _shared_glue(folder: str) -> Path:
    """The shared GLUE data folder, or skip when ``folder`` is not in it."""
    if not (SHARED_GLUE / folder).is_dir():
        pytest.skip(f"no shared GLUE data at {SHARED_GLUE / folder}")
    return SHARED_GLUE


# -- tiny files in each task's real format ------------------------------------------------------

MNLI_DEV_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
    "label5\tgold_label\n"
)
MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
)


def _mnli_row(index: int, s1: str, s2: str, label: str, n_labels: int) -> str:
    """One MNLI row: ids, genre, parses, the sentences, n annotator labels and the gold label."""
    parses = ["(x)", "(y)", "(ROOT x)", "(ROOT y)"]
    fields = [str(index), "1", f"{index}e", "fiction", *parses, s1, s2, *[label] * n_labels, label]
    return "\t".join(fields) + "\n"


# task -> (file under data_dir, content, expected (text_a, text_b, label) per row)
FIXTURES = {
    "cola": (
        "CoLA/dev.tsv",
        # no header; columns source, label, original label, sentence
        "gj04\t1\t\tOur friends won't buy this analysis.\n"
        'gj04\t0\t*\t"They drank the pub.\n'
        "gj04\t1\t\tThe book \" was read.\n",
        [("Our friends won't buy this analysis.", None, 1), ('"They drank the pub.', None, 0),
         ('The book " was read.', None, 1)],
    ),
    "sst2": (
        "SST-2/dev.tsv",
        "sentence\tlabel\nit 's a charming journey . \t1\n\" unflinchingly bleak \t0\n",
        [("it 's a charming journey . ", None, 1), ('" unflinchingly bleak ', None, 0)],
    ),
    "mrpc": (
        "MRPC/dev.tsv",
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1355540\t1355592\tHe said the pie business doesn 't fit .\t\" The pie business does not fit .\n"
        "0\t2029631\t2029565\tMagnarelli said .\tHis wife said he was \" 100 percent behind \" .\n",
        [("He said the pie business doesn 't fit .", '" The pie business does not fit .', 1),
         ("Magnarelli said .", 'His wife said he was " 100 percent behind " .', 0)],
    ),
    "stsb": (
        "STS-B/dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is dancing.\tA man dances.\t5.000\n"
        '1\tmain-news\theadlines\t2015\t0001\tnone\tnone\t"Quoted\tplain\t0.750\n',
        [("A man is dancing.", "A man dances.", 5.0), ('"Quoted', "plain", 0.75)],
    ),
    "qqp": (
        "QQP/dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n"
        '263843\t69383\t380476\t"I want to pursue PhD\tWhat is a PhD?\t1\n',
        [("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", 0),
         ('"I want to pursue PhD', "What is a PhD?", 1)],
    ),
    "mnli": (
        "MNLI/dev_matched.tsv",
        MNLI_DEV_HEADER
        + _mnli_row(0, "The new rights are nice.", "Everyone loves them.", "neutral", 5)
        + _mnli_row(1, '"This site includes', "The site has lists.", "entailment", 5)
        + _mnli_row(2, "uh i don't know", "I know.", "contradiction", 5),
        [("The new rights are nice.", "Everyone loves them.", 1),
         ('"This site includes', "The site has lists.", 0),
         ("uh i don't know", "I know.", 2)],
    ),
    "mnli-mm": (
        "MNLI/dev_mismatched.tsv",
        MNLI_DEV_HEADER
        + _mnli_row(0, "Your contribution helped.", "It did not help.", "contradiction", 5),
        [("Your contribution helped.", "It did not help.", 2)],
    ),
    "qnli": (
        "QNLI/dev.tsv",
        "index\tquestion\tsentence\tlabel\n"
        '0\tWhat came into force after the new constitution?\t"The Mayor is elected.\tnot_entailment\n'
        "1\tWhat is the first major city?\tThe first is Denver.\tentailment\n",
        [("What came into force after the new constitution?", '"The Mayor is elected.', 1),
         ("What is the first major city?", "The first is Denver.", 0)],
    ),
    "rte": (
        "RTE/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tDana Reeve has died.\tChristopher Reeve had an accident.\tnot_entailment\n"
        '1\t"Yet, we now are discovering.\tBacteria are mutating.\tentailment\n',
        [("Dana Reeve has died.", "Christopher Reeve had an accident.", 1),
         ('"Yet, we now are discovering.', "Bacteria are mutating.", 0)],
    ),
    "wnli": (
        "WNLI/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tThe drain is clogged with hair.\tThe hair has to be cleaned out.\t1\n"
        "1\tJane knocked on Susan's door.\t\"Susan answered.\t0\n",
        [("The drain is clogged with hair.", "The hair has to be cleaned out.", 1),
         ("Jane knocked on Susan's door.", '"Susan answered.', 0)],
    ),
}


def _write(root: Path, relative: str, content: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8"))  # bytes: no newline translation, BOM kept as is
    return path


def test_every_glue_task_has_a_fixture():
    assert set(FIXTURES) == set(GLUE_TASKS)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_tsv_reader(tmp_path, name):
    relative, content, expected = FIXTURES[name]
    _write(tmp_path, relative, content)
    task = get_task(name)
    examples = task.load("dev", tmp_path)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == expected
    assert all(isinstance(e, TextExample) for e in examples)
    assert len({e.guid for e in examples}) == len(examples)
    labels = task.label_array(examples)
    assert labels.dtype == (np.float64 if task.is_regression else np.int64)


def test_mnli_splits_and_train_header(tmp_path):
    _write(tmp_path, FIXTURES["mnli"][0], FIXTURES["mnli"][1])
    _write(tmp_path, FIXTURES["mnli-mm"][0], FIXTURES["mnli-mm"][1])
    _write(tmp_path, "MNLI/train.tsv", MNLI_TRAIN_HEADER + _mnli_row(0, "a", "b", "neutral", 1))
    mnli, mm = get_task("mnli"), get_task("mnli-mm")
    assert len(mnli.load("dev", tmp_path)) == 3  # dev means dev_matched for mnli
    assert len(mnli.load("validation_mismatched", tmp_path)) == 1
    assert len(mm.load("dev", tmp_path)) == 1  # and dev_mismatched for mnli-mm
    assert len(mm.load("dev_matched", tmp_path)) == 3
    assert [e.label for e in mnli.load("train", tmp_path)] == [1]


def test_validation_is_an_alias_of_dev(tmp_path):
    _write(tmp_path, *FIXTURES["sst2"][:2])
    task = get_task("sst2")
    assert task.load("validation", tmp_path) == task.load("dev", tmp_path)


@pytest.mark.parametrize("split", ["test", "dev_matched", "valid"])
def test_unknown_split(tmp_path, split):
    with pytest.raises(TaskError, match="no split"):
        get_task("sst2").load(split, tmp_path)


def test_shared_layout_with_glue_subfolder(tmp_path):
    _write(tmp_path, "glue/" + FIXTURES["rte"][0], FIXTURES["rte"][1])
    assert len(get_task("rte").load("dev", tmp_path)) == 2


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(TaskError, match=r"SST-2[/\\]train\.tsv"):
        get_task("sst2").load("train", tmp_path)
    with pytest.raises(TaskError, match="does not exist"):
        get_task("sst2").load("dev", tmp_path / "nowhere")


def test_malformed_row_names_file_and_line(tmp_path):
    content = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n"
    path = _write(tmp_path, "RTE/dev.tsv", content)
    with pytest.raises(TaskError, match=rf"{path.name}:3: 3 tab-separated fields, expected 4"):
        get_task("rte").load("dev", tmp_path)


def test_wrong_header_and_bad_labels(tmp_path):
    _write(tmp_path, "SST-2/dev.tsv", "text\tlabel\nfine\t1\n")
    with pytest.raises(TaskError, match="no column sentence"):
        get_task("sst2").load("dev", tmp_path)
    _write(tmp_path, "RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tneutral\n")
    with pytest.raises(TaskError, match=r"dev\.tsv:2: label 'neutral'"):
        get_task("rte").load("dev", tmp_path)
    _write(tmp_path, "SST-2/train.tsv", "sentence\tlabel\nfine\t2\n")
    with pytest.raises(TaskError, match="label 2"):
        get_task("sst2").load("train", tmp_path)
    _write(tmp_path, "STS-B/dev.tsv", FIXTURES["stsb"][1].replace("5.000", "high"))
    with pytest.raises(TaskError, match="score 'high' is not a number"):
        get_task("stsb").load("dev", tmp_path)


def test_blank_trailing_line_and_crlf(tmp_path):
    _write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\r\ngood \t1\r\nbad \t0\r\n\r\n")
    examples = get_task("sst2").load("dev", tmp_path)
    assert [(e.text_a, e.label) for e in examples] == [("good ", 1), ("bad ", 0)]


def test_header_only_tsv_is_a_task_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\n\n")
    with pytest.raises(TaskError) as info:
        get_task("sst2").load("dev", tmp_path)
    assert str(info.value) == f"{path} has a header but no examples"
    # CoLA's files have no header row: an empty one has no examples at all.
    path = _write(tmp_path, "CoLA/dev.tsv", "")
    with pytest.raises(TaskError) as info:
        get_task("cola").load("dev", tmp_path)
    assert str(info.value) == f"{path} has no examples"


def test_non_utf8_tsv_names_file_line_and_byte_offset(tmp_path):
    path = tmp_path / "SST-2" / "train.tsv"
    path.parent.mkdir()
    # Latin-1 "café" on line 3, after 15 + 7 bytes of lines 1 and 2 and the 3 bytes of "caf".
    path.write_bytes(b"sentence\tlabel\ngood\t1\ncaf\xe9 bad\t0\n")
    with pytest.raises(TaskError) as info:
        get_task("sst2").load("train", tmp_path)
    assert str(info.value) == (f"{path}:3: not UTF-8 text (byte 0xe9 at byte offset 25); "
                               "save the file as UTF-8")


def test_non_utf8_far_into_a_large_tsv_names_the_right_line(tmp_path):
    # Far beyond the first read buffer, so the line comes from the bytes, not from csv's count.
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    rows = b"".join(b"a fine movie %d\t1\n" % i for i in range(5000))
    path.write_bytes(b"sentence\tlabel\n" + rows + b"bad \xff\xfe\t0\n")
    with pytest.raises(TaskError, match=rf"dev\.tsv:5002: not UTF-8 text \(byte 0xff at byte offset "
                                        rf"{15 + len(rows) + 4}\)"):
        get_task("sst2").load("dev", tmp_path)


def test_header_only_and_non_utf8_hub_csv_exports(tmp_path):
    path = _write(tmp_path, "mrpc/validation.csv", "sentence1,sentence2,label,idx\n")
    with pytest.raises(TaskError) as info:
        get_task("mrpc").load("dev", tmp_path)
    assert str(info.value) == f"{path} has a header but no examples"
    path = tmp_path / "mrpc" / "train.csv"
    path.write_bytes(b"sentence1,sentence2,label,idx\na,b,1,0\n\xff,b,0,1\n")
    with pytest.raises(TaskError, match=r"train\.csv:3: not UTF-8 text \(byte 0xff at byte offset 38\)"):
        get_task("mrpc").load("train", tmp_path)


# -- Hub exports and the Hub itself ------------------------------------------------------------


def test_hub_csv_export(tmp_path):
    _write(
        tmp_path,
        "mrpc/validation.csv",
        'sentence1,sentence2,label,idx\n"He said, "" no "" .",Fine .,1,0\nA .,B .,0,1\n',
    )
    examples = get_task("mrpc").load("dev", tmp_path)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ('He said, " no " .', "Fine .", 1),
        ("A .", "B .", 0),
    ]
    _write(tmp_path, "stsb/train.csv", "sentence1,sentence2,label,idx\na,b,3.8,0\n")
    assert get_task("stsb").load("train", tmp_path)[0].label == 3.8
    _write(tmp_path, "rte/validation.csv", "sentence1,label,idx\na,0,0\n")
    with pytest.raises(TaskError, match="no column 'sentence2'"):
        get_task("rte").load("dev", tmp_path)


def test_parquet_without_pandas_is_a_clear_error(tmp_path, monkeypatch):
    _write(tmp_path, "sst2/validation.parquet", "not really parquet")
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail
    with pytest.raises(TaskError, match="needs pandas"):
        get_task("sst2").load("dev", tmp_path)


def test_hub_without_datasets_suggests_data_dir(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(TaskError, match="'datasets' package.*--data-dir"):
        get_task("sst2").load("dev", None)


def _fake_datasets(load_dataset) -> types.ModuleType:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    return module


def test_unreachable_hub_is_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\n(more detail)")

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(offline))
    with pytest.raises(TaskError) as info:
        get_task("rte").load("dev", None)
    message = str(info.value)
    assert "\n" not in message
    assert "ConnectionError" in message and "--data-dir" in message


def test_hub_records_and_split_names(monkeypatch):
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}]

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(load_dataset))
    examples = get_task("mnli-mm").load("dev", None)
    assert examples == [TextExample("p", "h", 2, "mnli-mm-dev_mismatched-0")]
    get_task("mnli").load("train", None)
    assert calls == [
        ("nyu-mll/glue", "mnli", "validation_mismatched"),
        ("nyu-mll/glue", "mnli", "train"),
    ]


# -- the real data in ../shared (row and label counts from shared/data/README.md) ---------------


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, folder, split, rows, label_counts",
    [
        ("sst2", "SST-2", "dev", 872, {1: 444, 0: 428}),
        ("sst2", "SST-2", "train", 67_349, {1: 37_569, 0: 29_780}),
        ("mrpc", "MRPC", "dev", 408, {1: 279, 0: 129}),
        ("mrpc", "MRPC", "train", 3_668, {1: 2_474, 0: 1_194}),
        ("rte", "RTE", "dev", 277, {0: 146, 1: 131}),  # 0 = entailment
        ("rte", "RTE", "train", 2_490, {0: 1_249, 1: 1_241}),
    ],
)
def test_shared_glue_classification_counts(name, folder, split, rows, label_counts):
    glue = _shared_glue(folder)
    task = get_task(name)
    examples = task.load(split, glue)
    assert len(examples) == rows
    labels = task.label_array(examples)
    assert dict(zip(*np.unique(labels, return_counts=True))) == label_counts
    if task.tsv.text_b:
        assert all(e.text_b for e in examples)


@pytest.mark.shared_data
@pytest.mark.parametrize("split, rows, mean", [("dev", 1_500, 2.364), ("train", 5_749, 2.701)])
def test_shared_glue_stsb(split, rows, mean):
    glue = _shared_glue("STS-B")
    task = get_task("stsb")
    labels = task.label_array(task.load(split, glue))
    assert len(labels) == rows
    assert labels.mean() == pytest.approx(mean, abs=5e-4)
    assert labels.min() >= 0.0 and labels.max() <= 5.0


@pytest.mark.shared_data
def test_shared_data_dir_may_be_the_data_folder():
    _shared_glue("RTE")
    assert len(get_task("rte").load("dev", SHARED / "data")) == 277


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "folder, name",
    [("minilm-l6-sst2", "sst2"), ("minilm-l6-mrpc", "mrpc"), ("minilm-l6-stsb", "stsb")],
)
def test_shared_checkpoint_labels_align(folder, name):
    config = SHARED / "models" / folder / "config.json"
    if not config.is_file():
        pytest.skip(f"no shared checkpoint at {config.parent}")
    id2label = json.loads(config.read_text())["id2label"]  # keys are strings in config.json
    assert align_labels(get_task(name), id2label) is None
    if name != "stsb":
        with pytest.raises(TaskError, match="do not match task rte"):
            align_labels(get_task("rte"), id2label)


# -- label alignment ---------------------------------------------------------------------------


def test_align_identity_and_generic_labels():
    sst2 = get_task("sst2")
    assert align_labels(sst2, {0: "negative", 1: "positive"}) is None
    assert align_labels(sst2, {0: "NEG", 1: "Pos"}) is None
    assert align_labels(sst2, {0: "LABEL_0", 1: "LABEL_1"}) is None
    assert align_labels(sst2, {"0": "0", "1": "1"}) is None


def test_align_permutation():
    rte = get_task("rte")
    perm = align_labels(rte, {0: "not_entailment", 1: "entailment"})
    logits = np.array([[0.1, 0.9], [0.8, 0.2]])  # checkpoint order: not_entailment, entailment
    assert perm.tolist() == [1, 0]
    assert rte.predictions(logits[:, perm]).tolist() == [0, 1]  # task ids: 0 = entailment
    # roberta-large-mnli style upper-case names in another order
    mnli = get_task("mnli")
    perm = align_labels(mnli, {"0": "CONTRADICTION", "1": "NEUTRAL", "2": "ENTAILMENT"})
    assert perm.tolist() == [2, 1, 0]
    assert align_labels(rte, {0: "Entails", 1: "non-entailment"}) is None


def test_align_mismatch_names_both_label_sets():
    both = r"\['negative', 'positive'\].*rte.*\['entailment', 'not_entailment'\]"
    with pytest.raises(TaskError, match=both):
        align_labels(get_task("rte"), {0: "negative", 1: "positive"})
    with pytest.raises(TaskError, match="do not fit task mnli"):
        align_labels(get_task("mnli"), {0: "entailment", 1: "not_entailment"})
    with pytest.raises(TaskError, match="do not match"):
        align_labels(get_task("sst2"), {0: "LABEL_0", 1: "positive"})
    with pytest.raises(TaskError, match="do not match"):
        align_labels(get_task("sst2"), {0: "neg", 1: "negative"})


def test_align_regression():
    assert align_labels(get_task("stsb"), {0: "LABEL_0"}) is None
    with pytest.raises(TaskError, match="regression.*2 labels"):
        align_labels(get_task("stsb"), {0: "LABEL_0", 1: "LABEL_1"})


# -- predictions, scores, task attributes ------------------------------------------------------


def test_predictions():
    logits = np.array([[0.1, 0.5, 0.4], [2.0, 1.0, 0.0]])
    assert get_task("mnli").predictions(logits).tolist() == [1, 0]
    scores = get_task("stsb").predictions(np.array([[3.5], [1.25]], dtype=np.float32))
    assert scores.dtype == np.float64 and scores.tolist() == [3.5, 1.25]
    with pytest.raises(TaskError, match=r"\(n, 2\)"):
        get_task("sst2").predictions(np.zeros((4, 3)))
    with pytest.raises(TaskError, match=r"\(n, 1\)"):
        get_task("stsb").predictions(np.zeros((4, 2)))


def test_scores_are_fractions_with_the_primary_metric_first():
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    predictions = np.array([1, 0, 1, 0, 0, 1, 1, 0, 1, 1])
    assert get_task("sst2").score(predictions, labels) == {"accuracy": 0.8}
    mrpc = get_task("mrpc").score(predictions, labels)
    assert list(mrpc) == ["f1", "accuracy"] and mrpc["f1"] == pytest.approx(10 / 12)
    assert list(get_task("cola").score(predictions, labels)) == ["mcc", "accuracy"]
    stsb = get_task("stsb").score(np.array([0.5, 2.0, 3.9, 4.2]), np.array([0.0, 2.5, 3.0, 5.0]))
    assert list(stsb) == ["spearman", "pearson"] and stsb["spearman"] == pytest.approx(1.0)
    with pytest.raises(TaskError, match="1-D of one length"):
        get_task("sst2").score(predictions[:3], labels)


EXPECTED = {
    "cola": (("unacceptable", "acceptable"), "mcc", "dev"),
    "sst2": (("negative", "positive"), "accuracy", "dev"),
    "mrpc": (("not_equivalent", "equivalent"), "f1", "dev"),
    "stsb": (None, "spearman", "dev"),
    "qqp": (("not_duplicate", "duplicate"), "f1", "dev"),
    "mnli": (("entailment", "neutral", "contradiction"), "accuracy", "dev_matched"),
    "mnli-mm": (("entailment", "neutral", "contradiction"), "accuracy", "dev_mismatched"),
    "qnli": (("entailment", "not_entailment"), "accuracy", "dev"),
    "rte": (("entailment", "not_entailment"), "accuracy", "dev"),
    "wnli": (("not_entailment", "entailment"), "accuracy", "dev"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_attributes(name):
    task = get_task(name)
    label_names, primary, eval_split = EXPECTED[name]
    assert task.label_names == label_names
    assert task.is_regression == (label_names is None)
    assert task.primary_metric == primary == task.metrics[0].name
    assert all(spec.higher_is_better for spec in task.metrics)
    assert task.eval_split == eval_split
    assert task.calibration_split == "train" != task.eval_split


# -- registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling, name",
    [("sst2", "sst2"), ("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("CoLA", "cola"),
     ("MNLI-MM", "mnli-mm"), ("mnli_mismatched", "mnli-mm"), ("MNLI", "mnli")],
)
def test_get_task_spellings(spelling, name):
    assert get_task(spelling).name == name


def test_unknown_task_suggests_a_name():
    with pytest.raises(TaskError, match=r"unknown task 'mrcp' \(did you mean 'mrpc'\?\)"):
        get_task("mrcp")
    with pytest.raises(TaskError, match="known tasks: cola, sst2"):
        get_task("imagenet")


def test_registry_names():
    assert GLUE_TASKS == (
        "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli"
    )
    assert set(GLUE_TASKS) <= set(TASK_NAMES)


def test_importing_tasks_loads_no_heavy_modules():
    code = (
        "import sys, qdqbench.tasks, qdqbench.core.stats, qdqbench.tasks.metrics; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'transformers', 'sklearn', 'scipy', 'pandas', 'datasets'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
