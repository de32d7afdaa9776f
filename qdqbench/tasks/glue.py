"""The nine GLUE tasks (plus MNLI mismatched) as data: where text and labels are, and the metrics.

Each task is one ``GlueTask`` value; reading, prediction and scoring are shared. Data come from,
in order: the GLUE TSV layout under ``data_dir`` (``<data_dir>/SST-2/dev.tsv``, as produced by
``download_glue_data.py`` and used by BERT's ``run_glue``; ``<data_dir>/glue/SST-2/dev.tsv`` is
accepted too), local Hub exports (``<data_dir>/sst2/validation.parquet`` or ``.csv`` with the
Hub's column names), or, when ``data_dir`` is None, the Hub dataset ``nyu-mll/glue`` through the
optional ``datasets`` package. Label ids and names follow ``nyu-mll/glue``. TSV files are read
with ``csv.QUOTE_NONE`` because some MRPC, QNLI and STS-B fields begin with a bare ``"`` that a
quoting reader would swallow together with the following lines.

``align_labels`` checks a checkpoint's ``id2label`` against a task's label order, so that a head
trained with another class order is permuted, and a head for another task is an error rather
than a silent accuracy of 0.5.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import TaskError, did_you_mean
from qdqbench.tasks import metrics
from qdqbench.tasks.base import CalibrationPool, MetricSpec, PreparedTask, TaskSettings, TextExample

HUB_DATASET = "nyu-mll/glue"

ACCURACY = MetricSpec("accuracy", metrics.accuracy)
F1 = MetricSpec("f1", metrics.f1)
MCC = MetricSpec("mcc", metrics.matthews_corrcoef)
PEARSON = MetricSpec("pearson", metrics.pearson)
SPEARMAN = MetricSpec("spearman", metrics.spearman)


@dataclass(frozen=True)
class TsvLayout:
    """Where a GLUE TSV file keeps the text and label columns of one task."""

    text_a: str
    text_b: str | None
    label: str
    # Column names of a file without a header row (CoLA train/dev); None: the first row is a header.
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its files, Hub columns, label names and metrics (satisfies ``TextTask``)."""

    name: str
    glue_dir: str  # folder name in the GLUE TSV layout, e.g. "SST-2"
    hub_config: str  # configuration of nyu-mll/glue, e.g. "sst2"
    label_names: tuple[str, ...] | None
    primary_metric: str
    metrics: tuple[MetricSpec, ...]
    tsv: TsvLayout
    hub_text: tuple[str, str | None]  # text columns in the Hub dataset
    is_regression: bool = False
    eval_split: str = "dev"
    calibration_split: str = "train"
    splits: tuple[str, ...] = ("train", "dev")

    head = "classification"  # the model head load_model builds for this task
    suite_kind = "glue"  # the suite's ``kind`` of task that names this one
    reads_data_dir = True  # a suite's data_dir holds this task's files

    @property
    def num_labels(self) -> int:
        """Outputs a checkpoint head must have: the number of classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    def resolve_split(self, split: str) -> str:
        """The canonical split name ("validation" is "dev"; "dev" is the eval split for MNLI)."""
        key = split.strip().lower().replace("validation", "dev")
        if key == "dev":
            key = self.eval_split
        if key not in self.splits:
            raise TaskError(
                f"task {self.name} has no split {split!r}{did_you_mean(key, self.splits)}; "
                f"choose from {', '.join(self.splits)} ('validation' means 'dev')"
            )
        return key

    def load(self, split: str, data_dir: Path | None) -> list[TextExample]:
        """Examples of a split from ``data_dir`` (GLUE TSV or Hub exports), or the Hub when None."""
        canonical = self.resolve_split(split)
        if data_dir is None:
            return self._load_hub(canonical)
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise TaskError(f"data directory {data_dir} does not exist (task {self.name})")
        tsv_candidates = [
            data_dir / self.glue_dir / f"{canonical}.tsv",
            data_dir / "glue" / self.glue_dir / f"{canonical}.tsv",
        ]
        for path in tsv_candidates:
            if path.is_file():
                return self._read_tsv(path, canonical)
        hub_split = _hub_split(canonical)
        for stem in dict.fromkeys((canonical, hub_split)):
            for suffix, reader in ((".parquet", _parquet_records), (".csv", _csv_records)):
                path = data_dir / self.hub_config / f"{stem}{suffix}"
                if path.is_file():
                    return self._from_records(reader(path), str(path), canonical)
        raise TaskError(
            f"no {self.name} {canonical} data: {tsv_candidates[0]} does not exist "
            f"(nor {self.hub_config}/{hub_split}.parquet or .csv under {data_dir})"
        )

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """Class ids (argmax) or regression scores from model outputs of shape (n, num_labels)."""
        x = np.asarray(logits)
        if x.ndim != 2 or x.shape[1] != self.num_labels:
            raise TaskError(
                f"task {self.name} expects outputs of shape (n, {self.num_labels}), got {x.shape}"
            )
        if self.is_regression:
            return x[:, 0].astype(np.float64)
        return np.argmax(x, axis=1)

    def score(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric of the task, as fractions in [0, 1] (correlations in [-1, 1])."""
        p = np.asarray(predictions)
        y = np.asarray(labels)
        if p.shape != y.shape or p.ndim != 1:
            raise TaskError(
                f"task {self.name}: predictions {p.shape} and labels {y.shape} "
                "must be 1-D of one length"
            )
        return {spec.name: float(spec.fn(p, y)) for spec in self.metrics}

    def label_array(self, examples: Sequence[TextExample]) -> np.ndarray:
        """The examples' labels as int64 class ids or float64 scores."""
        dtype = np.float64 if self.is_regression else np.int64
        return np.array([example.label for example in examples], dtype=dtype)

    def prepare(self, model: Any, tokenizer: Any, settings: TaskSettings) -> PreparedTask:
        """Dev examples encoded, the train split as calibration pool and QAT data, the scorer.

        A checkpoint trained with another class order is permuted (``align_labels``); a head
        with another label count is an error naming the model.
        """
        from qdqbench.core.errors import QdqbenchError
        from qdqbench.tasks.evaluate import encode
        from qdqbench.tasks.scoring import GlueScorer

        perm = align_labels(self, model.config.id2label)
        if not self.is_regression and model.config.num_labels != len(self.label_names):
            raise QdqbenchError(f"model '{settings.model_name}' has {model.config.num_labels} labels, "
                                f"task {self.name} has {len(self.label_names)}")
        evals = self.load(self.eval_split, settings.data_dir)
        if settings.eval_limit:
            evals = evals[: settings.eval_limit]
        train = self.load(self.calibration_split, settings.data_dir)
        notes = {"label_permutation": [int(i) for i in perm]} if perm is not None else {}
        max_length = settings.max_length
        return PreparedTask(
            model=model, tokenizer=tokenizer, task=self, output="logits",
            eval_inputs=encode(tokenizer, evals, max_length),
            calibration=CalibrationPool(len(train), lambda idx: encode(tokenizer, [train[i] for i in idx], max_length)),
            scorer=GlueScorer(self, self.label_array(evals), perm),
            texts=[e.text_a + (" " + e.text_b if e.text_b else "") for e in evals], max_length=max_length,
            training=GlueTraining(self, train, tokenizer, max_length, perm),
            notes=notes, task_key=settings.key,
            eval_keys=self.split_keys(evals),
        )

    @staticmethod
    def split_keys(examples: list[TextExample]) -> list[str]:
        """Each example's identity for ``recipe: auto``'s selection/test split: its text."""
        from qdqbench.tasks.split import example_keys

        return example_keys(examples)

    def data_dir_problem(self, data_dir: Path) -> str | None:
        """Why ``data_dir`` cannot hold this task's files (no ``<glue_dir>/`` folder), or None."""
        if not (data_dir / self.glue_dir).is_dir() and not (data_dir / "glue" / self.glue_dir).is_dir():
            return f"has no {self.glue_dir}/ folder"
        return None

    # -- reading -----------------------------------------------------------------------------

    def _label(self, raw: Any, where: str) -> int | float:
        """A label value from a file or the Hub as a class id or float score, else TaskError."""
        if self.is_regression:
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise TaskError(f"{where}: score {raw!r} is not a number") from None
        assert self.label_names is not None
        if isinstance(raw, str):
            text = raw.strip()
            if text in self.label_names:
                return self.label_names.index(text)
            raw = int(text) if re.fullmatch(r"-?\d+", text) else raw
        if isinstance(raw, (int, np.integer)) and 0 <= raw < len(self.label_names):
            return int(raw)
        raise TaskError(
            f"{where}: label {raw!r} is not one of {list(self.label_names)} "
            f"or 0..{len(self.label_names) - 1} (an unlabelled test split?)"
        )

    def _read_tsv(self, path: Path, split: str) -> list[TextExample]:
        """Examples of a GLUE TSV file, checking its header and every row's field count."""
        layout = self.tsv
        # utf-8-sig drops the byte-order mark that starts MRPC's header ("\ufeffQuality").
        # The text is decoded while csv reads it: a bad byte surfaces as UnicodeDecodeError
        # somewhere in a buffer, located afterwards by _not_utf8.
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                examples = self._tsv_examples(reader, path, split)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise TaskError(f"{path}:{reader.line_num}: {exc}") from None
        if not examples:
            # Scoring nothing would fail later with an IndexError far from the cause.
            raise TaskError(f"{path} has no examples" if layout.columns
                            else f"{path} has a header but no examples")
        return examples

    def _tsv_examples(self, reader, path: Path, split: str) -> list[TextExample]:
        """The rows of an open TSV ``reader`` as examples (header first unless the layout names columns)."""
        layout = self.tsv
        header = list(layout.columns) if layout.columns else next(reader, None)
        if header is None:
            raise TaskError(f"{path} is empty; expected a header row")
        position = {name: i for i, name in enumerate(header)}
        wanted = [c for c in (layout.text_a, layout.text_b, layout.label) if c is not None]
        missing = [c for c in wanted if c not in position]
        if missing:
            raise TaskError(
                f"{path}: no column {', '.join(missing)} for task {self.name} "
                f"(header: {header})"
            )
        examples = []
        for row in reader:
            if not row:  # a blank line, e.g. after the last row
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != len(header):
                raise TaskError(
                    f"{where}: {len(row)} tab-separated fields, expected {len(header)}"
                )
            examples.append(
                TextExample(
                    text_a=row[position[layout.text_a]],
                    text_b=row[position[layout.text_b]] if layout.text_b else None,
                    label=self._label(row[position[layout.label]], where),
                    guid=f"{self.name}-{split}-{len(examples)}",
                )
            )
        return examples

    def _from_records(
        self, records: Iterable[Mapping[str, Any]], source: str, split: str
    ) -> list[TextExample]:
        """Examples from rows with the Hub's column names (a Hub dataset or a local export)."""
        text_a, text_b = self.hub_text
        examples = []
        for i, record in enumerate(records):
            where = f"{source} row {i}"
            try:
                a = record[text_a]
                b = record[text_b] if text_b else None
                raw_label = record["label"]
            except KeyError as exc:
                raise TaskError(
                    f"{where}: no column {exc.args[0]!r} (task {self.name} needs "
                    f"{[c for c in (text_a, text_b, 'label') if c]})"
                ) from None
            if a is None or (text_b and b is None):
                raise TaskError(f"{where}: missing text field")
            examples.append(
                TextExample(
                    text_a=str(a),
                    text_b=None if b is None else str(b),
                    label=self._label(raw_label, where),
                    guid=f"{self.name}-{split}-{i}",
                )
            )
        if not examples:
            raise TaskError(f"{source} has no examples")
        return examples

    def _load_hub(self, split: str) -> list[TextExample]:
        """Examples from the Hub dataset nyu-mll/glue (needs the optional ``datasets`` package)."""
        hub_split = _hub_split(split)
        try:
            import datasets
        except ImportError:
            raise TaskError(
                f"loading {self.name} from the Hub needs the 'datasets' package, which is not "
                "installed (pip install 'qdqbench[hub]'); or pass --data-dir with local GLUE data"
            ) from None
        try:
            dataset = datasets.load_dataset(HUB_DATASET, self.hub_config, split=hub_split)
        # datasets raises OSError, requests/httpx errors or its own types depending on version and
        # on what failed; all of them mean "no data from the Hub" and are reported with their type.
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise TaskError(
                f"could not load {HUB_DATASET} {self.hub_config}/{hub_split} from the Hub "
                f"({type(exc).__name__}: {reason}); pass --data-dir with local GLUE data"
            ) from exc
        return self._from_records(dataset, f"{HUB_DATASET} {self.hub_config}/{hub_split}", split)


