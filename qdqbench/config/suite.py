"""Suite files: YAML → validated ``Suite`` → ``expand()`` → the cells of the matrix.

A suite is data (``yaml.safe_load``; no tags that execute code), validated by pydantic with errors
that name the file, the key and, where useful, "did you mean". Validation checks references
between sections (a model's tasks must be defined, a backend must be known) and never touches
the network or imports torch, so ``qdqbench ls`` and ``validate`` stay fast.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

# The schema reads the registries of the layers below it (engine names, peer settings, calibration
# methods/groups/bits). All are torch-free at import time: `validate` and `ls` import no runtime
# (tests/test_cli.py, tests/quant/test_registry.py). Peer settings come from quant.peer_settings,
# never from quant.peer_builders (an import-linter contract in pyproject.toml).
from qdqbench.core.errors import BackendError, SuiteError, did_you_mean
from qdqbench.engines import BACKEND_NAMES, check_backend_name
from qdqbench.quant.peer_settings import PEER_KINDS, missing_requirement, validate_settings
from qdqbench.quant.registry import (
    CALIBRATION_METHODS,
    CALIBRATORS,
    DEFAULT_AUTO_CALIBRATORS,
    GROUPS,
    MAX_BITS,
    MIN_BITS,
    check_bits,
    parse_calibrator,
)

BACKENDS = BACKEND_NAMES  # re-exported; the engine registry owns the names
TASK_KINDS = ("glue", "squad", "embedding-fidelity")


# Suite, model, task and scheme names become path components (the run folder, artifacts/<model>/
# <task>/<scheme>/) and parts of "/"-joined cell ids, so each must be one harmless component:
# no separators, no "..", no leading dot (hidden) or dash (read as an option), no spaces or ":".
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
SAFE_NAME_RULE = "letters, digits, '.', '_', '-', '+'; starting with a letter or digit; at most 100 characters"


def _safe_name(name: str) -> str:
    # fullmatch, not "^...$": "$" would also accept a trailing newline.
    if not SAFE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a safe name ({SAFE_NAME_RULE})")
    return name


SafeName = Annotated[str, AfterValidator(_safe_name)]


class _Strict(BaseModel):
    # No inf or nan anywhere: a non-finite duration, bound or rate makes no sense, and JSON (the
    # stored suite.json a resume reads back) cannot hold them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    """Where a model's weights come from (exactly one of hub, path, package) and its tasks."""

    hub: str | None = None
    revision: str | None = None
    path: str | None = None
    package: str | None = None
    tasks: list[str] = Field(min_length=1)
    max_length: int = Field(128, ge=8, le=4096)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in ("hub", "path", "package") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of hub, path, package (got {', '.join(given) or 'none'})")
        return self

    @property
    def source(self) -> tuple[str, str]:
        """(kind, reference): ('hub', id) | ('path', dir) | ('package', name)."""
        for k in ("hub", "path", "package"):
            if getattr(self, k):
                return k, getattr(self, k)
        raise AssertionError("unreachable: validated to have one source")


class TaskSpec(_Strict):
    """A task: GLUE classification/regression, SQuAD v1.1, or the offline embedding-fidelity task."""

    kind: Literal["glue", "squad", "embedding-fidelity"] = "glue"
    name: str | None = None  # registry name; defaults to the suite key ("squad" for kind squad)
    data_dir: str | None = None  # GLUE layout folder (glue_data/<TASK>/...) or SQuAD json folder; None: the Hub
    eval_limit: int | None = Field(None, ge=1)  # score only the first N dev examples (smoke runs)
    eval_batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8, le=4096)  # overrides the model's max_length
    # SQuAD: window stride over long contexts, and whether calibration may use held-out dev
    # paragraphs when no train split is available locally (recorded as a deviation).
    doc_stride: int = Field(128, ge=1)
    max_query_length: int = Field(64, ge=1)
    allow_dev_calibration: bool = False
    # embedding-fidelity: texts from Python's own documentation (pydoc_data.topics), offline.
    texts: int = Field(256, ge=8)


