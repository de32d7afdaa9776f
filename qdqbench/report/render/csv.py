"""Render a ``Report`` as CSV files for spreadsheets and scripts: one file per table.

Named ``csvout`` so that it never shadows the standard library's ``csv`` module. Unlike the HTML
and Markdown renderers, CSV keeps the raw stored numbers at full precision and in their stored
units (scores, drops and ratios as fractions, latencies in ms, throughput in seq/s) so that
nothing is lost to rounding; booleans are ``true``/``false`` and a missing value is empty.
The views get long-format files (one line per scheme × engine, per point, per quantizer, ...),
which is what a script or a pivot table wants.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return: an error message, a step name, any free text from a run) get a leading
single quote, as OWASP advises against CSV injection. Numbers are never quoted: -0.5 stays -0.5.
"""

from __future__ import annotations

import csv
import io
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from qdqbench.report.rows import Report

ACCURACY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "peer", "backend", "precision", "metric",
    "fp32_value", "value", "value_ci_low", "value_ci_high", "drop", "relative_drop",
    "drop_ci_low", "drop_ci_high", "within_noise", "changed", "examples", "bound", "bound_mode",
    "threshold", "passed",
)  # fmt: skip

LATENCY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "peer", "backend", "precision", "batch", "seq",
    "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "cov",
    "throughput", "baseline_scheme", "baseline_mean_ms", "baseline_throughput", "speedup_latency",
    "speedup_throughput", "iterations", "warmup_iters", "threads", "method", "fp32_config",
    "peak_rss_mb", "model_rss_mb", "load_s", "peak_gpu_mem_mb",
)  # fmt: skip

FIDELITY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "backend", "precision", "cosine_mean",
    "cosine_min", "sqnr_db", "nn_agreement", "examples", "reference", "passed",
)  # fmt: skip


ENGINE_COLUMNS = (
    "model", "task", "scheme", "scheme_kind", "peer", "metric", "fp32_value", "fakequant_value",
    "backend", "precision", "value", "gap_vs_fakequant", "drop_ci_low", "drop_ci_high",
    "ci_half_width", "flagged", "changed_vs_torch", "max_abs_diff_vs_torch", "passed",
)  # fmt: skip

PEER_COLUMNS = (
    "model", "task", "backend", "metric", "qdq_scheme", "peer_scheme", "peer_kind", "qdq_value",
    "peer_value", "qdq_passed", "peer_passed", "accuracy_gap", "accuracy_outcome", "speed_outcome",
    "beats", "batch", "seq", "qdq_mean_ms", "peer_mean_ms", "shape_outcome", "statement",
)  # fmt: skip

CALIBRATOR_COLUMNS = (
    "model", "task", "metric", "method", "calibrator", "scheme", "scheme_kind", "samples",
    "seconds", "torch_value", "torch_passed", "engine", "engine_value", "engine_passed",
    "fp32_value", "threshold",
)  # fmt: skip

PARETO_COLUMNS = (
    "model", "task", "metric", "scheme", "scheme_kind", "peer", "backend", "precision", "batch",
    "seq", "value", "mean_ms", "passed", "optimal",
)  # fmt: skip

AMAX_COLUMNS = (
    "model", "task", "scheme", "quantizer", "layer", "column", "weight", "amax", "median",
    "ratio", "outlier",
)  # fmt: skip

SENSITIVITY_COLUMNS = (
    "model", "task", "scheme", "proxy", "unit", "rank", "part", "kind", "group", "layer",
    "quantizers", "only_quantized", "only_float", "quantized_only_loss", "float_only_gain",
)  # fmt: skip

TRACE_COLUMNS = (
    "model", "task", "scheme", "step", "name", "stage", "value", "passed", "latency_ms",
    "evaluations", "seconds", "chosen", "error",
)  # fmt: skip

PART_COST_COLUMNS = (
    "model", "task", "scheme", "part", "quantizers", "latency_ms", "delta_ms", "full_int8_ms",
    "chosen_ms",
)  # fmt: skip


# Columns whose row attribute has another name.
_ATTR = {"peer": "is_peer"}


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A text that is only a number ("-0.5", "+3e-2") evaluates to itself, never to a formula.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _cell(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, numbers.Number):  # also numpy scalars
        return str(x)  # str(float) is repr: shortest round-tripping form
    return _text(str(x))


