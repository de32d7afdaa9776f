"""The one row model every report renderer reads, and the helpers that format its numbers.

``build_report(records, run_info, run_dir=None)`` turns the records of a run (and its
``run.json``) into a ``Report``: a verdict summary, then accuracy, fidelity, latency, export,
failed-cell and environment rows, and the views across cells built from them (``views``: engines
beside fake-quant, peers, calibrators, accuracy vs latency; ``layers``: amaxes, sensitivity and
the auto recipe's trace; amaxes need ``run_dir``, where their artifacts live). Rows hold raw numbers exactly as stored (scores as fractions, drops as
``fp32 - value``, latencies in ms) plus the few values derived here (speedups against the fp32
baseline of the same run, model, task, backend and shape). Verdicts are read from the records,
never recomputed. Renderers (HTML, Markdown, CSV) only lay rows out and call the ``fmt_*``
helpers, so every format shows the same numbers the same way.

``Report.warnings`` are shown at the top of every human-readable format: lines of
``results.jsonl`` that could not be read (``build_report(..., skipped=...)``), a partial merge
(``run.json`` ``partial``) and shard lines a merge could not read (``merge.skipped_lines``). A
report never drops data silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from qdqbench.core.results import Record, SkippedLine
from qdqbench.config.suite import PEER_SCHEME_KINDS

if TYPE_CHECKING:
    from qdqbench.report.layers import AmaxTable, RecipeTrace, SensitivityView
    from qdqbench.report.views import CalibratorChart, ParetoChart, PeerComparison, SideBySideRow

DASH = "—"  # shown for a missing number

LATENCY_METRICS = (
    "latency_mean_ms",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_min_ms",
    "latency_max_ms",
    "latency_std_ms",
    "cov",
    "throughput",
)


# ----------------------------------------------------------------------------------------------
# rows


def is_peer_kind(scheme_kind: str) -> bool:
    """Whether a scheme kind is a peer tool's recipe (ort-dynamic, ort-static, modelopt)."""
    return scheme_kind in PEER_SCHEME_KINDS


@dataclass(frozen=True)
class AccuracyRow:
    """One accuracy cell: its primary metric, the fp32 reference and the stored verdict."""

    anchor: str  # stable slug of the cell, unique within the accuracy rows
    cell: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    metric: str
    value: float | None  # fraction, as stored
    value_ci_low: float | None
    value_ci_high: float | None
    fp32_value: float | None  # the verdict's baseline, or the fp32 row's value
    drop: float | None  # fp32 - value (fraction), from the verdict
    relative_drop: float | None  # drop / fp32, from the verdict
    drop_ci_low: float | None
    drop_ci_high: float | None
    within_noise: bool | None
    changed: int | None  # predictions that differ from fp32
    examples: int | None
    bound: float | None
    bound_mode: str | None
    threshold: float | None
    passed: bool | None  # None: no verdict (fp32 rows)
    other_metrics: tuple[tuple[str, float | None], ...] = ()

    @property
    def is_quantized(self) -> bool:
        """Whether this row is a quantized scheme (not the fp32 reference)."""
        return self.scheme_kind != "fp32"

    @property
    def is_peer(self) -> bool:
        """A peer tool's recipe, not a QDQBERT scheme."""
        return is_peer_kind(self.scheme_kind)


@dataclass(frozen=True)
class FidelityRow:
    """One fidelity cell: INT8 against fp32 sentence embeddings."""

    anchor: str
    cell: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    cosine_mean: float | None
    cosine_min: float | None
    sqnr_db: float | None
    nn_agreement: float | None
    examples: int | None
    reference: str | None
    passed: bool | None = None  # only when the record carries a verdict


@dataclass(frozen=True)
class LatencyRow:
    """One latency cell with its speedup against the same run's fp32 baseline."""

    anchor: str
    cell: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    batch: int | None
    seq: int | None
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    min_ms: float | None
    max_ms: float | None
    std_ms: float | None
    cov: float | None
    throughput: float | None  # sequences per second
    iterations: int | None
    warmup_iters: int | None
    threads: int | None
    method: str | None
    info: Mapping[str, Any] = field(default_factory=dict)
    # For an fp32 row timed in several engine configurations: the one reported (the fastest).
    fp32_config: str | None = None
    baseline_scheme: str | None = None  # the fp32 scheme this row is compared with
    baseline_mean_ms: float | None = None
    baseline_throughput: float | None = None
    is_baseline: bool = False
    speedup_latency: float | None = None  # baseline mean / mean
    speedup_throughput: float | None = None  # throughput / baseline throughput

    @property
    def is_peer(self) -> bool:
        """A peer tool's recipe, not a QDQBERT scheme."""
        return is_peer_kind(self.scheme_kind)


