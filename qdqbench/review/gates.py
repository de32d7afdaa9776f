"""Pass/fail gates for CI: ``--fail-on`` expressions, parsed by one regex and checked against results.

A gate is one of two shapes, and the metric's name decides which (a registry, ``GATES``):

* a **threshold** on one run, ``NAME>VALUE``: ``accuracy-drop>1%`` (a quantized accuracy cell's
  stored verdict drop against fp32 is more than 1% relative), ``accuracy-drop>0.5pt`` (more than
  0.5 percentage points), ``failed-cells>0``. With ``qdqbench run`` it checks the run; with
  ``qdqbench compare`` it checks CAND.
* a **change** against a baseline run, ``NAME+X`` or ``NAME-X`` with the sign pointing the way
  that is worse: ``latency-p99+5%`` (p99 more than 5% higher than in BASE), ``latency-mean+0.5ms``,
  ``throughput-5%`` (more than 5% lower), ``accuracy-1%`` / ``accuracy-0.5pt`` (the primary
  accuracy metric lower than in BASE). Only ``qdqbench compare`` checks these, on cells matched
  by their stable id.

Every comparison is strict: exactly 5% is not more than 5% (with a tolerance of a few ulps, so
that 10 ms → 10.5 ms, which is 5.000000000000071% in binary floating point, does not fail
``+5%``). Improvements never fail a gate. A latency or throughput change fails only when it is
also beyond the runs' spread (``comparison.latency_significant``); an accuracy change fails on its
size alone, because both runs score the same fixed examples, so a changed score is changed
predictions, not sampling noise (the report still shows whether the confidence intervals
overlap). Expressions are never evaluated as code; a bad one is a one-line error with a
did-you-mean.

A gate checked on no cell at all is **not a pass**: every ``GateOutcome`` is ``passed`` (checked
on at least one cell, nothing over the limit), ``failed`` or ``not-checked`` (checked on 0 cells:
nothing in the run(s) it applies to, or every such cell skipped). ``qdqbench run`` counts a
not-checked gate as a failed one (``check_gates`` records the failure "checked on 0 cells", so
the run exits 1); ``qdqbench compare`` keeps it apart and exits 2, "nothing comparable for gate
X". ``format_outcomes`` gives the lines both commands print, each saying how many cells the gate
was checked on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from qdqbench.core.errors import QdqbenchError, did_you_mean
from qdqbench.core.results import Record
from qdqbench.review.comparison import CellDelta, Comparison

EXAMPLES = "accuracy-drop>1%, accuracy-drop>0.5pt, latency-p99+5%, throughput-5%, failed-cells>0"


class GateError(QdqbenchError):
    """A ``--fail-on`` expression that cannot be parsed, or is used where it cannot be checked."""


@dataclass(frozen=True)
class GateSpec:
    """What a gate name means: its shape, the metric it reads and the units it accepts."""

    name: str
    shape: Literal["threshold", "change"]
    units: tuple[str, ...]  # "%", "pt", "ms", or "" (a count)
    description: str
    metric: str | None = None  # the record metric a change gate reads (None: the primary metric)
    record_kind: str | None = None  # the kind of cell a change gate applies to
    higher_is_better: bool | None = None  # change gates: which direction is a regression

    @property
    def worse_sign(self) -> str:
        """'+' when an increase is a regression, '-' when a decrease is."""
        return "-" if self.higher_is_better else "+"

    def example(self) -> str:
        """A valid expression for this gate, for error messages."""
        unit = self.units[0]
        if self.shape == "threshold":
            return f"{self.name}>{'0' if unit == '' else '1' + unit}"
        return f"{self.name}{self.worse_sign}5{unit}"


def _latency(name: str, metric: str, what: str) -> GateSpec:
    return GateSpec(name, "change", ("%", "ms"), f"{what} latency is higher than in BASE",
                    metric=metric, record_kind="latency", higher_is_better=False)


GATES: dict[str, GateSpec] = {
    g.name: g
    for g in (
        GateSpec("accuracy-drop", "threshold", ("%", "pt"),
                 "a quantized accuracy cell's stored drop against fp32 (relative % or points)"),
        GateSpec("failed-cells", "threshold", ("",), "the number of failed cells"),
        GateSpec("accuracy", "change", ("%", "pt"), "the primary accuracy metric is lower than in BASE",
                 metric=None, record_kind="accuracy", higher_is_better=True),
        _latency("latency-mean", "latency_mean_ms", "mean"),
        _latency("latency-median", "latency_median_ms", "median"),
        _latency("latency-p50", "latency_median_ms", "median (p50)"),
        _latency("latency-p90", "latency_p90_ms", "p90"),
        _latency("latency-p95", "latency_p95_ms", "p95"),
        _latency("latency-p99", "latency_p99_ms", "p99"),
        _latency("latency-min", "latency_min_ms", "minimum"),
        _latency("latency-max", "latency_max_ms", "maximum"),
        GateSpec("throughput", "change", ("%",), "throughput is lower than in BASE",
                 metric="throughput", record_kind="latency", higher_is_better=True),
    )
}

# NAME, then '>' (threshold) or a sign (change), then a non-negative number and a unit. A name
# part after a hyphen starts with a letter, so 'throughput-5%' splits into 'throughput', '-', '5%'.
_GATE_RE = re.compile(
    r"^(?P<name>[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*)\s*(?P<op>>|\+|-)\s*"
    r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|pts?|ms)?$"
)
# Enough to find the name of a malformed expression, for did-you-mean.
_NAME_RE = re.compile(r"^(?P<name>.*?)\s*(?:>=?|<=?|==?|!=|\+|-(?=\s*[\d.])|$)")


@dataclass(frozen=True)
class Gate:
    """A parsed ``--fail-on`` expression."""

    text: str  # as written (stripped)
    spec: GateSpec
    limit: float
    unit: str  # "%", "pt", "ms" or ""

    @property
    def name(self) -> str:
        """The gate's metric name, e.g. 'latency-p99'."""
        return self.spec.name

    def describe(self) -> str:
        """The gate in words, e.g. 'p99 latency higher than in BASE by more than 5%'."""
        amount = {"%": f"{_num(self.limit)}%", "pt": f"{_num(self.limit)} pts",
                  "ms": f"{_num(self.limit)} ms", "": _num(self.limit)}[self.unit]
        if self.spec.name == "accuracy-drop":
            how = "relative" if self.unit == "%" else "percentage points"
            return f"a quantized accuracy cell's drop against fp32 is more than {amount} ({how})"
        if self.spec.name == "failed-cells":
            return f"more than {amount} failed cells"
        return f"{self.spec.description} by more than {amount}"