class CalibrationSpec(_Strict):
    """How activation ranges are calibrated."""

    method: Literal[CALIBRATION_METHODS] = "max"  # type: ignore[valid-type]  # qdqbench.quant.registry
    percentile: float = Field(CALIBRATORS["percentile"].params["percentile"], gt=0, le=100)
    samples: int = Field(128, ge=1)
    batch_size: int = Field(16, ge=1)
    num_bins: int = Field(2048, ge=128)
    seed: int = 0


class QATSpec(_Strict):
    """Quantization-aware fine-tuning of the calibrated variant (Wu et al.: ~10% of the original
    schedule at ~1% of its learning rate, cosine annealing). Without ``steps``/``lr`` the original
    schedule is read from the checkpoint's ``finetune.json`` (or given as ``original``)."""

    steps: int | None = Field(None, ge=1)
    fraction: float = Field(0.1, gt=0, le=10)
    lr: float | None = Field(None, gt=0)
    lr_fraction: float = Field(0.01, gt=0, le=1)
    batch_size: int | None = Field(None, ge=1)
    warmup: int = Field(0, ge=0)
    original: dict[str, float] | None = None  # lr, epochs, batch_size, train_examples
    max_train_examples: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)


SELECTION_SOURCES = ("dev-split", "train")


class SelectionSpec(_Strict):
    """Where ``recipe: auto`` makes its choices.

    ``dev-split`` (the default): the evaluation set split by a stable hash of each example's text
    and the suite's seed (``qdqbench.tasks.split``) into a selection part of ``fraction`` — what
    ``auto`` chooses on — and a test part, on which the scheme's verdict is taken. ``train``: the
    old protocol, ``examples`` held out of the training split; a fine-tuned model is more
    confident on its training examples, so the choice is optimistic there (STS-B: a calibration
    that passed by 0.1 pt on train missed the bound on dev by 0.5 pt).
    """

    source: Literal[SELECTION_SOURCES] = "dev-split"  # type: ignore[valid-type]
    # Each field is read by its source only (a stored suite.json holds both).
    fraction: float = Field(0.5, gt=0, lt=1)  # dev-split: share of the evaluation set for selection
    examples: int = Field(512, ge=16)  # train: held-out training examples


class AutoSpec(_Strict):
    """``recipe: auto``: calibrators, then partial quantization, then QAT; keep the fastest
    variant on the target engine that meets the bound, within the budget."""

    calibrators: list[str] = Field(default_factory=lambda: list(DEFAULT_AUTO_CALIBRATORS))
    partial: bool = True
    qat: bool = True
    max_evaluations: int = Field(40, ge=1)
    max_minutes: float = Field(30.0, gt=0)
    selection: SelectionSpec = Field(default_factory=lambda: SelectionSpec())
    # How a candidate is accepted on the selection data: "ci-upper" (the default) when the upper
    # end of the paired bootstrap interval of its drop is within the bound — a drop that might be
    # outside the bound is not taken; "point" when the point estimate is (the old rule).
    accept: Literal["ci-upper", "point"] = "ci-upper"
    # Fraction of the accuracy bound a candidate must leave unused on the selection data (0.25:
    # it must stay within 75% of the bound there); applies under either ``accept`` rule.
    headroom: float = Field(0.0, ge=0, lt=1)
    target_backend: str | None = None  # engine whose latency decides; default: the first engine
    # Where a candidate's score on the selection data comes from: "torch", its fake-quant torch
    # model; "engine", its ONNX export run on the target engine — the numerics that ship, and on a
    # CPU engine several times faster than fake-quant torch for long inputs (SQuAD's 384 tokens).
    score_on: Literal["torch", "engine"] = "torch"
    # Passing Q/DQ structures are timed this many times, interleaved (round-robin), before the
    # fastest median is chosen; a difference inside the rounds' spread is a tie (fewer float parts win).
    timing_rounds: int = Field(3, ge=1, le=20)
    # The search space beyond the calibrators (README, "recipe: auto"). What sensitivity and partial
    # quantization work on: every Q/DQ quantizer alone ("quantizer", the paper's granularity) or
    # layer × group ("part": coarser, fewer proxy evaluations).
    granularity: Literal["quantizer", "part"] = "quantizer"
    # Narrower weight grids tried on the best full-INT8 variant when none passes (7: ONNX Runtime's
    # reduce_range; activations keep ``bits``); [] tries none.
    weight_bits: list[int] = Field(default_factory=lambda: [7])
    # Each activation group (linear inputs, matmul inputs, residual inputs) with its own calibrator,
    # the one that scores best on the selection data (weights are always max-calibrated).
    group_calibrators: bool = True
    # "measure": each passing variant with residual-add Q/DQ is also tried without it, and the
    # target engine's timing decides (a tie keeps it); "keep": never tried without.
    residual: Literal["measure", "keep"] = "measure"

    @model_validator(mode="before")
    @classmethod
    def _legacy_selection_examples(cls, data: Any) -> Any:
        # Before selection: {...} existed, ``selection_examples: N`` chose on N held-out training
        # examples; such a suite (or a stored suite.json resumed now) keeps that protocol.
        if isinstance(data, dict) and "selection_examples" in data:
            if "selection" in data:
                raise ValueError("selection_examples is the old spelling of selection: {source: train, "
                                 "examples: N}; give only selection")
            data = dict(data)
            data["selection"] = {"source": "train", "examples": data.pop("selection_examples")}
        return data

    @field_validator("weight_bits")
    @classmethod
    def _bit_range(cls, v: list[int]) -> list[int]:
        for b in v:
            check_bits(b, "auto.weight_bits")  # one line naming the setting and the range
        return v

    @field_validator("calibrators")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for c in v:
            parse_calibrator(c)  # ValueError naming the calibrator, with did-you-mean
        if not v:
            raise ValueError("give at least one calibrator")
        return v