@dataclass(frozen=True)
class ExportRow:
    """One ONNX export cell."""

    anchor: str
    cell: str
    model: str
    task: str
    scheme: str
    onnx_mb: float | None
    qdq_nodes: int | None
    path: str | None


@dataclass(frozen=True)
class FailedRow:
    """A cell that did not finish (failed) or did not run (skipped), with its one-line error."""

    anchor: str
    cell: str
    status: str
    model: str
    task: str
    scheme: str
    backend: str
    kind: str
    error: str


@dataclass(frozen=True)
class EnvRow:
    """One line of the environment table: section, key, value."""

    section: str
    key: str
    value: str


@dataclass(frozen=True)
class MethodRow:
    """How one backend was timed: the method and iteration counts its latency cells report."""

    backend: str
    method: str | None
    warmup_iters: int | None
    iterations: int | None
    threads: int | None
    cells: int
    facts: tuple[tuple[str, str], ...] = ()  # engine facts (details.info), differing values joined


@dataclass(frozen=True)
class ThroughputChart:
    """Throughput against batch size for one model x task x backend: one series per scheme."""

    anchor: str
    model: str
    task: str
    backend: str
    series: tuple[tuple[str, tuple[tuple[int, float], ...]], ...]  # (label, ((batch, seq/s), ...))
    baselines: tuple[str, ...]  # labels of the fp32 series
    rows: tuple[LatencyRow, ...]  # the numbers behind the chart


@dataclass(frozen=True)
class PairVerdict:
    """The verdict of one model x task pair across its quantized schemes."""

    anchor: str
    model: str
    task: str
    n_quantized: int  # quantized accuracy rows that carry a verdict
    n_passing: int
    best: AccuracyRow | None  # highest value among passing rows, else highest value
    worst: AccuracyRow | None  # largest drop

    @property
    def passed(self) -> bool | None:
        """True when some quantized scheme passes the bound; None when nothing was judged."""
        return None if self.n_quantized == 0 else self.n_passing > 0


@dataclass(frozen=True)
class VerdictSummary:
    """The headline: how many pairs pass, the worst regression, the best speedup, failures."""

    pairs_total: int  # model x task pairs with accuracy rows
    pairs_passing: int  # ... of which some quantized scheme passes the bound
    pairs_unjudged: int  # ... of which none has a verdict (every int8 cell failed): not passing
    verdicts_total: int
    verdicts_passing: int
    worst_regression: AccuracyRow | None
    best_speedup: LatencyRow | None
    failed_cells: int
    skipped_cells: int
    ok_cells: int

    @property
    def passed(self) -> bool | None:
        """Every pair has a passing quantized scheme; None when the run judged nothing."""
        return None if self.verdicts_total == 0 else self.pairs_passing == self.pairs_total


@dataclass(frozen=True)
class Report:
    """Everything a renderer needs, already grouped, ordered and with derived numbers."""

    title: str
    suite: str | None
    run_id: str | None
    commit: str | None
    dirty: bool | None
    started_at: str | None
    finished_at: str | None
    bound: float | None
    bound_mode: str | None
    summary: VerdictSummary
    pairs: tuple[PairVerdict, ...]
    accuracy: tuple[AccuracyRow, ...]
    fidelity: tuple[FidelityRow, ...]
    latency: tuple[LatencyRow, ...]
    charts: tuple[ThroughputChart, ...]
    exports: tuple[ExportRow, ...]
    failed: tuple[FailedRow, ...]
    methods: tuple[MethodRow, ...]
    environment: tuple[EnvRow, ...]
    side_by_side: tuple[SideBySideRow, ...] = ()
    engines: tuple[str, ...] = ()  # the engine backends of side_by_side, in run order
    peers: tuple[PeerComparison, ...] = ()
    calibrators: tuple[CalibratorChart, ...] = ()
    pareto: tuple[ParetoChart, ...] = ()
    amax: tuple[AmaxTable, ...] = ()
    sensitivity: tuple[SensitivityView, ...] = ()
    traces: tuple[RecipeTrace, ...] = ()
    warnings: tuple[str, ...] = ()  # shown first: skipped lines, a partial merge


