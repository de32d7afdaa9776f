"""The sections of the views across cells: engines beside fake-quant, peers, calibrators, Pareto,
and the per-layer views (amax heat tables, sensitivity, the auto recipe's trace, float-part costs).

Each builder turns the view dataclasses (``views``, ``layers``) into one ``blocks.Section`` for
every renderer; ``sections.SECTIONS`` puts them in order. Ids are stable: ``sxs-<scheme>`` (and
``sxs-<scheme>--<engine>`` per engine cell), ``peer-<model>-<task>[--<engine>]``,
``calib-<model>-<task>``, ``pareto-<model>-<task>``, ``amax-<model>-<task>-<scheme>``, ``sens-…``
and ``trace-…``. Every chart sits beside a sortable table of its numbers.
"""

from __future__ import annotations

import math
from typing import Any

from qdqbench.report.blocks import (
    HTML,
    MD,
    Box,
    Cell,
    Chart,
    Column,
    CsvTable,
    Heading,
    Note,
    Pair,
    Row,
    Section,
    Table,
    num,
    scheme,
    text,
    verdict,
)
from qdqbench.report.charts import calibrator_chart_svg, pareto_chart_svg, sensitivity_chart_svg
from qdqbench.report.htmlparts import esc
from qdqbench.report.layers import (
    MIN_LAYERS_FOR_MEDIAN,
    OUTLIER_FACTOR,
    PART_COST_HEADERS,
    AmaxCell,
    AmaxTable,
    fmt_delta_ms,
    part_costs_note,
)
from qdqbench.report.mdparts import md_escape
from qdqbench.report.rows import (
    DASH,
    Report,
    fmt_ci_points,
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
    "evaluations", "seconds", "chosen", "error", "drop", "drop_ci_low", "drop_ci_high", "structure",
)  # fmt: skip

PART_COST_COLUMNS = (
    "model", "task", "scheme", "part", "quantizers", "latency_ms", "delta_ms", "full_int8_ms",
    "chosen_ms",
)  # fmt: skip


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


def _engine_cell(row: SideBySideRow, backend: str) -> Cell:
    e = row.engine(backend)
    cell_id = f"sxs-{row.anchor}--{slug(backend)}"
    if e is None:
        return Cell(DASH, numeric=True, cell_id=cell_id)
    parts = [f'<a href="#acc-{e.acc_anchor}"><b{_mark(e.passed)}>{esc(fmt_score(e.value))}</b></a>']
    if e.gap is not None:
        parts.append(f'<span class="ci">{esc(fmt_delta_points(e.gap))} vs FQ</span>')
    parts.append(gap_badge(e).strip())
    if e.changed_vs_torch is not None:
        parts.append(f'<br><span class="ci">{e.changed_vs_torch} changed vs torch</span>')
    if e.ci_half_width is not None:
        parts.append(f'<br><span class="ci">CI ±{esc(fmt_points(e.ci_half_width))}</span>')
    bits = [f"{fmt_delta_points(e.gap)} vs FQ"] if e.gap is not None else []
    if e.changed_vs_torch is not None:
        bits.append(f"{e.changed_vs_torch} changed vs torch")
    md = fmt_score(e.value) + (f" ({', '.join(bits)})" if bits else "") + (" ⚠️ ≠ fake-quant" if e.flagged else "")
    return Cell(fmt_score(e.value), sort=e.value, numeric=True, cell_id=cell_id,
                html=" ".join(p for p in parts if p), md=md)


def _engines_csv(report: Report) -> list[dict[str, Any]]:
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


