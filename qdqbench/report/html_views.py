"""HTML sections of the report's views: engines beside fake-quant, peers, calibrators, Pareto,
and the per-layer views (amax heat tables, sensitivity, the auto recipe's trace).

Every chart sits beside a sortable table of its numbers. Ids are stable: ``sxs-<scheme>``
(and ``sxs-<scheme>--<engine>`` per engine cell), ``peer-<model>-<task>[--<engine>]``,
``calib-<model>-<task>``, ``pareto-<model>-<task>``, ``amax-<model>-<task>-<scheme>``,
``sens-…`` and ``trace-…``. All run-provided text goes through ``esc``.
"""

from __future__ import annotations

import math

from qdqbench.report.charts import calibrator_chart_svg, pareto_chart_svg, sensitivity_chart_svg
from qdqbench.report.htmlparts import esc, num_td, table_html, td, text_td, tr, verdict_class
from qdqbench.report.layers import (
    MIN_LAYERS_FOR_MEDIAN,
    OUTLIER_FACTOR,
    PART_COST_HEADERS,
    AmaxCell,
    AmaxTable,
    fmt_delta_ms,
    part_costs_note,
)
from qdqbench.report.rows import (
    DASH,
    Report,
    fmt_delta_points,
    fmt_int,
    fmt_ms,
    fmt_points,
    fmt_score,
    fmt_shape,
    fmt_sig,
    fmt_verdict,
    slug,
)
from qdqbench.report.views import EngineScore, SideBySideRow

PEER_BADGE = '<span class="badge peer" title="a peer tool\'s recipe, not QDQBERT">peer</span>'


def scheme_td(scheme: str, is_peer: bool) -> str:
    """A scheme cell, with the peer badge for a peer tool's recipe."""
    return td(esc(scheme) + (" " + PEER_BADGE if is_peer else ""), sort=scheme)


def verdict_td(passed: bool | None) -> str:
    """A verdict cell coloured by its own verdict (rows here mix several verdicts)."""
    return td(fmt_verdict(passed), sort=passed, cls=f"verdict {verdict_class(passed)}".strip())


def _mark(passed: bool | None) -> str:
    return "" if passed is None else ' class="good"' if passed else ' class="bad"'


# ----------------------------------------------------------------------------------------------
# engines beside fake-quant


def gap_badge(e: EngineScore) -> str:
    """The badge of an engine whose score is further from fake-quant than its drop CI half-width."""
    if not e.flagged:
        return ""
    why = (
        f"{fmt_points(abs(e.gap))} pts from the fake-quant score, more than this cell's "
        f"drop CI half-width of {fmt_points(e.ci_half_width)} pts"
    )
    return f' <span class="badge gap" title="{esc(why)}">≠ fake-quant</span>'


def _engine_cell(row: SideBySideRow, backend: str) -> str:
    e = row.engine(backend)
    cell_id = f"sxs-{row.anchor}--{slug(backend)}"
    if e is None:
        return f'<td id="{cell_id}" class="num">{DASH}</td>'
    value = f'<a href="#acc-{e.acc_anchor}"><b{_mark(e.passed)}>{esc(fmt_score(e.value))}</b></a>'
    parts = [value]
    if e.gap is not None:
        parts.append(f'<span class="ci">{esc(fmt_delta_points(e.gap))} vs FQ</span>')
    parts.append(gap_badge(e).strip())
    if e.changed_vs_torch is not None:
        parts.append(f'<br><span class="ci">{e.changed_vs_torch} changed vs torch</span>')
    if e.ci_half_width is not None:
        parts.append(f'<br><span class="ci">CI ±{esc(fmt_points(e.ci_half_width))}</span>')
    sort = "" if e.value is None else esc(e.value)
    return (
        f'<td id="{cell_id}" class="num" data-sort="{sort}">'
        + " ".join(p for p in parts if p)
        + "</td>"
    )