@dataclass
class GlueTraining:
    """A GLUE task's labelled training examples: what QAT trains on and ``recipe: auto`` selects on."""

    task: GlueTask
    examples: list[TextExample]
    tokenizer: Any
    max_length: int
    label_perm: np.ndarray | None  # checkpoint columns -> task label order

    @property
    def is_regression(self) -> bool:
        """True for STS-B (a score, not a class)."""
        return self.task.is_regression

    @property
    def loss(self) -> str:
        """The QAT loss (a ``quant.qat.LOSSES`` key)."""
        return "regression" if self.task.is_regression else "classification"

    def sample(self, limit: int | None, seed: int, exclude: int = 0) -> tuple[Any, np.ndarray]:
        """(encoded, labels), shuffled by seed, skipping the first ``exclude``, at most ``limit``."""
        from qdqbench.tasks.evaluate import encode

        order = np.random.default_rng(seed + 7919).permutation(len(self.examples))[exclude:]
        if limit:
            order = order[:limit]
        chosen = [self.examples[i] for i in order]
        return encode(self.tokenizer, chosen, self.max_length), self.task.label_array(chosen)

    def scorer(self, labels: np.ndarray) -> Any:
        """A scorer of model outputs against ``labels`` (a held-out selection split)."""
        from qdqbench.tasks.scoring import GlueScorer

        return GlueScorer(self.task, labels, self.label_perm)


