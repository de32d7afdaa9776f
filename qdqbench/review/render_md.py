"""Render a ``Comparison`` as GitHub-flavoured Markdown, sized for a pull-request comment.

Warnings first (nothing comparable, lines of ``results.jsonl`` that could not be read), then the
gates (each passed, failed or not checked, with the number of cells it was checked on), then
environment differences (and which backends' latency they make incomparable),
the accuracy and latency changes, and cells that did not finish or exist in one run only. Cell
text is escaped with the main report's ``md_escape``.
"""

from __future__ import annotations

from collections.abc import Sequence

from qdqbench.report.fmt import DASH, fmt_shape
from qdqbench.report.mdparts import md_escape, md_table
from qdqbench.review.comparison import SIGNIFICANCE_RULES, Comparison
from qdqbench.review.gates import GateOutcome
from qdqbench.review.render_fmt import (
    fmt_delta,
    fmt_relative,
    fmt_side,
    fmt_significant,
    fmt_value,
    metric_label,
)

MAX_LIST = 20  # cells listed per gate / per list before "and N more"
GATE_MARK = {"passed": "✅", "failed": "❌", "not-checked": "⚠️"}
GATE_WORD = {"passed": "passed", "failed": "FAILED", "not-checked": "NOT CHECKED"}


def gate_headline(outcomes: Sequence[GateOutcome]) -> tuple[str, str]:
    """(status, text) of the gates as a whole: 'failed', 'not-checked' or 'passed'."""
    failed = sum(o.status == "failed" for o in outcomes)
    unchecked = sum(o.status == "not-checked" for o in outcomes)
    n = len(outcomes)
    if failed:
        extra = f", {unchecked} not checked" if unchecked else ""
        return "failed", f"{failed} of {n} gates failed{extra}"
    if unchecked:
        return "not-checked", f"{unchecked} of {n} gates not checked (checked on 0 cells): not a pass"
    return "passed", f"All {n} gates passed"


def skipped_summary(skipped) -> list[str]:
    """One line per results.jsonl with skipped lines: 'PATH: 2 lines skipped: line 3: why; ...'."""
    by_path: dict[str, list] = {}
    for s in skipped:
        by_path.setdefault(str(s.path), []).append(s)
    out = []
    for path, items in by_path.items():
        shown = "; ".join(f"line {s.line}: {s.reason}" for s in items[:MAX_LIST])
        more = f"; and {len(items) - MAX_LIST} more" if len(items) > MAX_LIST else ""
        out.append(f"{path}: {len(items)} line{'' if len(items) == 1 else 's'} skipped: {shown}{more}")
    return out


def _mark(m) -> str:
    """A direction mark for a change: 🟢 better, 🔴 worse, ⚪ within noise or unknown."""
    if m is None or m.direction not in ("better", "worse") or m.significant is False:
        return ""
    return " 🟢" if m.direction == "better" else " 🔴"


def _list(items: Sequence[str]) -> list[str]:
    out = [f"- {md_escape(x)}" for x in items[:MAX_LIST]]
    if len(items) > MAX_LIST:
        out.append(f"- … and {len(items) - MAX_LIST} more")
    return out


