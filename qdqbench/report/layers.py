"""Per-layer views: calibrated amaxes per quantizer, sensitivity per part, what an auto recipe tried.

Amaxes come from the ``amax.json`` artifacts the runner writes (``details["amax"]`` is its path
relative to the run folder), so they exist only when the report is built from a run folder;
``build_report(records, run_info)`` without one simply has no amax tables. Sensitivity and the
recipe trace come from ``details["recipe"]`` of an accuracy record (``autoquant`` writes them).
Stored values may be null; nothing here fills them in.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdqbench.core.results import Record
from qdqbench.report.fmt import DASH, Anchors, as_int, fmt_ms

# An amax at least this many times the median of its quantizer type (across layers) is an
# outlier: one activation range that large spends most of the 256 levels on a few values.
OUTLIER_FACTOR = 4.0
# Below this many layers a per-type median means little, and ranges of different types are not
# comparable (a softmax output stays below 1, a residual stream reaches tens): no ratio, no flag.
MIN_LAYERS_FOR_MEDIAN = 3

_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.(.+)$")


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _str(x: Any) -> str | None:
    return None if x is None or x == "" else str(x)


# ----------------------------------------------------------------------------------------------
# amax


@dataclass(frozen=True)
class AmaxCell:
    """One quantizer's calibrated amax and how it compares with its peers in the table."""

    name: str  # the full quantizer name
    layer: int | None
    column: str  # quantizer type within a layer, e.g. 'attention.self.query.input'
    amax: float | None
    reference: float | None  # the median it is compared with
    outlier: bool

    @property
    def is_weight(self) -> bool:
        """A weight quantizer (its amax is max |w|, not a calibrated activation range)."""
        return self.name.endswith("weight_quantizer")

    @property
    def ratio(self) -> float | None:
        """amax / reference median."""
        if self.amax is None or not self.reference:
            return None
        return self.amax / self.reference


@dataclass(frozen=True)
class AmaxTable:
    """The amaxes of one scheme as layers × quantizer types; outliers flagged."""

    anchor: str
    model: str
    task: str
    scheme: str
    path: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[AmaxCell | None, ...]], ...]  # (layer label, one cell per column)
    problem: str | None = None  # why the artifact could not be shown

    @property
    def cells(self) -> list[AmaxCell]:
        """Every quantizer in the table."""
        return [c for _, row in self.rows for c in row if c is not None]

    @property
    def outliers(self) -> list[AmaxCell]:
        """Flagged quantizers, largest ratio first."""
        return sorted((c for c in self.cells if c.outlier), key=lambda c: -(c.ratio or 0.0))

    @property
    def max_amax(self) -> float | None:
        """The largest finite amax."""
        values = [c.amax for c in self.cells if c.amax is not None and math.isfinite(c.amax)]
        return max(values, default=None)


def _split(name: str) -> tuple[int | None, str]:
    column = name.removesuffix("_quantizer")
    m = _LAYER.search(column)
    if m is None:
        return None, column
    return int(m.group(1)), m.group(2)


def _median(values: Sequence[float]) -> float | None:
    good = [v for v in values if math.isfinite(v) and v > 0]
    return statistics.median(good) if good else None


def amax_table(
    anchor: str, model: str, task: str, scheme: str, path: str, amaxes: Mapping[str, Any]
) -> AmaxTable:
    """Lay one ``amax.json`` ({quantizer name: amax}) out as layers × quantizer types."""
    parsed = [(str(name), *_split(str(name)), _num(v)) for name, v in amaxes.items()]
    columns = tuple(dict.fromkeys(col for _, _, col, _ in parsed))
    by_column: dict[str, list[float]] = {}
    for _, _, col, v in parsed:
        if v is not None:
            by_column.setdefault(col, []).append(v)
    cells: dict[tuple[int | None, str], AmaxCell] = {}
    for name, layer, col, v in parsed:
        values = by_column.get(col, [])
        ref = _median(values) if len(values) >= MIN_LAYERS_FOR_MEDIAN else None
        outlier = (
            v is not None and ref is not None and math.isfinite(v) and v >= OUTLIER_FACTOR * ref
        )
        # NaN, zero or negative amaxes are calibration errors the runner refuses; flag any that got here.
        outlier = outlier or (v is not None and (not math.isfinite(v) or v <= 0))
        cells[(layer, col)] = AmaxCell(name, layer, col, v, ref, outlier)
    layers = sorted({layer for layer, _ in cells if layer is not None})
    rows = [(f"layer {i}", tuple(cells.get((i, c)) for c in columns)) for i in layers]
    if any(layer is None for layer, _ in cells):
        rows.append(("other", tuple(cells.get((None, c)) for c in columns)))
    return AmaxTable(anchor, model, task, scheme, path, columns, tuple(rows))