def _hub_split(split: str) -> str:
    """The Hub's name of a canonical split ("dev_matched" -> "validation_matched")."""
    return split.replace("dev", "validation")


def _csv_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV exported from a Hub dataset (``Dataset.to_csv``: header, standard quoting)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = []
            for row in reader:
                # DictReader pads short rows with None and collects extra fields under the key None.
                if None in row or None in row.values():
                    raise TaskError(
                        f"{path}:{reader.line_num}: field count differs from the header "
                        f"{reader.fieldnames}"
                    )
                rows.append(row)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit, an unterminated quote
        raise TaskError(f"{path}:{reader.line_num}: {exc}") from None
    if not rows:
        raise TaskError(f"{path} is empty; expected a header row" if reader.fieldnames is None
                        else f"{path} has a header but no examples")
    return rows


def _not_utf8(path: Path) -> TaskError:
    """TaskError naming the line and byte offset of the first byte of ``path`` that is not UTF-8."""
    offset = 0
    # Line by line in binary: b"\n" never occurs inside a UTF-8 sequence, so each line decodes
    # on its own and the failing one is exact.
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                return TaskError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {at}); "
                    "save the file as UTF-8"
                )
            offset += len(raw)
    return TaskError(f"{path}: not UTF-8 text; save the file as UTF-8")


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file exported from a Hub dataset (needs pandas with pyarrow)."""
    try:
        import pandas
    except ImportError:
        raise TaskError(
            f"reading {path} needs pandas and pyarrow, which are not installed "
            "(pip install pandas pyarrow); or export the split as .csv or use the GLUE .tsv layout"
        ) from None
    try:
        frame = pandas.read_parquet(path)
    except ImportError as exc:  # pandas without a Parquet engine
        raise TaskError(f"reading {path} needs a Parquet engine for pandas: {exc}") from None
    return frame.to_dict("records")


# -- alignment of a checkpoint's classes with a task's ---------------------------------------

# Other spellings of GLUE class names seen in fine-tuned checkpoints, after _normalise_label.
_LABEL_ALIASES = {
    "neg": "negative",
    "pos": "positive",
    "entails": "entailment",
    "non_entailment": "not_entailment",
    "is_duplicate": "duplicate",
    "non_duplicate": "not_duplicate",
    "non_equivalent": "not_equivalent",
    "contradicts": "contradiction",
}
# transformers' default names ("LABEL_0") or bare ids carry no class meaning.
_GENERIC_LABEL = re.compile(r"(label_?)?\d+")


def _normalise_label(name: str) -> str:
    """Lower case, '-' and spaces as '_', then the alias table."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return _LABEL_ALIASES.get(key, key)


