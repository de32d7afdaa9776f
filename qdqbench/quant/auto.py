"""What to do when post-training quantization misses the accuracy bound (Wu et al. 2020, §5–6).

The paper's workflow, as a library the runner drives with callbacks (so it knows nothing of tasks,
data or engines):

1. calibrate with several methods and keep the best (``auto_recipe``'s first stage); then, on
   the full INT8 graph still, weights on a narrower grid (7 bits) and each activation group with
   its own calibrator (ranges mixed from the calibrations already made);
2. ``sensitivity``: score the model with one *part* quantized alone and with one part left in
   float alone, for every part — a part is the quantizers of one placement group in one layer
   (``layer.3.linear``, ``layer.3.matmul``, ``layer.3.residual``), of a whole group
   (``all.linear``), or one quantizer (``quantizer_parts``: ``layer.3.output.dense.input``) —
   and rank the parts, most harmful first;
3. ``greedy_partial``: leave parts in float, most harmful first, until the bound is met, then
   drop every float part that is not needed (a 1-minimal float set, not a global minimum);
4. QAT (``qdqbench.quant.qat.finetune``, through the ``qat_fn`` callback);
5. residual-add Q/DQ: each passing structure once more without it, the engine's timing decides.

``auto_recipe`` runs these within a budget and returns the *fastest* candidate that meets the
bound, not the first: a full-INT8 variant (any calibrator, or QAT) before a partial one, and among
partial ones the fewest float parts — or, when the caller's ``latency_fn`` measures them on the
target engine, the lowest measured latency. If nothing meets the bound it returns the best
candidate found with its gap to the threshold.

Partial quantization here switches quantizers off on an already-calibrated model. That is the
same model as building with ``QDQSettings(skip=patterns)`` and calibrating: calibration runs every
quantizer as an identity, so each amax depends only on the float activations, never on which
other quantizers are on. ``PartialResult.patterns`` are the fnmatch patterns that rebuild it.

Callbacks and what they must do:
  ``calibrate(spec) -> model``    a fresh calibrated QDQ model (``Calibrations`` builds them);
  ``meets_bound(model) -> (passed, value)``   the verdict and primary metric on the selection data
                                  (``MeetsBound`` wraps a metric function with the suite's bound);
  ``score_fn(model) -> float``    the cheap sensitivity proxy, higher is better
                                  (``logits_sqnr_proxy``); None: ``meets_bound``'s value;
  ``latency_fn(model) -> float | None``   latency on the target engine, lower is better;
  ``qat_fn(model) -> QATResult``  fine-tunes the model it is given in place.
Every model handed to a callback has its quantizer modes set for the candidate; the modes are
restored afterwards, and a callback must not change them itself.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from qdqbench.core.errors import CalibrationError, QdqbenchError
from qdqbench.quant.auto_timing import TIE_RULE, Timing, fastest, time_round_robin
from qdqbench.quant.qdqbert import QDQSettings, apply_skip_patterns, encoder_layers, quantizer_group
from qdqbench.quant.quantizer import quantizers, sqnr_db
from qdqbench.quant.registry import (
    CALIBRATION_METHODS,
    DEFAULT_AUTO_CALIBRATORS,
    GROUPS,
    calibrator_entry,
    check_bits,
    parse_calibrator,
)

SENSITIVITY_MODES = ("both", "quantize_one", "float_one")
# What sensitivity and partial quantization work on: layer × group parts, or every quantizer alone.
GRANULARITIES = ("part", "quantizer")
# Leaf names of each group's quantizers, as fnmatch globs (qdqbert's naming).
_GROUP_GLOBS = {"linear": ("input_quantizer", "weight_quantizer"), "matmul": ("matmul_*_quantizer",),
                "residual": ("add_*_quantizer",)}
MINIMALITY_NOTE = ("1-minimal: with any single float part quantized again the bound is missed; greedy "
                   "search plus pruning does not guarantee the smallest possible float set")


class AutoQuantError(QdqbenchError):
    """The auto recipe could not build a single candidate."""


# ----------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """A set of quantizers that is quantized or left in float together."""

    name: str  # "layer.3.linear", "all.linear" for the whole group, "layer.3.output.dense.input" for one quantizer
    kind: str  # "layer", "group" or "quantizer"
    group: str
    layer: int | None
    quantizers: frozenset[str]
    patterns: tuple[str, ...]  # fnmatch skip patterns that disable exactly these quantizers

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (quantizer count, not names)."""
        return {"part": self.name, "kind": self.kind, "group": self.group, "layer": self.layer,
                "quantizers": len(self.quantizers), "patterns": list(self.patterns)}


def find_parts(model: nn.Module, *, per_layer: bool = True, per_group: bool = True,
               per_quantizer: bool = False) -> list[Part]:
    """Parts of a QDQBERT variant from its enabled quantizers: each layer × group, each whole group,
    and (``per_quantizer``) each quantizer alone (``quantizer_parts``).

    Quantizers outside the encoder's layers (none in qdqbert's placement) form ``other.<group>``.
    """
    enabled = [name for name, q in quantizers(model) if q.mode != "disabled"]
    if not enabled:
        raise ValueError(f"{type(model).__name__} has no enabled quantizer: nothing to analyse")
    names = {id(m): n for n, m in model.named_modules()}
    prefixes = [names[id(layer)] for layer in encoder_layers(model)]
    by_key: dict[tuple[int | None, str], set[str]] = {}
    for qname in enabled:
        layer = next((i for i, p in enumerate(prefixes) if qname.startswith(p + ".")), None)
        by_key.setdefault((layer, quantizer_group(qname)), set()).add(qname)
    all_names = [n for n, _ in quantizers(model)]
    disabled = set(all_names) - set(enabled)
    parts: list[Part] = []
    if per_layer:
        for (layer, group), members in sorted(by_key.items(), key=lambda kv: (
                kv[0][0] is None, kv[0][0] or 0, GROUPS.index(kv[0][1]))):
            name = f"layer.{layer}.{group}" if layer is not None else f"other.{group}"
            globs = [f"{prefixes[layer]}.*.{g}" for g in _GROUP_GLOBS[group]] if layer is not None else []
            parts.append(Part(name, "layer", group, layer, frozenset(members),
                              _patterns(globs, members, all_names, disabled)))
    if per_group:
        for group in GROUPS:
            members = {n for (_, g), ms in by_key.items() if g == group for n in ms}
            if members:
                globs = [f"*.{g}" for g in _GROUP_GLOBS[group]]
                parts.append(Part(f"all.{group}", "group", group, None, frozenset(members),
                                  _patterns(globs, members, all_names, disabled)))
    if per_quantizer:
        parts.extend(quantizer_parts(model))
    return parts


def quantizer_parts(model: nn.Module) -> list[Part]:
    """One part per enabled quantizer — a linear's input, a linear's weight, each attention matmul
    input, each residual-add input — in model order (the paper's per-layer granularity: every Q/DQ
    on its own). Named ``layer.<i>.<path in the layer>`` without ``_quantizer``
    (``layer.1.output.dense.input``); the pattern is the quantizer's full name, which disables it alone.
    """
    enabled = [name for name, q in quantizers(model) if q.mode != "disabled"]
    if not enabled:
        raise ValueError(f"{type(model).__name__} has no enabled quantizer: nothing to analyse")
    names = {id(m): n for n, m in model.named_modules()}
    prefixes = [names[id(layer)] for layer in encoder_layers(model)]
    parts = []
    for qname in enabled:
        layer = next((i for i, p in enumerate(prefixes) if qname.startswith(p + ".")), None)
        short = qname.removesuffix("_quantizer")
        short = f"layer.{layer}.{short[len(prefixes[layer]) + 1:]}" if layer is not None else f"other.{short}"
        parts.append(Part(short, "quantizer", quantizer_group(qname), layer, frozenset({qname}), (qname,)))
    return parts