def load_amax(run_dir: Path, rel: str, artifacts: Sequence[Path] = ()) -> tuple[Mapping[str, Any] | None, str | None]:
    """Read an ``amax.json`` under ``run_dir`` (or under one of ``artifacts``, the folders a ``run
    --artifacts DIR`` recorded in run.json); (mapping, None) or (None, one-line problem)."""
    root = Path(run_dir).resolve()
    path = (root / rel).resolve()
    roots = [root, *(Path(a).resolve() for a in artifacts)]
    if not any(r == path or r in path.parents for r in roots):
        where = "the run folder and its artifacts folder" if artifacts else "the run folder"
        return None, f"{rel}: outside {where}, not read"
    if not path.is_file():
        return None, f"{rel}: not found"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{rel}: unreadable ({type(exc).__name__})"
    if not isinstance(data, Mapping):
        return None, f"{rel}: not a JSON object of quantizer name -> amax"
    return data, None


def amax_tables(records: Sequence[Record], run_dir: Path | None,
                artifacts: Sequence[Path] = ()) -> list[AmaxTable]:
    """One table per model × task × scheme whose accuracy record names an ``amax.json`` (read
    under the run folder, or under ``artifacts``: the run's ``--artifacts`` folders)."""
    if run_dir is None:
        return []
    anchors = Anchors()
    seen: set[tuple[str, str, str]] = set()
    tables = []
    for r in records:
        rel = r.details.get("amax")
        key = (r.model, r.task, r.scheme)
        if not isinstance(rel, str) or not rel or key in seen:
            continue
        seen.add(key)
        data, problem = load_amax(run_dir, rel, artifacts)
        anchor = anchors(r.model, r.task, r.scheme)
        if data is None:
            tables.append(AmaxTable(anchor, r.model, r.task, r.scheme, rel, (), (), problem))
        else:
            tables.append(amax_table(anchor, r.model, r.task, r.scheme, rel, data))
    return tables


# ----------------------------------------------------------------------------------------------
# sensitivity


@dataclass(frozen=True)
class SensitivityPart:
    """One part's proxy score quantized alone and left in float alone; rank 1 = most harmful."""

    rank: int | None
    part: str
    kind: str | None  # layer | group
    group: str | None
    layer: int | None
    quantizers: int | None
    only_quantized: float | None
    only_float: float | None
    quantized_only_loss: float | None = None  # float score - only_quantized
    float_only_gain: float | None = None  # only_float - full score


@dataclass(frozen=True)
class SensitivityView:
    """A ranked sensitivity analysis stored with one accuracy record."""

    anchor: str
    model: str
    task: str
    scheme: str
    proxy: str | None
    unit: str | None
    ranking_rule: str | None
    mode: str | None
    full_score: float | None
    float_score: float | None
    parts: tuple[SensitivityPart, ...]  # by rank


def _part(p: Mapping[str, Any]) -> SensitivityPart:
    def first(*keys: str) -> float | None:
        return next((_num(p[k]) for k in keys if p.get(k) is not None), None)

    return SensitivityPart(
        rank=as_int(p.get("rank")),
        part=str(p.get("part") or p.get("name") or "?"),
        kind=_str(p.get("kind")),
        group=_str(p.get("group")),
        layer=as_int(p.get("layer")),
        quantizers=as_int(p.get("quantizers"))
        if not isinstance(p.get("quantizers"), list)
        else len(p["quantizers"]),
        # autoquant writes quantized_only / float_only; accept the only_* spelling too
        only_quantized=first("only_quantized", "quantized_only"),
        only_float=first("only_float", "float_only"),
        quantized_only_loss=first("quantized_only_loss"),
        float_only_gain=first("float_only_gain"),
    )


