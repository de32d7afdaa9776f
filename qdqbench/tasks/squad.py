"""SQuAD v1.1 question answering (BertForQuestionAnswering): data, features, answers, metric.

The pipeline is the one of transformers' ``run_qa`` example: a fast tokenizer splits each
(question, context) pair into features of at most ``max_length`` tokens, long contexts into
several windows that overlap by ``doc_stride`` tokens (``truncation="only_second"``); the model
gives a start and an end logit per token; ``postprocess`` picks, per question, the best-scoring
span of context tokens over all of its windows (start ≤ end, at most ``max_answer_length``
tokens, among the ``n_best`` best starts and ends) and maps it back to context characters.
Unlike ``run_qa``, the ``n_best`` starts and ends are chosen among the context tokens of the
feature's real length (``run_qa`` takes them over all positions and drops invalid ones after),
so a model that puts its mass on the question never ends up with no answer at all. Questions
are cut to ``max_query_length`` tokens, as in BERT's ``run_squad.py``.

Scores are those of the official SQuAD v1.1 evaluation script: answers are normalised (lower
case, no ASCII punctuation, no articles a/an/the, single spaces), and exact match and token F1
of a question are the maximum over its gold answers. Both are reported as fractions in [0, 1]
(the script prints percentages). One difference: the script scores a question without a
prediction 0 and goes on; here that is an error, because ``postprocess`` answers every question
and a missing one means predictions and examples do not belong together.

Data come from ``dev-v1.1.json`` / ``train-v1.1.json`` (or the same with ``.zip``, member
``<name>.json``; for train, else ``train-v1.1-prefix.json``, a leading part of it) under
``data_dir`` or ``data_dir/squad``, or, when ``data_dir`` is None, from
the Hub dataset ``rajpurkar/squad`` through the optional ``datasets`` package. Calibration must
not see the scored split; where only dev exists locally, ``calibration_examples`` can, when
explicitly allowed, hold out whole dev paragraphs for calibration and score the rest: a recorded
deviation, see ``split_dev_for_calibration``.
"""

from __future__ import annotations

import json
import re
import string
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qdqbench.core.errors import TaskError, did_you_mean
from qdqbench.tasks.base import CalibrationPool, MetricSpec, PreparedTask, TaskSettings

if TYPE_CHECKING:  # qdqbench.tasks.evaluate imports qdqbench.tasks; importing it here would be circular
    from qdqbench.tasks.evaluate import Encoded

HUB_DATASET = "rajpurkar/squad"

# -- the official SQuAD v1.1 metric -----------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as in the official script
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, drop ASCII punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 of the normalised answers (bag of words); 0.0 when no token is shared."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def mean_score(scores: np.ndarray, labels: np.ndarray | None = None) -> float:
    """The mean of per-example scores: the metric fn for ``qdqbench.core.stats`` (``labels`` unused).

    SQuAD's exact match and F1 are means of per-question scores, so bootstrapping them is
    bootstrapping these arrays: pass ``per_example_scores(...)[name]`` as the predictions and
    any array of the same length as the labels.
    """
    return float(np.mean(scores))