def engines_section(report: Report) -> Section:
    """fp32, fake-quant and every engine's score of each scheme in one row."""
    csv = (CsvTable("engines.csv", ENGINE_COLUMNS, _engines_csv(report)),)
    title = "Accuracy on each engine, beside fake-quant"
    if not report.engines or not report.side_by_side:
        return Section("engines", title, csv=csv)
    rows = []
    for r in report.side_by_side:
        fq = esc(fmt_score(r.fakequant_value))
        if r.fakequant_anchor:
            fq = f'<a href="#acc-{r.fakequant_anchor}"><span{_mark(r.fakequant_passed)}>{fq}</span></a>'
        flagged = any(e.flagged for e in r.engines)
        rows.append(Row((
            text(r.model), text(r.task), scheme(r.scheme, r.is_peer), text(r.metric),
            num(fmt_score(r.fp32_value), r.fp32_value),
            Cell(fmt_score(r.fakequant_value), sort=r.fakequant_value, numeric=True, html=fq),
            *(_engine_cell(r, b) for b in report.engines),
        ), f"sxs-{r.anchor}", "flagged" if flagged else ""))
    columns = (Column("Model"), Column("Task"), Column("Scheme"), Column("Metric"), Column("fp32", True),
               Column("Fake-quant (torch)", True), *(Column(f"{b} (ships)", True) for b in report.engines))
    note = Note(
        html=("The number that ships is the engine's (bold; green passes the bound, red fails). "
              "<i>vs FQ</i> = engine − fake-quant in points; "
              '<span class="badge gap">≠ fake-quant</span> marks an engine further from the fake-quant '
              "score than the half-width of that engine cell's paired drop interval (CI ±). "
              "<i>changed vs torch</i> counts predictions that differ from the torch model the engine's "
              "ONNX was exported from. The fp32 scheme's torch column is the fp32 reference itself; a "
              "peer recipe has no fake-quant model."),
        md=("The engine's score is the one that ships; ⚠️ ≠ fake-quant: the engine differs from the "
            "fake-quant score by more than its paired drop CI half-width."))
    return Section("engines", title, (note, Table("engines-table", columns, tuple(rows))),
                   md_title="### Accuracy on each engine", nav="Engines", csv=csv)


# ----------------------------------------------------------------------------------------------
# peers (inside the verdict section)


def peers_blocks(report: Report) -> list:
    """Per model × task with peers: does the best QDQBERT scheme beat the best peer?"""
    if not report.peers:
        return []
    html = ['<h3>Against peer tools</h3>']
    md = ["**Against peer tools** (best = highest on-engine score among passing schemes, "
          "else among all; speed = mean latency at each shape timed for both)"]
    for p in report.peers:
        items = []
        where = f"{md_escape(p.model)} · {md_escape(p.task)}"
        for c in p.engines:
            cls = {"both": "good", "neither": "bad"}.get(c.beats, "")
            badge = f'<span class="badge outcome">{esc(c.beats)}</span>'
            items.append(f'<li id="{esc(c.anchor)}" class="{cls}" data-beats="{esc(c.beats)}">'
                         f"{badge} {esc(c.statement)}</li>")
            md.append(f"- {where}: **{md_escape(c.beats)}** — {md_escape(c.statement)}")
        if not items:
            items.append(f'<li class="note">{esc(p.note)}</li>')
            md.append(f"- {where}: {md_escape(p.note)}")
        peers = ", ".join(esc(s) for s in p.peers)
        html.append(
            f'<div class="peer" id="{esc(p.anchor)}"><b>{esc(p.model)} · {esc(p.task)}</b> '
            f'<span class="meta">(peers: {peers})</span><ul class="facts">{"".join(items)}</ul></div>')
    html.append(
        '<p class="note">Best = the highest on-engine score among the schemes that pass the '
        "bound on that engine (all of them when none passes), for QDQBERT (kind qdq) and for the "
        "peers alike. Speed compares the two schemes' mean latency at each shape timed for both "
        "on the same engine; beating on speed means faster at every such shape.</p>")
    return [Note(html="".join(html), md="\n".join(md), cls="", block_id="peers", tag="div")]


def peers_csv(report: Report) -> list[dict[str, Any]]:
    """One CSV line per peer comparison and shape timed for both (one line when none)."""
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
            for s in c.shapes or (None,):
                shape = ({"batch": s.batch, "seq": s.seq, "qdq_mean_ms": s.qdq_ms, "peer_mean_ms": s.peer_ms,
                          "shape_outcome": s.outcome} if s is not None else {})
                out.append(base | shape)
    return out