def render_compare_markdown(c: Comparison, outcomes: Sequence[GateOutcome] = ()) -> str:
    """The comparison as Markdown."""
    out = ["# qdqbench compare", "",
           f"BASE: {md_escape(fmt_side(c, 'base'))}  ", f"CAND: {md_escape(fmt_side(c, 'cand'))}", ""]
    nothing = c.nothing_comparable()
    if nothing:
        out += [f"> ⚠️ **Nothing comparable**: {md_escape(nothing.removeprefix('nothing comparable: '))}. "
                "No gate can pass.", ""]
    for line in c.partial_runs():
        out += [f"> ⚠️ **Partial run**: {md_escape(line)}", ""]
    for line in skipped_summary(c.skipped_lines):
        out += [f"> ⚠️ **Lines not read**: {md_escape(line)}", ""]
    if outcomes:
        status, text = gate_headline(outcomes)
        out.append(f"{GATE_MARK[status]} **{md_escape(text)}**")
    else:
        out.append("No gates given (`--fail-on`).")
    out.append("")
    for o in outcomes:
        why = f" ({md_escape(o.why_not_checked())})" if o.not_checked else ""
        out.append(f"- {GATE_MARK[o.status]} **{md_escape(o.gate.text)}** {GATE_WORD[o.status]}: fails when "
                   f"{md_escape(o.gate.describe())}; checked on {o.checked} "
                   f"{'cell' if o.checked == 1 else 'cells'}{why}")
        for title, items in (("failed", o.failures), ("not checked", o.skipped),
                             ("past the limit but within the runs' spread", o.within_noise)):
            if items:
                out.append(f"  - {title}: {len(items)}")
                out.extend("    " + line for line in _list([str(f.cell or "run") + ": " + f.message for f in items]))
    out += ["", f"{len(c.cells)} matched cells, {len(c.only_base)} only in BASE, "
            f"{len(c.only_cand)} only in CAND, {len(c.cand_failed)} failed in CAND.", ""]

    out += ["## Environment", ""]
    for backend, reason in c.incomparable_backends.items():
        action = "gated anyway (--force)" if c.force else "not gated"
        out.append(f"⚠️ **{md_escape(backend)} latency is not comparable** ({md_escape(reason)}): {action}.  ")
    if c.environment:
        rows = [(d.key, d.base or DASH, d.cand or DASH,
                 ", ".join("every backend" if a == "*" else a for a in d.affects) or DASH)
                for d in c.environment]
        out += ["", md_table(["Fact", "BASE", "CAND", "Makes latency incomparable for"], rows), ""]
    else:
        out += ["Same versions, machine and settings in both runs.", ""]

    acc = [cd for cd in c.cells if cd.kind == "accuracy" and cd.both_ok and cd.primary]
    if acc:
        rows = []
        for cd in acc:
            m = cd.metric(cd.primary)
            r = cd.cand
            rows.append((r.model, r.task, r.scheme, r.backend, metric_label(cd.primary),
                         fmt_value(m.name, m.unit, m.base), fmt_value(m.name, m.unit, m.cand),
                         fmt_delta(m.name, m.unit, m.delta) + _mark(m), fmt_significant(m)))
        out += ["## Accuracy", "", f"Significance: {SIGNIFICANCE_RULES['ci']}.", "",
                md_table(["Model", "Task", "Scheme", "Backend", "Metric", "BASE", "CAND", "Δ", "Significant"],
                         rows, numeric=(5, 6, 7)), ""]

    lat = [cd for cd in c.cells if cd.kind == "latency" and cd.both_ok]
    if lat:
        rows = []
        for cd in lat:
            r = cd.cand
            mean, p99, thr = (cd.metric(n) for n in ("latency_mean_ms", "latency_p99_ms", "throughput"))
            cells = [r.model, r.task, r.scheme, r.backend,
                     fmt_shape(r.shape.batch, r.shape.seq) if r.shape else DASH]
            for m in (mean, p99, thr):
                cells += [fmt_value(m.name, m.unit, m.cand) if m else DASH,
                          (fmt_relative(m.relative) + _mark(m)) if m else DASH]
            cells.append("no" if c.latency_incomparable(cd.backend) else "yes")
            rows.append(cells)
        out += ["## Latency", "", f"Significance: {SIGNIFICANCE_RULES['latency']}.", "",
                md_table(["Model", "Task", "Scheme", "Backend", "Batch×seq", "Mean (ms)", "Δ",
                          "p99 (ms)", "Δ", "Thr. (seq/s)", "Δ", "Comparable"], rows,
                         numeric=(5, 6, 7, 8, 9, 10)), ""]

    broken = [cd for cd in c.cells if cd.base.status != "ok" or cd.cand.status != "ok"]
    if broken:
        out += ["## Cells that did not finish", "",
                md_table(["Cell", "BASE", "CAND", "Error"],
                         [(cd.cell, cd.base.status, cd.cand.status, cd.cand.error or cd.base.error or DASH)
                          for cd in broken]), ""]
    if c.only_base:
        out += ["## Only in BASE", ""] + _list([r.cell for r in c.only_base]) + [""]
    if c.only_cand:
        out += ["## Only in CAND", ""] + _list([r.cell for r in c.only_cand]) + [""]
    return "\n".join(out).rstrip() + "\n"
