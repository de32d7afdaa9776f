"""How the compare view shows a metric and its change, the same way in HTML and Markdown.

Values follow the main report's helpers (``report.fmt``): scores as percent points, latencies in
ms, throughput in sequences per second. A change is shown in the metric's own unit, signed
(``+0.45 pts``, ``-0.120 ms``), and relative to BASE (``-3.10%``); whether it is better or worse
comes from the metric's ``higher_is_better``, never from the sign alone.
"""

from __future__ import annotations

import math

from qdqbench.report.fmt import (
    DASH,
    fmt_db,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    fmt_score,
    fmt_sig,
    fmt_throughput,
)
from qdqbench.review.comparison import Comparison, MetricDelta

# Ratio metrics that read as plain ratios, not as percent scores.
PLAIN_RATIOS = ("cosine_mean", "cosine_min", "cov")

METRIC_LABELS = {
    "latency_mean_ms": "mean",
    "latency_median_ms": "p50",
    "latency_p90_ms": "p90",
    "latency_p95_ms": "p95",
    "latency_p99_ms": "p99",
    "latency_min_ms": "min",
    "latency_max_ms": "max",
    "throughput": "throughput",
    "verdict_drop": "drop vs fp32",
}


def metric_label(name: str) -> str:
    """A short label for a metric name."""
    return METRIC_LABELS.get(name, name)


def _ok(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def fmt_value(name: str, unit: str, x: float | None) -> str:
    """A metric value in its usual form (scores in points, ms, seq/s, dB)."""
    if unit == "ratio":
        if name == "cov":
            return fmt_pct(x, 1)
        return fmt_ratio(x) if name in PLAIN_RATIOS else fmt_score(x)
    if unit == "ms":
        return fmt_ms(x)
    if unit == "seq/s":
        return fmt_throughput(x)
    if unit == "dB":
        return fmt_db(x)
    return fmt_sig(x)


def fmt_delta(name: str, unit: str, d: float | None) -> str:
    """A signed change in the metric's unit: '+0.45 pts', '-0.120 ms'."""
    if not _ok(d):
        return DASH if d is None else str(d)
    sign = "+" if d > 0 else "-" if d < 0 else "±"
    if unit == "ratio" and name not in PLAIN_RATIOS:
        return f"{sign}{abs(d) * 100:.2f} pts"
    suffix = {"ms": " ms", "seq/s": " seq/s", "dB": " dB"}.get(unit, "")
    return f"{sign}{fmt_value(name, unit, abs(d))}{suffix}"


def fmt_relative(r: float | None) -> str:
    """A signed relative change: '+3.21%'."""
    if not _ok(r):
        return DASH
    return ("+" if r > 0 else "" if r < 0 else "±") + fmt_pct(r)


def fmt_ci(name: str, unit: str, ci: tuple[float, float] | None) -> str:
    """'[88.10, 90.20]' in the metric's display unit; empty when unknown."""
    if ci is None:
        return ""
    return f"[{fmt_value(name, unit, ci[0])}, {fmt_value(name, unit, ci[1])}]"


def fmt_significant(m: MetricDelta) -> str:
    """'yes', 'no' (within noise) or a dash (unknown)."""
    return {True: "yes", False: "no", None: DASH}[m.significant]


def fmt_direction(m: MetricDelta) -> str:
    """'better', 'worse', 'same' or a dash."""
    return m.direction or DASH


def delta_class(m: MetricDelta | None) -> str:
    """CSS class of a change: better/worse, plus 'noise' when not significant."""
    if m is None or m.direction not in ("better", "worse"):
        return ""
    return m.direction + (" noise" if m.significant is False else "")


def fmt_side(comparison: Comparison, side: str) -> str:
    """'run-id (commit abc123def456, dirty)' for BASE or CAND."""
    info = comparison.base_info if side == "base" else comparison.cand_info
    name = comparison.base_name if side == "base" else comparison.cand_name
    git = info.get("git") if isinstance(info.get("git"), dict) else {}
    bits = []
    if git.get("commit"):
        bits.append(f"commit {str(git['commit'])[:12]}" + (", dirty" if git.get("dirty") else ""))
    if info.get("started_at"):
        bits.append(f"started {info['started_at']}")
    return name + (f" ({'; '.join(bits)})" if bits else "")