def sensitivity_views(records: Sequence[Record]) -> list[SensitivityView]:
    """One view per model × task × scheme whose record carries ``details.recipe.sensitivity``."""
    anchors = Anchors()
    seen: set[tuple[str, str, str]] = set()
    views = []
    for r in records:
        recipe = r.details.get("recipe")
        sens = recipe.get("sensitivity") if isinstance(recipe, Mapping) else None
        key = (r.model, r.task, r.scheme)
        if not isinstance(sens, Mapping) or key in seen:
            continue
        seen.add(key)
        parts = [_part(p) for p in sens.get("parts") or [] if isinstance(p, Mapping)]
        parts.sort(key=lambda p: (p.rank is None, p.rank if p.rank is not None else 0))
        views.append(
            SensitivityView(
                anchor=anchors(r.model, r.task, r.scheme),
                model=r.model,
                task=r.task,
                scheme=r.scheme,
                proxy=_str(sens.get("proxy")),
                unit=_str(sens.get("unit")),
                ranking_rule=_str(sens.get("ranking_rule")),
                mode=_str(sens.get("mode")),
                full_score=_num(sens.get("full_score")),
                float_score=_num(sens.get("float_score")),
                parts=tuple(parts),
            )
        )
    return views


# ----------------------------------------------------------------------------------------------
# what the auto recipe tried


@dataclass(frozen=True)
class TraceStep:
    """One candidate the auto recipe built and scored."""

    name: str
    stage: str | None
    value: float | None  # primary metric on the selection data (fraction)
    passed: bool | None
    latency_ms: float | None
    evaluations: int | None
    seconds: float | None
    chosen: bool
    error: str | None = None
    drop: float | None = None  # on the selection data, with its paired bootstrap interval
    drop_ci_low: float | None = None
    drop_ci_high: float | None = None
    structure: str | None = None  # INT8 quantizers per group, bits, calibrators (fmt_structure)


def fmt_structure(s: Any) -> str | None:
    """A trace entry's ``structure`` in one line: 'int8 112 (linear 72, matmul 24, residual 16);
    w7/a8; weights max, linear mse'; None when the entry has none."""
    if not isinstance(s, Mapping):
        return None
    groups = s.get("int8_by_group") if isinstance(s.get("int8_by_group"), Mapping) else {}
    parts = [f"int8 {s.get('int8_quantizers', '?')}"
             + (f" ({', '.join(f'{g} {n}' for g, n in groups.items())})" if groups else "")]
    if s.get("weight_bits") is not None or s.get("activation_bits") is not None:
        parts.append(f"w{s.get('weight_bits', '?')}/a{s.get('activation_bits', '?')}")
    calibrators = s.get("calibrators") if isinstance(s.get("calibrators"), Mapping) else {}
    if calibrators:
        parts.append(", ".join(f"{g} {c}" for g, c in calibrators.items()))
    return "; ".join(parts)


@dataclass(frozen=True)
class PartCost:
    """The latency price of leaving one part in float, on the auto recipe's target engine."""

    part: str
    quantizers: int | None
    latency_ms: float | None  # the chosen variant with every part in INT8 but this one
    delta_ms: float | None  # latency_ms - full INT8


@dataclass(frozen=True)
class RecipeTrace:
    """The candidates of one auto recipe, in the order it tried them, the chosen one marked."""

    anchor: str
    model: str
    task: str
    scheme: str
    chosen: str | None
    selection: str | None  # how the choice was made
    threshold: float | None
    steps: tuple[TraceStep, ...]
    full_int8_ms: float | None = None  # the chosen variant with all its parts in INT8
    chosen_ms: float | None = None
    part_costs: tuple[PartCost, ...] = ()
    scored_on: str | None = None  # where the candidates' values come from (fake-quant torch, an engine)


