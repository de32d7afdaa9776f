"""Render a ``Comparison`` (and its gate outcomes) as one self-contained HTML page.

The page reuses the main report's inline CSS, sortable-table script and Content-Security-Policy,
so it opens offline and fetches nothing. Every string from either run (model names, errors,
versions, gate expressions) passes through ``html.escape``. Changes are coloured by direction
(green better, red worse, from each metric's ``higher_is_better``) and muted when they are within
the runs' noise; the rule that decided significance is written under each table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from qdqbench import __version__
from qdqbench.report.fmt import DASH, fmt_shape, slug
from qdqbench.report.render.html import CSS, JS, csp
from qdqbench.review.comparison import SIGNIFICANCE_RULES, CellDelta, Comparison, MetricDelta
from qdqbench.review.gates import GateOutcome
from qdqbench.review.render_fmt import (
    delta_class,
    fmt_ci,
    fmt_delta,
    fmt_relative,
    fmt_side,
    fmt_significant,
    fmt_value,
    metric_label,
)
from qdqbench.review.render_md import gate_headline, skipped_summary

EXTRA_CSS = """
td.better { color: var(--pass); font-weight: 600; } td.worse { color: var(--fail); font-weight: 600; }
td.noise { font-weight: 400; opacity: 0.75; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; }
details { margin: 4px 0 10px; } summary { cursor: pointer; color: var(--muted); }
"""


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


class _Ids:
    """Unique element ids from cell ids (a slug clash gets -2, -3, ...)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.seen = prefix, {}

    def __call__(self, cell: str) -> str:
        base = f"{self.prefix}-{slug(cell)}"
        n = self.seen[base] = self.seen.get(base, 0) + 1
        return base if n == 1 else f"{base}-{n}"


def _td(html: str, cls: str = "", sort: Any = None) -> str:
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None:
        attrs += f' data-sort="{_e(sort)}"'
    return f"<td{attrs}>{html}</td>"


def _text(x: Any) -> str:
    return _td(_e(x if x not in (None, "") else DASH))