def align_labels(task: GlueTask, id2label: Mapping[int | str, str]) -> np.ndarray | None:
    """``perm`` such that ``logits[:, perm]`` is in the task's label order; None for identity."""
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise TaskError(f"checkpoint id2label has non-integer ids: {dict(id2label)}") from None
    names = [by_id[i] for i in sorted(by_id)]
    if task.is_regression:
        if len(by_id) != 1:
            raise TaskError(
                f"task {task.name} is a regression and needs a checkpoint with 1 output; "
                f"this one has {len(by_id)} labels {names}"
            )
        return None
    assert task.label_names is not None
    task_names = list(task.label_names)
    if sorted(by_id) != list(range(len(task_names))):
        raise TaskError(
            f"checkpoint labels {names} (ids {sorted(by_id)}) do not fit task {task.name} "
            f"labels {task_names}"
        )
    if all(_GENERIC_LABEL.fullmatch(name.strip().lower()) for name in names):
        return None
    column_of = {_normalise_label(by_id[i]): i for i in sorted(by_id)}
    try:
        perm = np.array([column_of[_normalise_label(name)] for name in task_names], dtype=np.int64)
    except KeyError:
        raise TaskError(
            f"checkpoint labels {names} do not match task {task.name} labels {task_names}"
        ) from None
    return None if np.array_equal(perm, np.arange(len(perm))) else perm