def pattern_matches(name: str, pattern: str) -> bool:
    """Whether a skip pattern hits a quantizer, as ``apply_skip_patterns`` decides (any name scope)."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _patterns(globs: list[str], members: set[str], all_names: list[str], disabled: set[str]) -> tuple[str, ...]:
    """Compact globs when they hit exactly ``members`` (plus already-disabled ones), else the names."""
    if globs:
        hit = {n for n in all_names if any(pattern_matches(n, g) for g in globs)}
        if hit - disabled == members and all(any(pattern_matches(n, g) for n in members) for g in globs):
            return tuple(globs)
    return tuple(sorted(members))


def patterns_for(parts: Sequence[Part]) -> tuple[str, ...]:
    """The skip patterns of a float set (``QDQSettings.skip`` / ``apply_skip_patterns``)."""
    return tuple(dict.fromkeys(p for part in parts for p in part.patterns))


@contextmanager
def _float(model: nn.Module, names: set[str] | frozenset[str], *, keep: bool = False) -> Iterator[nn.Module]:
    """Switch the named quantizers off (or, with ``keep``, every enabled one *but* them); restore."""
    saved = {q: q.mode for _, q in quantizers(model)}
    try:
        for name, q in quantizers(model):
            if q.mode != "disabled" and ((name not in names) if keep else (name in names)):
                q.mode = "disabled"
        yield model
    finally:
        for q, mode in saved.items():
            q.mode = mode


def enabled_quantizers(model: nn.Module) -> frozenset[str]:
    """Names of the quantizers that are on: the model's Q/DQ structure (what an engine runs in INT8)."""
    return frozenset(name for name, q in quantizers(model) if q.mode != "disabled")


# ----------------------------------------------------------------------------------- budget


@dataclass
class Budget:
    """Limits shared by all stages: ``meets_bound`` calls, proxy (score_fn) calls, wall time.

    The clock starts at the first check. Time is checked between evaluations: one that is
    running (a calibration, a QAT run) is not interrupted.
    """

    max_evaluations: int | None = None
    max_proxy_evaluations: int | None = None
    max_seconds: float | None = None
    evaluations: int = 0
    proxy_evaluations: int = 0
    started: float | None = None

    def __post_init__(self) -> None:
        if self.max_evaluations is not None and self.max_evaluations < 1:
            raise ValueError(f"max_evaluations must be >= 1, got {self.max_evaluations}")
        if self.max_proxy_evaluations is not None and self.max_proxy_evaluations < 0:
            raise ValueError(f"max_proxy_evaluations must be >= 0, got {self.max_proxy_evaluations}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")

    def start(self) -> Budget:
        """Start the clock (if not yet started); returns self."""
        if self.started is None:
            self.started = time.perf_counter()
        return self

    @property
    def elapsed(self) -> float:
        """Seconds since the clock started (it starts at the first check)."""
        return time.perf_counter() - self.start().started

    def _time_left(self) -> bool:
        return self.max_seconds is None or self.elapsed < self.max_seconds

    def can_evaluate(self) -> bool:
        """Whether one more ``meets_bound`` call fits."""
        return (self.max_evaluations is None or self.evaluations < self.max_evaluations) and self._time_left()

    def can_score(self) -> bool:
        """Whether one more proxy call fits."""
        ok = self.max_proxy_evaluations is None or self.proxy_evaluations < self.max_proxy_evaluations
        return ok and self._time_left()

    def reason(self) -> str:
        """Which limit is reached ('' when none)."""
        if self.max_evaluations is not None and self.evaluations >= self.max_evaluations:
            return f"evaluation budget ({self.max_evaluations}) spent"
        if not self._time_left():
            return f"time budget ({self.max_seconds:g} s) spent"
        if self.max_proxy_evaluations is not None and self.proxy_evaluations >= self.max_proxy_evaluations:
            return f"proxy evaluation budget ({self.max_proxy_evaluations}) spent"
        return ""

    def to_dict(self) -> dict[str, Any]:
        """Limits and usage for the record."""
        return {"max_evaluations": self.max_evaluations, "max_proxy_evaluations": self.max_proxy_evaluations,
                "max_seconds": self.max_seconds, "evaluations": self.evaluations,
                "proxy_evaluations": self.proxy_evaluations, "seconds": round(self.elapsed, 3)}


def _evaluate(meets_bound, model: nn.Module, budget: Budget) -> BoundCheck:
    budget.evaluations += 1
    return BoundCheck.of(meets_bound(model))


# ----------------------------------------------------------------------------------- proxies


@dataclass(frozen=True)
class Proxy:
    """A named sensitivity score ``fn(model) -> float``."""

    name: str
    fn: Callable[[nn.Module], float]
    higher_is_better: bool = True
    unit: str = ""

    def __call__(self, model: nn.Module) -> float:
        return float(self.fn(model))


def logits_sqnr_proxy(fp32_outputs: np.ndarray, forward: Callable[[nn.Module], np.ndarray]) -> Proxy:
    """SQNR (dB) of a model's outputs against the fp32 model's on the same examples.

    ``fp32_outputs``: the fp32 model's logits on a calibration subset; ``forward(model)``: the
    given model's logits on the same examples in the same order (``outputs_fn`` builds one).
    """
    ref = torch.as_tensor(np.asarray(fp32_outputs, dtype=np.float64))

    def score(model: nn.Module) -> float:
        out = torch.as_tensor(np.asarray(forward(model), dtype=np.float64))
        if out.shape != ref.shape:
            raise ValueError(f"proxy outputs have shape {tuple(out.shape)}, the fp32 reference {tuple(ref.shape)}")
        return sqnr_db(ref, out)

    return Proxy("logits_sqnr_db", score, True, "dB")


def outputs_fn(encoded, batch_size: int, output: str = "logits",
               reduce: Callable | None = None) -> Callable[[nn.Module], np.ndarray]:
    """``forward(model)``: a model's outputs on ``encoded`` (an ``evaluate.Encoded``), in example order."""
    from qdqbench.tasks.evaluate import run_batches, torch_forward

    def forward(model: nn.Module) -> np.ndarray:
        return run_batches(encoded, batch_size, torch_forward(model, output), reduce=reduce)

    return forward


ACCEPT_RULES = ("ci-upper", "point")


class BoundCheck(tuple):
    """``(passed, value)`` of one candidate on the selection data, with the evidence behind it.

    A tuple, so a ``meets_bound`` callback may return a plain ``(passed, value)`` instead; the
    attributes say how ``passed`` was decided: ``rule`` ("point": the value against the threshold;
    "ci-upper": the upper end of the paired bootstrap interval of the drop against the allowed
    drop), the ``drop`` and its interval ``drop_ci``, and the ``allowed`` drop.
    """

    def __new__(cls, passed: bool, value: float, *, rule: str = "point", drop: float | None = None,
                drop_ci: tuple[float, float] | None = None, allowed: float | None = None) -> BoundCheck:
        self = super().__new__(cls, (bool(passed), float(value)))
        self.rule, self.drop, self.drop_ci, self.allowed = rule, drop, drop_ci, allowed
        return self

    @property
    def passed(self) -> bool:
        """Whether the candidate is accepted."""
        return self[0]

    @property
    def value(self) -> float:
        """The primary metric on the selection data."""
        return self[1]

    @classmethod
    def of(cls, result: Any) -> BoundCheck:
        """A callback's result as a BoundCheck (a plain ``(passed, value)`` is a point decision)."""
        if isinstance(result, BoundCheck):
            return result
        passed, value = result
        return cls(bool(passed), float(value))

    def evidence(self) -> dict[str, Any]:
        """JSON-able: the rule, the drop and its interval, the allowed drop."""
        low, high = self.drop_ci if self.drop_ci is not None else (None, None)
        return {"rule": self.rule, "drop": _num(self.drop), "drop_ci_low": _num(low),
                "drop_ci_high": _num(high), "allowed_drop": _num(self.allowed)}


@dataclass
class MeetsBound:
    """``meets_bound`` from a metric function and the suite's bound (same threshold as the verdict).

    ``accept="point"``: pass when the value is at or above the threshold (``make_verdict``'s rule).
    ``accept="ci-upper"``: ``fn`` returns ``(value, (drop_low, drop_high))``, the paired bootstrap
    interval of the drop against the baseline on the same examples, and a candidate passes only
    when ``drop_high`` is within the allowed drop (baseline − threshold): a drop the selection data
    cannot tell from one outside the bound is not accepted.
    """

    metric: str
    fn: Callable[[nn.Module], Any]
    baseline: float
    bound: float = 0.01
    mode: str = "relative"
    accept: str = "point"

    def __post_init__(self) -> None:
        if self.accept not in ACCEPT_RULES:
            raise ValueError(f"unknown accept rule '{self.accept}' (one of {', '.join(ACCEPT_RULES)})")

    @property
    def threshold(self) -> float:
        """Lowest passing value."""
        from qdqbench.core.verdict import threshold

        return threshold(self.baseline, self.bound, self.mode)

    def __call__(self, model: nn.Module) -> BoundCheck:
        from qdqbench.core.verdict import make_verdict

        result = self.fn(model)
        value, drop_ci = (result if isinstance(result, tuple) else (result, None))
        value = float(value)
        allowed = self.baseline - self.threshold
        if self.accept == "point":
            passed = make_verdict(self.metric, self.baseline, value, self.bound, self.mode).passed
        else:
            if drop_ci is None:
                raise ValueError("accept='ci-upper' needs fn to return (value, (drop_low, drop_high))")
            # The verdict's tolerance of a few ulps, on the drop's upper end.
            passed = drop_ci[1] <= allowed + 1e-12 * max(1.0, abs(self.threshold))
        return BoundCheck(passed, value, rule=self.accept, drop=self.baseline - value,
                          drop_ci=None if drop_ci is None else (float(drop_ci[0]), float(drop_ci[1])),
                          allowed=allowed)