PEER_SCHEME_KINDS: tuple[str, ...] = tuple(PEER_KINDS)  # ort-dynamic, ort-static, modelopt
SCHEME_KINDS: tuple[str, ...] = ("fp32", "qdq", *PEER_SCHEME_KINDS)


class _Scheme(_Strict):
    """What every scheme kind answers alike, so code that handles every kind needs no isinstance:
    ``is_peer`` (only ``PeerScheme`` says True) and ``peer`` (its settings; see ``_NoPeerSettings``)."""

    is_peer: ClassVar[bool] = False  # a peer tool's recipe, with no torch model of its own


class _NoPeerSettings:
    """``peer`` of the kinds without peer settings (a property: ``PeerScheme``'s is a field)."""

    @property
    def peer(self) -> dict[str, Any]:
        """No peer settings."""
        return {}


class QDQScheme(_NoPeerSettings, _Scheme):
    """A QDQBERT variant: bits, groups, weights, calibration, skips, post-calibration recipes, QAT,
    or ``recipe: auto``. The default kind: a scheme without ``kind`` is one."""

    kind: Literal["qdq"] = "qdq"
    bits: int = Field(8, ge=MIN_BITS, le=MAX_BITS)  # qdqbench.quant.registry says why 4..8
    # Weights on a narrower grid than activations; 7 avoids int16 saturation of ONNX Runtime's
    # u8×s8 kernels on x86 CPUs without VNNI (its "reduce_range").
    weight_bits: int | None = Field(None, ge=MIN_BITS, le=MAX_BITS)
    groups: list[Literal[GROUPS]] = Field(default_factory=lambda: list(GROUPS))  # type: ignore[valid-type]
    weights: Literal["per-channel", "per-tensor"] = "per-channel"
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    skip: list[str] = Field(default_factory=list)
    clip_gelu: float | None = Field(None, gt=0)  # GELU10-style clip of the FFN second linear's input amax
    fuse_qkv: bool = False  # one range for Q, K and V (engines that run them as one GEMM)
    # The word-embedding table in int8 (per tensor): int8 table → Gather → DequantizeLinear on export.
    quantize_embeddings: bool = False
    qat: QATSpec | None = None
    recipe: Literal["fixed", "auto"] = "fixed"
    auto: AutoSpec = Field(default_factory=AutoSpec)

    @field_validator("groups")
    @classmethod
    def _some_group(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"a qdq scheme needs at least one group ({', '.join(GROUPS)})")
        return v

    @model_validator(mode="after")
    def _embeddings_not_with_auto(self) -> QDQScheme:
        # auto's sensitivity parts are layer × group; the embedding table is neither yet.
        if self.quantize_embeddings and self.recipe == "auto":
            raise ValueError("quantize_embeddings is not supported with recipe: auto yet; "
                             "give it its own fixed scheme")
        return self