# -- examples ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAExample:
    """One SQuAD question: its context and gold answers (texts and character starts)."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    title: str = ""


@dataclass(frozen=True)
class CalibrationSplit:
    """Examples to calibrate on and examples to score, and where the calibration ones came from."""

    calibration: list[QAExample]
    evaluation: list[QAExample]
    source: str  # "train", or "dev" for the held-out deviation
    note: str | None = None  # one line for the result record when source is "dev"


def split_dev_for_calibration(
    examples: Sequence[QAExample], n: int, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """``(calibration, evaluation)``: ``n`` questions from random whole paragraphs, and the rest.

    A deviation for when no train split is at hand: calibration should never use the scored
    split. Whole paragraphs are held out, because the questions of one paragraph share almost
    all of their tokens (the context), and a max calibrator fitted on those tokens would be
    scored on nearly the same inputs. The questions of the held-out paragraphs beyond the first
    ``n`` are neither calibrated on nor scored. The evaluation list keeps the original order.
    """
    if n < 1:
        raise TaskError(f"calibration needs at least 1 example, got {n}")
    paragraphs: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        paragraphs.setdefault(example.context, []).append(i)
    groups = list(paragraphs.values())
    order = np.random.default_rng(seed).permutation(len(groups))
    held: list[int] = []
    taken = 0
    for g in order:
        if len(held) >= n:
            break
        held.extend(groups[g])
        taken += 1
    if len(held) < n or taken == len(groups):
        raise TaskError(
            f"cannot hold out {n} calibration questions from {len(examples)} dev questions in "
            f"{len(groups)} paragraphs and still score any; use fewer calibration samples"
        )
    held_set = set(held)
    calibration = [examples[i] for i in sorted(held[:n])]
    evaluation = [e for i, e in enumerate(examples) if i not in held_set]
    return calibration, evaluation


# -- features ---------------------------------------------------------------------------------


@dataclass
class QAFeatures:
    """Tokenized windows of the examples, and how each maps back to its example and context.

    ``batches`` has the contract of ``Encoded.batches`` (indices here are feature indices), so
    ``run_batches(features, ...)`` works; pass ``reduce=features.pad_output`` so that the
    per-batch outputs, padded to each batch's longest feature, stack into one array.
    """

    examples: list[QAExample]
    encoded: Encoded
    example_index: np.ndarray  # (num_features,) int64: the example of each feature
    # Per feature, (len_i, 2) int32 character spans in the example's context; (-1, -1) for the
    # tokens that are not context ([CLS], question, [SEP]): run_qa's None offsets.
    offsets: list[np.ndarray]
    # Where ``pad_output`` pads each batch's output to: the longest feature when None. A task
    # sets its max_length, so that outputs of other features (a training selection) stack too.
    pad_width: int | None = None

    def __len__(self) -> int:
        return len(self.encoded.input_ids)

    @property
    def input_ids(self) -> list[list[int]]:
        """Token ids per feature, unpadded."""
        return self.encoded.input_ids

    @property
    def token_type_ids(self) -> list[list[int]]:
        """Segment ids per feature (0 question, 1 context), unpadded."""
        return self.encoded.token_type_ids

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id."""
        return self.encoded.pad_id

    @property
    def width(self) -> int:
        """The longest feature, in tokens (0 without features)."""
        return max((len(x) for x in self.input_ids), default=0)

    def batches(self, batch_size: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(feature indices, int64 feeds) per batch, longest-first, padded to the batch maximum."""
        return self.encoded.batches(batch_size)

    def pad_output(
        self, out: np.ndarray, feeds: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """A batch's (batch, width_b, 2) output zero-padded to (batch, pad_width or width, 2).

        For ``run_batches(..., reduce=features.pad_output)``; the padding is ignored by
        ``postprocess``, which reads each feature's real length only.
        """
        out = np.asarray(out)
        if out.ndim != 3 or out.shape[2] != 2:
            raise TaskError(
                "a question-answering model must give (batch, seq, 2) start/end logits, "
                f"got {out.shape}"
            )
        width = max(self.pad_width or 0, self.width)
        missing = width - out.shape[1]
        if missing < 0:
            raise TaskError(
                f"output of length {out.shape[1]} is longer than any feature ({width})"
            )
        return np.pad(out, ((0, 0), (0, missing), (0, 0))) if missing else out

    def rows_of(self, questions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The feature rows (every window) of the examples at ``questions``, in feature order."""
        return np.flatnonzero(np.isin(self.example_index, np.asarray(questions, dtype=np.int64)))

    def subset(self, rows: Sequence[int] | np.ndarray) -> QAFeatures:
        """The features at ``rows`` (in that order) and only the examples they belong to.

        Examples keep their relative order; the caller passes every window of a question
        (``rows_of``), else a question is scored on part of its context.
        """
        rows = np.asarray(rows, dtype=np.int64)
        kept = np.unique(self.example_index[rows])
        renumber = {int(old): new for new, old in enumerate(kept)}
        return QAFeatures(
            examples=[self.examples[int(i)] for i in kept],
            encoded=self.encoded.subset(rows),
            example_index=np.array([renumber[int(i)] for i in self.example_index[rows]], dtype=np.int64),
            offsets=[self.offsets[int(r)] for r in rows],
            pad_width=self.pad_width,
        )

    def offset_mapping(self, feature: int) -> list[tuple[int, int] | None]:
        """run_qa's view of one feature's offsets: a character span per context token, else None."""
        return [None if s < 0 else (int(s), int(e)) for s, e in self.offsets[feature]]

    def answer_positions(self, *, prefer_aligned: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Token start and end of each feature's gold answer; 0 ([CLS]) where it is not inside.

        By default the first gold answer, as run_qa's ``prepare_train_features`` labels training
        features (for QAT). With ``prefer_aligned``, the first gold answer inside the window whose
        start and end fall on token boundaries, if any: some dev annotations point into the
        middle of a token ("8" inside "20–18", where the other annotators chose "eight"), a span
        no model over these tokens can return, and a round trip should not be charged for it.
        """
        starts = np.zeros(len(self), dtype=np.int64)
        ends = np.zeros(len(self), dtype=np.int64)
        for f, offsets in enumerate(self.offsets):
            example = self.examples[self.example_index[f]]
            context = np.flatnonzero(offsets[:, 0] >= 0)
            if context.size == 0 or not example.answers:
                continue
            first_char, last_char = offsets[context[0], 0], offsets[context[-1], 1]
            chosen = None
            for k, (text, start_char) in enumerate(zip(example.answers, example.answer_starts)):
                end_char = start_char + len(text)
                inside = first_char <= start_char and end_char <= last_char
                if k == 0 and inside:
                    chosen = (start_char, end_char)
                if not prefer_aligned:
                    break
                if (
                    inside
                    and np.any(offsets[context, 0] == start_char)
                    and np.any(offsets[context, 1] == end_char)
                ):
                    chosen = (start_char, end_char)
                    break
            if chosen is None:
                continue
            start_char, end_char = chosen
            # The last token starting at or before the answer, the first one ending at or after it.
            starts[f] = context[np.flatnonzero(offsets[context, 0] <= start_char)[-1]]
            ends[f] = context[np.flatnonzero(offsets[context, 1] >= end_char)[0]]
        return starts, ends


def _truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    """Questions cut after their ``max_query_length``-th token (BERT run_squad's query limit)."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        if len(offsets) > max_query_length:
            question = question[: offsets[max_query_length - 1][1]]
        out.append(question)
    return out


def prepare_features(
    tokenizer,
    examples: Sequence[QAExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> QAFeatures:
    """Tokenize (question, context) pairs into overlapping windows, as transformers' run_qa."""
    from qdqbench.tasks.evaluate import Encoded  # not at module level: see the TYPE_CHECKING import

    if not getattr(tokenizer, "is_fast", False):
        raise TaskError(
            f"SQuAD needs a fast tokenizer (character offsets); got {type(tokenizer).__name__}"
        )
    # [CLS] question [SEP] context [SEP]: a window must have room for more than the overlap.
    room = max_length - max_query_length - 3
    if max_query_length < 1 or doc_stride < 0 or doc_stride >= room:
        raise TaskError(
            f"SQuAD windows need 0 <= doc_stride < max_length - max_query_length - 3; got "
            f"max_length {max_length}, doc_stride {doc_stride}, "
            f"max_query_length {max_query_length} "
            "(e.g. 384/128/64, or 256/64/64)"
        )
    pad_id = tokenizer.pad_token_id or 0
    if not examples:
        return QAFeatures([], Encoded([], [], pad_id), np.zeros(0, dtype=np.int64), [])
    # run_qa strips leading whitespace: some SQuAD questions start with many spaces, which would
    # only waste the window.
    questions = _truncate_questions(
        tokenizer, [e.question.lstrip() for e in examples], max_query_length
    )
    enc = tokenizer(
        questions,
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding=False,
    )
    offsets = []
    for f, spans in enumerate(enc["offset_mapping"]):
        array = np.asarray(spans, dtype=np.int32).reshape(-1, 2)
        is_context = np.array([s == 1 for s in enc.sequence_ids(f)], dtype=bool)
        array[~is_context] = -1
        offsets.append(array)
    return QAFeatures(
        examples=list(examples),
        encoded=Encoded(list(enc["input_ids"]), list(enc["token_type_ids"]), pad_id),
        example_index=np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64),
        offsets=offsets,
    )


def _feature_logits(outputs: Any, features: QAFeatures) -> Callable[[int], np.ndarray]:
    """``get(f)``: feature f's (len_f, 2) logits from a padded array or a per-feature sequence."""
    n = len(features)
    lengths = [len(x) for x in features.input_ids]
    stacked = isinstance(outputs, np.ndarray) and outputs.dtype != object
    if stacked:
        if outputs.ndim != 3 or outputs.shape[0] != n or outputs.shape[2] != 2:
            raise TaskError(
                f"SQuAD outputs must have shape ({n} features, seq, 2 start/end logits), "
                f"got {outputs.shape}"
            )
        if outputs.shape[1] < max(lengths, default=0):
            raise TaskError(
                f"SQuAD outputs have {outputs.shape[1]} positions; the longest feature has "
                f"{max(lengths)} tokens"
            )
    elif len(outputs) != n:
        raise TaskError(f"SQuAD outputs for {len(outputs)} features, expected {n}")

    def get(f: int) -> np.ndarray:
        x = outputs[f] if stacked else np.asarray(outputs[f])
        if not stacked and (x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < lengths[f]):
            raise TaskError(
                f"SQuAD output of feature {f} has shape {x.shape}; expected ({lengths[f]}+, 2)"
            )
        x = np.asarray(x[: lengths[f]], dtype=np.float64)
        if np.isnan(x).any():
            raise TaskError(f"SQuAD output of feature {f} has NaN logits")
        return x

    return get


def postprocess(
    features: QAFeatures, outputs: Any, n_best: int = 20, max_answer_length: int = 30
) -> dict[str, str]:
    """Each example's answer: the best context span over its features, by start + end logit.

    ``outputs`` is (num_features, seq, 2) with start logits in [..., 0] and end logits in
    [..., 1], or a sequence of per-feature (len_i, 2) arrays; positions past a feature's length
    are ignored. Ties go to the earlier feature, then to the higher-ranked start.
    """
    if n_best < 1 or max_answer_length < 1:
        raise TaskError(
            f"n_best and max_answer_length must be >= 1, got {n_best}, {max_answer_length}"
        )
    logits_of = _feature_logits(outputs, features)
    best_score = np.full(len(features.examples), -np.inf)
    best_span: dict[int, tuple[int, int]] = {}
    for f in range(len(features)):
        logits = logits_of(f)
        offsets = features.offsets[f]
        context = np.flatnonzero(offsets[:, 0] >= 0)
        if context.size == 0:
            continue
        k = min(n_best, context.size)
        starts = context[np.argsort(-logits[context, 0], kind="stable")[:k]]
        ends = context[np.argsort(-logits[context, 1], kind="stable")[:k]]
        s, e = np.meshgrid(starts, ends, indexing="ij")
        valid = np.flatnonzero(((e >= s) & (e - s < max_answer_length)).ravel())
        if valid.size == 0:
            continue
        scores = (logits[s, 0] + logits[e, 1]).ravel()
        pick = valid[np.argmax(scores[valid])]
        example = int(features.example_index[f])
        if example not in best_span or scores[pick] > best_score[example]:
            best_score[example] = scores[pick]
            start_tok, end_tok = s.ravel()[pick], e.ravel()[pick]
            best_span[example] = (int(offsets[start_tok, 0]), int(offsets[end_tok, 1]))
    answers = {}
    for i, example in enumerate(features.examples):
        span = best_span.get(i)
        answers[example.id] = example.context[span[0]:span[1]] if span else ""
    return answers


# -- reading ----------------------------------------------------------------------------------


def _file_name(split: str) -> str:
    return f"{split}-v1.1.json"


# A leading part of the official train-v1.1.json (whole articles, same layout), where the whole
# file cannot be had offline: ../shared holds its first 12 articles (4,370 questions). It is
# read as the train split only when the whole file is absent, and the run records which was read.
PARTIAL_TRAIN = "train-v1.1-prefix.json"


def _candidates(split: str) -> tuple[str, ...]:
    """JSON member names of a split, preferred first."""
    return (_file_name(split), PARTIAL_TRAIN) if split == "train" else (_file_name(split),)


def _find_local(data_dir: Path, split: str) -> tuple[Path, str] | None:
    """(file, JSON member): the first of <name>, <name>.zip, squad/<name>, squad/<name>.zip under
    ``data_dir``, for each candidate name of the split (train: the whole file, then its prefix)."""
    for member in _candidates(split):
        for folder in (data_dir, data_dir / "squad"):
            for name in (member, member + ".zip"):
                if (folder / name).is_file():
                    return folder / name, member
    return None


def _read_json(path: Path, member: str) -> Any:
    """The JSON document in ``path``, or in its zip member ``member``."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                if member not in archive.namelist():
                    raise TaskError(
                        f"{path} has no member {member} (members: {archive.namelist()[:5]})"
                    )
                raw = archive.read(member)
        else:
            raw = path.read_bytes()
        return json.loads(raw.decode("utf-8"))
    except (zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskError(f"{path} is not a readable SQuAD file: {exc}") from None


def _from_squad_json(document: Any, source: str) -> list[QAExample]:
    """Examples of a SQuAD v1.1 JSON document (data → paragraphs → qas → answers)."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise TaskError(f"{source}: not a SQuAD file (no top-level 'data' list)")
    version = str(document.get("version", "1.1"))
    if not version.lstrip("v").startswith("1."):
        raise TaskError(f"{source}: SQuAD version {version}; only v1.1 is supported")
    examples = []
    try:
        for article in document["data"]:
            title = str(article.get("title", ""))
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    examples.append(
                        _example(qa["id"], qa["question"], context, qa["answers"], title, source)
                    )
    except (KeyError, TypeError) as exc:
        raise TaskError(f"{source}: malformed SQuAD record ({type(exc).__name__}: {exc})") from None
    return examples


def _example(
    qid: Any,
    question: str,
    context: str,
    answers: Iterable[Mapping[str, Any]],
    title: str,
    source: str,
) -> QAExample:
    """One QAExample, checking that the question has a gold answer (v2 questions may not)."""
    answers = list(answers)
    texts = tuple(str(a["text"]) for a in answers)
    starts = tuple(int(a["answer_start"]) for a in answers)
    if not texts:
        raise TaskError(
            f"{source}: question {qid} has no answer (SQuAD v2?); only v1.1 is supported"
        )
    return QAExample(str(qid), str(question), str(context), texts, starts, title)


@dataclass(frozen=True)
class SquadTask:
    """SQuAD v1.1: data, windowed features, answer extraction and the official EM/F1."""

    name: str = "squad"
    kind: str = "qa"  # the runner's branch: features and postprocess instead of predictions
    primary_metric: str = "f1"
    metrics: tuple[MetricSpec, ...] = (
        MetricSpec("exact_match", mean_score),
        MetricSpec("f1", mean_score),
    )
    calibration_split: str = "train"
    eval_split: str = "dev"
    splits: tuple[str, ...] = ("train", "dev")
    hub_dataset: str = HUB_DATASET
    # run_qa's defaults for BERT on SQuAD v1.1.
    max_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30

    head = "question-answering"  # the model head load_model builds (start/end logits stacked)
    suite_kind = "squad"  # the suite's ``kind`` of task that names this one
    reads_data_dir = True  # a suite's data_dir holds this task's files

    def prepare(self, model: Any, tokenizer: Any, settings: TaskSettings) -> PreparedTask:
        """Windowed dev features, calibration questions (train, or held-out dev when allowed), scorer.

        Calibration questions are chosen once, for the largest sample any scheme needs, so every
        scheme and the fp32 baseline are scored on the same questions.
        """
        from qdqbench.tasks.scoring import QAScorer

        split = self.calibration_examples(settings.data_dir, settings.calibration_samples, settings.seed,
                                          allow_dev_calibration=settings.allow_dev_calibration)
        evals = split.evaluation[: settings.eval_limit] if settings.eval_limit else split.evaluation
        windows = {"max_length": settings.max_length, "doc_stride": settings.doc_stride,
                   "max_query_length": settings.max_query_length}
        features = self.prepare_features(tokenizer, evals, **windows)
        features.pad_width = settings.max_length
        notes = {"calibration_source": split.source}
        training = None
        if split.note:
            notes["calibration_note"] = split.note
        else:
            notes["train_data"] = self.split_source(self.calibration_split, settings.data_dir)
            # QAT and recipe: auto train and select on the same split calibration comes from.
            training = SquadTraining(self, lambda: self.load(self.calibration_split, settings.data_dir),
                                     tokenizer, windows)
        pool = split.calibration
        return PreparedTask(
            model=model, tokenizer=tokenizer, task=self, output="qa_logits", eval_inputs=features,
            calibration=CalibrationPool(len(pool), lambda idx: self.prepare_features(
                tokenizer, [pool[i] for i in idx], **windows)),
            scorer=QAScorer(self, features, evals), reduce=features.pad_output,
            texts=[e.context for e in evals], max_length=settings.max_length, notes=notes,
            task_key=settings.key, training=training, eval_keys=self.split_keys(evals),
        )

    @staticmethod
    def split_keys(examples: Sequence[QAExample]) -> list[str]:
        """Each question's identity for ``recipe: auto``'s selection/test split: its SQuAD id.

        The split is over questions; all windows of a question follow it (``QAScorer.part``).
        """
        from qdqbench.tasks.split import example_key

        return [example_key(e.id) for e in examples]

    def data_dir_problem(self, data_dir: Path) -> str | None:
        """None: a missing SQuAD file is reported when the split is read (with the fix)."""
        return None

    def resolve_split(self, split: str) -> str:
        """The canonical split name ("validation" is "dev")."""
        key = split.strip().lower().replace("validation", "dev")
        if key not in self.splits:
            raise TaskError(
                f"task {self.name} has no split {split!r}{did_you_mean(key, self.splits)}; "
                f"choose from {', '.join(self.splits)} ('validation' means 'dev')"
            )
        return key

    def load(self, split: str, data_dir: Path | None) -> list[QAExample]:
        """Questions of a split from ``data_dir`` (SQuAD JSON, optionally zipped), or the Hub."""
        canonical = self.resolve_split(split)
        if data_dir is None:
            return self._load_hub(canonical)
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise TaskError(f"data directory {data_dir} does not exist (task {self.name})")
        found = _find_local(data_dir, canonical)
        if found is None:
            hint = (
                "; calibration needs the train split: add it, or allow calibration on held-out "
                "dev paragraphs (a recorded deviation)" if canonical == "train" else ""
            )
            raise TaskError(
                f"no SQuAD {canonical} data: {data_dir / _file_name(canonical)} does not exist "
                f"(nor .zip{', nor ' + PARTIAL_TRAIN + '[.zip]' if canonical == 'train' else ''}, "
                f"nor under {data_dir / 'squad'}){hint}"
            )
        path, member = found
        return _from_squad_json(_read_json(path, member), str(path))

    def split_source(self, split: str, data_dir: Path | None) -> str:
        """Where a split is read from: the file (a partial train file says so), or the Hub dataset."""
        canonical = self.resolve_split(split)
        if data_dir is None:
            return f"{self.hub_dataset} {'validation' if canonical == 'dev' else canonical}"
        found = _find_local(Path(data_dir), canonical)
        if found is None:
            return f"no {canonical} file under {data_dir}"
        path, member = found
        partial = " (a leading part of train-v1.1.json, not the whole split)" if member == PARTIAL_TRAIN else ""
        return f"{path}{partial}"

    def calibration_examples(
        self,
        data_dir: Path | None,
        n: int,
        seed: int,
        *,
        allow_dev_calibration: bool = False,
    ) -> CalibrationSplit:
        """``n`` calibration questions (seeded) and the questions to score.

        Calibration examples come from train. Only when train is missing under ``data_dir`` and
        ``allow_dev_calibration`` is set do they come from dev, held out by whole paragraphs
        and left out of the evaluation list (a deviation, described in ``note``). Call this once
        per model × task with the largest sample any scheme needs, so that every scheme, and the
        fp32 baseline, is scored on the same questions.
        """
        if n < 1:
            raise TaskError(f"calibration needs at least 1 example, got {n}")
        evaluation = self.load(self.eval_split, data_dir)
        if data_dir is not None and _find_local(Path(data_dir), self.calibration_split) is None:
            if not allow_dev_calibration:
                self.load(self.calibration_split, data_dir)  # raises the missing-file error
            calibration, evaluation = split_dev_for_calibration(evaluation, n, seed)
            note = (
                f"no SQuAD train split under {data_dir}: calibrated on {len(calibration)} dev "
                f"questions (whole paragraphs held out, seed {seed}); scored on the other "
                f"{len(evaluation)} dev questions"
            )
            return CalibrationSplit(calibration, evaluation, "dev", note)
        train = self.load(self.calibration_split, data_dir)
        idx = np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False)
        return CalibrationSplit([train[i] for i in sorted(idx)], evaluation, "train")

    def prepare_features(
        self,
        tokenizer,
        examples: Sequence[QAExample],
        max_length: int | None = None,
        doc_stride: int | None = None,
        max_query_length: int | None = None,
    ) -> QAFeatures:
        """``prepare_features`` with this task's defaults for the settings left None."""
        return prepare_features(
            tokenizer,
            examples,
            self.max_length if max_length is None else max_length,
            self.doc_stride if doc_stride is None else doc_stride,
            self.max_query_length if max_query_length is None else max_query_length,
        )

    def postprocess(
        self,
        features: QAFeatures,
        outputs: Any,
        n_best: int | None = None,
        max_answer_length: int | None = None,
    ) -> dict[str, str]:
        """``postprocess`` with this task's defaults for the settings left None."""
        return postprocess(
            features,
            outputs,
            self.n_best if n_best is None else n_best,
            self.max_answer_length if max_answer_length is None else max_answer_length,
        )

    def per_example_scores(
        self, predictions: Mapping[str, str], examples: Sequence[QAExample]
    ) -> dict[str, np.ndarray]:
        """Exact match and F1 of each example (float64, in example order): the bootstrap inputs."""
        missing = [e.id for e in examples if e.id not in predictions]
        if missing:
            raise TaskError(
                f"{len(missing)} of {len(examples)} SQuAD questions have no prediction "
                f"(first: {missing[0]})"
            )
        em = np.empty(len(examples), dtype=np.float64)
        f1 = np.empty(len(examples), dtype=np.float64)
        for i, example in enumerate(examples):
            prediction = predictions[example.id]
            em[i] = max(exact_match_score(prediction, gold) for gold in example.answers)
            f1[i] = max(f1_score(prediction, gold) for gold in example.answers)
        return {"exact_match": em, "f1": f1}

    def score(
        self, predictions: Mapping[str, str], examples: Sequence[QAExample]
    ) -> dict[str, float]:
        """Exact match and F1 over the examples, as fractions in [0, 1]."""
        if not examples:
            raise TaskError("SQuAD scoring needs at least one example")
        per_example = self.per_example_scores(predictions, examples)
        return {spec.name: spec.fn(per_example[spec.name], None) for spec in self.metrics}

    @staticmethod
    def changed(pred_a: Mapping[str, str], pred_b: Mapping[str, str]) -> int:
        """How many questions got another answer text (a question in only one counts as changed)."""
        return sum(pred_a.get(k) != pred_b.get(k) for k in pred_a.keys() | pred_b.keys())

    def _load_hub(self, split: str) -> list[QAExample]:
        """Questions from the Hub dataset rajpurkar/squad (needs the optional ``datasets``)."""
        hub_split = "validation" if split == "dev" else split
        try:
            import datasets
        except ImportError:
            raise TaskError(
                f"loading {self.name} from the Hub needs the 'datasets' package, which is not "
                "installed (pip install 'qdqbench[hub]'); or pass --data-dir with a folder "
                f"holding {_file_name(split)} (or .zip)"
            ) from None
        try:
            dataset = datasets.load_dataset(self.hub_dataset, split=hub_split)
        # As in glue.py: datasets raises many exception types for "no data from the Hub".
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise TaskError(
                f"could not load {self.hub_dataset} {hub_split} from the Hub "
                f"({type(exc).__name__}: {reason}); pass --data-dir with a folder holding "
                f"{_file_name(split)} (or .zip)"
            ) from exc
        source = f"{self.hub_dataset} {hub_split}"
        examples = []
        for i, record in enumerate(dataset):
            try:
                answers = record["answers"]
                pairs = [
                    {"text": t, "answer_start": s}
                    for t, s in zip(answers["text"], answers["answer_start"])
                ]
                examples.append(
                    _example(record["id"], record["question"], record["context"], pairs,
                             str(record.get("title", "")), f"{source} row {i}")
                )
            except (KeyError, TypeError) as exc:
                raise TaskError(
                    f"{source} row {i}: malformed record ({type(exc).__name__}: {exc})"
                ) from None
        return examples


@dataclass
class QATargets:
    """The gold answers of a sample of training questions, for QAT and for scoring a selection.

    As an array it is the (features, 2) start/end token of each feature's first gold answer
    (run_qa's training labels: [CLS], position 0, where the answer is not in the window), so
    ``quant.qat.train_batches`` slices it by feature like GLUE labels; ``features`` keep the
    questions, so a selection split is scored by EM/F1 like dev.
    """

    positions: np.ndarray
    features: QAFeatures

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.positions if dtype is None else self.positions.astype(dtype)

    def __len__(self) -> int:
        """Number of questions (not windows)."""
        return len(self.features.examples)


@dataclass
class SquadTraining:
    """SQuAD's training questions: what QAT trains on and ``recipe: auto`` selects on."""

    task: SquadTask
    read: Callable[[], list[QAExample]]  # the training questions, read when QAT or auto first asks
    tokenizer: Any
    windows: dict[str, Any]  # max_length, doc_stride, max_query_length: the evaluation windows
    label_perm: None = None  # no class columns to align
    is_regression: bool = False
    loss: str = "question-answering"  # quant.qat.LOSSES key

    @cached_property
    def examples(self) -> list[QAExample]:
        """The training questions, in file order."""
        return self.read()

    def sample(self, limit: int | None, seed: int, exclude: int = 0) -> tuple[QAFeatures, QATargets]:
        """(windowed features, targets) of questions shuffled by seed, skipping ``exclude``, at most ``limit``."""
        order = np.random.default_rng(seed + 7919).permutation(len(self.examples))[exclude:]
        if limit:
            order = order[:limit]
        features = self.task.prepare_features(self.tokenizer, [self.examples[i] for i in order], **self.windows)
        features.pad_width = self.windows.get("max_length")
        starts, ends = features.answer_positions()
        return features, QATargets(np.stack([starts, ends], axis=1), features)

    def scorer(self, targets: QATargets) -> Any:
        """A scorer of start/end logits of ``targets.features`` against their questions' answers."""
        from qdqbench.tasks.scoring import QAScorer

        return QAScorer(self.task, targets.features, targets.features.examples)


def torch_qa_forward(model) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """A ``forward`` for ``run_batches``: a BertForQuestionAnswering's (batch, seq, 2) logits."""
    import torch

    device = next(model.parameters()).device

    def forward(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v).to(device) for k, v in feeds.items()})
            return torch.stack([out.start_logits, out.end_logits], dim=-1).float().cpu().numpy()

    return forward


TASKS: tuple[SquadTask, ...] = (SquadTask(),)