# ----------------------------------------------------------------------------------- sensitivity


@dataclass
class PartSensitivity:
    """The score of one part: alone quantized, alone in float; its rank (1 = most harmful)."""

    part: Part
    quantized_only: float | None = None  # score with only this part quantized
    float_only: float | None = None  # score with only this part left in float
    rank: int = 0

    def to_dict(self, full: float | None = None, float_ref: float | None = None) -> dict[str, Any]:
        """JSON-able: scores, and loss/gain against the references where both are finite."""
        d = {"rank": self.rank, **self.part.to_dict(), "quantized_only": _num(self.quantized_only),
             "float_only": _num(self.float_only)}
        d["quantized_only_loss"] = _diff(float_ref, self.quantized_only)
        d["float_only_gain"] = _diff(self.float_only, full)
        return d


@dataclass
class SensitivityResult:
    """A ranked sensitivity analysis and what it was measured with."""

    proxy: str
    unit: str
    higher_is_better: bool
    mode: str
    full_score: float | None  # every part quantized
    float_score: float | None  # every quantizer off (the fp32 computation)
    parts: list[PartSensitivity]  # most harmful first
    evaluations: int
    seconds: float
    complete: bool
    note: str = ""

    def ranking(self, kinds: Sequence[str] = ("layer",)) -> list[Part]:
        """Parts of the given kinds, most harmful first."""
        return [s.part for s in self.parts if s.part.kind in kinds]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (non-finite scores, e.g. an infinite SQNR, are null)."""
        return {
            "proxy": self.proxy, "unit": self.unit, "higher_is_better": self.higher_is_better,
            "mode": self.mode, "ranking_rule": _RANKING_RULES[self.mode], "full_score": _num(self.full_score),
            "float_score": _num(self.float_score), "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3), "complete": self.complete, "note": self.note,
            "parts": [s.to_dict(self.full_score, self.float_score) for s in self.parts],
        }


_RANKING_RULES = {
    "quantize_one": "lowest score with only the part quantized first",
    "float_one": "highest score with only the part in float first",
    "both": "mean of the two ranks (quantize_one, float_one); ties by the quantize_one score",
}


def sensitivity(
    model_factory: Callable[[], nn.Module] | nn.Module,
    parts: Sequence[Part] | None,
    score_fn: Callable[[nn.Module], float],
    *,
    mode: str = "both",
    budget: Budget | None = None,
    proxy: str | None = None,
    count_as: str = "proxy",
) -> SensitivityResult:
    """Score every part quantized alone and/or left in float alone; rank them, most harmful first.

    ``model_factory`` gives a calibrated QDQ model (or is one); its quantizer modes are restored
    afterwards. ``parts`` None: ``find_parts(model)``. ``score_fn`` is higher-is-better unless it
    has ``higher_is_better = False``; ``proxy`` names it (default: its ``name``). Calls are
    counted in ``budget`` as proxy evaluations (``count_as="evaluation"`` when ``score_fn`` is the
    task metric); when the budget runs out the unscored parts are ranked last and
    ``complete`` is False.
    """
    if mode not in SENSITIVITY_MODES:
        raise ValueError(f"unknown sensitivity mode '{mode}' (one of {', '.join(SENSITIVITY_MODES)})")
    model = model_factory if isinstance(model_factory, nn.Module) else model_factory()
    parts = list(parts) if parts is not None else find_parts(model)
    budget = budget if budget is not None else Budget()
    sign = 1.0 if getattr(score_fn, "higher_is_better", True) else -1.0
    t0, used = time.perf_counter(), 0

    def score(names: frozenset[str], keep: bool) -> float | None:
        nonlocal used
        if not (budget.can_score() if count_as == "proxy" else budget.can_evaluate()):
            return None
        if count_as == "proxy":
            budget.proxy_evaluations += 1
        else:
            budget.evaluations += 1
        used += 1
        with _float(model, names, keep=keep):
            return float(score_fn(model))

    full = score(frozenset(), keep=False)
    float_ref = score(frozenset(), keep=True)
    results = [PartSensitivity(p) for p in parts]
    for r in results:
        if mode in ("both", "quantize_one"):
            r.quantized_only = score(r.part.quantizers, keep=True)
        if mode in ("both", "float_one"):
            r.float_only = score(r.part.quantizers, keep=False)
    complete = all((r.quantized_only is not None or mode == "float_one")
                   and (r.float_only is not None or mode == "quantize_one") for r in results)
    _rank(results, mode, sign)
    return SensitivityResult(
        proxy=proxy or getattr(score_fn, "name", getattr(score_fn, "__name__", "custom")),
        unit=getattr(score_fn, "unit", ""), higher_is_better=sign > 0, mode=mode,
        full_score=full, float_score=float_ref, parts=results, evaluations=used,
        seconds=time.perf_counter() - t0, complete=complete,
        note="" if complete else f"incomplete: {budget.reason() or 'budget spent'}; unscored parts ranked last",
    )


def _rank(results: list[PartSensitivity], mode: str, sign: float) -> None:
    """Sort in place, most harmful first, and number the ranks."""
    def q_key(r: PartSensitivity) -> float:  # low "goodness" when quantized alone = harmful
        return math.inf if r.quantized_only is None else _finite(sign * r.quantized_only)

    def f_key(r: PartSensitivity) -> float:  # high goodness when left float alone = harmful
        return math.inf if r.float_only is None else -_finite(sign * r.float_only)

    def positions(key) -> dict[int, float]:
        order = sorted(range(len(results)), key=lambda i: key(results[i]))
        return {i: float(pos) for pos, i in enumerate(order)}

    if mode == "quantize_one":
        keys = {i: (q_key(r),) for i, r in enumerate(results)}
    elif mode == "float_one":
        keys = {i: (f_key(r),) for i, r in enumerate(results)}
    else:
        qp, fp = positions(q_key), positions(f_key)
        keys = {i: ((qp[i] + fp[i]) / 2, q_key(r)) for i, r in enumerate(results)}
    unscored = {i: r.quantized_only is None and r.float_only is None for i, r in enumerate(results)}
    order = sorted(range(len(results)), key=lambda i: (unscored[i], keys[i], results[i].part.name))
    results[:] = [results[i] for i in order]
    for n, r in enumerate(results, 1):
        r.rank = n


# ----------------------------------------------------------------------------------- partial


@dataclass
class PartialResult:
    """Outcome of the greedy partial-quantization search."""

    passed: bool
    value: float | None  # meets_bound's value of the returned float set
    float_parts: list[Part]
    evaluations: int
    seconds: float
    minimal: bool  # True: verified 1-minimal (see MINIMALITY_NOTE)
    stop_reason: str
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patterns(self) -> tuple[str, ...]:
        """Skip patterns of the float set, for ``QDQSettings.skip`` / ``apply_skip_patterns``."""
        return patterns_for(self.float_parts)

    @property
    def float_quantizers(self) -> frozenset[str]:
        """Names of the quantizers left in float."""
        return frozenset(n for p in self.float_parts for n in p.quantizers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return {"passed": self.passed, "value": _num(self.value),
                "float_parts": [p.name for p in self.float_parts], "patterns": list(self.patterns),
                "float_quantizers": len(self.float_quantizers), "evaluations": self.evaluations,
                "seconds": round(self.seconds, 3), "minimal": self.minimal,
                "minimality": MINIMALITY_NOTE if self.minimal else "not verified minimal: " + self.stop_reason,
                "stop_reason": self.stop_reason, "trace": self.trace}


def greedy_partial(
    model: nn.Module,
    ranking: SensitivityResult | Sequence[Part | PartSensitivity],
    meets_bound: Callable[[nn.Module], tuple[bool, float]],
    *,
    budget: Budget | None = None,
    max_evaluations: int | None = None,
    prune: bool = True,
    kinds: Sequence[str] = ("layer",),
    on_evaluation: Callable[[list[Part], BoundCheck, float], None] | None = None,
) -> PartialResult:
    """Leave parts in float, most harmful first, until ``meets_bound`` passes; then prune.

    The fully quantized model is assumed to fail (the caller has evaluated it). Forward: the
    shortest passing prefix of ``ranking`` (only ``kinds``; parts already covered are skipped),
    found by galloping then bisection (``_add_until_passing``). Backward (``prune``): try
    quantizing each float part again (least harmful first) and keep that when the bound still
    holds; repeat until every remaining part has been tried against the final set, so the result
    is 1-minimal (``minimal``). Each distinct float set is evaluated at most once; evaluations
    stop at ``max_evaluations`` or the shared ``budget``. Without a passing set the result is the
    best-valued set tried. The model's modes are restored; ``on_evaluation(parts, check,
    seconds)`` sees every evaluation.
    """
    if isinstance(ranking, SensitivityResult):
        parts = ranking.ranking(kinds)
    else:
        parts = [r.part if isinstance(r, PartSensitivity) else r for r in ranking]
        parts = [p for p in parts if p.kind in kinds]
    search = _FloatSetSearch(model, meets_bound, budget if budget is not None else Budget(), max_evaluations,
                             on_evaluation)
    found, best, stop = _add_until_passing(search, parts)
    if found is None:
        float_parts, value = (best[1], best[0]) if best is not None else ([], None)
        return search.result(False, value, float_parts, False, stop)
    current, value = found
    if not prune:
        return search.result(True, value, current, False, "pruning off")
    current, value, minimal, stop = _prune(search, current, value)
    return search.result(True, value, current, minimal, stop)


class _FloatSetSearch:
    """Evaluations of float sets for ``greedy_partial``: each distinct set once, all traced."""

    def __init__(self, model: nn.Module, meets_bound, budget: Budget, max_evaluations: int | None,
                 on_evaluation) -> None:
        self.model, self.meets_bound, self.budget = model, meets_bound, budget
        self.max_evaluations, self.on_evaluation = max_evaluations, on_evaluation
        self.used = 0
        self.t0 = time.perf_counter()
        self.cache: dict[frozenset[str], BoundCheck] = {}
        self.trace: list[dict[str, Any]] = []

    def can(self) -> bool:
        """Whether one more evaluation fits the budget and the greedy limit."""
        return self.budget.can_evaluate() and (self.max_evaluations is None or self.used < self.max_evaluations)

    def reason(self) -> str:
        """Which limit stopped the search."""
        if self.max_evaluations is not None and self.used >= self.max_evaluations:
            return f"greedy evaluation limit ({self.max_evaluations}) reached"
        return self.budget.reason() or "budget spent"

    def evaluate(self, float_set: list[Part], step: str, part: Part) -> BoundCheck:
        """``meets_bound`` with ``float_set`` in float (a set evaluated before comes from the cache)."""
        key = frozenset(n for p in float_set for n in p.quantizers)
        entry = {"step": step, "part": part.name, "float_parts": [p.name for p in float_set]}
        if key in self.cache:  # a set the forward pass (or an earlier pruning round) already evaluated
            check = self.cache[key]
            self.trace.append(entry | {"passed": check.passed, "value": _num(check.value), "cached": True})
            return check
        self.used += 1
        t = time.perf_counter()
        with _float(self.model, key):
            check = _evaluate(self.meets_bound, self.model, self.budget)
        secs = time.perf_counter() - t
        self.cache[key] = check
        self.trace.append(entry | {"passed": check.passed, "value": _num(check.value), **check.evidence(),
                                   "seconds": round(secs, 3), "cached": False})
        if self.on_evaluation is not None:
            self.on_evaluation(list(float_set), check, secs)
        return check

    def result(self, passed: bool, value: float | None, float_parts: list[Part], minimal: bool,
               stop: str) -> PartialResult:
        """The search's outcome with its trace."""
        return PartialResult(passed, value, float_parts, self.used, time.perf_counter() - self.t0, minimal, stop,
                             self.trace)


