"""How every report shows a number: the ``fmt_*`` helpers, the dash for a missing value, and slugs.

The row model (``model``, built by ``rows``), the views across cells (``views``, ``layers``) and
every renderer (HTML, Markdown, CSV, and ``review``'s compare pages) format numbers through these
helpers, so every format shows the same numbers the same way. Nothing here knows a row type.
"""

from __future__ import annotations

import math
import re
from typing import Any

DASH = "—"  # shown for a missing number


def slug(*parts: Any) -> str:
    """A lowercase [a-z0-9-] slug of the parts, for stable element ids and file names."""
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


class Anchors:
    """Hands out slugs that stay unique within one table (a clash gets -2, -3, ...)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, *parts: Any) -> str:
        base = slug(*parts)
        n = self._seen.get(base, 0) + 1
        self._seen[base] = n
        return base if n == 1 else f"{base}-{n}"


def as_int(x: Any) -> int | None:
    """A stored count as an int (a whole float too); None for anything else (bools included)."""
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and math.isfinite(x) and x.is_integer():
        return int(x)
    return None


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


def fmt_part(part: str, contains: str, examples: int | None, value: float | None, drop: float | None,
             drop_low: float | None, drop_high: float | None, passed: bool | None) -> str:
    """One part of a split evaluation set: '<part> (N examples: what it holds): score, drop [CI], verdict'."""
    label = {"test": "test part", "selection": "selection part", "full": "full set"}.get(part, part)
    return (f"{label} ({fmt_int(examples)} examples: {contains}): {fmt_score(value)}, drop "
            f"{fmt_points(drop)} {fmt_ci_points(drop_low, drop_high)} {fmt_verdict(passed)}")