# ----------------------------------------------------------------------------------------------
# calibrators


def calibrators_section(report: Report) -> Section:
    """Per model × task: scores by calibration method, chart beside its table."""
    csv = (CsvTable("calibrators.csv", CALIBRATOR_COLUMNS, [
        {
            "model": c.model, "task": c.task, "metric": c.metric, "method": r.method,
            "calibrator": r.calibrator, "scheme": r.scheme, "scheme_kind": r.scheme_kind,
            "samples": r.samples, "seconds": r.seconds, "torch_value": r.torch_value,
            "torch_passed": r.torch_passed, "engine": r.engine, "engine_value": r.engine_value,
            "engine_passed": r.engine_passed, "fp32_value": c.fp32_value, "threshold": c.threshold,
        }
        for c in report.calibrators
        for r in c.rows
    ]),)  # fmt: skip
    if not report.calibrators:
        return Section("calibrators", "Calibrators", csv=csv)
    figures: list = []
    for c in report.calibrators:
        rows = []
        for r in c.rows:
            drop = None if r.torch_value is None or c.fp32_value is None else c.fp32_value - r.torch_value
            rows.append(Row((
                text(r.method), text(r.calibrator), scheme(r.scheme, False), num(fmt_int(r.samples), r.samples),
                num(fmt_sig(r.seconds), r.seconds), num(fmt_score(r.torch_value), r.torch_value),
                num(fmt_points(drop), drop), verdict(r.torch_passed, coloured=True),
                num(fmt_score(r.engine_value), r.engine_value), verdict(r.engine_passed, coloured=True),
            ), f"calibrow-{r.anchor}"))
        columns = (Column("Method"), Column("Calibrator"), Column("Scheme"), Column("Samples"),
                   Column("Calib. (s)"), Column("Fake-quant (torch)"), Column("Drop (pts)"), Column("Verdict"),
                   Column(c.engine), Column(f"Verdict ({c.engine})"))
        figures.append(Box("figure", f"calib-{c.anchor}", (
            Pair((Chart(calibrator_chart_svg(c, f"calibsvg-{c.anchor}")),
                  Table(f"calibtable-{c.anchor}", columns, tuple(rows), formats=HTML))),
        ), caption=(f"{esc(c.model)} · {esc(c.task)}: {esc(c.metric)} of each calibrated "
                    f"scheme by calibration method; fp32 {esc(fmt_score(c.fp32_value))} (grey dashed), "
                    f"bound threshold {esc(fmt_score(c.threshold))} (red dotted).")))
    summary = tuple(
        Row((text(c.model), text(c.task), text(r.method), text(r.calibrator), text(r.scheme),
             num(fmt_score(r.torch_value), r.torch_value), verdict(r.torch_passed),
             num(fmt_score(r.engine_value), r.engine_value), num(fmt_score(c.fp32_value), c.fp32_value),
             num(fmt_score(c.threshold), c.threshold)))
        for c in report.calibrators
        for r in c.rows
    )
    columns = (Column("Model"), Column("Task"), Column("Method"), Column("Calibrator"), Column("Scheme"),
               Column("Fake-quant (torch)", True), Column("Verdict"), Column(report.calibrators[0].engine, True),
               Column("fp32", True), Column("Threshold", True))
    figures.append(Table("calibrators-summary", columns, summary, formats=MD))
    return Section("calibrators", "Calibrators", tuple(figures), md_title="### Calibrators", nav="Calibrators",
                   csv=csv)


# ----------------------------------------------------------------------------------------------
# Pareto