def engines_section(report: Report) -> str:
    """fp32, fake-quant and every engine's score of each scheme in one row."""
    if not report.engines or not report.side_by_side:
        return ""
    rows = []
    for r in report.side_by_side:
        fq = esc(fmt_score(r.fakequant_value))
        if r.fakequant_anchor:
            fq = f'<a href="#acc-{r.fakequant_anchor}"><span{_mark(r.fakequant_passed)}>{fq}</span></a>'
        cells = [
            text_td(r.model),
            text_td(r.task),
            scheme_td(r.scheme, r.is_peer),
            text_td(r.metric),
            num_td(fmt_score(r.fp32_value), r.fp32_value),
            td(fq, sort=r.fakequant_value, cls="num"),
            *(_engine_cell(r, b) for b in report.engines),
        ]
        flagged = any(e.flagged for e in r.engines)
        rows.append(tr(f"sxs-{r.anchor}", cells, "flagged" if flagged else ""))
    headers = ["Model", "Task", "Scheme", "Metric", "fp32", "Fake-quant (torch)"]
    headers += [f"{esc(b)} (ships)" for b in report.engines]
    note = (
        "The number that ships is the engine's (bold; green passes the bound, red fails). "
        "<i>vs FQ</i> = engine − fake-quant in points; "
        '<span class="badge gap">≠ fake-quant</span> marks an engine further from the fake-quant '
        "score than the half-width of that engine cell's paired drop interval (CI ±). "
        "<i>changed vs torch</i> counts predictions that differ from the torch model the engine's "
        "ONNX was exported from. The fp32 scheme's torch column is the fp32 reference itself; a "
        "peer recipe has no fake-quant model."
    )
    return (
        '<section id="engines"><h2>Accuracy on each engine, beside fake-quant</h2>'
        f'<p class="note">{note}</p>{table_html("engines-table", headers, rows)}</section>'
    )


# ----------------------------------------------------------------------------------------------
# peers (inside the verdict section)


def peers_block(report: Report) -> str:
    """Per model × task with peers: does the best QDQBERT scheme beat the best peer?"""
    if not report.peers:
        return ""
    out = ['<div id="peers"><h3>Against peer tools</h3>']
    for p in report.peers:
        items = []
        for c in p.engines:
            cls = {"both": "good", "neither": "bad"}.get(c.beats, "")
            badge = f'<span class="badge outcome">{esc(c.beats)}</span>'
            items.append(
                f'<li id="{esc(c.anchor)}" class="{cls}" data-beats="{esc(c.beats)}">'
                f"{badge} {esc(c.statement)}</li>"
            )
        if not items:
            items.append(f'<li class="note">{esc(p.note)}</li>')
        peers = ", ".join(esc(s) for s in p.peers)
        out.append(
            f'<div class="peer" id="{esc(p.anchor)}"><b>{esc(p.model)} · {esc(p.task)}</b> '
            f'<span class="meta">(peers: {peers})</span><ul class="facts">{"".join(items)}</ul>'
            "</div>"
        )
    out.append(
        '<p class="note">Best = the highest on-engine score among the schemes that pass the '
        "bound on that engine (all of them when none passes), for QDQBERT (kind qdq) and for the "
        "peers alike. Speed compares the two schemes' mean latency at each shape timed for both "
        "on the same engine; beating on speed means faster at every such shape.</p></div>"
    )
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# calibrators