def _table(table_id: str, headers: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    return (f'<div class="scroll"><table id="{table_id}" class="sortable"><thead><tr>{head}</tr>'
            f"</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>")


def _value_cell(m: MetricDelta | None, side: str) -> str:
    if m is None:
        return _td(DASH, "num")
    x, ci = (m.base, m.base_ci) if side == "base" else (m.cand, m.cand_ci)
    ci_text = fmt_ci(m.name, m.unit, ci)
    extra = f' <span class="ci">{_e(ci_text)}</span>' if ci_text else ""
    return _td(_e(fmt_value(m.name, m.unit, x)) + extra, "num", "" if x is None else x)


def _change_cells(m: MetricDelta | None) -> list[str]:
    if m is None:
        return [_td(DASH, "num"), _td(DASH, "num")]
    cls = ("num " + delta_class(m)).strip()
    return [_td(_e(fmt_delta(m.name, m.unit, m.delta)), cls, "" if m.delta is None else m.delta),
            _td(_e(fmt_relative(m.relative)), cls, "" if m.relative is None else m.relative)]


def _where(cd: CellDelta) -> list[str]:
    r = cd.cand
    return [_text(r.model), _text(r.task), _text(r.scheme), _text(r.backend)]


# ----------------------------------------------------------------------------------------------
# sections


def _header(c: Comparison) -> str:
    warns = []
    nothing = c.nothing_comparable()
    if nothing:
        warns.append(f'<div class="warn" id="nothing-comparable"><b>Nothing comparable</b>: '
                     f"{_e(nothing.removeprefix('nothing comparable: '))}. No gate can pass.</div>")
    for i, line in enumerate(c.partial_runs()):
        warns.append(f'<div class="warn" id="partial-{i}"><b>Partial run</b>: {_e(line)}</div>')
    lines = skipped_summary(c.skipped_lines)
    if lines:
        lis = "".join(f"<li>{_e(x)}</li>" for x in lines)
        warns.append(f'<div class="warn" id="skipped-lines"><b>Lines of results.jsonl not read</b> '
                     f"(their cells are missing from this comparison):<ul>{lis}</ul></div>")
    return (
        "<header><h1>qdqbench compare</h1>"
        f'<p class="meta">BASE <code>{_e(fmt_side(c, "base"))}</code><br>'
        f'CAND <code>{_e(fmt_side(c, "cand"))}</code></p></header>' + "".join(warns)
    )


def _gates(c: Comparison, outcomes: Sequence[GateOutcome]) -> str:
    n_changed = sum(1 for cd in c.cells if cd.both_ok)
    if not outcomes:
        head = '<div class="headline" id="headline">No gates given (--fail-on)</div>'
    else:
        status, text = gate_headline(outcomes)
        cls = "pass" if status == "passed" else "fail"
        head = f'<div class="headline {cls}" id="headline">{_e(text)}</div>'
    items = []
    marks = {"passed": '<span class="good">pass</span>', "failed": '<span class="bad">FAIL</span>',
             "not-checked": '<span class="bad">NOT CHECKED</span>'}
    for i, o in enumerate(outcomes):
        why = f" ({_e(o.why_not_checked())})" if o.not_checked else ""
        items.append(
            f'<li id="gate-{i}" data-status="{o.status}"><code>{_e(o.gate.text)}</code> — '
            f"{marks[o.status]}: fails when "
            f"{_e(o.gate.describe())}; checked on {o.checked} "
            f"{'cell' if o.checked == 1 else 'cells'}{why}"
            + _gate_list("failures", o.failures, open_=True)
            + _gate_list("not checked", o.skipped)
            + _gate_list("past the limit but within the runs' spread", o.within_noise)
            + "</li>"
        )
    facts = [
        f"<li>{len(c.cells)} matched cells ({n_changed} finished in both), "
        f"{len(c.only_base)} only in BASE, {len(c.only_cand)} only in CAND</li>"
    ]
    if c.cand_failed:
        facts.append(f'<li class="bad"><a href="#status">{len(c.cand_failed)} failed cells in CAND</a></li>')
    return (f'<section id="gates"><h2>Gates</h2>{head}<ul class="facts">{"".join(facts)}</ul>'
            f'<ul class="facts">{"".join(items)}</ul></section>')


def _gate_list(title: str, items, open_: bool = False) -> str:
    if not items:
        return ""
    lis = "".join(f"<li><code>{_e(f.cell or 'run')}</code>: {_e(f.message)}</li>" for f in items)
    return f"<details{' open' if open_ else ''}><summary>{_e(title)} ({len(items)})</summary><ul>{lis}</ul></details>"


def _environment(c: Comparison) -> str:
    parts = ['<section id="environment"><h2>Environment</h2>']
    bad = c.incomparable_backends
    if bad:
        action = ("gated anyway because of --force" if c.force
                  else "shown, but not gated (use --force to gate them)")
        lis = "".join(f"<li><b>{_e(b)}</b>: {_e(r)}</li>" for b, r in bad.items())
        parts.append(f'<div class="warn" id="incomparable"><b>Latency deltas are not comparable</b> '
                     f"for these backends; they are {_e(action)}:<ul>{lis}</ul></div>")
    if not c.environment:
        parts.append('<p class="good">Same versions, machine and settings in both runs.</p>')
    else:
        rows = [
            f'<tr id="env-{i}">' + _td(f"<code>{_e(d.key)}</code>") + _text(d.base) + _text(d.cand)
            + _text(", ".join("every backend" if a == "*" else a for a in d.affects) or "— (noted only)")
            + "</tr>"
            for i, d in enumerate(c.environment)
        ]
        parts.append(_table("env-table", ["Fact", "BASE", "CAND", "Makes latency incomparable for"], rows))
    parts.append("</section>")
    return "".join(parts)


def _accuracy(c: Comparison) -> str:
    ids, rows = _Ids("acc"), []
    for cd in c.cells:
        if cd.kind != "accuracy" or not cd.both_ok or cd.primary is None:
            continue
        m, drop = cd.metric(cd.primary), cd.metric("verdict_drop")
        bv, cv = cd.base.verdict, cd.cand.verdict
        verdict = DASH if bv is None and cv is None else (
            f"{_verdict(bv.passed if bv else None)} → {_verdict(cv.passed if cv else None)}")
        rows.append(
            f'<tr id="{ids(cd.cell)}">' + "".join(_where(cd)) + _text(metric_label(cd.primary))
            + _value_cell(m, "base") + _value_cell(m, "cand") + "".join(_change_cells(m))
            + _td(_e(fmt_significant(m)) if m else DASH)
            + _td(_e(_drop_pair(drop)), "num " + delta_class(drop) if drop else "num")
            + _td(_e(fmt_significant(drop)) if drop else DASH)
            + _td(_e(verdict)) + "</tr>"
        )
    if not rows:
        return ""
    headers = ["Model", "Task", "Scheme", "Backend", "Metric", "BASE", "CAND", "Δ", "Δ rel.",
               "Significant", "Drop vs fp32 (pts)", "Drop change significant", "Verdict"]
    note = (f"Scores in percent points with their bootstrap intervals. Significance: "
            f"{_e(SIGNIFICANCE_RULES['ci'])}, for the score and for the paired interval of the drop "
            "against fp32. Green is better, red worse; muted when not significant.")
    return (f'<section id="accuracy"><h2>Accuracy</h2><p class="note">{note}</p>'
            f'{_table("accuracy-table", headers, rows)}</section>')


def _verdict(passed: bool | None) -> str:
    return DASH if passed is None else "pass" if passed else "FAIL"


def _drop_pair(m: MetricDelta | None) -> str:
    if m is None:
        return DASH
    return f"{fmt_value(m.name, m.unit, m.base)} → {fmt_value(m.name, m.unit, m.cand)}"


def _latency(c: Comparison) -> str:
    ids, rows = _Ids("lat"), []
    for cd in c.cells:
        if cd.kind != "latency" or not cd.both_ok:
            continue
        r = cd.cand
        shape = fmt_shape(r.shape.batch, r.shape.seq) if r.shape else DASH
        cells = _where(cd) + [_td(_e(shape), "num")]
        for name in ("latency_mean_ms", "latency_p99_ms", "throughput"):
            m = cd.metric(name)
            cells += [_value_cell(m, "base"), _value_cell(m, "cand"), _change_cells(m)[1]]
        any_m = cd.metrics[0] if cd.metrics else None
        reason = c.latency_incomparable(cd.backend)
        cells.append(_td(_e(fmt_significant(any_m)) if any_m else DASH))
        cells.append(_td(_e("no" if reason else "yes"), "bad" if reason else ""))
        rows.append(f'<tr id="{ids(cd.cell)}">' + "".join(cells) + "</tr>")
    if not rows:
        return ""
    headers = ["Model", "Task", "Scheme", "Backend", "Batch×seq",
               "Mean BASE (ms)", "Mean CAND (ms)", "Mean Δ",
               "p99 BASE (ms)", "p99 CAND (ms)", "p99 Δ",
               "Thr. BASE (seq/s)", "Thr. CAND (seq/s)", "Thr. Δ", "Significant", "Comparable"]
    note = (f"Significance: {_e(SIGNIFICANCE_RULES['latency'])}. Comparable: no when the machine, "
            "threads, driver or the backend's runtime version differ between the runs (see "
            "Environment). Lower latency and higher throughput are better.")
    return (f'<section id="latency"><h2>Latency and throughput</h2><p class="note">{note}</p>'
            f'{_table("latency-table", headers, rows)}</section>')


def _other(c: Comparison) -> str:
    ids, rows = _Ids("oth"), []
    for cd in c.cells:
        if cd.kind in ("accuracy", "latency") or not cd.both_ok:
            continue
        for m in cd.metrics:
            rows.append(
                f'<tr id="{ids(cd.cell + "/" + m.name)}">' + _td(f"<code>{_e(cd.cell)}</code>")
                + _text(cd.kind) + _text(metric_label(m.name)) + _value_cell(m, "base")
                + _value_cell(m, "cand") + "".join(_change_cells(m)) + _td(_e(fmt_significant(m)))
                + "</tr>")
    if not rows:
        return ""
    headers = ["Cell", "Kind", "Metric", "BASE", "CAND", "Δ", "Δ rel.", "Significant"]
    return (f'<section id="other"><h2>Fidelity and exports</h2>'
            f'{_table("other-table", headers, rows)}</section>')


def _status(c: Comparison) -> str:
    ids = _Ids("st")
    changed = [cd for cd in c.cells if cd.base.status != "ok" or cd.cand.status != "ok"]
    parts = ['<section id="status"><h2>Cells that did not finish, and cells in one run only</h2>']
    if changed:
        rows = [
            f'<tr id="{ids(cd.cell)}">' + _td(f"<code>{_e(cd.cell)}</code>")
            + _td(_e(cd.base.status), "bad" if cd.base.status == "failed" else "")
            + _td(_e(cd.cand.status), "bad" if cd.cand.status == "failed" else "")
            + _td(_e(cd.cand.error or cd.base.error or DASH), "error") + "</tr>"
            for cd in changed
        ]
        parts.append(_table("status-table", ["Cell", "BASE", "CAND", "Error"], rows))
    else:
        parts.append('<p class="good">Every matched cell finished in both runs.</p>')
    for title, records, tid in (("Only in BASE (missing from CAND)", c.only_base, "only-base"),
                                ("Only in CAND (new)", c.only_cand, "only-cand")):
        if records:
            lis = "".join(f"<li><code>{_e(r.cell)}</code> ({_e(r.status)})</li>" for r in records)
            parts.append(f'<h3 id="{tid}">{_e(title)}: {len(records)}</h3><ul class="facts">{lis}</ul>')
    parts.append("</section>")
    return "".join(parts)


def render_compare_html(c: Comparison, outcomes: Sequence[GateOutcome] = ()) -> str:
    """The comparison as one self-contained HTML page (inline CSS and JS; no network)."""
    body = "\n".join(p for p in (_header(c), _gates(c, outcomes), _environment(c), _accuracy(c),
                                 _latency(c), _other(c), _status(c)) if p)
    title = f"qdqbench compare · {c.base_name} → {c.cand_name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(JS)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}{EXTRA_CSS}</style></head>\n"
        f"<body><main>\n{body}\n"
        f"<footer>Generated by qdqbench {_e(__version__)} from two run folders.</footer>\n</main>\n"
        f"<script>{JS}</script>\n</body></html>\n"
    )