@dataclass(frozen=True)
class GateFailure:
    """One cell (or the run, when ``cell`` is None) that fails one gate."""

    gate: str  # the expression as written
    cell: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.cell}: " if self.cell else ""
        return f"{self.gate}: {where}{self.message}"


GateStatus = Literal["passed", "failed", "not-checked"]


@dataclass
class GateOutcome:
    """A gate and what checking it found: failures, cells it could not check, noise.

    ``status`` is ``failed`` when a cell (or the run) is over the limit, ``not-checked`` when the
    gate was checked on 0 cells (``unchecked_reason`` says why), else ``passed``. Only ``passed``
    is a pass.
    """

    gate: Gate
    checked: int = 0  # cells the gate was checked on
    failures: list[GateFailure] = field(default_factory=list)
    skipped: list[GateFailure] = field(default_factory=list)  # could not be checked, and why
    within_noise: list[GateFailure] = field(default_factory=list)  # past the limit, not significant
    unchecked_reason: str | None = None  # why nothing could be checked (set when checked == 0)

    @property
    def status(self) -> GateStatus:
        """'failed' (any failure), 'not-checked' (checked on 0 cells) or 'passed'."""
        if self.failures:
            return "failed"
        if self.checked == 0:
            return "not-checked"
        return "passed"

    @property
    def passed(self) -> bool:
        """Checked on at least one cell and nothing failed (skipped cells are reported, not failed)."""
        return self.status == "passed"

    @property
    def not_checked(self) -> bool:
        """Checked on 0 cells: the gate says nothing about these runs."""
        return self.status == "not-checked"

    def why_not_checked(self) -> str:
        """Why the gate was checked on 0 cells, in words."""
        if self.unchecked_reason:
            return self.unchecked_reason
        if self.skipped:
            first = self.skipped[0]
            return (f"{_count(len(self.skipped))} it applies to could not be checked "
                    f"(first: {first.cell or 'run'}: {first.message})")
        return "no cell it applies to"


