"""Claims with their uncertainty: when the report may say "beats", "faster", "best", "dominated".

One rule per axis, used by every claim of the report (the peer statement, the best scheme of a
pair, the Pareto chart's dominated marks), so HTML, Markdown and CSV say the same thing:

* **accuracy** — A beats B only when their intervals do not overlap. The records keep no
  per-example predictions, so a paired bootstrap of A − B cannot be computed from them; what they
  keep is each quantized cell's *paired* interval of its drop against fp32. When A and B were
  judged against the same fp32 baseline, both drops are paired against the same fp32 predictions
  on the same examples, and A − B = drop_B − drop_A: A beats B when A's drop interval lies wholly
  below B's. Disjoint 95% intervals are a stricter test than a 95% interval of the difference
  excluding zero, so the rule never claims more than the paired interval of the difference
  would. The fp32 row itself has the degenerate drop interval [0, 0]. Without drop intervals
  against one baseline, the score intervals (``value_ci_low/high``) are compared the same way;
  without intervals, no claim: a tie.
* **speed** — A is faster than B only when the mean latencies differ by more than
  ``LATENCY_Z`` standard errors of the difference (the stored ``latency_std_ms`` and timed
  iterations; the rule ``review`` uses to call a latency change significant, ``core.stats``).
  Without the spread or the count: a tie.

Otherwise the claim is a tie, worded ``TIE`` so a reader sees why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qdqbench.core.stats import intervals_disjoint, latency_differs
from qdqbench.report.model import AccuracyRow, LatencyRow

TIE = "ties (within the intervals)"


def _finite(x: float | None) -> bool:
    return x is not None and not isinstance(x, bool) and math.isfinite(x)


def _pair(low: float | None, high: float | None) -> tuple[float, float] | None:
    return (low, high) if _finite(low) and _finite(high) else None


def _drop_interval(r: AccuracyRow) -> tuple[float, float] | None:
    found = _pair(r.drop_ci_low, r.drop_ci_high)
    if found is None and r.scheme_kind == "fp32" and r.value == r.fp32_value:
        return (0.0, 0.0)  # the baseline against itself
    return found


def accuracy_outcome(a: AccuracyRow, b: AccuracyRow) -> str:
    """A against B on the primary metric: 'wins', 'loses', 'ties' or 'unknown' (no score)."""
    if not (_finite(a.value) and _finite(b.value)):
        return "unknown"
    da, db = _drop_interval(a), _drop_interval(b)
    if da is not None and db is not None and _finite(a.fp32_value) and a.fp32_value == b.fp32_value:
        apart = intervals_disjoint(da, db)
        higher = da[1] < db[0]  # a smaller drop = a higher score
    else:
        va, vb = _pair(a.value_ci_low, a.value_ci_high), _pair(b.value_ci_low, b.value_ci_high)
        apart = intervals_disjoint(va, vb)
        higher = va is not None and vb is not None and va[0] > vb[1]
    if not apart:
        return "ties"
    return "wins" if higher else "loses"


def latency_outcome(
    a: tuple[float | None, float | None, int | None], b: tuple[float | None, float | None, int | None]
) -> str:
    """A against B from ``(mean_ms, std_ms, iterations)``: 'faster', 'slower', 'tie' or
    'unknown' (a mean missing)."""
    if not (_finite(a[0]) and _finite(b[0])):
        return "unknown"

    def stats(x: tuple[float | None, float | None, int | None]) -> tuple[float, float, int] | None:
        mean, std, n = x
        ok = _finite(std) and isinstance(n, int) and not isinstance(n, bool) and n >= 1
        return (mean, std, n) if ok else None

    if not latency_differs(stats(a), stats(b)):
        return "tie"
    return "faster" if a[0] < b[0] else "slower"


def row_latency(lat: LatencyRow) -> tuple[float | None, float | None, int | None]:
    """A latency row's ``(mean_ms, std_ms, iterations)``, as ``latency_outcome`` takes them."""
    return (lat.mean_ms, lat.std_ms, lat.iterations)


def dominates(a: tuple[AccuracyRow, LatencyRow], b: tuple[AccuracyRow, LatencyRow]) -> bool:
    """Whether point A is better than point B on both axes by the rule (beats and faster)."""
    return (
        accuracy_outcome(a[0], b[0]) == "wins"
        and latency_outcome(row_latency(a[1]), row_latency(b[1])) == "faster"
    )


def tied_best(best: AccuracyRow, pool: Sequence[AccuracyRow]) -> tuple[AccuracyRow, ...]:
    """The rows of ``pool`` (``best`` aside) that ``best`` does not beat by the rule."""
    return tuple(a for a in pool if a is not best and accuracy_outcome(best, a) != "wins")


__all__ = [
    "TIE",
    "accuracy_outcome",
    "dominates",
    "latency_outcome",
    "row_latency",
    "tied_best",
]