def pareto_section(report: Report) -> Section:
    """Per model × task: accuracy against latency, Pareto-optimal points highlighted."""
    csv = (CsvTable("pareto.csv", PARETO_COLUMNS, [
        {
            "model": c.model, "task": c.task, "metric": c.metric, "scheme": p.scheme,
            "scheme_kind": p.scheme_kind, "peer": p.is_peer, "backend": p.backend,
            "precision": p.precision, "batch": p.batch, "seq": p.seq, "value": p.value,
            "mean_ms": p.mean_ms, "passed": p.passed, "optimal": p.optimal,
        }
        for c in report.pareto
        for p in c.points
    ]),)  # fmt: skip
    title = "Accuracy vs latency"
    if not report.pareto:
        return Section("pareto", title, csv=csv)
    blocks: list = [Note(md=(
        "Score on each backend (fake-quant for torch) against mean latency at its largest timed "
        "batch; Pareto-optimal = no other point is as accurate and as fast, and better in one."))]
    columns = (Column("Scheme"), Column("Backend"), Column("Precision"), Column("Shape"), Column("Score"),
               Column("Mean (ms)"), Column("Verdict"), Column("Pareto"))
    for c in report.pareto:
        rows = tuple(
            Row((scheme(p.scheme, p.is_peer), text(p.backend), text(p.precision),
                 Cell(fmt_shape(p.batch, p.seq), sort=p.batch), num(fmt_score(p.value), p.value),
                 num(fmt_ms(p.mean_ms), p.mean_ms), verdict(p.passed, coloured=True),
                 Cell("yes" if p.optimal else "no", sort=p.optimal,
                      html='<span class="badge optimal">Pareto-optimal</span>' if p.optimal else "no")),
                f"paretorow-{p.anchor}", "optimal" if p.optimal else "dominated")
            for p in c.points
        )
        blocks.append(Box("figure", f"pareto-{c.anchor}", (
            Pair((Chart(pareto_chart_svg(c, f"paretosvg-{c.anchor}")),
                  Table(f"paretotable-{c.anchor}", columns, rows, formats=HTML))),
        ), caption=(f"{esc(c.model)} · {esc(c.task)}: {esc(c.metric)} on each backend "
                    "(fake-quant for torch) against mean latency at that backend's largest timed batch. "
                    "A point is Pareto-optimal when no other point is at least as accurate and at least "
                    "as fast, and better in one.")))
    summary = tuple(
        Row((text(c.model), text(c.task), scheme(p.scheme, p.is_peer), text(p.backend),
             text(fmt_shape(p.batch, p.seq)), num(fmt_score(p.value), p.value), num(fmt_ms(p.mean_ms), p.mean_ms),
             text("✅ yes" if p.optimal else "no")))
        for c in report.pareto
        for p in c.points
    )
    columns = (Column("Model"), Column("Task"), Column("Scheme"), Column("Backend"), Column("Shape"),
               Column("Score", True), Column("Mean (ms)", True), Column("Pareto-optimal"))
    blocks.append(Table("pareto-summary", columns, summary, formats=MD))
    return Section("pareto", title, tuple(blocks), md_title=f"### {title}", nav=title, csv=csv)


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


def _amax_cell(cell: AmaxCell | None, lo: float | None, hi: float | None) -> Cell:
    if cell is None:
        return Cell(DASH, numeric=True, cls="amax")
    title = cell.name
    if cell.ratio is not None:
        title += f": {fmt_sig(cell.ratio)}× the median ({fmt_sig(cell.reference)})"
    return Cell(fmt_sig(cell.amax), sort=cell.amax, numeric=True, cls="amax" + (" outlier" if cell.outlier else ""),
                style=_heat(cell, lo, hi), title=title)