def _count(n: int, what: str = "cell") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _extras(o: GateOutcome) -> str:
    parts = []
    if o.skipped:
        first = o.skipped[0]
        parts.append(f"{_count(len(o.skipped))} not checked, first: {first.cell or 'run'}: {first.message}")
    if o.within_noise:
        parts.append(f"{_count(len(o.within_noise))} past the limit but within the runs' spread")
    return "".join(f"; {p}" for p in parts)


def format_outcomes(outcomes: Sequence[GateOutcome]) -> list[str]:
    """The lines to print for gate outcomes: "gate passed: ", "gate failed: " or "gate not checked: ".

    Every line says how many cells the gate was checked on::

        gate passed: accuracy-drop>1%: checked on 12 cells
        gate failed: latency-p99+5%: CELL: latency_p99_ms 10 ms → 10.6 ms (+6.00% > 5%) (checked on 12 cells)
        gate not checked: latency-p99+5%: checked on 0 cells (no latency cell is in both runs)

    A failed gate gives one line per failing cell; a gate that ``qdqbench run`` failed for
    having been checked on 0 cells reads ``gate failed: X: checked on 0 cells (why)``.
    """
    lines: list[str] = []
    for o in outcomes:
        checked = f"checked on {_count(o.checked)}"
        status = o.status
        if status == "passed":
            lines.append(f"gate passed: {o.gate.text}: {checked}{_extras(o)}")
        elif status == "not-checked":
            lines.append(f"gate not checked: {o.gate.text}: {checked} ({o.why_not_checked()})")
        else:
            for i, f in enumerate(o.failures):
                if o.checked == 0 and f.message.startswith("checked on 0 cells"):
                    lines.append(f"gate failed: {f}")  # the message already says it
                else:
                    lines.append(f"gate failed: {f} ({checked}{_extras(o) if i == 0 else ''})")
    return lines


# ----------------------------------------------------------------------------------------------
# parsing


def _num(x: float) -> str:
    return f"{x:g}"


def parse_gate(text: str, context: Literal["run", "compare"] | None = None) -> Gate:
    """Parse one expression; ``context`` 'run' rejects change gates (they need two runs)."""
    raw = " ".join(str(text).split())
    where = f"--fail-on '{raw}'"
    s = raw.lower()
    if not s:
        raise GateError(f"--fail-on: empty expression; e.g. {EXAMPLES}")
    m = _GATE_RE.match(s)
    name = m.group("name") if m else (_NAME_RE.match(s).group("name") or s)  # type: ignore[union-attr]
    spec = GATES.get(name)
    if spec is None:
        raise GateError(f"{where}: unknown metric '{name}'{did_you_mean(name, GATES)}; "
                        f"known: {', '.join(GATES)}")
    if m is None:
        raise GateError(f"{where}: expected NAME>VALUE or NAME+CHANGE / NAME-CHANGE with a "
                        f"non-negative number and a unit, e.g. {spec.example()}")
    op, unit = m.group("op"), m.group("unit") or ""
    unit = "pt" if unit in ("pt", "pts") else unit
    limit = float(m.group("number"))
    if spec.shape == "threshold" and op != ">":
        raise GateError(f"{where}: {name} is a threshold on one run: write {spec.example()}")
    if spec.shape == "change":
        if op == ">":
            raise GateError(f"{where}: {name} is gated on its change against BASE: write "
                            f"{spec.example()}")
        if op != spec.worse_sign:
            better = "higher" if spec.higher_is_better else "lower"
            worse = "a decrease" if spec.higher_is_better else "an increase"
            raise GateError(f"{where}: {better} {name} is better, so a regression is "
                            f"{worse}: write {name}{spec.worse_sign}{m.group('number')}{unit}")
    if unit not in spec.units:
        if spec.units == ("",):
            raise GateError(f"{where}: {name} takes a plain count, e.g. {spec.example()}")
        allowed = " or ".join(_UNIT_WORDS[u] for u in spec.units)
        if not unit:
            raise GateError(f"{where}: give a unit: {allowed}, e.g. {spec.example()}")
        raise GateError(f"{where}: {name} takes {allowed}, not '{m.group('unit')}'")
    if context == "run" and spec.shape == "change":
        raise GateError(f"{where}: a change against a baseline run; check it with "
                        f"qdqbench compare BASE CAND --fail-on '{raw}'")
    return Gate(raw, spec, limit, unit)


