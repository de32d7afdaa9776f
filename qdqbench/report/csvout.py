"""Render a ``Report`` as CSV files for spreadsheets and scripts: one file per table.

Named ``csvout`` so that it never shadows the standard library's ``csv`` module. Unlike the HTML
and Markdown renderers, CSV keeps the raw stored numbers at full precision and in their stored
units (scores, drops and ratios as fractions, latencies in ms, throughput in seq/s) so that
nothing is lost to rounding; booleans are ``true``/``false`` and a missing value is empty.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from qdqbench.report.rows import Report

ACCURACY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "backend", "precision", "metric",
    "fp32_value", "value", "value_ci_low", "value_ci_high", "drop", "relative_drop",
    "drop_ci_low", "drop_ci_high", "within_noise", "changed", "examples", "bound", "bound_mode",
    "threshold", "passed",
)  # fmt: skip

LATENCY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "backend", "precision", "batch", "seq",
    "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "cov",
    "throughput", "baseline_scheme", "baseline_mean_ms", "baseline_throughput", "speedup_latency",
    "speedup_throughput", "iterations", "warmup_iters", "threads", "method",
)  # fmt: skip

FIDELITY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "backend", "precision", "cosine_mean",
    "cosine_min", "sqnr_db", "nn_agreement", "examples", "reference", "passed",
)  # fmt: skip


def _cell(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x)  # str(float) is repr: shortest round-tripping form


def _csv(columns: Sequence[str], rows: Sequence[Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(getattr(row, c)) for c in columns])
    return buf.getvalue()


def render_csv(report: Report) -> dict[str, str]:
    """CSV text per file name: accuracy.csv, latency.csv and fidelity.csv (header-only if empty)."""
    return {
        "accuracy.csv": _csv(ACCURACY_COLUMNS, report.accuracy),
        "latency.csv": _csv(LATENCY_COLUMNS, report.latency),
        "fidelity.csv": _csv(FIDELITY_COLUMNS, report.fidelity),
    }