# -- the tasks ---------------------------------------------------------------------------------

_NLI = ("entailment", "not_entailment")
_MNLI = dict(
    glue_dir="MNLI",
    hub_config="mnli",
    label_names=("entailment", "neutral", "contradiction"),
    primary_metric="accuracy",
    metrics=(ACCURACY,),
    tsv=TsvLayout("sentence1", "sentence2", "gold_label"),
    hub_text=("premise", "hypothesis"),
    splits=("train", "dev_matched", "dev_mismatched"),
)

TASKS: tuple[GlueTask, ...] = (
    GlueTask(
        name="cola",
        glue_dir="CoLA",
        hub_config="cola",
        label_names=("unacceptable", "acceptable"),
        primary_metric="mcc",
        metrics=(MCC, ACCURACY),
        tsv=TsvLayout(
            "sentence", None, "label", columns=("source", "label", "orig_label", "sentence")
        ),
        hub_text=("sentence", None),
    ),
    GlueTask(
        name="sst2",
        glue_dir="SST-2",
        hub_config="sst2",
        label_names=("negative", "positive"),
        primary_metric="accuracy",
        metrics=(ACCURACY,),
        tsv=TsvLayout("sentence", None, "label"),
        hub_text=("sentence", None),
    ),
    GlueTask(
        name="mrpc",
        glue_dir="MRPC",
        hub_config="mrpc",
        label_names=("not_equivalent", "equivalent"),
        primary_metric="f1",
        metrics=(F1, ACCURACY),
        tsv=TsvLayout("#1 String", "#2 String", "Quality"),
        hub_text=("sentence1", "sentence2"),
    ),
    GlueTask(
        name="stsb",
        glue_dir="STS-B",
        hub_config="stsb",
        label_names=None,
        # GLUE reports Pearson and Spearman; the verdict needs one, and the reference checkpoints
        # (../shared/models/README.md) list Spearman first.
        primary_metric="spearman",
        metrics=(SPEARMAN, PEARSON),
        tsv=TsvLayout("sentence1", "sentence2", "score"),
        hub_text=("sentence1", "sentence2"),
        is_regression=True,
    ),
    GlueTask(
        name="qqp",
        glue_dir="QQP",
        hub_config="qqp",
        label_names=("not_duplicate", "duplicate"),
        primary_metric="f1",
        metrics=(F1, ACCURACY),
        tsv=TsvLayout("question1", "question2", "is_duplicate"),
        hub_text=("question1", "question2"),
    ),
    GlueTask(name="mnli", eval_split="dev_matched", **_MNLI),
    GlueTask(name="mnli-mm", eval_split="dev_mismatched", **_MNLI),
    GlueTask(
        name="qnli",
        glue_dir="QNLI",
        hub_config="qnli",
        label_names=_NLI,
        primary_metric="accuracy",
        metrics=(ACCURACY,),
        tsv=TsvLayout("question", "sentence", "label"),
        hub_text=("question", "sentence"),
    ),
    GlueTask(
        name="rte",
        glue_dir="RTE",
        hub_config="rte",
        label_names=_NLI,
        primary_metric="accuracy",
        metrics=(ACCURACY,),
        tsv=TsvLayout("sentence1", "sentence2", "label"),
        hub_text=("sentence1", "sentence2"),
    ),
    GlueTask(
        name="wnli",
        glue_dir="WNLI",
        hub_config="wnli",
        label_names=("not_entailment", "entailment"),
        primary_metric="accuracy",
        metrics=(ACCURACY,),
        tsv=TsvLayout("sentence1", "sentence2", "label"),
        hub_text=("sentence1", "sentence2"),
    ),
)
