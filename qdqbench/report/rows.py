"""The one row model every report renderer reads, and the helpers that format its numbers.

``build_report(records, run_info, run_dir=None)`` turns the records of a run (and its
``run.json``) into a ``Report``: a verdict summary, then accuracy, fidelity, latency, export,
failed-cell and environment rows, and the views across cells built from them (``views``: engines
beside fake-quant, peers, calibrators, accuracy vs latency; ``layers``: amaxes, sensitivity and
the auto recipe's trace; amaxes need ``run_dir``, where their artifacts live). The row types
live in ``model``, the number formatting in ``fmt`` (both re-exported here). Rows hold raw
numbers exactly as stored (scores as fractions, drops as ``fp32 - value``, latencies in ms) plus
the few values derived here (speedups against the fp32 baseline of the same run, model, task,
backend and shape). Verdicts are read from the records, never recomputed. Renderers (HTML,
Markdown, CSV) only lay rows out and call the ``fmt_*`` helpers, so every format shows the same
numbers the same way.

``Report.warnings`` are shown at the top of every human-readable format: lines of
``results.jsonl`` that could not be read (``build_report(..., skipped=...)``), a partial merge
(``run.json`` ``partial``) and shard lines a merge could not read (``merge.skipped_lines``). A
report never drops data silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qdqbench.core.results import Record, SkippedLine
from qdqbench.report import claims, layers, timeshare, views
from qdqbench.report.fmt import (  # noqa: F401 — re-exported: renderers read every helper from here
    DASH,
    Anchors,
    as_int,
    fmt_bound,
    fmt_changed,
    fmt_ci_points,
    fmt_db,
    fmt_delta_points,
    fmt_int,
    fmt_ms,
    fmt_part,
    fmt_pct,
    fmt_points,
    fmt_ratio,
    fmt_score,
    fmt_shape,
    fmt_sig,
    fmt_speedup,
    fmt_throughput,
    fmt_verdict,
    slug,
)
from qdqbench.report.layers import AmaxTable, RecipeTrace, SensitivityView
from qdqbench.report.model import (  # noqa: F401 — re-exported: the row types
    LATENCY_METRICS,
    AccuracyRow,
    EnvRow,
    ExportRow,
    FailedRow,
    FidelityRow,
    LatencyRow,
    MethodRow,
    PairVerdict,
    PartScore,
    ThroughputChart,
    VerdictSummary,
    is_peer_kind,
)
from qdqbench.report.views import (
    CalibratorChart,
    MlperfStyleRow,
    ParetoChart,
    PeerComparison,
    SideBySideRow,
)


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
    mlperf_style: tuple[MlperfStyleRow, ...] = ()
    time_shares: timeshare.Table | None = None  # "Where the time goes" (report/timeshare.py)
    warnings: tuple[str, ...] = ()  # shown first: skipped lines, a partial merge


# ----------------------------------------------------------------------------------------------
# building


class _Order:
    """First-appearance order of values, so rows follow the order the run produced them."""

    def __init__(self) -> None:
        self._index: dict[Any, int] = {}

    def __call__(self, key: Any) -> int:
        return self._index.setdefault(key, len(self._index))


def _value(record: Record, name: str) -> float | None:
    m = record.metric(name)
    return None if m is None else m.value

def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or not math.isfinite(num) or not math.isfinite(den):
        return None
    if num <= 0 or den <= 0:
        return None
    return num / den


def _part_score(name: str, p: Any) -> PartScore | None:
    """One stored part summary (``_part_summary`` in run/steps.py) as a PartScore."""
    if not isinstance(p, Mapping):
        return None
    num = layers._num
    return PartScore(name, str(p.get("contains", "")), as_int(p.get("examples")), num(p.get("value")),
                     num(p.get("drop")), num(p.get("drop_ci_low")), num(p.get("drop_ci_high")),
                     p.get("passed") if isinstance(p.get("passed"), bool) else None)


def _part_scores(parts: Any) -> tuple[PartScore, ...]:
    """``details.evaluation_parts`` of a recipe: auto record as PartScores (test, selection, full)."""
    if not isinstance(parts, Mapping):
        return ()
    scored = (_part_score(name, parts.get(name)) for name in ("test", "selection", "full"))
    return tuple(p for p in scored if p is not None)


def _accuracy_rows(records: Sequence[Record], order: _Order) -> list[AccuracyRow]:
    anchors = Anchors()
    # fp32 references per (model, task, backend), used when a quantized row has no verdict.
    fp32: dict[tuple[str, str, str], float | None] = {}
    for r in records:
        if r.scheme_kind == "fp32":
            name = r.primary_metric
            if name is not None:
                fp32.setdefault((r.model, r.task, r.backend), _value(r, name))
                fp32.setdefault((r.model, r.task, "*"), _value(r, name))
    rows = []
    for r in records:
        name = r.primary_metric
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
                changed=as_int(r.details.get("changed")),
                examples=as_int(r.details.get("examples")),
                bound=v.bound if v else None,
                bound_mode=v.mode if v else None,
                threshold=v.threshold if v else None,
                passed=v.passed if v else None,
                other_metrics=tuple((o.name, o.value) for o in r.metrics if o.name != name),
                parts=_part_scores(r.details.get("evaluation_parts")),
                test_part=_part_score("test", r.details.get("test_part")),
                test_part_of=layers._str((r.details.get("test_part") or {}).get("auto_scheme"))
                if isinstance(r.details.get("test_part"), Mapping) else None,
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
    anchors = Anchors()
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
            examples=as_int(r.details.get("examples")),
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
    anchors = Anchors()
    rows = []
    extras = timeshare.latency_extras(records)
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
                iterations=as_int(d.get("iterations")),
                warmup_iters=as_int(d.get("warmup_iters")),
                threads=as_int(d.get("threads")),
                method=str(d["method"]) if d.get("method") is not None else None,
                info=dict(info) if isinstance(info, Mapping) else {},
                fp32_config=str(d["fp32_baseline"]) if d.get("fp32_baseline") else None,
                peak_rss_mb=_value(r, "peak_rss_mb"),
                model_rss_mb=_value(r, "model_rss_mb"),
                load_s=_value(r, "load_s"),
                peak_gpu_mem_mb=_value(r, "peak_gpu_mem_mb"),
                **extras.get(r.cell, {}),
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
    anchors = Anchors()
    ratios = timeshare.export_size_ratios(records)
    return [
        ExportRow(
            anchor=anchors(r.cell),
            cell=r.cell,
            model=r.model,
            task=r.task,
            scheme=r.scheme,
            onnx_mb=_value(r, "onnx_mb"),
            qdq_nodes=as_int(_value(r, "qdq_nodes")),
            path=str(r.details["path"]) if r.details.get("path") else None,
            size_ratio=ratios.get(r.cell),
        )
        for r in records
    ]


def _failed_rows(records: Sequence[Record]) -> list[FailedRow]:
    anchors = Anchors()
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
    anchors = Anchors()
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
        tied = claims.tied_best(best, pool) if best is not None else ()
        pairs.append(
            PairVerdict(
                anchors(model, task), model, task, len(judged), len(passing), best, worst, tied
            )
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


def _artifacts_folders(info: Mapping[str, Any]) -> list[Path]:
    """The ``--artifacts`` folders a run recorded in run.json (its own, and each merged shard's)."""
    shards = info.get("shards")
    found = [info.get("artifacts"), *(s.get("artifacts") for s in shards if isinstance(s, Mapping))] \
        if isinstance(shards, list) else [info.get("artifacts")]
    return [Path(a) for a in found if isinstance(a, str) and a]


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
        amax=tuple(layers.amax_tables(ok, run_dir, _artifacts_folders(info))),
        sensitivity=tuple(layers.sensitivity_views(ok)),
        traces=tuple(layers.recipe_traces(ok)),
        mlperf_style=tuple(views.mlperf_style_rows(latency)),
        time_shares=timeshare.where_time_goes(ok),
        warnings=tuple(run_warnings(info, skipped)),
    )


def _charts(latency: Sequence[LatencyRow]) -> list[ThroughputChart]:
    anchors = Anchors()
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
# formatting that reads rows (the number helpers are ``fmt``'s)


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


def best_label(pair: PairVerdict) -> str:
    """The pair's best scheme, or 'tied best: A, B' when it does not beat the others beyond the
    intervals (``claims.tied_best``); DASH without one."""
    if pair.best is None:
        return DASH
    if not pair.tied:
        return label(pair.best)
    return "tied best: " + ", ".join(label(a) for a in (pair.best, *pair.tied))