def dev_split_selection(scheme: Any) -> SelectionSpec | None:
    """The selection settings of a ``recipe: auto`` scheme that chooses on part of the evaluation
    set (its verdict is then taken on the other part); None for every other scheme."""
    if scheme.kind == "qdq" and scheme.recipe == "auto" and scheme.auto.selection.source == "dev-split":
        return scheme.auto.selection
    return None


# The settings a QDQ scheme has and the other kinds do not.
_QDQ_ONLY = tuple(k for k in QDQScheme.model_fields if k != "kind")
_QDQ_DEFAULTS = QDQScheme()


def _qdq_default(name: str) -> property:
    """A read-only attribute of fp32 and peer schemes: the QDQ default, for code that reads every
    scheme alike (the runner, the shard planner, the report). Setting it in a suite is an error."""
    return property(lambda self: getattr(_QDQ_DEFAULTS, name),
                    doc=f"``{name}`` of a default qdq scheme (this kind has no such setting).")


class _NotQDQ(_Scheme):
    """fp32 and peer schemes: every QDQ setting readable, at its default, none settable."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_dump(cls, data: Any) -> Any:
        # A suite.json written before schemes were split (a run started with an older qdqbench,
        # resumed now) holds every setting of the flat scheme. Those the kind never used are
        # dropped; only a complete dump qualifies, so a hand-written `bits:` is still refused.
        # (quantize_embeddings came later than the split: a dump without it still qualifies.)
        if isinstance(data, dict) and (set(_QDQ_ONLY) - {"quantize_embeddings"}) | {"peer"} <= set(data):
            data = {k: v for k, v in data.items() if k not in _QDQ_ONLY}
            if data.get("peer") == {} and cls is Fp32Scheme:
                data.pop("peer")
        return data


for _name in _QDQ_ONLY:
    setattr(_NotQDQ, _name, _qdq_default(_name))
del _name


class Fp32Scheme(_NoPeerSettings, _NotQDQ):
    """The fp32 baseline: the model as it is (exactly one per suite)."""

    kind: Literal["fp32"]


class PeerScheme(_NotQDQ):
    """A peer recipe (``ort-dynamic``, ``ort-static``, ``modelopt``) with its own ``peer`` settings,
    validated by ``qdqbench.quant.peer_settings``."""

    is_peer: ClassVar[bool] = True  # an ONNX Runtime / ModelOpt recipe
    kind: Literal[PEER_SCHEME_KINDS]  # type: ignore[valid-type]
    peer: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _peer_settings(self) -> PeerScheme:
        validate_settings(self.kind, self.peer)  # its error names the key, with did-you-mean
        missing = missing_requirement(self.kind, self.peer)
        if missing:
            raise ValueError(missing)
        return self


class _UnknownKindScheme(BaseModel):
    """Only reports an unknown ``kind`` (as a literal error listing every kind, with did-you-mean)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: Literal[SCHEME_KINDS]  # type: ignore[valid-type]


_SCHEME_TAGS: dict[str, type[BaseModel]] = {"fp32": Fp32Scheme, "qdq": QDQScheme, "peer": PeerScheme,
                                            "unknown-kind": _UnknownKindScheme}


def _scheme_tag(value: Any) -> str:
    """Which scheme class validates ``value``: by its ``kind`` (default qdq)."""
    kind = value.get("kind", "qdq") if isinstance(value, dict) else getattr(value, "kind", "qdq")
    if not isinstance(kind, str) or kind not in SCHEME_KINDS:
        return "unknown-kind"
    return "peer" if kind in PEER_SCHEME_KINDS else kind