_UNIT_WORDS = {"%": "% (relative)", "pt": "pt (percentage points)", "ms": "ms (milliseconds)"}


def parse_gates(texts: Iterable[str], context: Literal["run", "compare"] | None = None) -> list[Gate]:
    """Parse every expression (the first bad one raises GateError)."""
    return [parse_gate(t, context) for t in texts]


# ----------------------------------------------------------------------------------------------
# checking


def _exceeds(value: float, limit: float) -> bool:
    """Strictly greater than the limit, with a tolerance of a few ulps (5.000000000000071 ≯ 5)."""
    return value > limit + 1e-9 * max(1.0, abs(limit))


def _check_accuracy_drop(gate: Gate, records: Sequence[Record], outcome: GateOutcome) -> None:
    for r in records:
        if r.status != "ok" or r.kind != "accuracy" or r.verdict is None or r.scheme_kind == "fp32":
            continue
        v = r.verdict
        outcome.checked += 1
        value = 100 * v.relative_drop if gate.unit == "%" else 100 * v.drop
        if _exceeds(value, gate.limit):
            shown = f"{value:.2f}%" if gate.unit == "%" else f"{value:.2f} pts"
            outcome.failures.append(GateFailure(
                gate.text, r.cell,
                f"{v.metric} {100 * v.value:.2f} vs fp32 {100 * v.baseline:.2f}: drop {shown} "
                f"> {gate.limit:g}{'%' if gate.unit == '%' else ' pts'}"))
    if outcome.checked == 0:
        outcome.unchecked_reason = (f"no finished quantized accuracy cell with a stored verdict "
                                    f"among {_count(len(records))}")


def _check_failed_cells(gate: Gate, records: Sequence[Record], outcome: GateOutcome) -> None:
    failed = [r.cell for r in records if r.status == "failed"]
    outcome.checked += len(records)  # every cell is checked for having failed
    if not records:
        outcome.unchecked_reason = "no cells"
        return
    if _exceeds(len(failed), gate.limit):
        shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        outcome.failures.append(GateFailure(gate.text, None, f"{len(failed)} failed cells: {shown}"))


RunCheck = Callable[[Gate, Sequence[Record], GateOutcome], None]
RUN_CHECKS: dict[str, RunCheck] = {
    "accuracy-drop": _check_accuracy_drop,
    "failed-cells": _check_failed_cells,
}


def check_gates(records: Iterable[Record], gates: Sequence[Gate], *,
                unchecked_fails: bool = True) -> list[GateOutcome]:
    """Check threshold gates on one run's records; change gates raise GateError.

    A gate checked on 0 cells is not a pass. With ``unchecked_fails`` (``qdqbench run``'s rule)
    it gets the failure "checked on 0 cells (why)", so it fails like any other gate; without, it
    stays ``not-checked`` for the caller to judge (``qdqbench compare``: exit 2).
    """
    records = list(records)
    outcomes = []
    for gate in gates:
        check = RUN_CHECKS.get(gate.name)
        if check is None:
            raise GateError(f"--fail-on '{gate.text}': a change against a baseline run; check it "
                            "with qdqbench compare")
        outcome = GateOutcome(gate)
        check(gate, records, outcome)
        if unchecked_fails and outcome.not_checked:
            outcome.failures.append(GateFailure(gate.text, None,
                                                f"checked on 0 cells ({outcome.why_not_checked()})"))
        outcomes.append(outcome)
    return outcomes


def evaluate_gates(records: Iterable[Record], gates: Sequence[Gate]) -> list[GateFailure]:
    """Every failure of threshold gates on one run (empty: all gates pass; checked on 0 cells fails)."""
    return [f for o in check_gates(records, gates) for f in o.failures]


def _fmt(x: float, unit: str) -> str:
    if unit == "ms":
        return f"{x:.3g} ms" if abs(x) < 100 else f"{x:.1f} ms"
    if unit == "seq/s":
        return f"{x:.4g} seq/s"
    return f"{100 * x:.2f}"  # accuracy fractions shown in points