def _add_until_passing(search: _FloatSetSearch, parts: Sequence[Part]):
    """Forward pass: the shortest passing prefix of the ranking, found by galloping.

    The prefixes (parts already covered by earlier ones skipped) are evaluated at lengths 1, 2, 4,
    8, … until one passes, then bisected between the last failing and the first passing length:
    about 2·log2(n) evaluations where adding one part at a time takes n — at quantizer
    granularity (120 parts on MiniLM-L6) that is what fits a budget. Bisection assumes a longer
    prefix is not worse; the pruning pass after it makes the result 1-minimal either way.

    Returns (the passing set and its value, or None; the best-valued set tried; why it stopped).
    """
    prefix: list[Part] = []
    covered: set[str] = set()
    for part in parts:
        if not part.quantizers <= covered:
            prefix.append(part)
            covered |= part.quantizers
    best: tuple[float, list[Part]] | None = None

    def check(k: int, step: str) -> tuple[bool, float] | None:
        nonlocal best
        if not search.can():
            return None
        passed, value = search.evaluate(prefix[:k], step, prefix[k - 1])
        if best is None or _finite(value) > _finite(best[0]) or \
                (_finite(value) == _finite(best[0]) and k < len(best[1])):
            best = (value, prefix[:k])
        return passed, value

    failed, k = 0, 1
    while True:
        k = min(k, len(prefix))
        if k <= failed:
            return None, best, "every ranked part is in float and the bound is still missed"
        outcome = check(k, "add")
        if outcome is None:
            return None, best, search.reason()
        if outcome[0]:
            break
        failed, k = k, 2 * k
    passing, passing_value = k, outcome[1]
    while passing - failed > 1:
        mid = (failed + passing) // 2
        outcome = check(mid, "bisect")
        if outcome is None:  # out of budget: the shortest passing prefix found so far
            break
        if outcome[0]:
            passing, passing_value = mid, outcome[1]
        else:
            failed = mid
    return (prefix[:passing], passing_value), best, ""


def _prune(search: _FloatSetSearch, current: list[Part], value: float):
    """Backward pass: quantize each float part again while the bound holds, until 1-minimal.

    Returns (float set, its value, whether verified minimal, why it stopped).
    """
    verified: set[str] = set()
    while True:
        todo = [p for p in reversed(current) if p.name not in verified]
        if not todo:
            return current, value, True, "pruned: every float part was tried against the final set"
        if not search.can():
            return current, value, False, search.reason()
        part = todo[0]
        trial = [p for p in current if p is not part]
        if not trial:  # quantizing everything again: the full model, known to fail
            verified.add(part.name)
            continue
        passed, v = search.evaluate(trial, "remove", part)
        if passed:
            current, value = trial, v
            verified.clear()  # the set changed: every remaining part is tried again
        else:
            verified.add(part.name)


# ----------------------------------------------------------------------------------- calibrations


@dataclass(frozen=True)
class CalibratorSpec:
    """One calibrator to try: a registered method and, for percentile, its percentile."""

    method: str
    percentile: float | None = None

    def __post_init__(self) -> None:
        try:
            entry = calibrator_entry(self.method)
        except ValueError:
            raise ValueError(f"unknown calibrator '{self.method}' (one of {', '.join(CALIBRATION_METHODS)})") from None
        if ("percentile" in entry.params) != (self.percentile is not None):
            raise ValueError("a percentile is given with, and only with, the percentile method")

    @property
    def name(self) -> str:
        """'max', 'entropy', 'mse' or 'percentile-99.99'."""
        return self.method if self.percentile is None else f"percentile-{self.percentile:g}"

    @property
    def statistic(self) -> str:
        """What the method collects (methods with the same statistic share one collected model)."""
        return calibrator_entry(self.method).statistic

    @property
    def params(self) -> dict[str, float]:
        """Keyword arguments of ``finish_calibration`` / ``compute_amax``."""
        return {} if self.percentile is None else {"percentile": self.percentile}

    @classmethod
    def parse(cls, spec: str | CalibratorSpec) -> CalibratorSpec:
        """'max', 'entropy', 'mse', 'percentile-99.99' (or 'percentile:99.99'); see
        ``qdqbench.quant.registry.parse_calibrator``."""
        if isinstance(spec, CalibratorSpec):
            return spec
        method, params = parse_calibrator(spec)
        return cls(method, **params)


DEFAULT_CALIBRATORS = tuple(CalibratorSpec.parse(s) for s in DEFAULT_AUTO_CALIBRATORS)