def _amax_box(t: AmaxTable):
    if t.problem:
        return Note(html=f"{esc(t.model)} · {esc(t.task)} · {esc(t.scheme)}: amax artifact {esc(t.problem)}",
                    block_id=f"amax-{t.anchor}")
    # The colour scale leaves outliers out (they are red anyway), so the rest keep their contrast.
    positive = [
        c.amax for c in t.cells
        if not c.outlier and c.amax is not None and math.isfinite(c.amax) and c.amax > 0
    ]  # fmt: skip
    lo, hi = min(positive, default=None), max(positive, default=None)
    rows = []
    for i, (name, cells) in enumerate(t.rows):
        layer = next((c.layer for c in cells if c is not None), None)
        rows.append(Row((Cell(name, sort=layer if layer is not None else 10**6),
                         *(_amax_cell(c, lo, hi) for c in cells)), f"amaxrow-{t.anchor}--{i}"))
    columns = (Column("Layer"), *(Column(c, html_header=f'<span title="{esc(c)}">{esc(c)}</span>') for c in t.columns))
    outliers = t.outliers
    listed = "; ".join(
        f"{c.name} = {fmt_sig(c.amax)}" + (f" ({fmt_sig(c.ratio)}× median)" if c.ratio is not None else "")
        for c in outliers[:10]
    )
    summary = (
        f"{esc(t.model)} · {esc(t.task)} · <b>{esc(t.scheme)}</b>: {len(t.cells)} quantizers, "
        f"largest amax {esc(fmt_sig(t.max_amax))}"
        + (f', <span class="bad">{len(outliers)} outlier(s)</span>' if outliers else "")
    )
    children: list = [Note(html=f"From <code>{esc(t.path)}</code>.")]
    if outliers:
        children.append(Note(html=f"Outliers: {esc(listed)}", cls="note bad"))
    children.append(Table(f"amaxtable-{t.anchor}", columns, tuple(rows), formats=HTML))
    return Box("details", f"amax-{t.anchor}", tuple(children), summary=summary, open=bool(outliers))


def _amax_blocks(report: Report) -> list:
    if not report.amax:
        return []
    rows = tuple(
        Row((text(t.model), text(t.task), text(t.scheme), text(c.name), num(fmt_sig(c.amax), c.amax),
             num(fmt_sig(c.ratio), c.ratio)))
        for t in report.amax
        for c in t.outliers
    )
    outliers_md = (
        Table("amax-outliers", (Column("Model"), Column("Task"), Column("Scheme"), Column("Quantizer"),
                                Column("amax", True), Column("× median", True)), rows, formats=MD)
        if rows else
        Note(md=f"No outliers (an amax ≥ {fmt_sig(OUTLIER_FACTOR, 1, 1)}× the median of its "
                "quantizer type across layers).")
    )
    problems = [f"- {md_escape(t.scheme)}: {md_escape(t.problem)}" for t in report.amax if t.problem]
    return [
        Heading(html="Calibrated ranges (amax)", md="### Amax outliers"),
        Note(html=("One row per encoder layer, one column per quantizer type; darker is "
                   "larger (log scale within each table). A red cell is an outlier: at least "
                   f"{fmt_sig(OUTLIER_FACTOR, 1, 1)}× the median of its quantizer type across layers "
                   f"(judged from {MIN_LAYERS_FOR_MEDIAN} layers up), or not a positive finite number; "
                   "its 256 levels are spent on a few large values.")),
        *(_amax_box(t) for t in report.amax),
        outliers_md,
        *([Note(md="\n".join(problems))] if problems else []),
    ]