# ----------------------------------------------------------------------------------------------
# building


def slug(*parts: Any) -> str:
    """A lowercase [a-z0-9-] slug of the parts, for stable element ids and file names."""
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


class _Anchors:
    """Hands out slugs that stay unique within one table (a clash gets -2, -3, ...)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, *parts: Any) -> str:
        base = slug(*parts)
        n = self._seen.get(base, 0) + 1
        self._seen[base] = n
        return base if n == 1 else f"{base}-{n}"


class _Order:
    """First-appearance order of values, so rows follow the order the run produced them."""

    def __init__(self) -> None:
        self._index: dict[Any, int] = {}

    def __call__(self, key: Any) -> int:
        return self._index.setdefault(key, len(self._index))


def _value(record: Record, name: str) -> float | None:
    m = record.metric(name)
    return None if m is None else m.value


def _int(x: Any) -> int | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and math.isfinite(x) and x.is_integer():
        return int(x)
    return None


def _primary_metric(record: Record) -> str | None:
    name = record.details.get("primary_metric")
    if isinstance(name, str) and record.metric(name) is not None:
        return name
    if record.verdict is not None and record.metric(record.verdict.metric) is not None:
        return record.verdict.metric
    return record.metrics[0].name if record.metrics else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or not math.isfinite(num) or not math.isfinite(den):
        return None
    if num <= 0 or den <= 0:
        return None
    return num / den


def _accuracy_rows(records: Sequence[Record], order: _Order) -> list[AccuracyRow]:
    anchors = _Anchors()
    # fp32 references per (model, task, backend), used when a quantized row has no verdict.
    fp32: dict[tuple[str, str, str], float | None] = {}
    for r in records:
        if r.scheme_kind == "fp32":
            name = _primary_metric(r)
            if name is not None:
                fp32.setdefault((r.model, r.task, r.backend), _value(r, name))
                fp32.setdefault((r.model, r.task, "*"), _value(r, name))
    rows = []
    for r in records:
        name = _primary_metric(r)
        if name is None:
            continue
        m = r.metric(name)
        v = r.verdict
        if v is not None:
            ref = v.baseline
        elif r.scheme_kind == "fp32":
            ref = m.value
        else:
            ref = fp32.get((r.model, r.task, r.backend), fp32.get((r.model, r.task, "*")))
        rows.append(
            AccuracyRow(
                anchor=anchors(r.cell),
                cell=r.cell,
                model=r.model,
                task=r.task,
                scheme=r.scheme,
                scheme_kind=r.scheme_kind,
                backend=r.backend,
                precision=r.precision,
                metric=name,
                value=m.value,
                value_ci_low=m.ci_low,
                value_ci_high=m.ci_high,
                fp32_value=ref,
                drop=v.drop if v else None,
                relative_drop=v.relative_drop if v else None,
                drop_ci_low=v.drop_ci_low if v else None,
                drop_ci_high=v.drop_ci_high if v else None,
                within_noise=v.within_noise if v else None,
                changed=_int(r.details.get("changed")),
                examples=_int(r.details.get("examples")),
                bound=v.bound if v else None,
                bound_mode=v.mode if v else None,
                threshold=v.threshold if v else None,
                passed=v.passed if v else None,
                other_metrics=tuple((o.name, o.value) for o in r.metrics if o.name != name),
            )
        )
    rows.sort(
        key=lambda a: (
            order(("model", a.model)),
            order(("task", a.task)),
            a.scheme_kind != "fp32",
            order(("scheme", a.scheme)),
            order(("backend", a.backend)),
        )
    )
    return rows


def _fidelity_rows(records: Sequence[Record], order: _Order) -> list[FidelityRow]:
    anchors = _Anchors()
    rows = [
        FidelityRow(
            anchor=anchors(r.cell),
            cell=r.cell,
            model=r.model,
            task=r.task,
            scheme=r.scheme,
            scheme_kind=r.scheme_kind,
            backend=r.backend,
            precision=r.precision,
            cosine_mean=_value(r, "cosine_mean"),
            cosine_min=_value(r, "cosine_min"),
            sqnr_db=_value(r, "sqnr_db"),
            nn_agreement=_value(r, "nn_agreement"),
            examples=_int(r.details.get("examples")),
            reference=str(r.details["reference"]) if r.details.get("reference") else None,
            passed=r.verdict.passed if r.verdict else None,
        )
        for r in records
    ]
    rows.sort(
        key=lambda f: (
            order(("model", f.model)),
            order(("task", f.task)),
            order(("scheme", f.scheme)),
            order(("backend", f.backend)),
        )
    )
    return rows


def _latency_rows(records: Sequence[Record], order: _Order) -> list[LatencyRow]:
    anchors = _Anchors()
    rows = []
    for r in records:
        d = r.details
        info = d.get("engine", d.get("info"))
        rows.append(
            LatencyRow(
                anchor=anchors(r.cell),
                cell=r.cell,
                model=r.model,
                task=r.task,
                scheme=r.scheme,
                scheme_kind=r.scheme_kind,
                backend=r.backend,
                precision=r.precision,
                batch=r.shape.batch if r.shape else None,
                seq=r.shape.seq if r.shape else None,
                mean_ms=_value(r, "latency_mean_ms"),
                p50_ms=_value(r, "latency_median_ms"),
                p90_ms=_value(r, "latency_p90_ms"),
                p95_ms=_value(r, "latency_p95_ms"),
                p99_ms=_value(r, "latency_p99_ms"),
                min_ms=_value(r, "latency_min_ms"),
                max_ms=_value(r, "latency_max_ms"),
                std_ms=_value(r, "latency_std_ms"),
                cov=_value(r, "cov"),
                throughput=_value(r, "throughput"),
                iterations=_int(d.get("iterations")),
                warmup_iters=_int(d.get("warmup_iters")),
                threads=_int(d.get("threads")),
                method=str(d["method"]) if d.get("method") is not None else None,
                info=dict(info) if isinstance(info, Mapping) else {},
                fp32_config=str(d["fp32_baseline"]) if d.get("fp32_baseline") else None,
            )
        )
    # The baseline: the fp32 scheme's row with the same model, task, backend and shape.
    baselines: dict[tuple, LatencyRow] = {}
    for row in rows:
        if row.scheme_kind == "fp32":
            baselines.setdefault((row.model, row.task, row.backend, row.batch, row.seq), row)
    linked = []
    for row in rows:
        base = baselines.get((row.model, row.task, row.backend, row.batch, row.seq))
        if base is None or row.batch is None:
            linked.append(row)
            continue
        linked.append(
            replace(
                row,
                baseline_scheme=base.scheme,
                baseline_mean_ms=base.mean_ms,
                baseline_throughput=base.throughput,
                is_baseline=base is row,
                speedup_latency=_ratio(base.mean_ms, row.mean_ms),
                speedup_throughput=_ratio(row.throughput, base.throughput),
            )
        )
    linked.sort(
        key=lambda lat: (
            order(("model", lat.model)),
            order(("task", lat.task)),
            order(("backend", lat.backend)),
            lat.seq if lat.seq is not None else -1,
            lat.batch if lat.batch is not None else -1,
            lat.scheme_kind != "fp32",
            order(("scheme", lat.scheme)),
        )
    )
    return linked


def _export_rows(records: Sequence[Record]) -> list[ExportRow]:
    anchors = _Anchors()
    return [
        ExportRow(
            anchor=anchors(r.cell),
            cell=r.cell,
            model=r.model,
            task=r.task,
            scheme=r.scheme,
            onnx_mb=_value(r, "onnx_mb"),
            qdq_nodes=_int(_value(r, "qdq_nodes")),
            path=str(r.details["path"]) if r.details.get("path") else None,
        )
        for r in records
    ]


def _failed_rows(records: Sequence[Record]) -> list[FailedRow]:
    anchors = _Anchors()
    rows = [
        FailedRow(
            anchor=anchors(r.cell),
            cell=r.cell,
            status=r.status,
            model=r.model,
            task=r.task,
            scheme=r.scheme,
            backend=r.backend,
            kind=r.kind,
            error=" ".join((r.error or "").split()) or "(no error recorded)",
        )
        for r in records
        if r.status != "ok"
    ]
    rows.sort(key=lambda f: f.status != "failed")  # failed first, skipped after
    return rows


def _pairs(accuracy: Sequence[AccuracyRow]) -> list[PairVerdict]:
    anchors = _Anchors()
    groups: dict[tuple[str, str], list[AccuracyRow]] = {}
    for a in accuracy:
        groups.setdefault((a.model, a.task), []).append(a)
    pairs = []
    for (model, task), rows in groups.items():
        judged = [a for a in rows if a.is_quantized and a.passed is not None]
        passing = [a for a in judged if a.passed]
        pool = passing or judged
        best = max(pool, key=lambda a: _finite(a.value), default=None)
        worst = max(judged, key=lambda a: _finite(a.drop), default=None)
        pairs.append(
            PairVerdict(anchors(model, task), model, task, len(judged), len(passing), best, worst)
        )
    return pairs


def _finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else -math.inf


def _method_rows(latency: Sequence[LatencyRow]) -> list[MethodRow]:
    groups: dict[tuple, list[LatencyRow]] = {}
    for row in latency:
        key = (row.backend, row.method, row.warmup_iters, row.iterations, row.threads)
        groups.setdefault(key, []).append(row)
    methods = []
    for key, rows in groups.items():
        facts: dict[str, list[str]] = {}
        for row in rows:
            for k, v in row.info.items():
                values = facts.setdefault(str(k), [])
                if _text(v) not in values:
                    values.append(_text(v))
        joined = tuple((k, " / ".join(v)) for k, v in facts.items())
        methods.append(MethodRow(*key, cells=len(rows), facts=joined))
    return methods


def _text(x: Any) -> str:
    if x is None or x == "":
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (list, tuple)):
        return ", ".join(_text(v) for v in x) if x else DASH
    if isinstance(x, Mapping):
        return json.dumps(x, sort_keys=True, default=str)
    return str(x)


def _environment_rows(run_info: Mapping[str, Any]) -> list[EnvRow]:
    rows: list[EnvRow] = []

    def add(section: str, key: str, value: Any) -> None:
        rows.append(EnvRow(section, key, _text(value)))

    suite = run_info.get("suite")
    if isinstance(suite, Mapping):
        add("run", "suite", suite.get("name"))
        add("run", "suite file", suite.get("path"))
    elif suite is not None:
        add("run", "suite", suite)
    add("run", "run id", run_info.get("run_id"))
    git = run_info.get("git") if isinstance(run_info.get("git"), Mapping) else {}
    commit = git.get("commit")
    if commit and git.get("dirty"):
        commit = f"{commit} (dirty)"
    add("run", "git commit", commit)
    add("run", "started", run_info.get("started_at"))
    add("run", "finished", run_info.get("finished_at"))
    bound = run_info.get("accuracy_bound")
    if isinstance(bound, Mapping) and bound.get("bound") is not None:
        add("run", "accuracy bound", fmt_bound(bound.get("bound"), bound.get("mode")))
    for section, key in (("versions", "versions"), ("machine", "machine"), ("timing", "timing")):
        values = run_info.get(key)
        if isinstance(values, Mapping):
            for k, v in values.items():
                add(section, str(k), v)
    return rows


MAX_SKIPPED_SHOWN = 20  # skipped lines listed per file before "and N more"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _strings(x: Any) -> list[str]:
    return [str(v) for v in x] if isinstance(x, (list, tuple)) else []


def run_warnings(info: Mapping[str, Any], skipped: Sequence[SkippedLine] = ()) -> list[str]:
    """What a reader must know before trusting the numbers: a partial merge, unread lines."""
    out = []
    partial = info.get("partial")
    if partial is not None:
        p = partial if isinstance(partial, Mapping) else {}
        missing, unfinished = _strings(p.get("missing_shards")), _strings(p.get("unfinished_shards"))
        parts = []
        if missing:
            parts.append(f"{'shard' if len(missing) == 1 else 'shards'} {', '.join(missing)} missing")
        if unfinished:
            parts.append(f"unfinished {'shard' if len(unfinished) == 1 else 'shards'} {', '.join(unfinished)}")
        if not parts:
            parts = _strings(p.get("reasons")) or ["an incomplete shard set"]
        out.append(f"Partial merge: {'; '.join(parts)} — this report does not cover the whole suite")
    by_file: dict[str, list[SkippedLine]] = {}
    for line in skipped:
        by_file.setdefault(Path(line.path).name, []).append(line)
    for name, lines in by_file.items():
        shown = "; ".join(f"line {x.line}: {x.reason}" for x in lines[:MAX_SKIPPED_SHOWN])
        more = f"; and {len(lines) - MAX_SKIPPED_SHOWN} more" if len(lines) > MAX_SKIPPED_SHOWN else ""
        out.append(f"{name}: {_plural(len(lines), 'line')} skipped: {shown}{more} "
                   "(their cells are missing from this report)")
    merge = info.get("merge")
    merged_skips = merge.get("skipped_lines") if isinstance(merge, Mapping) else None
    if isinstance(merged_skips, list) and merged_skips:
        items = [x for x in merged_skips if isinstance(x, Mapping)]
        shown = "; ".join(f"{x.get('run_id', '?')} results.jsonl line {x.get('line', '?')}: {x.get('reason', '?')}"
                          for x in items[:MAX_SKIPPED_SHOWN])
        more = f"; and {len(items) - MAX_SKIPPED_SHOWN} more" if len(items) > MAX_SKIPPED_SHOWN else ""
        out.append(f"Merged from shards with unreadable lines: {_plural(len(merged_skips), 'line')} skipped: "
                   f"{shown}{more} (their cells may be missing from this report)")
    return out


def build_report(
    records: Iterable[Record],
    run_info: Mapping[str, Any] | None = None,
    *,
    run_dir: Path | None = None,
    skipped: Sequence[SkippedLine] = (),
) -> Report:
    """Build the row model of a run from its records and its ``run.json`` dict.

    ``run_dir`` (the run folder) lets the per-layer views read the ``amax.json`` artifacts the
    records name; without it the report has everything else. ``skipped`` (lines of
    ``results.jsonl`` that could not be read) become warnings at the top of the report.
    """
    # The views build on this module's rows, so they are imported here, not at the top.
    from qdqbench.report import layers, views

    records = list(records)
    info = dict(run_info or {})
    order = _Order()
    for r in records:  # run order decides the order of models, tasks, schemes and backends
        for key in ("model", "task", "scheme", "backend"):
            order((key, getattr(r, key)))
    ok = [r for r in records if r.status == "ok"]
    accuracy = _accuracy_rows([r for r in ok if r.kind == "accuracy"], order)
    fidelity = _fidelity_rows([r for r in ok if r.kind == "fidelity"], order)
    latency = _latency_rows([r for r in ok if r.kind == "latency"], order)
    exports = _export_rows([r for r in ok if r.kind == "export"])
    failed = _failed_rows(records)
    pairs = _pairs(accuracy)

    judged = [a for a in accuracy if a.is_quantized and a.passed is not None]
    speedups = [lat for lat in latency if not lat.is_baseline and lat.speedup_latency is not None]
    summary = VerdictSummary(
        pairs_total=len(pairs),
        pairs_passing=sum(1 for p in pairs if p.passed),
        pairs_unjudged=sum(1 for p in pairs if p.passed is None),
        verdicts_total=len(judged),
        verdicts_passing=sum(1 for a in judged if a.passed),
        worst_regression=max(judged, key=lambda a: _finite(a.drop), default=None),
        best_speedup=max(speedups, key=lambda lat: _finite(lat.speedup_latency), default=None),
        failed_cells=sum(1 for r in records if r.status == "failed"),
        skipped_cells=sum(1 for r in records if r.status == "skipped"),
        ok_cells=len(ok),
    )

    suite = info.get("suite")
    suite_name = suite.get("name") if isinstance(suite, Mapping) else suite
    suite_name = str(suite_name) if suite_name else None
    run_id = str(info["run_id"]) if info.get("run_id") else None
    git = info.get("git") if isinstance(info.get("git"), Mapping) else {}
    bound = info.get("accuracy_bound") if isinstance(info.get("accuracy_bound"), Mapping) else {}
    bound_value, bound_mode = bound.get("bound"), bound.get("mode")
    if bound_value is None and judged:  # run.json missing: the stored verdicts still say it
        bound_value, bound_mode = judged[0].bound, judged[0].bound_mode
    title = "qdqbench report" + "".join(f" · {p}" for p in (suite_name, run_id) if p)
    details = {r.cell: r.details for r in ok}
    pair_anchor = {(p.model, p.task): p.anchor for p in pairs}
    side, engines = views.side_by_side(accuracy, details)
    return Report(
        title=title,
        suite=suite_name,
        run_id=run_id,
        commit=str(git["commit"]) if git.get("commit") else None,
        dirty=git.get("dirty"),
        started_at=info.get("started_at"),
        finished_at=info.get("finished_at"),
        bound=bound_value,
        bound_mode=bound_mode,
        summary=summary,
        pairs=tuple(pairs),
        accuracy=tuple(accuracy),
        fidelity=tuple(fidelity),
        latency=tuple(latency),
        charts=tuple(_charts(latency)),
        exports=tuple(exports),
        failed=tuple(failed),
        methods=tuple(_method_rows(latency)),
        environment=tuple(_environment_rows(info)),
        side_by_side=tuple(side),
        engines=tuple(engines),
        peers=tuple(views.peer_comparisons(accuracy, latency, pair_anchor)),
        calibrators=tuple(views.calibrator_charts(accuracy, details, pair_anchor)),
        pareto=tuple(views.pareto_charts(accuracy, latency, pair_anchor)),
        amax=tuple(layers.amax_tables(ok, run_dir)),
        sensitivity=tuple(layers.sensitivity_views(ok)),
        traces=tuple(layers.recipe_traces(ok)),
        warnings=tuple(run_warnings(info, skipped)),
    )


def _charts(latency: Sequence[LatencyRow]) -> list[ThroughputChart]:
    anchors = _Anchors()
    groups: dict[tuple[str, str, str], list[LatencyRow]] = {}
    for row in latency:
        if row.batch is not None and row.throughput is not None:
            groups.setdefault((row.model, row.task, row.backend), []).append(row)
    charts = []
    for (model, task, backend), rows in groups.items():
        seqs = {row.seq for row in rows}
        series: dict[str, list[tuple[int, float]]] = {}
        baselines: list[str] = []
        for row in rows:
            name = row.scheme if len(seqs) == 1 else f"{row.scheme} seq {row.seq}"
            series.setdefault(name, []).append((row.batch, row.throughput))
            if row.scheme_kind == "fp32" and name not in baselines:
                baselines.append(name)
        charts.append(
            ThroughputChart(
                anchor=anchors(model, task, backend),
                model=model,
                task=task,
                backend=backend,
                series=tuple((k, tuple(sorted(v))) for k, v in series.items()),
                baselines=tuple(baselines),
                rows=tuple(rows),
            )
        )
    return charts


# ----------------------------------------------------------------------------------------------
# formatting: every renderer shows numbers through these


def _ok(x: float | None) -> bool:
    return x is not None and not isinstance(x, bool) and math.isfinite(x)


def _bad(x: float | None) -> str:
    return DASH if x is None else str(x)  # nan / inf shown as such, never hidden


def fmt_sig(x: float | None, digits: int = 3, max_decimals: int = 3) -> str:
    """At least ``digits`` significant figures, no exponent, at most ``max_decimals`` decimals."""
    if not _ok(x):
        return _bad(x)
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, min(max_decimals, digits - 1 - magnitude))
    if decimals < digits - 1 - magnitude and abs(x) < 10**-decimals:
        return f"{x:.{digits}g}"  # would round to zero at the capped decimals: keep the digits
    return f"{x:.{decimals}f}"


def fmt_score(x: float | None) -> str:
    """A score stored as a fraction, shown in percent points with 2 decimals (0.8979 -> 89.79)."""
    return f"{x * 100:.2f}" if _ok(x) else _bad(x)


def fmt_points(x: float | None) -> str:
    """A difference of fractions in percent points, signed when negative (0.0045 -> 0.45)."""
    return fmt_score(x)


def fmt_delta_points(x: float | None) -> str:
    """A signed difference of fractions in percent points (0.0041 -> '+0.41', -0.002 -> '-0.20')."""
    return "+" + fmt_points(x) if _ok(x) and x > 0 else fmt_points(x)


def fmt_ci_points(low: float | None, high: float | None) -> str:
    """A fraction interval in percent points, '[0.10, 0.80]'; a dash when unknown."""
    if low is None or high is None:
        return DASH
    return f"[{fmt_points(low)}, {fmt_points(high)}]"


def fmt_pct(x: float | None, decimals: int = 2) -> str:
    """A ratio shown as a percentage (0.0123 -> '1.23%')."""
    return f"{x * 100:.{decimals}f}%" if _ok(x) else _bad(x)


def fmt_ms(x: float | None) -> str:
    """Milliseconds, 3 significant figures, at most 3 decimals (4 -> '4.00', 0.1234 -> '0.123')."""
    return fmt_sig(x, 3, 3)


def fmt_throughput(x: float | None) -> str:
    """Sequences per second with 3 significant figures (1234.5 -> '1235', 12.34 -> '12.3')."""
    return fmt_sig(x, 3, 2)


def fmt_speedup(x: float | None) -> str:
    """A ratio as '2.50×'."""
    return f"{x:.2f}×" if _ok(x) else _bad(x)


def fmt_ratio(x: float | None, decimals: int = 4) -> str:
    """A unitless ratio such as a cosine similarity, fixed decimals."""
    return f"{x:.{decimals}f}" if _ok(x) else _bad(x)


def fmt_db(x: float | None) -> str:
    """Decibels with one decimal."""
    return f"{x:.1f}" if _ok(x) else _bad(x)


def fmt_int(x: int | float | None) -> str:
    """An integer count; a dash when unknown."""
    return DASH if x is None else str(int(x)) if _ok(float(x)) else _bad(x)


def fmt_changed(changed: int | None, examples: int | None) -> str:
    """'7 / 872' predictions changed; a dash when not recorded."""
    if changed is None:
        return DASH
    return f"{changed} / {examples}" if examples is not None else str(changed)


def fmt_verdict(passed: bool | None, missing: str = DASH) -> str:
    """'pass', 'FAIL', or ``missing`` (a dash) for rows without a verdict."""
    return missing if passed is None else "pass" if passed else "FAIL"


def fmt_bound(bound: float | None, mode: str | None) -> str:
    """The accuracy bound in words: 'relative drop ≤ 1.00%' or 'drop ≤ 1.00 pts'."""
    if not _ok(bound):
        return DASH
    if mode == "absolute":
        return f"drop ≤ {fmt_points(bound)} pts"
    return f"relative drop ≤ {fmt_pct(bound)}"


def fmt_shape(batch: int | None, seq: int | None) -> str:
    """'8×128' (batch × sequence length)."""
    return DASH if batch is None else f"{batch}×{seq}"


def fmt_method(row: MethodRow) -> str:
    """One sentence describing how a backend was timed."""
    parts = [row.method or "method not recorded"]
    if row.warmup_iters is not None:
        parts.append(f"{row.warmup_iters} warm-up")
    if row.iterations is not None:
        parts.append(f"{row.iterations} timed iterations")
    if row.threads is not None:
        parts.append(f"{row.threads} thread{'s' if row.threads != 1 else ''}")
    return ", ".join(parts)


def fmt_fp32_configs(report: Report) -> str:
    """Which fp32 engine configuration each best-of fp32 row reports, or '' when none was compared."""
    chosen = [r.fp32_config for r in report.latency if r.fp32_config]
    if not chosen:
        return ""
    counts = ", ".join(f"{c} in {chosen.count(c)}" for c in sorted(set(chosen)))
    return (f"fp32 rows on onnxruntime are the faster of the plain ORT_ENABLE_ALL graph and ORT's "
            f"transformer fusion (both figures in each cell's details); faster: {counts} of {len(chosen)}.")


def fmt_headline(report: Report) -> str:
    """The verdict in one sentence, the same in every format."""
    s = report.summary
    if s.passed is None:
        return "No quantized accuracy verdicts in this run"
    pairs = "pair has" if s.pairs_total == 1 else "pairs have"
    return (
        f"{s.pairs_passing} of {s.pairs_total} model × task {pairs} a quantized scheme within "
        f"the bound ({fmt_bound(report.bound, report.bound_mode)})"
    )


def label(row: AccuracyRow | LatencyRow) -> str:
    """'scheme (backend, precision)' for headlines."""
    return f"{row.scheme} ({row.backend}, {row.precision or DASH})"