class Calibrations:
    """``calibrate(spec)`` for ``auto_recipe``: calibrated QDQ copies of one fp32 model.

    Histogram methods (entropy, percentile, mse) read the same histograms, so the data are run
    through the model at most twice whatever the number of calibrators: once with max
    calibrators, once with histograms; each spec then finishes a deep copy of the collected model.
    ``run_calibration(model)`` runs the calibration batches through a model (no grad needed).
    Post-calibration recipes of ``settings`` (GELU10, fused QKV) are applied to every copy.
    """

    def __init__(self, fp32_model: nn.Module, settings: QDQSettings, run_calibration: Callable[[nn.Module], None]):
        self.fp32_model = fp32_model
        self.settings = settings
        self.run_calibration = run_calibration
        self._collected: dict[str, nn.Module] = {}

    def __call__(self, spec: CalibratorSpec | str) -> nn.Module:
        from qdqbench.quant.build import collect, finish

        spec = CalibratorSpec.parse(spec)
        kind = spec.statistic
        if kind not in self._collected:
            # every method of one statistic (the histogram methods) finishes the same collection
            self._collected[kind] = collect(self.fp32_model, self.settings, self.run_calibration,
                                            collector=spec.method)
        model = copy.deepcopy(self._collected[kind])
        finish(model, self.settings, spec.method, **spec.params)
        return model


# ----------------------------------------------------------------------------------- auto recipe


@dataclass
class _Candidate:
    name: str
    stage: str  # ptq | partial | qat | qat+partial
    calibrator: str
    model: nn.Module | None  # the base model; float parts are switched off on it when chosen
    float_parts: list[Part] = field(default_factory=list)
    qat: dict[str, Any] | None = None
    passed: bool = False
    value: float | None = None
    latency: float | None = None
    latency_source: str | None = None
    evaluations: int = 0
    seconds: float = 0.0
    error: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # BoundCheck.evidence(): rule, drop interval
    label: str = ""  # how it was built, without the stage: "max", "max:w7", "max:w7:linear=mse"
    group_calibrators: dict[str, str] | None = None  # activation group -> calibrator, where not ``calibrator``
    amax: dict[str, torch.Tensor] | None = None  # activation amaxes of a PTQ calibration (for group mixes)
    key: frozenset[str] | None = None  # the Q/DQ structure: quantizers in INT8 (set when recorded)
    structure: dict[str, Any] | None = None  # what the trace says of it (_structure_record)
    timing: dict[str, Any] | None = None  # the latency rounds of its structure, when timed

    def __post_init__(self) -> None:
        self.label = self.label or self.calibrator

    @property
    def float_quantizers(self) -> frozenset[str]:
        return frozenset(n for p in self.float_parts for n in p.quantizers)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage, "calibrator": self.calibrator,
                "group_calibrators": self.group_calibrators,
                "float_parts": [p.name for p in self.float_parts], "patterns": list(patterns_for(self.float_parts)),
                "float_quantizers": len(self.float_quantizers), "qat": self.qat, "structure": self.structure,
                "value": _num(self.value), "passed": self.passed, **self.evidence, "latency": _num(self.latency),
                "latency_source": self.latency_source, "timing": self.timing, "evaluations": self.evaluations,
                "seconds": round(self.seconds, 3), "error": self.error}