# A scheme, told apart by ``kind``. Every variant has ``kind``, ``is_peer``, ``peer`` and the QDQ
# settings (fixed at their defaults on fp32 and peer schemes), so code reading schemes needs no
# isinstance; the YAML is the same as when schemes were one flat class.
SchemeSpec = Annotated[
    Annotated[Fp32Scheme, Tag("fp32")]
    | Annotated[QDQScheme, Tag("qdq")]
    | Annotated[PeerScheme, Tag("peer")]
    | Annotated[_UnknownKindScheme, Tag("unknown-kind")],
    Discriminator(_scheme_tag),
]


class ShapesSpec(_Strict):
    """Timed input shapes: every batch size × every sequence length."""

    batch: list[int] = Field(default_factory=lambda: [1, 8])
    seq: list[int] = Field(default_factory=lambda: [128])

    @field_validator("batch", "seq")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v):
            raise ValueError("must be a non-empty list of positive integers")
        return v


class AccuracySpec(_Strict):
    """The accuracy bound: relative (int8 ≥ (1−bound)·fp32) or absolute (points of the metric)."""

    bound: float = Field(0.01, ge=0)
    mode: Literal["relative", "absolute"] = "relative"
    bootstrap: int = Field(1000, ge=0)  # resamples for confidence intervals; 0 disables them