def _sensitivity_blocks(report: Report) -> list:
    out: list = []
    for v in report.sensitivity:
        extra = any(p.quantized_only_loss is not None or p.float_only_gain is not None for p in v.parts)
        rows = []
        for i, p in enumerate(v.parts):
            cells = [num(fmt_int(p.rank), p.rank), text(p.part), text(p.kind), text(p.group),
                     num(fmt_int(p.layer), p.layer), num(fmt_int(p.quantizers), p.quantizers),
                     num(fmt_sig(p.only_quantized), p.only_quantized), num(fmt_sig(p.only_float), p.only_float)]
            if extra:
                cells += [num(fmt_sig(p.quantized_only_loss), p.quantized_only_loss),
                          num(fmt_sig(p.float_only_gain), p.float_only_gain)]
            rows.append(Row(tuple(cells), f"sensrow-{v.anchor}--{i}"))
        unit = f" ({v.unit})" if v.unit else ""
        columns = [Column("Rank", True), Column("Part"), Column("Kind"), Column("Group", formats=HTML),
                   Column("Layer", formats=HTML), Column("Quantizers", True), Column(f"Only quantized{unit}", True),
                   Column(f"Only float{unit}", True)]
        if extra:
            columns += [Column(f"Loss quantized alone{unit}", formats=HTML),
                        Column(f"Gain float alone{unit}", formats=HTML)]
        where = f"{esc(v.model)} · {esc(v.task)} · {esc(v.scheme)}"
        md_unit = f" ({md_escape(v.unit)})" if v.unit else ""
        note = (f"Proxy <b>{esc(v.proxy or DASH)}</b>{esc(unit)}; ranking: {esc(v.ranking_rule or DASH)}; "
                f"every part quantized {esc(fmt_sig(v.full_score))}, nothing quantized "
                f"{esc(fmt_sig(v.float_score))}. Rank 1 is the most harmful part.")
        table = Table(f"senstable-{v.anchor}", tuple(columns), tuple(rows))
        out += [
            Box("figure", f"sens-{v.anchor}", (
                Heading(html=f"Sensitivity: {where}"), Note(html=note),
                Pair((Chart(sensitivity_chart_svg(v, f"senssvg-{v.anchor}")), table)),
            )),
            Heading(md=(f"### Sensitivity: {md_escape(v.model)} · {md_escape(v.task)} · {md_escape(v.scheme)}\n"
                        f"Proxy {md_escape(v.proxy or DASH)}{md_unit}; ranking: {md_escape(v.ranking_rule or DASH)}.")),
            Table(table.table_id, table.columns, table.rows, formats=MD),
        ]
    return out


def _part_cost_blocks(t) -> list:
    if not t.part_costs:
        return []
    rows = tuple(
        Row((Cell(c.part, sort=c.part), num(fmt_int(c.quantizers), c.quantizers),
             num(fmt_ms(c.latency_ms), c.latency_ms), num(fmt_delta_ms(c.delta_ms), c.delta_ms)),
            f"partcost-{t.anchor}--{i}")
        for i, c in enumerate(t.part_costs)
    )
    columns = (Column(PART_COST_HEADERS[0]), *(Column(h, True) for h in PART_COST_HEADERS[1:]))
    return [Note(html=esc(part_costs_note(t)), md=md_escape(part_costs_note(t))),
            Table(f"partcosts-{t.anchor}", columns, rows)]


def _fmt_drop(s) -> str:
    """A candidate's drop on the selection data with its interval, in points ('1.20 [0.80, 1.60]')."""
    if s.drop is None:
        return DASH
    shown = fmt_points(s.drop)
    if s.drop_ci_low is not None and s.drop_ci_high is not None:
        shown += " " + fmt_ci_points(s.drop_ci_low, s.drop_ci_high)
    return shown


def _trace_blocks(report: Report) -> list:
    out: list = []
    for t in report.traces:
        rows = tuple(
            Row((num(str(i + 1), i + 1),
                 Cell(s.name, sort=s.name, html=esc(s.name) + (' <span class="badge chosen">chosen</span>'
                                                                 if s.chosen else ""),
                      md=s.name + (" ⭐ chosen" if s.chosen else "")),
                 text(s.stage), num(fmt_score(s.value), s.value),
                 verdict(s.passed, coloured=True, md=fmt_verdict(s.passed)), num(fmt_ms(s.latency_ms), s.latency_ms),
                 num(fmt_int(s.evaluations), s.evaluations), num(fmt_sig(s.seconds), s.seconds),
                 Cell(_fmt_drop(s), sort=s.drop_ci_high if s.drop_ci_high is not None else s.drop, numeric=True),
                 text(s.structure), text(s.error, cls="error")), f"tracerow-{t.anchor}--{i}",
                "chosen" if s.chosen else "")
            for i, s in enumerate(t.steps)
        )
        columns = (Column("#", True), Column("Candidate"), Column("Stage"), Column("Value", True), Column("Passed"),
                   Column("Latency (ms)", True), Column("Evaluations", True), Column("Seconds", True),
                   Column("Drop [CI] (pts)", True), Column("Structure", formats=HTML), Column("Error", formats=HTML))
        facts = [f"chosen: <b>{esc(t.chosen or DASH)}</b>"]
        if t.threshold is not None:
            facts.append(f"threshold {esc(fmt_score(t.threshold))}")
        if t.selection:
            facts.append(esc(t.selection))
        if t.scored_on:
            facts.append(esc(t.scored_on))
        where = f"{esc(t.model)} · {esc(t.task)} · {esc(t.scheme)}"
        md_where = f"{md_escape(t.model)} · {md_escape(t.task)} · {md_escape(t.scheme)}"
        table = Table(f"tracetable-{t.anchor}", columns, rows)
        out += [
            Box("div", f"trace-{t.anchor}", (
                Heading(html=f"What the auto recipe tried: {where}"),
                Note(html=f"{'; '.join(facts)}. Values are the primary metric on the selection data (a held-out "
                          "training slice, or the dev set's selection part), never the data of the verdict."),
                Table(table.table_id, columns, rows, formats=HTML),
                *_part_cost_blocks(t),
            )),
            Heading(md=f"### What the auto recipe tried: {md_where}\nChosen: **{md_escape(t.chosen or DASH)}**"
                       + (f"; {md_escape(t.scored_on)}." if t.scored_on else ".")),
            Table(table.table_id, columns, rows, formats=MD),
            *(_md_only(b) for b in _part_cost_blocks(t)),
        ]
    return out