@dataclass
class RecipeResult:
    """The chosen variant, why, and every candidate tried."""

    model: nn.Module  # quantizer modes set: float parts disabled
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    gap: float | None  # threshold - value when failing (how far short); None when passed or unknown
    latency: float | None
    description: dict[str, Any]  # calibrator, float parts and patterns, QAT settings
    selection: str  # how the choice was made
    trace: list[dict[str, Any]]
    sensitivity: dict[str, Any] | None
    partial: dict[str, Any] | None
    budget: dict[str, Any]
    stop_reason: str
    notes: list[str]
    # Latency on the target engine of the chosen variant with every part in INT8, and with each of
    # its float parts alone left in float (None without float parts or a latency_fn).
    float_part_costs: dict[str, Any] | None = None
    # The round-robin timing of the passing structures that decided the choice (auto_timing).
    timing: dict[str, Any] | None = None
    # The search's settings and choices beyond the trace: part granularity, per-group calibrators.
    search_space: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, JSON-able, for the result record."""
        return {"chosen": self.name, "passed": self.passed, "value": _num(self.value),
                "threshold": _num(self.threshold), "gap": _num(self.gap), "latency": _num(self.latency),
                "description": self.description, "selection": self.selection, "trace": self.trace,
                "sensitivity": self.sensitivity, "partial": self.partial, "budget": self.budget,
                "stop_reason": self.stop_reason, "notes": self.notes, "float_part_costs": self.float_part_costs,
                "timing": self.timing, "search_space": self.search_space}


def auto_recipe(
    calibrate: Callable[[CalibratorSpec], nn.Module],
    meets_bound: Callable[[nn.Module], tuple[bool, float]],
    *,
    calibrators: Sequence[CalibratorSpec | str] = DEFAULT_CALIBRATORS,
    score_fn: Callable[[nn.Module], float] | None = None,
    latency_fn: Callable[[nn.Module], float | None] | None = None,
    qat_fn: Callable[[nn.Module], Any] | None = None,
    budget: Budget | None = None,
    threshold: float | None = None,
    partial: bool = True,
    sensitivity_mode: str = "both",
    progress: Callable[[str], None] | None = None,
    timing_rounds: int = 1,
    granularity: str = "part",
    weight_bits: Sequence[int] = (),
    group_calibrators: bool = False,
    residual_by_speed: bool = False,
) -> RecipeResult:
    """Calibrators, then partial quantization, then QAT; return the fastest variant that passes.

    Stages (each only while the budget lasts; at least one candidate is always evaluated):
      ptq      every calibrator, full INT8 (the scheme's own skips stay float);
      weight-bits  if none passed: the best calibration with its weights at each of ``weight_bits``
               (7: ONNX Runtime's reduce_range; activations keep their bits);
      group-calibrators  if none passed and ``group_calibrators``: on the best full-INT8 variant so
               far, each activation group's quantizers take each other calibrator's ranges in turn
               (group × calibrator, scored on the selection data); then every group with the
               calibrator that scored best for it (kept only where it beat the base strictly);
      partial  if no full-INT8 variant passed: sensitivity on the best-valued full-INT8 variant
               (``score_fn``, or ``meets_bound``'s value), then ``greedy_partial``; its parts are
               layer × group (``granularity="part"``) or every quantizer alone (``"quantizer"``);
      qat      if no full-INT8 variant passed: ``qat_fn`` on a copy of the best calibration;
               skipped when a partial variant passed and measured latency says the full-INT8
               structure is not faster than it;
      qat+partial  if nothing passed yet: ``greedy_partial`` on the QAT model (same ranking);
      no-residual  with ``residual_by_speed`` and a ``latency_fn``: each passing Q/DQ structure once
               more with every residual-add Q/DQ in float; when it passes too, timing decides
               (a tie keeps the residual Q/DQ: fewer float parts).
    Search order assumes that a variant with more parts in INT8 is not slower (so a passing
    full-INT8 variant ends the search). The choice among passing candidates is by ``latency_fn``
    (one number per Q/DQ structure and call: variants that differ only in scales or weights share
    it): the passing structures are timed ``timing_rounds`` times, interleaved, and the fastest
    median wins unless another structure's spread overlaps it — a tie, broken by fewer float parts
    (``auto_timing.TIE_RULE``); candidates of one structure go by value. Where any latency is
    unknown it is the fewest float parts, then the fewest float quantizers, then value — the result
    says which. Nothing passing: the highest value, with ``gap`` = ``threshold`` − value
    (``threshold`` defaults to ``meets_bound.threshold`` when it has one).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity '{granularity}' (one of {', '.join(GRANULARITIES)})")
    widths = [check_bits(b, "weight_bits") for b in weight_bits]
    search = _Search(calibrate, meets_bound, latency_fn=latency_fn, qat_fn=qat_fn,
                     budget=(budget if budget is not None else Budget()).start(),
                     say=progress or (lambda msg: None), timing_rounds=timing_rounds, granularity=granularity)
    specs = [CalibratorSpec.parse(s) for s in calibrators]
    if not specs:
        raise ValueError("auto_recipe needs at least one calibrator")
    ptq = search.calibrators(specs)
    full = list(ptq)
    if not any(c.passed for c in full) and widths:
        full += search.weight_widths(_best(full), widths)
    if not any(c.passed for c in full) and group_calibrators:
        full += search.group_calibrators(_best(full), ptq)
    if any(c.passed for c in full):
        search.stop_reason = ("a full-INT8 variant passed; partial and QAT variants cannot be faster "
                              "(their Q/DQ structure has the same or fewer INT8 parts)")
    else:
        base = _best(full)
        if partial and search.can_evaluate():
            search.partial(base, score_fn, sensitivity_mode)
        search.qat(base, partial)
        if not search.stop_reason:
            search.stop_reason = search.budget.reason() or "search finished"
    if residual_by_speed:
        search.residual_twins()
    threshold = threshold if threshold is not None else getattr(meets_bound, "threshold", None)
    return search.result(threshold)


class _Search:
    """The state of one ``auto_recipe`` run: candidates, latency measurements, notes; one method per stage."""

    def __init__(self, calibrate, meets_bound, *, latency_fn, qat_fn, budget: Budget, say,
                 timing_rounds: int = 1, granularity: str = "part") -> None:
        if timing_rounds < 1:
            raise ValueError(f"timing_rounds must be >= 1, got {timing_rounds}")
        self.granularity = granularity
        self.calibrate, self.meets_bound = calibrate, meets_bound
        self.timing_rounds = timing_rounds
        self.rounds: dict[frozenset[str], list[float | None]] = {}  # latency rounds per Q/DQ structure
        self.latency_fn, self.qat_fn, self.budget, self.say = latency_fn, qat_fn, budget, say
        self.candidates: list[_Candidate] = []
        self.latency_cache: dict[frozenset[str], tuple[float | None, str]] = {}
        self.notes: list[str] = []
        self.stop_reason = ""
        self.sens: SensitivityResult | None = None
        self.part_result: PartialResult | None = None
        self.group_choice: dict[str, Any] | None = None

    # -- bookkeeping

    def can_evaluate(self) -> bool:
        """One more evaluation fits ("never nothing": the first candidate is evaluated whatever the budget)."""
        return self.budget.can_evaluate() or not any(c.value is not None for c in self.candidates)

    def measure(self, c: _Candidate) -> None:
        """The candidate's latency on the target engine, once per Q/DQ structure."""
        if self.latency_fn is None or c.latency_source is not None:
            return
        assert c.model is not None
        c.latency, first, fresh = _structure_latency(c.model, c.float_quantizers, self.latency_fn,
                                                     self.latency_cache, c.name)
        if not fresh:
            c.latency_source = f"same Q/DQ structure as {first}"
        else:
            c.latency_source = "measured" if c.latency is not None else "unknown"

    def record(self, c: _Candidate, check: BoundCheck | None = None) -> _Candidate:
        """Add an evaluated candidate (a passing one is timed)."""
        if check is not None:
            c.passed, c.value, c.evidence = check.passed, check.value, check.evidence()
        if c.model is not None:
            c.key = self.structure(c)
            c.structure = _structure_record(c, c.key)
        if c.passed:
            self.measure(c)
        self.candidates.append(c)
        self.say(f"{c.name}: value {c.value}, {'passed' if c.passed else 'failed'}")
        return c

    # -- stages

    def calibrators(self, specs: Sequence[CalibratorSpec]) -> list[_Candidate]:
        """Stage 1: every calibrator, full INT8. Raises when none produced a model."""
        ptq: list[_Candidate] = []
        for spec in specs:
            if not self.can_evaluate():
                self.stop_reason = self.budget.reason()
                break
            t0 = time.perf_counter()
            try:
                model = self.calibrate(spec)
            except CalibrationError as exc:
                self.candidates.append(_Candidate(f"ptq:{spec.name}", "ptq", spec.name, None, error=str(exc),
                                                  seconds=time.perf_counter() - t0))
                self.say(f"ptq:{spec.name}: {exc}")
                continue
            check = _evaluate(self.meets_bound, model, self.budget)
            ptq.append(self.record(_Candidate(f"ptq:{spec.name}", "ptq", spec.name, model, evaluations=1,
                                              seconds=time.perf_counter() - t0, amax=_activation_amax(model)),
                                   check))
            _keep_models(self.candidates)
        if not ptq:
            errors = "; ".join(f"{c.name}: {c.error}" for c in self.candidates if c.error)
            raise AutoQuantError(f"auto recipe: no calibrator produced a model ({errors})")
        return ptq

    def weight_widths(self, base: _Candidate, widths: Sequence[int]) -> list[_Candidate]:
        """Stage 1b: ``base`` with its weights on each narrower grid; activations unchanged.

        Weight ranges come from the parameters, never from data, and calibration runs the weights
        in float, so this is the model ``QDQSettings(weight_bits=w)`` calibrates to.
        """
        out: list[_Candidate] = []
        for bits in widths:
            if _weight_bits(base.model) == {bits}:
                continue
            if not self.can_evaluate():
                self.stop_reason = self.budget.reason()
                break
            t0 = time.perf_counter()
            model = _with_weight_bits(base.model, bits)
            check = _evaluate(self.meets_bound, model, self.budget)
            out.append(self.record(_Candidate(f"{base.name}:w{bits}", "weight-bits", base.calibrator, model,
                                              label=f"{base.label}:w{bits}", evaluations=1, amax=base.amax,
                                              group_calibrators=base.group_calibrators,
                                              seconds=time.perf_counter() - t0), check))
            _keep_models(self.candidates, keep=base)
        return out

    def group_calibrators(self, base: _Candidate, ptq: list[_Candidate]) -> list[_Candidate]:
        """Stage 1c: each activation group's best calibrator, by the selection-data score.

        On ``base`` (the best full-INT8 variant), each group's quantizers take each other
        calibrator's ranges in turn — a calibration runs every quantizer as an identity, so a
        quantizer's range depends only on its own calibrator, and mixing ranges is calibrating each
        group with its own method. A group keeps the calibrator that scored strictly best for it
        (ties keep the base's); when two or more groups changed, the combination is one more
        candidate. Weights stay max-calibrated (their range is max |w| per channel).
        """
        sources = {c.calibrator: c.amax for c in ptq if c.amax is not None and c.calibrator != base.calibrator}
        groups = [g for g in GROUPS if any(not q.is_weight and q.mode != "disabled" and quantizer_group(n) == g
                                           for n, q in quantizers(base.model))]
        out: list[_Candidate] = []
        if not sources or not groups:
            self.notes.append("per-group calibrators not tried: " + ("a single calibrator built" if not sources
                                                                      else "no activation quantizer"))
            return out
        best = {g: (base.value, base.calibrator) for g in groups}
        for g in groups:
            for cal in sources:
                if not self.can_evaluate():
                    self.stop_reason = self.budget.reason()
                    break
                c = self.mixed(base, {g: cal}, sources)
                out.append(c)
                if _finite(c.value) > _finite(best[g][0]):
                    best[g] = (c.value, cal)
        choice = {g: cal for g, (_, cal) in best.items() if cal != base.calibrator}
        self.group_choice = {"base": base.name, "by_group": {g: {"calibrator": cal, "value": _num(v)}
                                                             for g, (v, cal) in best.items()}}
        if len(choice) >= 2 and self.can_evaluate():
            out.append(self.mixed(base, choice, sources))
        return out

    def mixed(self, base: _Candidate, mix: dict[str, str], sources: dict[str, dict[str, torch.Tensor]]) -> _Candidate:
        """``base`` with the activation quantizers of each group in ``mix`` on that calibrator's ranges."""
        t0 = time.perf_counter()
        model = copy.deepcopy(base.model)
        with torch.no_grad():
            for name, q in quantizers(model):
                cal = mix.get(quantizer_group(name))
                if cal is not None and not q.is_weight and q.mode != "disabled":
                    q.amax.copy_(sources[cal][name])
                    q.calib_method = CalibratorSpec.parse(cal).method
        check = _evaluate(self.meets_bound, model, self.budget)
        label = f"{base.label}:" + ",".join(f"{g}={cal}" for g, cal in mix.items())
        c = self.record(_Candidate(f"ptq:{label}", "group-calibrators", base.calibrator, model, label=label,
                                   evaluations=1, group_calibrators={**(base.group_calibrators or {}), **mix},
                                   seconds=time.perf_counter() - t0), check)
        _keep_models(self.candidates, keep=base)
        return c

    def residual_twins(self) -> None:
        """Each passing Q/DQ structure with residual-add Q/DQ, once more with all of it in float.

        Whether residual Q/DQ pays depends on the engine and the CPU (ONNX Runtime on a VNNI CPU
        runs BERT faster with it, on AVX2 slower), so no preset decides: a twin that also passes
        goes into the timing like every passing candidate, and a tie keeps the residual Q/DQ.
        """
        if self.latency_fn is None:
            self.notes.append("residual-add Q/DQ kept without a measurement: no latency_fn")
            return
        best: dict[frozenset[str], _Candidate] = {}
        for c in self.candidates:
            if c.passed and c.model is not None and c.key is not None and (
                    c.key not in best or _finite(c.value) > _finite(best[c.key].value)):
                best[c.key] = c
        seen = {c.key for c in self.candidates if c.key is not None}
        for key, c in best.items():
            residual = [p for p in find_parts(c.model, per_layer=False) if p.group == "residual"]
            if not residual or not residual[0].quantizers & key or key - residual[0].quantizers in seen:
                continue
            if not self.can_evaluate():
                self.stop_reason = self.budget.reason()
                break
            t0 = time.perf_counter()
            parts = [*c.float_parts, residual[0]]
            with _float(c.model, frozenset(n for p in parts for n in p.quantizers)):
                check = _evaluate(self.meets_bound, c.model, self.budget)
            self.record(_Candidate(f"{c.name}:no-residual", "no-residual", c.calibrator, c.model, parts, c.qat,
                                   label=c.label, group_calibrators=c.group_calibrators, evaluations=1,
                                   seconds=time.perf_counter() - t0), check)

    def partial(self, base: _Candidate, score_fn, sensitivity_mode: str) -> None:
        """Stage 2: sensitivity on the best calibration, then the greedy float set."""
        self.say(f"sensitivity on {base.name} ({self.granularity} granularity)")
        proxy = score_fn if score_fn is not None else Proxy(
            "task metric (meets_bound value)", lambda m: self.meets_bound(m)[1])
        parts = quantizer_parts(base.model) if self.granularity == "quantizer" else None
        self.sens = sensitivity(base.model, parts, proxy, mode=sensitivity_mode, budget=self.budget,
                                count_as="proxy" if score_fn is not None else "evaluation")
        self.part_result = self.greedy(base, base.model, "partial", None)

    def greedy(self, base: _Candidate, model: nn.Module, stage: str, qat: dict | None) -> PartialResult:
        """``greedy_partial`` on ``model`` with the sensitivity ranking; every evaluation is a candidate."""
        def seen(parts: list[Part], check: BoundCheck, secs: float) -> None:
            name = f"{stage}:{base.label}:" + "+".join(p.name for p in parts)
            self.record(_Candidate(name, stage, base.calibrator, model, list(parts), qat, label=base.label,
                                   group_calibrators=base.group_calibrators, evaluations=1, seconds=secs), check)
        assert self.sens is not None
        kinds = ("quantizer",) if self.granularity == "quantizer" else ("layer",)
        # The first partial search leaves one evaluation for QAT, which keeps the whole model in
        # INT8: a long float-set search must not spend the budget it needs (MRPC did).
        limit = None
        if stage == "partial" and self.qat_fn is not None and self.budget.max_evaluations is not None:
            limit = max(self.budget.max_evaluations - self.budget.evaluations - 1, 0)
        return greedy_partial(model, self.sens, self.meets_bound, budget=self.budget, on_evaluation=seen,
                              kinds=kinds, max_evaluations=limit)

    def qat_not_faster(self, base: _Candidate) -> bool:
        """Whether measured latency says full INT8 (what QAT keeps) is slower than a passing partial
        variant beyond the noise (timed like the final choice: a tie goes to full INT8, so QAT runs)."""
        passing = [c for c in self.candidates if c.passed]
        if self.qat_fn is None or not passing or self.latency_fn is None:
            return False
        self.measure(base)  # the full-INT8 structure, which QAT keeps
        if base.latency is None or any(c.latency is None for c in passing):
            return False
        timings = self.timings([base, *passing])
        chosen, _ = fastest(list(timings.values()))
        full = timings[self.structure(base)]
        if chosen is full or chosen.float_parts == 0:
            return False
        self.notes.append(f"QAT skipped: full INT8 measured {full.median:.4g} (median of {len(full.rounds)}), "
                          f"slower beyond the noise than the passing partial variant {chosen.label} "
                          f"({chosen.median:.4g})")
        return True

    def structure(self, c: _Candidate) -> frozenset[str]:
        """The candidate's Q/DQ structure: the quantizers an engine runs in INT8."""
        assert c.model is not None
        return enabled_quantizers(c.model) - c.float_quantizers

    def timings(self, candidates: list[_Candidate]) -> dict[frozenset[str], Timing]:
        """Each distinct structure of ``candidates`` timed ``timing_rounds`` times, round-robin
        (rounds taken before are reused; the first is the search's own measurement)."""
        by_key: dict[frozenset[str], _Candidate] = {}
        for c in candidates:
            by_key.setdefault(self.structure(c), c)
        for k in by_key:
            if k not in self.rounds and k in self.latency_cache:
                self.rounds[k] = [self.latency_cache[k][0]]

        def measure(key) -> float | None:
            c = by_key[key]
            with _float(c.model, c.float_quantizers):
                value = self.latency_fn(c.model)
            return None if value is None else float(value)

        self.rounds.update(time_round_robin(list(by_key), measure, self.timing_rounds, self.rounds))
        return {k: Timing(c.name, len(c.float_parts), len(c.float_quantizers), self.rounds[k])
                for k, c in by_key.items()}

    def qat(self, base: _Candidate, partial: bool) -> None:
        """Stage 3: QAT from the best calibration; stage 4: partial quantization of the QAT model."""
        if self.qat_fn is None:
            self.notes.append("QAT not run: no qat_fn given")
            return
        if self.qat_not_faster(base) or not self.can_evaluate():
            return
        self.say(f"QAT from ptq:{base.calibrator}")
        t0 = time.perf_counter()
        model = copy.deepcopy(base.model)
        info = self.qat_fn(model)
        qat_info = info.to_dict() if hasattr(info, "to_dict") else (dict(info) if info else {})
        check = _evaluate(self.meets_bound, model, self.budget)
        qc = self.record(_Candidate(f"qat:{base.label}", "qat", base.calibrator, model, qat=qat_info,
                                    label=base.label, group_calibrators=base.group_calibrators,
                                    evaluations=1, seconds=time.perf_counter() - t0), check)
        if not any(c.passed for c in self.candidates) and partial and self.sens is not None \
                and self.can_evaluate():
            self.greedy(base, qc.model, "qat+partial", qat_info)

    # -- the choice

    def choose(self) -> tuple[_Candidate, str, dict[str, Any] | None]:
        """(chosen candidate, how it was chosen, the timing evidence or None)."""
        passing = [c for c in self.candidates if c.passed]
        if not passing:
            chosen = max((c for c in self.candidates if c.value is not None), key=lambda c: _finite(c.value))
            return chosen, "nothing met the bound: the highest value found", None
        if self.latency_fn is not None and all(c.latency is not None for c in passing):
            return self.choose_by_timing(passing)
        chosen = min(passing, key=lambda c: (len(c.float_parts), len(c.float_quantizers), -_finite(c.value)))
        why = "no latency_fn" if self.latency_fn is None else "latency unknown for some candidates"
        return chosen, (f"{why}: assumed fewer float parts is faster; fewest float parts, then quantizers, "
                        f"then highest value among {len(passing)} passing candidate(s)"), None

    def choose_by_timing(self, passing: list[_Candidate]):
        """The passing structures timed round-robin; the fastest median, ties by fewer float parts."""
        timings = self.timings(passing)
        best, tied = fastest(list(timings.values()))
        key = next(k for k, t in timings.items() if t is best)
        chosen = max((c for c in passing if self.structure(c) == key), key=lambda c: _finite(c.value))
        for c in passing:
            c.latency = timings[self.structure(c)].median
        lead = min((t for t in timings.values() if t.median is not None), key=lambda t: t.median)
        evidence = {"rounds": self.timing_rounds, "rule": TIE_RULE,
                    "structures": [t.to_dict() for t in timings.values()], "fastest_median": lead.label,
                    "tied_with_fastest": [t.label for t in tied], "chosen": best.label}
        selection = (f"lowest measured latency among {len(passing)} passing candidate(s) "
                     f"({len(timings)} Q/DQ structure(s), median of {self.timing_rounds} interleaved round(s)); "
                     f"a difference inside the rounds' spread is a tie, broken by fewer float parts; "
                     f"ties by value within a structure")
        return chosen, selection, evidence

    def result(self, threshold: float | None) -> RecipeResult:
        """The chosen variant with its float parts switched off, its costs and the whole trace."""
        chosen, selection, timing = self.choose()
        model = chosen.model
        assert model is not None
        if not chosen.passed:
            self.notes.extend(_too_wide_note(self.candidates))
        part_costs = None
        if chosen.float_parts and self.latency_fn is not None:
            part_costs = _float_part_costs(chosen, self.latency_fn, self.latency_cache)
        if chosen.float_parts:
            apply_skip_patterns(model, patterns_for(chosen.float_parts))
        gap = None if chosen.passed or threshold is None or chosen.value is None else threshold - chosen.value
        for c in self.candidates:  # the timing evidence of each candidate's structure
            rounds = self.rounds.get(c.key) if c.key is not None else None
            if rounds is None and c.key in self.latency_cache:
                rounds = [self.latency_cache[c.key][0]]
            if rounds is not None:
                c.timing = Timing(c.name, len(c.float_parts), len(c.float_quantizers), list(rounds)).to_dict()
        description = {"stage": chosen.stage, "calibrator": chosen.calibrator,
                       "group_calibrators": chosen.group_calibrators,
                       "weight_bits": (chosen.structure or {}).get("weight_bits"),
                       "float_parts": [p.name for p in chosen.float_parts],
                       "skip_patterns": list(patterns_for(chosen.float_parts)),
                       "float_quantizers": len(chosen.float_quantizers), "qat": chosen.qat}
        return RecipeResult(
            model=model, name=chosen.name, passed=chosen.passed, value=chosen.value, threshold=threshold, gap=gap,
            latency=chosen.latency, description=description, selection=selection,
            trace=[c.to_dict() for c in self.candidates], sensitivity=self.sens.to_dict() if self.sens else None,
            partial=self.part_result.to_dict() if self.part_result else None,
            budget=self.budget.to_dict() | {"latency_measurements": len(self.latency_cache)},
            stop_reason=self.stop_reason, notes=self.notes, float_part_costs=part_costs, timing=timing,
            search_space={"granularity": self.granularity, "group_calibrators": self.group_choice},
        )


def _too_wide_note(candidates: Sequence[_Candidate]) -> list[str]:
    """Why ``ci-upper`` accepted nothing when every interval's upper half is wider than the
    allowed drop: then only a variant clearly better than fp32 could pass, whatever its quality."""
    spans = [(e["drop_ci_high"] - e["drop"], e["allowed_drop"]) for e in (c.evidence for c in candidates)
             if e.get("rule") == "ci-upper" and None not in (e.get("drop"), e.get("drop_ci_high"),
                                                             e.get("allowed_drop"))]
    if not spans:
        return []
    narrowest, allowed = min(spans)
    if narrowest <= allowed:
        return []
    return [f"accept: ci-upper accepted no candidate: on this selection data the narrowest upper half of "
            f"a drop interval is {100 * narrowest:.2f} pts, wider than the allowed drop "
            f"({100 * allowed:.2f} pts), so only a variant scoring {100 * (narrowest - allowed):.2f} pts "
            "above fp32 could pass; a larger selection part (auto.selection.fraction) narrows it, "
            "accept: point decides on the value alone"]


def _structure_latency(model: nn.Module, float_names: frozenset[str], latency_fn: Callable[[nn.Module], float | None],
                       cache: dict[frozenset[str], tuple[float | None, str]], label: str,
                       ) -> tuple[float | None, str, bool]:
    """Latency of ``model`` with ``float_names`` left in float, measured once per Q/DQ structure.

    Returns (latency or None, the label of the first measurement of that structure, whether this
    call measured it).
    """
    key = enabled_quantizers(model) - float_names
    if key in cache:
        return (*cache[key], False)
    with _float(model, float_names):
        value = latency_fn(model)
    cache[key] = (None if value is None else float(value), label)
    return (*cache[key], True)


def _float_part_costs(chosen: _Candidate, latency_fn: Callable[[nn.Module], float | None],
                      cache: dict[frozenset[str], tuple[float | None, str]]) -> dict[str, Any]:
    """What each float part of the chosen variant costs on the target engine.

    The chosen model with every part in INT8, then with each part alone left in float: its
    latency minus the full-INT8 one is that part's price (structures already measured are reused).
    """
    assert chosen.model is not None

    def latency(float_names: frozenset[str], label: str) -> float | None:
        return _structure_latency(chosen.model, float_names, latency_fn, cache, label)[0]

    full = latency(frozenset(), "full INT8 (part costs)")
    parts = []
    for part in chosen.float_parts:
        value = latency(frozenset(part.quantizers), f"{part.name} float (part costs)")
        parts.append({"part": part.name, "quantizers": len(part.quantizers), "latency": _num(value),
                      "delta": _num(value - full) if value is not None and full is not None else None})
    together = latency(chosen.float_quantizers, chosen.name)
    return {"full_int8": _num(full), "chosen": _num(together), "parts": parts,
            "delta": _num(together - full) if together is not None and full is not None else None}


_FULL_INT8_STAGES = ("ptq", "weight-bits", "group-calibrators")


def _keep_models(candidates: list[_Candidate], keep: _Candidate | None = None) -> None:
    """Drop full-INT8 models no longer needed (memory): keep the best-valued one, every passing one
    and ``keep`` (a stage's base). A PTQ candidate keeps its activation ranges (``amax``)."""
    ptq = [c for c in candidates if c.stage in _FULL_INT8_STAGES and c.model is not None]
    if not ptq:
        return
    best = max(ptq, key=lambda c: _finite(c.value))
    for c in ptq:
        if c is not best and c is not keep and not c.passed:
            c.model = None


def _best(candidates: list[_Candidate]) -> _Candidate:
    """The best-valued candidate that still has its model."""
    return max((c for c in candidates if c.model is not None), key=lambda c: _finite(c.value))


def _activation_amax(model: nn.Module) -> dict[str, torch.Tensor]:
    """The calibrated ranges of the enabled activation quantizers (copies)."""
    return {n: q.amax.detach().clone() for n, q in quantizers(model) if not q.is_weight and q.mode != "disabled"}


def _weight_bits(model: nn.Module) -> set[int]:
    """The widths of the enabled weight quantizers."""
    return {q.num_bits for _, q in quantizers(model) if q.is_weight and q.mode != "disabled"}


def _with_weight_bits(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` with every weight quantizer on a ``bits`` grid (ranges unchanged: max |w|)."""
    out = copy.deepcopy(model)
    for _, q in quantizers(out):
        if q.is_weight:
            q.num_bits = check_bits(bits, "weight_bits")
    return out


def _structure_record(c: _Candidate, on: frozenset[str]) -> dict[str, Any]:
    """What the trace says of a candidate's Q/DQ structure: INT8 quantizers (per group), the bits
    and the calibrator of each group of what is in INT8."""
    assert c.model is not None
    qs = dict(quantizers(c.model))
    by_group: dict[str, int] = {}
    for n in sorted(on):
        by_group[quantizer_group(n)] = by_group.get(quantizer_group(n), 0) + 1
    weight_bits = sorted({qs[n].num_bits for n in on if qs[n].is_weight})
    act_bits = sorted({qs[n].num_bits for n in on if not qs[n].is_weight})
    act_groups = [g for g in GROUPS if any(not qs[n].is_weight and quantizer_group(n) == g for n in on)]
    calibrators = {"weights": "max"} if weight_bits else {}
    calibrators.update({g: (c.group_calibrators or {}).get(g, c.calibrator) for g in act_groups})
    return {"int8_quantizers": len(on), "float_quantizers": len(c.float_quantizers), "int8_by_group": by_group,
            "weight_bits": weight_bits[0] if len(weight_bits) == 1 else weight_bits,
            "activation_bits": act_bits[0] if len(act_bits) == 1 else act_bits, "calibrators": calibrators}


# ----------------------------------------------------------------------------------- helpers


def _finite(x: float | None) -> float:
    """NaN and None sort as worst."""
    return -math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _num(x: float | None) -> float | None:
    """JSON-safe number: non-finite values become None."""
    return None if x is None or not math.isfinite(x) else float(x)


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return float(a - b)


__all__ = [
    "Part", "find_parts", "quantizer_parts", "GRANULARITIES", "pattern_matches", "patterns_for", "enabled_quantizers",
    "Budget", "Proxy", "logits_sqnr_proxy", "outputs_fn", "MeetsBound",
    "PartSensitivity", "SensitivityResult", "sensitivity", "SENSITIVITY_MODES",
    "PartialResult", "greedy_partial", "MINIMALITY_NOTE",
    "CalibratorSpec", "DEFAULT_CALIBRATORS", "Calibrations",
    "RecipeResult", "auto_recipe", "AutoQuantError", "BoundCheck", "ACCEPT_RULES",
]