class TorchTimingSpec(_Strict):
    """Latency rows for the torch model itself: fp32 (or fp16/bf16) eager, INT8 schemes fake-quant."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    float_precision: Literal["fp32", "fp16", "bf16"] = "fp32"  # dtype of the fp32 scheme's rows
    cuda_graph: bool = False  # time CUDA-graph replay (launch overhead removed)


class TimingSpec(_Strict):
    """How latency is measured (each engine in its own process)."""

    threads: int | None = Field(None, ge=1)
    warmup_s: float = Field(1.0, ge=0)
    warmup_iters: int = Field(10, ge=0)
    min_iters: int = Field(50, ge=1)
    min_duration_s: float = Field(3.0, ge=0)
    max_duration_s: float = Field(60.0, gt=0)
    # fp32 latency rows: time every fp32 configuration the engine declares
    # (``Backend.fp32_configurations``; ONNX Runtime: plain and transformer-fused) and report the
    # fastest as the fp32 baseline (each figure kept), so no speedup is measured against a weak one.
    best_fp32: bool = True
    torch: TorchTimingSpec | None = None  # set to time the torch model too (off by default)
    # After the timed loop, profile this many extra inferences per op (details.op_profile, the
    # report's "Where the time goes"); 0 turns it off. Never part of the timed samples.
    profile_iters: int = Field(10, ge=0)
    # Opt-in: time the engine's own INT8 and fp32 GEMM at the model's GEMM shapes (one-MatMul
    # models, same worker method) and record each latency cell's distance to that floor.
    floor: bool = False

    @model_validator(mode="after")
    def _durations(self) -> TimingSpec:
        # The cap wins in timing.py, so a minimum above it would silently never be reached.
        if self.min_duration_s > self.max_duration_s:
            raise ValueError(f"min_duration_s ({self.min_duration_s:g}) is longer than "
                             f"max_duration_s ({self.max_duration_s:g})")
        return self


class OutputSpec(_Strict):
    """Where run folders go."""

    dir: str = "reports"
    formats: list[Literal["html", "md", "csv"]] = Field(default_factory=lambda: ["html", "md", "csv"])


class RayExecutorSpec(_Strict):
    """Resources of one Ray task (one model × task group) under ``qdqbench run --executor ray``."""

    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    max_retries: int = Field(default=2, ge=0)  # attempts after a lost worker, before the group's cells fail


class ExecutorSpec(_Strict):
    """``executor:`` settings per executor; only read by that executor (absent: its defaults)."""

    ray: RayExecutorSpec = Field(default_factory=RayExecutorSpec)


def _backend_name(name: str) -> str:
    try:
        return check_backend_name(name)
    except BackendError as exc:
        raise ValueError(str(exc)) from None


class Suite(_Strict):
    """A validated suite: the model × task × scheme × backend × shape matrix and its settings."""

    name: SafeName
    description: str = ""
    models: dict[SafeName, ModelSpec] = Field(min_length=1)
    tasks: dict[SafeName, TaskSpec] = Field(min_length=1)
    schemes: dict[SafeName, SchemeSpec] = Field(min_length=1)
    # Engines by name; "openvino@bf16", "tensorrt@fp16" (…) run an engine with reduced-precision
    # float layers (qdqbench.engines.FLOAT_PRECISIONS).
    backends: list[Annotated[str, AfterValidator(_backend_name)]] = Field(
        default_factory=lambda: ["torch", "onnxruntime"])
    shapes: ShapesSpec = Field(default_factory=ShapesSpec)
    accuracy: AccuracySpec = Field(default_factory=AccuracySpec)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    executor: ExecutorSpec | None = None  # optional: resources for --executor ray
    seed: int = 0

    @field_validator("backends")
    @classmethod
    def _backends_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a backend is listed twice")
        return v

    @field_validator("models", "tasks", "schemes")
    @classmethod
    def _distinct_folders(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Keys that differ only in case would share one artifacts folder on macOS and Windows.
        seen: dict[str, str] = {}
        for k in v:
            if k.lower() in seen:
                raise ValueError(f"keys '{seen[k.lower()]}' and '{k}' differ only in case "
                                 "(they would share a folder on case-insensitive file systems)")
            seen[k.lower()] = k
        return v

    @model_validator(mode="after")
    def _references(self) -> Suite:
        problems = []
        for mname, m in self.models.items():
            for t in m.tasks:
                if t not in self.tasks:
                    problems.append(
                        f"models.{mname}.tasks: task '{t}' is not defined in tasks{did_you_mean(t, self.tasks)}"
                    )
        fp32 = [k for k, s in self.schemes.items() if s.kind == "fp32"]
        if len(fp32) != 1:
            problems.append(f"schemes: exactly one scheme of kind fp32 is needed as the baseline (found {len(fp32)})")
        if "torch" not in self.backends:
            problems.append("backends: 'torch' is needed (it is the accuracy reference)")
        for k, s in self.schemes.items():
            target = s.auto.target_backend if s.auto is not None else None
            if target is not None and (target == "torch" or target not in self.backends):
                problems.append(f"schemes.{k}.auto.target_backend: '{target}' is not one of the suite's engines"
                                f"{did_you_mean(target, [b for b in self.backends if b != 'torch'])}")
            if s.auto is not None and s.auto.score_on == "engine" and self.backends == ["torch"]:
                problems.append(f"schemes.{k}.auto.score_on: 'engine' needs an engine in backends "
                                "(the suite has only torch)")
        peers = [k for k, s in self.schemes.items() if s.is_peer]
        if peers and self.backends == ["torch"]:
            problems.append(f"schemes.{peers[0]}: a peer recipe runs on an engine; add one to backends")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def baseline_scheme(self) -> str:
        """The name of the fp32 scheme."""
        return next(k for k, s in self.schemes.items() if s.kind == "fp32")


@dataclass(frozen=True)
class Cell:
    """One unit of work and one result record; ``id`` is stable across runs of the same suite."""

    model: str
    task: str
    scheme: str
    backend: str
    kind: str  # accuracy | fidelity | latency | export
    batch: int | None = None
    seq: int | None = None

    @property
    def id(self) -> str:
        """e.g. ``minilm/sst2/int8-max/onnxruntime/latency/b8s128``."""
        parts = [self.model, self.task, self.scheme, self.backend, self.kind]
        if self.batch is not None:
            parts.append(f"b{self.batch}s{self.seq}")
        return "/".join(parts)


def expand(suite: Suite) -> list[Cell]:
    """All cells in run order: per model × task, each scheme's accuracy, export, engines, timing."""
    cells: list[Cell] = []
    engines = [b for b in suite.backends if b != "torch"]
    for mname, m in suite.models.items():
        for tname in m.tasks:
            task = suite.tasks[tname]
            score_kind = "fidelity" if task.kind == "embedding-fidelity" else "accuracy"
            # The baseline first, so every quantized scheme has its fp32 reference to compare with.
            order = [suite.baseline_scheme] + [s for s in suite.schemes if s != suite.baseline_scheme]
            for sname in order:
                scheme = suite.schemes[sname]
                # fp32 fidelity against itself says nothing; a peer recipe has no torch model.
                if (score_kind == "accuracy" or scheme.kind != "fp32") and not scheme.is_peer:
                    cells.append(Cell(mname, tname, sname, "torch", score_kind))
                if suite.timing.torch is not None and not scheme.is_peer:
                    for batch in suite.shapes.batch:
                        for seq in suite.shapes.seq:
                            cells.append(Cell(mname, tname, sname, "torch", "latency", batch, seq))
                if not engines:
                    continue
                cells.append(Cell(mname, tname, sname, "onnx", "export"))
                for b in engines:
                    # fp32 on an engine is scored too: it checks the export against torch.
                    cells.append(Cell(mname, tname, sname, b, score_kind))
                    for batch in suite.shapes.batch:
                        for seq in suite.shapes.seq:
                            cells.append(Cell(mname, tname, sname, b, "latency", batch, seq))
    return cells