def _text(s: str) -> str:
    """``s`` made inert for spreadsheets: a leading quote on anything that would start a formula."""
    if s.startswith(_FORMULA_START) and not _NUMBER.fullmatch(s):
        s = "'" + s
    # csv.writer quotes a field only for the characters of its "\n" line terminator, so a bare
    # CR would be written unquoted and end the row early in a spreadsheet: write it as "\n".
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _csv(columns: Sequence[str], rows: Sequence[Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        get = row.get if isinstance(row, Mapping) else lambda c, r=row: getattr(r, _ATTR.get(c, c))
        writer.writerow([_cell(get(c)) for c in columns])
    return buf.getvalue()


def _engines(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": r.model, "task": r.task, "scheme": r.scheme, "scheme_kind": r.scheme_kind,
            "peer": r.is_peer, "metric": r.metric, "fp32_value": r.fp32_value,
            "fakequant_value": r.fakequant_value, "backend": e.backend, "precision": e.precision,
            "value": e.value, "gap_vs_fakequant": e.gap, "drop_ci_low": e.drop_ci_low,
            "drop_ci_high": e.drop_ci_high, "ci_half_width": e.ci_half_width,
            "flagged": e.flagged, "changed_vs_torch": e.changed_vs_torch,
            "max_abs_diff_vs_torch": e.max_abs_diff_vs_torch, "passed": e.passed,
        }
        for r in report.side_by_side
        for e in r.engines
    ]  # fmt: skip


def _peers(report: Report) -> list[dict[str, Any]]:
    out = []
    for p in report.peers:
        for c in p.engines:
            base = {
                "model": p.model, "task": p.task, "backend": c.backend, "metric": c.metric,
                "qdq_scheme": c.qdq.scheme, "peer_scheme": c.peer.scheme,
                "peer_kind": c.peer.scheme_kind, "qdq_value": c.qdq.value,
                "peer_value": c.peer.value, "qdq_passed": c.qdq.passed,
                "peer_passed": c.peer.passed, "accuracy_gap": c.accuracy_gap,
                "accuracy_outcome": c.accuracy_outcome, "speed_outcome": c.speed_outcome,
                "beats": c.beats, "statement": c.statement,
            }  # fmt: skip
            shapes = c.shapes or (None,)
            for s in shapes:
                out.append(
                    base
                    | (
                        {"batch": s.batch, "seq": s.seq, "qdq_mean_ms": s.qdq_ms,
                         "peer_mean_ms": s.peer_ms, "shape_outcome": s.outcome}
                        if s is not None
                        else {}
                    )
                )  # fmt: skip
    return out


def _calibrators(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": c.model, "task": c.task, "metric": c.metric, "method": r.method,
            "calibrator": r.calibrator, "scheme": r.scheme, "scheme_kind": r.scheme_kind,
            "samples": r.samples, "seconds": r.seconds, "torch_value": r.torch_value,
            "torch_passed": r.torch_passed, "engine": r.engine, "engine_value": r.engine_value,
            "engine_passed": r.engine_passed, "fp32_value": c.fp32_value,
            "threshold": c.threshold,
        }
        for c in report.calibrators
        for r in c.rows
    ]  # fmt: skip


def _pareto(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": c.model, "task": c.task, "metric": c.metric, "scheme": p.scheme,
            "scheme_kind": p.scheme_kind, "peer": p.is_peer, "backend": p.backend,
            "precision": p.precision, "batch": p.batch, "seq": p.seq, "value": p.value,
            "mean_ms": p.mean_ms, "passed": p.passed, "optimal": p.optimal,
        }
        for c in report.pareto
        for p in c.points
    ]  # fmt: skip


def _amax(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": t.model, "task": t.task, "scheme": t.scheme, "quantizer": c.name,
            "layer": c.layer, "column": c.column, "weight": c.is_weight, "amax": c.amax,
            "median": c.reference, "ratio": c.ratio, "outlier": c.outlier,
        }
        for t in report.amax
        for c in t.cells
    ]  # fmt: skip


def _sensitivity(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": v.model, "task": v.task, "scheme": v.scheme, "proxy": v.proxy,
            "unit": v.unit, "rank": p.rank, "part": p.part, "kind": p.kind, "group": p.group,
            "layer": p.layer, "quantizers": p.quantizers, "only_quantized": p.only_quantized,
            "only_float": p.only_float, "quantized_only_loss": p.quantized_only_loss,
            "float_only_gain": p.float_only_gain,
        }
        for v in report.sensitivity
        for p in v.parts
    ]  # fmt: skip


def _traces(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": t.model, "task": t.task, "scheme": t.scheme, "step": i + 1, "name": s.name,
            "stage": s.stage, "value": s.value, "passed": s.passed, "latency_ms": s.latency_ms,
            "evaluations": s.evaluations, "seconds": s.seconds, "chosen": s.chosen,
            "error": s.error,
        }
        for t in report.traces
        for i, s in enumerate(t.steps)
    ]  # fmt: skip


def _part_costs(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "model": t.model, "task": t.task, "scheme": t.scheme, "part": c.part,
            "quantizers": c.quantizers, "latency_ms": c.latency_ms, "delta_ms": c.delta_ms,
            "full_int8_ms": t.full_int8_ms, "chosen_ms": t.chosen_ms,
        }
        for t in report.traces
        for c in t.part_costs
    ]  # fmt: skip


def render_csv(report: Report) -> dict[str, str]:
    """CSV text per file name (each header-only when the run has no such rows): accuracy,
    latency, fidelity, engines, peers, calibrators, pareto, amax, sensitivity, recipe_trace,
    float_part_costs."""
    return {
        "accuracy.csv": _csv(ACCURACY_COLUMNS, report.accuracy),
        "latency.csv": _csv(LATENCY_COLUMNS, report.latency),
        "fidelity.csv": _csv(FIDELITY_COLUMNS, report.fidelity),
        "engines.csv": _csv(ENGINE_COLUMNS, _engines(report)),
        "peers.csv": _csv(PEER_COLUMNS, _peers(report)),
        "calibrators.csv": _csv(CALIBRATOR_COLUMNS, _calibrators(report)),
        "pareto.csv": _csv(PARETO_COLUMNS, _pareto(report)),
        "amax.csv": _csv(AMAX_COLUMNS, _amax(report)),
        "sensitivity.csv": _csv(SENSITIVITY_COLUMNS, _sensitivity(report)),
        "recipe_trace.csv": _csv(TRACE_COLUMNS, _traces(report)),
        "float_part_costs.csv": _csv(PART_COST_COLUMNS, _part_costs(report)),
    }