def calibrators_section(report: Report) -> str:
    """Per model × task: scores by calibration method, chart beside its table."""
    if not report.calibrators:
        return ""
    figures = []
    for c in report.calibrators:
        rows = []
        for r in c.rows:
            drop = (
                None
                if r.torch_value is None or c.fp32_value is None
                else c.fp32_value - r.torch_value
            )
            rows.append(
                tr(
                    f"calibrow-{r.anchor}",
                    [
                        text_td(r.method),
                        text_td(r.calibrator),
                        scheme_td(r.scheme, False),
                        num_td(fmt_int(r.samples), r.samples),
                        num_td(fmt_sig(r.seconds), r.seconds),
                        num_td(fmt_score(r.torch_value), r.torch_value),
                        num_td(fmt_points(drop), drop),
                        verdict_td(r.torch_passed),
                        num_td(fmt_score(r.engine_value), r.engine_value),
                        verdict_td(r.engine_passed),
                    ],
                )
            )
        headers = [
            "Method",
            "Calibrator",
            "Scheme",
            "Samples",
            "Calib. (s)",
            "Fake-quant (torch)",
            "Drop (pts)",
            "Verdict",
            esc(c.engine),
            f"Verdict ({esc(c.engine)})",
        ]
        figures.append(
            f'<figure id="calib-{c.anchor}"><div class="chart-pair">'
            f"{calibrator_chart_svg(c, f'calibsvg-{c.anchor}')}"
            f"{table_html(f'calibtable-{c.anchor}', headers, rows)}</div>"
            f"<figcaption>{esc(c.model)} · {esc(c.task)}: {esc(c.metric)} of each calibrated "
            f"scheme by calibration method; fp32 {esc(fmt_score(c.fp32_value))} (grey dashed), "
            f"bound threshold {esc(fmt_score(c.threshold))} (red dotted).</figcaption></figure>"
        )
    return '<section id="calibrators"><h2>Calibrators</h2>' + "".join(figures) + "</section>"


# ----------------------------------------------------------------------------------------------
# Pareto


def pareto_section(report: Report) -> str:
    """Per model × task: accuracy against latency, Pareto-optimal points highlighted."""
    if not report.pareto:
        return ""
    figures = []
    for c in report.pareto:
        rows = [
            tr(
                f"paretorow-{p.anchor}",
                [
                    scheme_td(p.scheme, p.is_peer),
                    text_td(p.backend),
                    text_td(p.precision),
                    td(esc(fmt_shape(p.batch, p.seq)), sort=p.batch),
                    num_td(fmt_score(p.value), p.value),
                    num_td(fmt_ms(p.mean_ms), p.mean_ms),
                    verdict_td(p.passed),
                    td(
                        '<span class="badge optimal">Pareto-optimal</span>' if p.optimal else "no",
                        sort=p.optimal,
                    ),
                ],
                "optimal" if p.optimal else "dominated",
            )
            for p in c.points
        ]
        headers = [
            "Scheme",
            "Backend",
            "Precision",
            "Shape",
            "Score",
            "Mean (ms)",
            "Verdict",
            "Pareto",
        ]
        figures.append(
            f'<figure id="pareto-{c.anchor}"><div class="chart-pair">'
            f"{pareto_chart_svg(c, f'paretosvg-{c.anchor}')}"
            f"{table_html(f'paretotable-{c.anchor}', headers, rows)}</div>"
            f"<figcaption>{esc(c.model)} · {esc(c.task)}: {esc(c.metric)} on each backend "
            "(fake-quant for torch) against mean latency at that backend's largest timed batch. "
            "A point is Pareto-optimal when no other point is at least as accurate and at least "
            "as fast, and better in one.</figcaption></figure>"
        )
    return '<section id="pareto"><h2>Accuracy vs latency</h2>' + "".join(figures) + "</section>"


# ----------------------------------------------------------------------------------------------
# per-layer views