def _md_only(block):
    """The Markdown side of a block that HTML shows inside a container."""
    if isinstance(block, Table):
        return Table(block.table_id, block.columns, block.rows, block.sortable, formats=MD)
    return Note(md=block.md, cls=block.cls)


def _layers_csv(report: Report) -> tuple[CsvTable, ...]:
    return (
        CsvTable("amax.csv", AMAX_COLUMNS, [
            {
                "model": t.model, "task": t.task, "scheme": t.scheme, "quantizer": c.name,
                "layer": c.layer, "column": c.column, "weight": c.is_weight, "amax": c.amax,
                "median": c.reference, "ratio": c.ratio, "outlier": c.outlier,
            }
            for t in report.amax
            for c in t.cells
        ]),
        CsvTable("sensitivity.csv", SENSITIVITY_COLUMNS, [
            {
                "model": v.model, "task": v.task, "scheme": v.scheme, "proxy": v.proxy,
                "unit": v.unit, "rank": p.rank, "part": p.part, "kind": p.kind, "group": p.group,
                "layer": p.layer, "quantizers": p.quantizers, "only_quantized": p.only_quantized,
                "only_float": p.only_float, "quantized_only_loss": p.quantized_only_loss,
                "float_only_gain": p.float_only_gain,
            }
            for v in report.sensitivity
            for p in v.parts
        ]),
        CsvTable("recipe_trace.csv", TRACE_COLUMNS, [
            {
                "model": t.model, "task": t.task, "scheme": t.scheme, "step": i + 1, "name": s.name,
                "stage": s.stage, "value": s.value, "passed": s.passed, "latency_ms": s.latency_ms,
                "evaluations": s.evaluations, "seconds": s.seconds, "chosen": s.chosen,
                "error": s.error, "drop": s.drop, "drop_ci_low": s.drop_ci_low,
                "drop_ci_high": s.drop_ci_high, "structure": s.structure,
            }
            for t in report.traces
            for i, s in enumerate(t.steps)
        ]),
        CsvTable("float_part_costs.csv", PART_COST_COLUMNS, [
            {
                "model": t.model, "task": t.task, "scheme": t.scheme, "part": c.part,
                "quantizers": c.quantizers, "latency_ms": c.latency_ms, "delta_ms": c.delta_ms,
                "full_int8_ms": t.full_int8_ms, "chosen_ms": t.chosen_ms,
            }
            for t in report.traces
            for c in t.part_costs
        ]),
    )  # fmt: skip


def layers_section(report: Report) -> Section:
    """Amax heat tables, sensitivity charts and the auto recipe's trace, where the run has them."""
    blocks = (*_amax_blocks(report), *_sensitivity_blocks(report), *_trace_blocks(report))
    return Section("layers", "Per layer", blocks, nav="Per layer", csv=_layers_csv(report))