def fmt_scored_on(scored: Any) -> str | None:
    """'candidates scored on onnxruntime (int8)' / '... in fake-quant torch' from ``details.recipe.scored_on``."""
    if not isinstance(scored, Mapping):
        return None
    if scored.get("where") == "engine":
        precision = scored.get("precision")
        return f"candidates scored on {scored.get('engine') or '?'}" + (f" ({precision})" if precision else "")
    if scored.get("where") == "torch":
        return "candidates scored in fake-quant torch"
    return None


PART_COST_HEADERS = ("Float part", "Quantizers", "Latency (ms)", "Cost (ms)")


def fmt_delta_ms(x: float | None) -> str:
    """'+1.23' (ms slower) / '−0.40' (faster); a dash when unknown."""
    if x is None:
        return DASH
    return ("+" if x >= 0 else "−") + fmt_ms(abs(x))


def part_costs_note(t: RecipeTrace) -> str:
    """One sentence above the float-part price table."""
    return (f"Latency cost of each float part on the target engine (median ms at the largest timed batch): "
            f"the chosen variant with every part in INT8 {fmt_ms(t.full_int8_ms)}, as chosen "
            f"{fmt_ms(t.chosen_ms)}; each row leaves only that part in float.")


def recipe_traces(records: Sequence[Record]) -> list[RecipeTrace]:
    """One trace per model × task × scheme whose record carries ``details.recipe.trace``."""
    anchors = Anchors()
    seen: set[tuple[str, str, str]] = set()
    traces = []
    for r in records:
        recipe = r.details.get("recipe")
        trace = recipe.get("trace") if isinstance(recipe, Mapping) else None
        key = (r.model, r.task, r.scheme)
        if not isinstance(trace, list) or key in seen:
            continue
        seen.add(key)
        chosen = _str(recipe.get("chosen"))
        steps = []
        for t in trace:
            if not isinstance(t, Mapping):
                continue
            name = str(t.get("name") or "?")
            latency = t.get("latency_ms", t.get("latency"))  # autoquant writes 'latency' (ms)
            passed = t.get("passed")
            steps.append(
                TraceStep(
                    name=name,
                    stage=_str(t.get("stage")),
                    value=_num(t.get("value")),
                    passed=passed if isinstance(passed, bool) else None,
                    latency_ms=_num(latency),
                    evaluations=as_int(t.get("evaluations")),
                    seconds=_num(t.get("seconds")),
                    chosen=chosen is not None and name == chosen,
                    error=_str(t.get("error")),
                    drop=_num(t.get("drop")),
                    drop_ci_low=_num(t.get("drop_ci_low")),
                    drop_ci_high=_num(t.get("drop_ci_high")),
                    structure=fmt_structure(t.get("structure")),
                )
            )
        costs = recipe.get("float_part_costs")
        costs = costs if isinstance(costs, Mapping) else {}
        part_costs = tuple(
            PartCost(part=str(c.get("part") or "?"), quantizers=as_int(c.get("quantizers")),
                     latency_ms=_num(c.get("latency")), delta_ms=_num(c.get("delta")))
            for c in costs.get("parts") or [] if isinstance(c, Mapping)
        )
        traces.append(
            RecipeTrace(
                anchor=anchors(r.model, r.task, r.scheme),
                model=r.model,
                task=r.task,
                scheme=r.scheme,
                chosen=chosen,
                selection=_str(recipe.get("selection")),
                threshold=_num(recipe.get("threshold")),
                steps=tuple(steps),
                full_int8_ms=_num(costs.get("full_int8")),
                chosen_ms=_num(costs.get("chosen")),
                part_costs=part_costs,
                scored_on=fmt_scored_on(recipe.get("scored_on")),
            )
        )
    return traces


__all__ = [
    "OUTLIER_FACTOR",
    "AmaxCell",
    "AmaxTable",
    "PART_COST_HEADERS",
    "PartCost",
    "RecipeTrace",
    "SensitivityPart",
    "SensitivityView",
    "TraceStep",
    "amax_table",
    "fmt_delta_ms",
    "part_costs_note",
    "amax_tables",
    "load_amax",
    "recipe_traces",
    "sensitivity_views",
]