# --------------------------------------------------------------------------- loading


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _known_keys(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (for did-you-mean on unknown keys)."""
    cur: Any = Suite
    i = 0
    while i < len(loc) - 1:
        key = loc[i]
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return None
        field = cur.model_fields.get(str(key))
        if field is None:
            return None
        ann = field.annotation
        if cur is Suite and key == "schemes":
            # schemes.<name>.<tag>...: the union's tag names the scheme class
            cur, i = _SCHEME_TAGS.get(str(loc[i + 2]) if len(loc) > i + 2 else ""), i + 3
            continue
        nxt = {"models": ModelSpec, "tasks": TaskSpec}.get(str(key)) if cur is Suite else None
        if nxt is not None:
            cur, i = nxt, i + 2  # skip the user's dict key
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cur = ann
        else:
            return None
        i += 1
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _messages(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # A bad dict key (models/tasks/schemes) is reported at its section: "models: key '../x' ...",
        # not "models.../x.[key]".
        is_key = len(loc) >= 2 and loc[-1] == "[key]"
        key = _format_loc(_user_loc(loc[:-2] if is_key else loc))
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc)
            hint = did_you_mean(str(loc[-1]), _known_keys(owner)) if owner else ""
            out.append(f"{where}: {key}: unknown key{hint or _kind_hint(owner, str(loc[-1]))}")
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}{_literal_hint(err)}"
        if is_key:
            bad = repr(err.get("input"))
            msg = f"key {msg}" if msg.startswith(bad) else f"key {bad}: {msg}"
        if key:
            out.append(f"{where}: {key}: {msg}")
        else:
            out.extend(f"{where}: {m}" for m in msg.split("; "))
    return out


def _user_loc(loc: tuple) -> tuple:
    """``loc`` as the user wrote it: without the scheme union's tag (schemes.<name>.<tag>.key)."""
    if len(loc) >= 3 and loc[0] == "schemes" and loc[2] in _SCHEME_TAGS:
        return loc[:2] + loc[3:]
    return loc


def _kind_hint(owner: type[BaseModel] | None, key: str) -> str:
    """Why a setting of another scheme kind is unknown on this one."""
    if owner in (Fp32Scheme, PeerScheme) and key in _QDQ_ONLY:
        return f" ('{key}' is a setting of qdq schemes)"
    if owner in (Fp32Scheme, QDQScheme) and key == "peer":
        return f" ('peer' settings belong to a peer scheme kind ({', '.join(PEER_SCHEME_KINDS)}))"
    return ""


def _literal_hint(err: dict) -> str:
    expected = err.get("ctx", {}).get("expected", "")
    choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]
    return did_you_mean(str(err.get("input")), choices)