def _heat(cell: AmaxCell, lo: float | None, hi: float | None) -> str:
    if cell.outlier:
        return "background: rgba(207, 34, 46, 0.28)"
    if cell.amax is None or lo is None or hi is None or not math.isfinite(cell.amax):
        return ""
    if cell.amax <= 0 or hi <= lo:
        t = 0.0
    else:  # log scale: weight amaxes (~0.1) and activation amaxes (~10) share one table
        t = (math.log(cell.amax) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return f"background: rgba(0, 114, 178, {0.06 + 0.42 * min(max(t, 0.0), 1.0):.2f})"


def _amax_cell(cell: AmaxCell | None, lo: float | None, hi: float | None) -> str:
    if cell is None:
        return f'<td class="num amax">{DASH}</td>'
    title = cell.name
    if cell.ratio is not None:
        title += f": {fmt_sig(cell.ratio)}× the median ({fmt_sig(cell.reference)})"
    cls = "num amax" + (" outlier" if cell.outlier else "")
    sort = "" if cell.amax is None else esc(cell.amax)
    return (
        f'<td class="{cls}" style="{_heat(cell, lo, hi)}" title="{esc(title)}" '
        f'data-sort="{sort}">{esc(fmt_sig(cell.amax))}</td>'
    )


def _amax_table(t: AmaxTable) -> str:
    if t.problem:
        return (
            f'<p id="amax-{t.anchor}" class="note">{esc(t.model)} · {esc(t.task)} · '
            f"{esc(t.scheme)}: amax artifact {esc(t.problem)}</p>"
        )
    # The colour scale leaves outliers out (they are red anyway), so the rest keep their contrast.
    positive = [
        c.amax for c in t.cells
        if not c.outlier and c.amax is not None and math.isfinite(c.amax) and c.amax > 0
    ]  # fmt: skip
    lo, hi = min(positive, default=None), max(positive, default=None)
    rows = []
    for i, (name, cells) in enumerate(t.rows):
        layer = next((c.layer for c in cells if c is not None), None)
        rows.append(
            tr(
                f"amaxrow-{t.anchor}--{i}",
                [
                    td(esc(name), sort=layer if layer is not None else 10**6),
                    *(_amax_cell(c, lo, hi) for c in cells),
                ],
            )
        )
    headers = ["Layer", *(f'<span title="{esc(c)}">{esc(c)}</span>' for c in t.columns)]
    outliers = t.outliers
    listed = "; ".join(
        f"{c.name} = {fmt_sig(c.amax)}"
        + (f" ({fmt_sig(c.ratio)}× median)" if c.ratio is not None else "")
        for c in outliers[:10]
    )
    summary = (
        f"{esc(t.model)} · {esc(t.task)} · <b>{esc(t.scheme)}</b>: {len(t.cells)} quantizers, "
        f"largest amax {esc(fmt_sig(t.max_amax))}"
        + (f', <span class="bad">{len(outliers)} outlier(s)</span>' if outliers else "")
    )
    body = table_html(f"amaxtable-{t.anchor}", headers, rows)
    if outliers:
        body = f'<p class="note bad">Outliers: {esc(listed)}</p>' + body
    opened = " open" if outliers else ""
    return (
        f'<details id="amax-{t.anchor}"{opened}><summary>{summary}</summary>'
        f'<p class="note">From <code>{esc(t.path)}</code>.</p>{body}</details>'
    )


def _sensitivity(report: Report) -> str:
    out = []
    for v in report.sensitivity:
        extra = any(
            p.quantized_only_loss is not None or p.float_only_gain is not None for p in v.parts
        )
        rows = []
        for i, p in enumerate(v.parts):
            cells = [
                num_td(fmt_int(p.rank), p.rank),
                text_td(p.part),
                text_td(p.kind),
                text_td(p.group),
                num_td(fmt_int(p.layer), p.layer),
                num_td(fmt_int(p.quantizers), p.quantizers),
                num_td(fmt_sig(p.only_quantized), p.only_quantized),
                num_td(fmt_sig(p.only_float), p.only_float),
            ]
            if extra:
                cells += [
                    num_td(fmt_sig(p.quantized_only_loss), p.quantized_only_loss),
                    num_td(fmt_sig(p.float_only_gain), p.float_only_gain),
                ]
            rows.append(tr(f"sensrow-{v.anchor}--{i}", cells))
        unit = f" ({esc(v.unit)})" if v.unit else ""
        headers = [
            "Rank",
            "Part",
            "Kind",
            "Group",
            "Layer",
            "Quantizers",
            f"Only quantized{unit}",
            f"Only float{unit}",
        ]
        if extra:
            headers += [f"Loss quantized alone{unit}", f"Gain float alone{unit}"]
        note = (
            f"Proxy <b>{esc(v.proxy or DASH)}</b>{unit}; ranking: {esc(v.ranking_rule or DASH)}; "
            f"every part quantized {esc(fmt_sig(v.full_score))}, nothing quantized "
            f"{esc(fmt_sig(v.float_score))}. Rank 1 is the most harmful part."
        )
        out.append(
            f'<figure id="sens-{v.anchor}"><h3>Sensitivity: {esc(v.model)} · {esc(v.task)} · '
            f'{esc(v.scheme)}</h3><p class="note">{note}</p><div class="chart-pair">'
            f"{sensitivity_chart_svg(v, f'senssvg-{v.anchor}')}"
            f"{table_html(f'senstable-{v.anchor}', headers, rows)}</div></figure>"
        )
    return "".join(out)


def _traces(report: Report) -> str:
    out = []
    for t in report.traces:
        rows = []
        for i, s in enumerate(t.steps):
            name = esc(s.name) + (' <span class="badge chosen">chosen</span>' if s.chosen else "")
            rows.append(
                tr(
                    f"tracerow-{t.anchor}--{i}",
                    [
                        num_td(str(i + 1), i + 1),
                        td(name, sort=s.name),
                        text_td(s.stage),
                        num_td(fmt_score(s.value), s.value),
                        verdict_td(s.passed),
                        num_td(fmt_ms(s.latency_ms), s.latency_ms),
                        num_td(fmt_int(s.evaluations), s.evaluations),
                        num_td(fmt_sig(s.seconds), s.seconds),
                        text_td(s.error, cls="error"),
                    ],
                    "chosen" if s.chosen else "",
                )
            )
        headers = [
            "#",
            "Candidate",
            "Stage",
            "Value",
            "Passed",
            "Latency (ms)",
            "Evaluations",
            "Seconds",
            "Error",
        ]
        facts = [f"chosen: <b>{esc(t.chosen or DASH)}</b>"]
        if t.threshold is not None:
            facts.append(f"threshold {esc(fmt_score(t.threshold))}")
        if t.selection:
            facts.append(esc(t.selection))
        out.append(
            f'<div id="trace-{t.anchor}"><h3>What the auto recipe tried: {esc(t.model)} · '
            f'{esc(t.task)} · {esc(t.scheme)}</h3><p class="note">{"; ".join(facts)}. Values are '
            "the primary metric on the selection data (a held-out training slice, or the dev set's selection "
            "part), never the data of the verdict.</p>"
            f"{table_html(f'tracetable-{t.anchor}', headers, rows)}{_part_costs(t)}</div>"
        )
    return "".join(out)


def _part_costs(t) -> str:
    if not t.part_costs:
        return ""
    rows = [
        tr(f"partcost-{t.anchor}--{i}",
           [td(esc(c.part), sort=c.part), num_td(fmt_int(c.quantizers), c.quantizers),
            num_td(fmt_ms(c.latency_ms), c.latency_ms), num_td(fmt_delta_ms(c.delta_ms), c.delta_ms)])
        for i, c in enumerate(t.part_costs)
    ]
    return (f'<p class="note">{esc(part_costs_note(t))}</p>'
            + table_html(f"partcosts-{t.anchor}", list(PART_COST_HEADERS), rows))


def layers_section(report: Report) -> str:
    """Amax heat tables, sensitivity charts and the auto recipe's trace, where the run has them."""
    if not (report.amax or report.sensitivity or report.traces):
        return ""
    parts = ['<section id="layers"><h2>Per layer</h2>']
    if report.amax:
        parts.append(
            "<h3>Calibrated ranges (amax)</h3>"
            '<p class="note">One row per encoder layer, one column per quantizer type; darker is '
            "larger (log scale within each table). A red cell is an outlier: at least "
            f"{fmt_sig(OUTLIER_FACTOR, 1, 1)}× the median of its quantizer type across layers "
            f"(judged from {MIN_LAYERS_FOR_MEDIAN} layers up), or not a positive finite number; "
            "its 256 levels are spent on a few large values.</p>"
        )
        parts.extend(_amax_table(t) for t in report.amax)
    parts.append(_sensitivity(report))
    parts.append(_traces(report))
    parts.append("</section>")
    return "".join(parts)


__all__ = [
    "PEER_BADGE",
    "calibrators_section",
    "engines_section",
    "gap_badge",
    "layers_section",
    "pareto_section",
    "peers_block",
    "scheme_td",
]