def _check_change(gate: Gate, comparison: Comparison, outcome: GateOutcome) -> None:
    spec = gate.spec
    _check_change_cells(gate, comparison, outcome)
    if outcome.checked:
        return
    of_kind = [cd for cd in comparison.cells if cd.kind == spec.record_kind]
    if not comparison.cells:
        outcome.unchecked_reason = "no cell is in both runs"
    elif not of_kind:
        kinds: dict[str, int] = {}
        for cd in comparison.cells:
            kinds[cd.kind] = kinds.get(cd.kind, 0) + 1
        shown = ", ".join(f"{n} {k}" for k, n in kinds.items())
        outcome.unchecked_reason = (f"no {spec.record_kind} cell is in both runs "
                                    f"({_count(len(comparison.cells), 'matched cell')}: {shown})")
    elif outcome.skipped:
        first = outcome.skipped[0]
        outcome.unchecked_reason = (f"every {spec.record_kind} cell in both runs was skipped "
                                    f"({len(of_kind)}; first: {first.cell}: {first.message})")


def _check_change_cells(gate: Gate, comparison: Comparison, outcome: GateOutcome) -> None:
    spec = gate.spec
    for cd in comparison.cells:
        if cd.kind != spec.record_kind:
            continue
        skip = _skip_reason(cd, comparison, spec)
        name = spec.metric or cd.primary
        md = cd.metric(name) if name else None
        if skip is None and (md is None or md.base is None or md.cand is None):
            skip = f"{name or 'primary metric'} not in both runs"
        elif skip is None and not (math.isfinite(md.base) and math.isfinite(md.cand)):
            skip = f"{name} is not finite"
        elif skip is None and md.base == 0 and gate.unit == "%":
            skip = f"{name} is 0 in BASE: no relative change"
        if skip is not None:
            outcome.skipped.append(GateFailure(gate.text, cd.cell, skip))
            continue
        outcome.checked += 1
        # The change in the bad direction, in the gate's unit (negative: an improvement).
        worse = (md.base - md.cand) if spec.higher_is_better else (md.cand - md.base)
        if gate.unit == "%":
            change = 100 * worse / abs(md.base)
        elif gate.unit == "pt":
            change = 100 * worse
        else:
            change = worse
        if not _exceeds(change, gate.limit):
            continue
        unit_shown = {"%": "%", "pt": " pts", "ms": " ms"}[gate.unit]
        sig = md.significant
        msg = (f"{name} {_fmt(md.base, md.unit)} → {_fmt(md.cand, md.unit)} "
               f"({'-' if spec.higher_is_better else '+'}{change:.2f}{unit_shown} > {gate.limit:g}{unit_shown})")
        if spec.record_kind == "latency" and sig is False:
            outcome.within_noise.append(GateFailure(gate.text, cd.cell, msg + ", within the runs' spread"))
            continue
        note = {True: ", significant", False: ", CIs overlap", None: ""}[sig]
        outcome.failures.append(GateFailure(gate.text, cd.cell, msg + note))


def _skip_reason(cd: CellDelta, comparison: Comparison, spec: GateSpec) -> str | None:
    if cd.base.status != "ok" or cd.cand.status != "ok":
        side = "BASE" if cd.base.status != "ok" else "CAND"
        return f"{cd.base.status if side == 'BASE' else cd.cand.status} in {side}"
    if spec.record_kind == "latency":
        reason = comparison.latency_incomparable(cd.backend)
        if reason and not comparison.force:
            return f"latency not comparable ({reason}); --force gates it anyway"
    return None


def check_compare_gates(comparison: Comparison, gates: Sequence[Gate]) -> list[GateOutcome]:
    """Check every gate on a comparison: change gates on matched cells, thresholds on CAND.

    Two runs with no cell in common are not comparable: every gate is then not checked, a
    threshold on CAND included (CAND is not what BASE was, so no verdict about it is a pass).
    """
    outcomes = []
    for gate in gates:
        if not comparison.cells:
            outcome = GateOutcome(gate, unchecked_reason="no cell is in both runs")
        elif gate.spec.shape == "threshold":
            outcome = check_gates(comparison.cand_records, [gate], unchecked_fails=False)[0]
            if outcome.unchecked_reason:
                outcome.unchecked_reason = f"CAND has {outcome.unchecked_reason}"
        else:
            outcome = GateOutcome(gate)
            _check_change(gate, comparison, outcome)
        outcomes.append(outcome)
    return outcomes


def evaluate_compare_gates(comparison: Comparison, gates: Sequence[Gate]) -> list[GateFailure]:
    """Every failure of the gates on a comparison (empty: no gate failed; see also not-checked)."""
    return [f for o in check_compare_gates(comparison, gates) for f in o.failures]