class SuiteValidationError(SuiteError):
    """Every problem of a suite file, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_suite(data: Any, where: str = "<suite>") -> Suite:
    """Validate a loaded mapping into a Suite; SuiteValidationError lists every problem."""
    if not isinstance(data, dict):
        raise SuiteValidationError([f"{where}: the top level must be a mapping, got {type(data).__name__}"])
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteValidationError(_messages(exc, where)) from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a suite file as plain data; one clear line for a missing file or bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                         "save the suite as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{path}: malformed YAML{at}: {problem}") from None
    if data is None:
        raise SuiteError(f"{path}: the file is empty")
    return data


def apply_overrides(data: dict[str, Any], sets: list[str], where: str = "--set") -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a copy of the suite data."""
    data = copy.deepcopy(data)
    for item in sets:
        if "=" not in item:
            raise SuiteError(f"{where} '{item}': expected KEY.PATH=VALUE")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in parts):
            raise SuiteError(f"{where} '{item}': empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise SuiteError(f"{where} '{item}': value is not valid YAML") from None
        cur: Any = data
        for i, p in enumerate(parts[:-1]):
            if not isinstance(cur, dict):
                raise SuiteError(f"{where} '{item}': '{'.'.join(parts[:i])}' is not a mapping")
            if p not in cur:
                if i == 1 and parts[0] in ("models", "tasks", "schemes"):
                    kind = parts[0][:-1]
                    raise SuiteError(f"{where} '{item}': no {kind} '{p}'{did_you_mean(p, list(cur))}")
                # A nested setting left to its defaults in the file (schemes.x.calibration.samples
                # without a calibration block): create the mapping; validation still rejects
                # unknown keys.
                cur[p] = {}
            nxt = cur[p]
            if not isinstance(nxt, dict):
                raise SuiteError(f"{where} '{item}': '{'.'.join(parts[: i + 1])}' is not a mapping")
            cur = nxt
        cur[parts[-1]] = value
    return data


def load_suite(path: Path, sets: list[str] | None = None,
               model_paths: dict[str, str] | None = None, data_dir: str | None = None) -> Suite:
    """Load, override and validate a suite file.

    ``model_paths`` maps a suite model key (or a Hub id used in the suite) to a local folder;
    ``data_dir`` replaces every GLUE task's data folder. Relative paths in the file resolve
    against the suite file's folder.
    """
    path = Path(path)
    data = load_yaml(path)
    data = apply_overrides(data, sets or [])
    if isinstance(data, dict):
        _apply_model_paths(data, model_paths or {}, path)
        if data_dir is not None and isinstance(data.get("tasks"), dict):
            for t in data["tasks"].values():
                if isinstance(t, dict) and t.get("kind", "glue") == "glue":
                    t["data_dir"] = str(Path(data_dir).resolve())
    suite = parse_suite(data, str(path))
    return _resolve_relative(suite, path.parent)


def _apply_model_paths(data: dict, model_paths: dict[str, str], path: Path) -> None:
    models = data.get("models")
    if not isinstance(models, dict):
        return
    for ref, folder in model_paths.items():
        hits = [k for k, m in models.items() if k == ref or (isinstance(m, dict) and m.get("hub") == ref)]
        if not hits:
            known = list(models) + [m.get("hub") for m in models.values() if isinstance(m, dict) and m.get("hub")]
            raise SuiteError(f"--model-path {ref}=...: no model '{ref}' in {path}{did_you_mean(ref, known)}")
        for k in hits:
            m = dict(models[k])
            for src in ("hub", "package", "revision"):
                m.pop(src, None)
            m["path"] = str(Path(folder).resolve())
            models[k] = m


def _resolve_relative(suite: Suite, base: Path) -> Suite:
    models = {
        k: (m.model_copy(update={"path": str((base / m.path).resolve())})
            if m.path and not Path(m.path).is_absolute() else m)
        for k, m in suite.models.items()
    }
    tasks = {
        k: t.model_copy(update={"data_dir": str((base / t.data_dir).resolve())})
        if t.data_dir and not Path(t.data_dir).is_absolute() else t
        for k, t in suite.tasks.items()
    }
    return suite.model_copy(update={"models": models, "tasks": tasks})


def parse_model_path(item: str) -> tuple[str, str]:
    """``ID=DIR`` → (ID, DIR); SuiteError for anything else."""
    if "=" not in item:
        raise SuiteError(f"--model-path '{item}': expected ID=DIR")
    ref, folder = item.split("=", 1)
    if not ref or not folder:
        raise SuiteError(f"--model-path '{item}': expected ID=DIR")
    return ref, folder
