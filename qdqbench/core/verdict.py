"""The accuracy verdict: is a quantized score within the suite's bound of the fp32 baseline?

Relative mode (the default, as in Wu et al. 2020 and MLPerf's "99% of fp32"): pass when
``value ≥ (1 − bound) · baseline``. Absolute mode: pass when ``value ≥ baseline − bound``, with
the bound in the metric's own unit (fractions for scores in [0, 1]: 0.01 is one point). The
verdict is computed once, from the numbers it stores, and never recomputed by a report.
"""

from __future__ import annotations

from qdqbench.core.results import Verdict


def threshold(baseline: float, bound: float, mode: str) -> float:
    """The lowest passing value for a baseline under a bound."""
    if mode == "relative":
        # A negative baseline (possible for MCC/correlations) scales the wrong way; the bound is
        # then taken on its magnitude so that "within 1%" still means "at most 1% worse".
        return baseline - bound * abs(baseline)
    if mode == "absolute":
        return baseline - bound
    raise ValueError(f"unknown bound mode '{mode}' (relative or absolute)")


def make_verdict(metric: str, baseline: float, value: float, bound: float, mode: str,
                 drop_ci: tuple[float, float] | None = None) -> Verdict:
    """A stored verdict for ``value`` against ``baseline``; ``drop_ci`` is the paired CI of baseline − value."""
    thr = threshold(baseline, bound, mode)
    drop = baseline - value
    # Compare with a tolerance of a few ulps: a score exactly on the bound passes, however the
    # threshold's arithmetic rounded (0.99 * 0.9 is 0.8909999999999999 in binary floating point).
    passed = value >= thr - 1e-12 * max(1.0, abs(thr))
    low, high = drop_ci if drop_ci is not None else (None, None)
    return Verdict(
        metric=metric, bound=bound, mode=mode, baseline=baseline, value=value, drop=drop,
        relative_drop=drop / abs(baseline) if baseline else 0.0, threshold=thr, passed=passed,
        drop_ci_low=low, drop_ci_high=high,
        within_noise=None if drop_ci is None else bool(low <= 0.0 <= high),
    )
