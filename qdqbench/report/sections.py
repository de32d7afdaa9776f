"""The report's sections, in order: each built once from the row model, for every format.

``SECTIONS`` is the one ordered list; ``build_sections(report)`` calls each builder. A builder
takes the ``Report`` (``rows.build_report``) and returns one ``blocks.Section``: its tables of
typed cells, notes, charts and CSV files. The HTML, Markdown and CSV renderers
(``report/render/``) walk the list and never build rows of their own. To add a section: write one
builder here (or in ``view_sections``) and add it to ``SECTIONS`` (CONTRIBUTING.md shows how).

Where the formats differ on purpose (a chart only in HTML, a shorter header in Markdown, a badge
in HTML and "(peer)" in Markdown) the difference is written in the cell or block, beside the
common form. CSV keeps raw stored numbers (see ``render/csv.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from qdqbench.report import timeshare
from qdqbench.report.blocks import (
    HTML,
    PEER_BADGE,
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
    code,
    num,
    scheme,
    text,
    verdict,
    verdict_mark,
)
from qdqbench.report.charts import throughput_chart_svg
from qdqbench.report.htmlparts import esc, verdict_class
from qdqbench.report.mdparts import md_escape
from qdqbench.report.model import PartScore
from qdqbench.report.rows import (
    DASH,
    LatencyRow,
    Report,
    best_label,
    fmt_bound,
    fmt_changed,
    fmt_ci_points,
    fmt_db,
    fmt_fp32_configs,
    fmt_headline,
    fmt_int,
    fmt_method,
    fmt_ms,
    fmt_part,
    fmt_pct,
    fmt_points,
    fmt_ratio,
    fmt_score,
    fmt_shape,
    fmt_sig,
    fmt_speedup,
    fmt_throughput,
    fmt_verdict,
    label,
)
from qdqbench.report.view_sections import (
    PEER_COLUMNS,
    calibrators_section,
    engines_section,
    layers_section,
    pareto_section,
    peers_blocks,
    peers_csv,
)
from qdqbench.report.views import MLPERF_STYLE_NOTE

ACCURACY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "peer", "backend", "precision", "metric",
    "fp32_value", "value", "value_ci_low", "value_ci_high", "drop", "relative_drop",
    "drop_ci_low", "drop_ci_high", "within_noise", "changed", "examples", "bound", "bound_mode",
    "threshold", "passed",
)  # fmt: skip

LATENCY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "peer", "backend", "precision", "batch", "seq",
    "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "cov",
    "throughput", "baseline_scheme", "baseline_mean_ms", "baseline_throughput", "speedup_latency",
    "speedup_throughput", "iterations", "warmup_iters", "threads", "method", "fp32_config",
    "peak_rss_mb", "model_rss_mb", "load_s", "peak_gpu_mem_mb", "x_floor", "energy_j",
)  # fmt: skip

MLPERF_STYLE_COLUMNS = (
    "model", "task", "scheme", "is_peer", "backend", "precision", "seq", "singlestream_p90_ms",
    "offline_throughput", "offline_batch",
)  # fmt: skip

FIDELITY_COLUMNS = (
    "cell", "model", "task", "scheme", "scheme_kind", "backend", "precision", "cosine_mean",
    "cosine_min", "sqnr_db", "nn_agreement", "examples", "reference", "passed",
)  # fmt: skip

# The columns most tables start with.
MODEL_TASK = (Column("Model"), Column("Task"))
WHERE = (*MODEL_TASK, Column("Scheme"), Column("Backend"), Column("Precision"))


def _where(row) -> str:
    return f"{esc(row.model)} · {esc(row.task)}"


def speedup(x: float | None) -> Cell:
    """A speedup cell, green when faster than its baseline and red when slower (HTML)."""
    cls = "" if x is None else "faster" if x > 1.0 else "slower" if x < 1.0 else ""
    return num(fmt_speedup(x), x, cls)


# ----------------------------------------------------------------------------------------------
# verdict


def _headline(report: Report) -> Note:
    s = report.summary
    cls = {None: "", True: "pass", False: "fail"}[s.passed]
    mark = {None: "", True: "✅ ", False: "❌ "}[s.passed]
    md = f"{mark}**{md_escape(fmt_headline(report))}**"
    if s.verdicts_total:
        md += f"; {s.verdicts_passing} of {s.verdicts_total} quantized accuracy cells pass."
    return Note(html=esc(fmt_headline(report)), md=md, cls=f"headline {cls}", block_id="headline", tag="div")


def _facts(report: Report) -> Note:
    s = report.summary
    html, md = [], []
    if s.verdicts_total:
        html.append(f"<li>Quantized accuracy cells passing: <b>{s.verdicts_passing} of "
                    f"{s.verdicts_total}</b></li>")
    if s.pairs_unjudged:
        html.append(f'<li class="bad">{s.pairs_unjudged} model × task pair(s) have no verdict '
                    "(their quantized cells did not finish) and count as not passing</li>")
    w = s.worst_regression
    if w is not None:
        html.append(
            f'<li>Worst regression: <a href="#acc-{w.anchor}">{esc(label(w))}</a> on {_where(w)}: '
            f"drop <b>{esc(fmt_points(w.drop))} pts</b> ({esc(fmt_pct(w.relative_drop))} relative)"
            f", {esc(w.metric)} {esc(fmt_score(w.fp32_value))} → {esc(fmt_score(w.value))}, "
            f'<span class="{"good" if w.passed else "bad"}">{fmt_verdict(w.passed)}</span></li>')
        md.append(f"- Worst regression: {md_escape(label(w))} on {md_escape(w.model)} · "
                  f"{md_escape(w.task)}: drop {fmt_points(w.drop)} pts ({fmt_pct(w.relative_drop)} "
                  f"relative), {verdict_mark(w.passed)}")
    b = s.best_speedup
    if b is not None:
        html.append(
            f'<li>Best speedup over fp32: <a href="#lat-{b.anchor}">'
            f"<b>{esc(fmt_speedup(b.speedup_latency))}</b></a> mean latency "
            f"({esc(fmt_ms(b.mean_ms))} ms vs {esc(fmt_ms(b.baseline_mean_ms))} ms "
            f"{esc(b.baseline_scheme)}) for {esc(label(b))} on {_where(b)}, "
            f"batch×seq {esc(fmt_shape(b.batch, b.seq))}</li>")
        md.append(f"- Best speedup over fp32: {fmt_speedup(b.speedup_latency)} mean latency, "
                  f"{md_escape(label(b))} on {md_escape(b.model)} · {md_escape(b.task)}, "
                  f"batch {b.batch} × seq {b.seq}")
    if s.pairs_unjudged:
        md.append(f"- ⚠️ {s.pairs_unjudged} model × task pair(s) have no verdict")
    plural = "s" if s.failed_cells != 1 else ""
    if s.failed_cells:
        html.append(f'<li class="bad"><a href="#failed">{s.failed_cells} failed cell{plural}</a></li>')
        md.append(f"- ❌ **{s.failed_cells} failed cell{plural}**")
    else:
        html.append('<li class="good">No failed cells</li>')
        md.append("- No failed cells")
    if s.skipped_cells:
        html.append(f'<li><a href="#failed">{s.skipped_cells} skipped</a></li>')
        md.append(f"- {s.skipped_cells} skipped cell(s)")
    html.append(f"<li>Cells finished: {s.ok_cells}</li>")
    return Note(html="".join(html), md="\n".join(md), cls="facts", tag="ul")


def verdict_section(report: Report) -> Section:
    """The headline, the facts behind it, one row per model × task, and the peer statements."""
    rows = []
    for p in report.pairs:
        best, worst = p.best, p.worst
        rows.append(Row((
            text(p.model),
            text(p.task),
            verdict(p.passed, "no verdict", md=verdict_mark(p.passed) if p.n_quantized else "❌ no verdict"),
            num(f"{p.n_passing} / {p.n_quantized}", p.n_passing),
            text(best_label(p) if best else None),
            num(fmt_score(best.value) if best else DASH, best.value if best else None),
            num(fmt_points(best.drop) if best else DASH, best.drop if best else None),
            num(fmt_points(worst.drop) if worst else DASH, worst.drop if worst else None),
        ), f"pair-{p.anchor}", "pass" if p.passed else "fail"))
    columns = (*MODEL_TASK, Column("Verdict"), Column("Passing", True), Column("Best scheme"),
               Column("Best value", True), Column("Best drop (pts)", True),
               Column("Worst drop (pts)", True, HTML))
    blocks = [_headline(report), _facts(report)]
    if rows:
        blocks += [
            Table("pairs-table", columns, tuple(rows)),
            Note(html="Best scheme: the highest score among passing quantized schemes, or the highest "
                      "score when none passes. Drop = fp32 − quantized, in percent points."),
        ]
    blocks += peers_blocks(report)
    return Section("verdict", "Verdict", tuple(blocks), nav="Verdict",
                   csv=(CsvTable("peers.csv", PEER_COLUMNS, peers_csv(report)),))


# ----------------------------------------------------------------------------------------------
# accuracy, fidelity


def accuracy_section(report: Report) -> Section:
    """Every accuracy cell: score, fp32, drop and its interval, changed predictions, verdict."""
    rows = []
    for a in report.accuracy:
        value = esc(fmt_score(a.value))
        if a.value_ci_low is not None and a.value_ci_high is not None:
            value += f' <span class="ci">{esc(fmt_ci_points(a.value_ci_low, a.value_ci_high))}</span>'
        ci = fmt_ci_points(a.drop_ci_low, a.drop_ci_high)
        ci_html = esc(ci) + (' <span class="badge noise">within noise</span>' if a.within_noise else "")
        others = "; ".join(f"{n} {fmt_score(v)}" for n, v in a.other_metrics)
        metric = esc(a.metric) + (f' <span class="ci">({esc(others)})</span>' if others else "")
        cls = verdict_class(a.passed) or ("baseline" if not a.is_quantized else "")
        rows.append(Row((
            text(a.model),
            text(a.task),
            scheme(a.scheme, a.is_peer),
            text(a.backend),
            text(a.precision),
            Cell(a.metric, sort=a.metric, html=metric),
            num(fmt_score(a.fp32_value), a.fp32_value),
            Cell(fmt_score(a.value), sort=a.value, numeric=True, html=value),
            num(fmt_points(a.drop), a.drop),
            num(fmt_pct(a.relative_drop), a.relative_drop),
            Cell(ci, sort=a.drop_ci_low, numeric=True, html=ci_html, md=ci + (" (noise)" if a.within_noise else "")),
            num(fmt_changed(a.changed, a.examples), a.changed),
            verdict(a.passed),
        ), f"acc-{a.anchor}", cls))
    columns = (*WHERE, Column("Metric"), Column("fp32", True), Column("Value", True),
               Column("Drop (pts)", True), Column("Rel. drop", True), Column("Drop CI (pts)"),
               Column("Changed", True), Column("Verdict"))
    bound = fmt_bound(report.bound, report.bound_mode)
    note = Note(
        html=(f"Scores in percent points. Bound: {esc(bound)}, "
              "stored with each verdict by the run (not recomputed here). Drop = fp32 − quantized; "
              "Drop CI is the paired bootstrap interval over examples, and <i>within noise</i> means it "
              "contains 0. Value CI is the bootstrap interval of the score. Changed = predictions that "
              "differ from fp32. Precision <code>int8-fakequant</code> is the Q/DQ model simulated in "
              "torch; <code>int8</code> is a real integer engine. A "
              f"{PEER_BADGE} scheme is a peer tool's recipe (ONNX Runtime quantization, ModelOpt) "
              "built from the fp32 export, not a QDQBERT variant."),
        md=(f"Scores in percent points; drop = fp32 − quantized; bound: {bound}; (peer) marks a peer "
            "tool's recipe."))
    blocks = (note, Table("accuracy-table", columns, tuple(rows)), *_split_parts(report)) if rows else ()
    return Section("accuracy", "Accuracy", blocks, md_title="### Accuracy", nav="Accuracy",
                   csv=(CsvTable("accuracy.csv", ACCURACY_COLUMNS, report.accuracy),))


def _split_parts(report: Report) -> list[Note]:
    """recipe: auto schemes judged on the test part of a split evaluation set: every part."""
    split = [a for a in report.accuracy if a.parts]
    if not split:
        return []
    lead = ("recipe: auto chose on a selection part of the evaluation set; the rows above show the test "
            "part (fp32, value, drop and verdict), which it never saw. Every part:")
    items = [(f"{a.model} · {a.task} · {a.scheme} · {a.backend}",
              "; ".join(fmt_part(p.part, p.contains, p.examples, p.value, p.drop, p.drop_ci_low, p.drop_ci_high,
                                 p.passed) for p in a.parts)) for a in split]
    return [Note(html=esc(lead), md="\n".join([lead, *(f"- {md_escape(w)}: {md_escape(t)}" for w, t in items)])),
            Note(html="".join(f"<li>{esc(w)}: {esc(t)}</li>" for w, t in items), tag="ul"),
            *_same_test_part(report)]


def _same_test_part(report: Report) -> list[Note]:
    """Every scheme on the test part an auto scheme was judged on: the same examples, side by side."""
    groups: dict[tuple[str, str, str], list[tuple[str, PartScore]]] = {}
    for a in report.accuracy:
        part = a.parts[0] if a.parts and a.parts[0].part == "test" else a.test_part
        if part is not None:
            groups.setdefault((a.model, a.task, a.backend), []).append((a.scheme, part))
    blocks: list[Note] = []
    for (model, task, backend), scored in groups.items():
        if len(scored) < 2:
            continue
        auto = next((a.test_part_of for a in report.accuracy if a.test_part_of and a.model == model
                     and a.task == task), None)
        lead = (f"{model} · {task} · {backend}: every scheme on the same test part"
                f"{f' (the examples {auto} never saw)' if auto else ''}; only the auto scheme's verdict "
                "is taken there, the others' verdicts above are the full set's:")
        items = [f"{scheme}: {fmt_score(p.value)}, " + ("the reference" if p.drop is None else
                 f"drop {fmt_points(p.drop)} {fmt_ci_points(p.drop_ci_low, p.drop_ci_high)} "
                 f"{fmt_verdict(p.passed)}") for scheme, p in scored]
        blocks.append(Note(html=esc(lead), md="\n".join([lead, *(f"- {md_escape(t)}" for t in items)])))
        blocks.append(Note(html="".join(f"<li>{esc(t)}</li>" for t in items), tag="ul"))
    return blocks


def fidelity_section(report: Report) -> Section:
    """INT8 against fp32 outputs: cosine, SQNR, nearest-neighbour agreement."""
    judged = any(f.passed is not None for f in report.fidelity)
    rows = []
    for f in report.fidelity:
        cells = [
            text(f.model), text(f.task), text(f.scheme), text(f.backend), text(f.precision),
            num(fmt_ratio(f.cosine_mean), f.cosine_mean),
            num(fmt_ratio(f.cosine_min), f.cosine_min),
            num(fmt_db(f.sqnr_db), f.sqnr_db),
            num(fmt_pct(f.nn_agreement), f.nn_agreement),
            num(fmt_int(f.examples), f.examples),
            text(f.reference),
        ]
        if judged:
            cells.append(verdict(f.passed))
        rows.append(Row(tuple(cells), f"fid-{f.anchor}", verdict_class(f.passed)))
    columns = [*WHERE, Column("Cosine mean", True), Column("Cosine min", True), Column("SQNR (dB)", True),
               Column("NN agreement", True), Column("Examples", True), Column("Reference", formats=HTML)]
    if judged:
        columns.append(Column("Verdict", formats=HTML))
    note = Note(html=(
        "Quantized outputs against the fp32 reference on the same inputs: cosine similarity "
        "(1 = identical direction), signal-to-quantization-noise ratio (higher is better) and "
        "nearest-neighbour agreement (share of examples whose nearest neighbour is unchanged)."))
    blocks = (note, Table("fidelity-table", tuple(columns), tuple(rows))) if rows else ()
    return Section("fidelity", "Fidelity", blocks, md_title="### Fidelity", nav="Fidelity",
                   csv=(CsvTable("fidelity.csv", FIDELITY_COLUMNS, report.fidelity),))


# ----------------------------------------------------------------------------------------------
# latency


LATENCY_NUMBERS = (
    Column("Mean (ms)", True), Column("p50 (ms)", True), Column("p90 (ms)", True), Column("p99 (ms)", True),
    Column("Throughput (seq/s)", True), Column("Speedup (latency)", True, md_header="Speedup (lat.)"),
    Column("Speedup (throughput)", True, md_header="Speedup (thr.)"), Column("CoV", True),
    Column("Peak RSS (MB)", True), Column("Model RSS (MB)", True), Column("Load (s)", True),
    Column("× GEMM floor", True), Column("Energy (J/inference)", True),
)


def _latency_cells(lat: LatencyRow) -> tuple[Cell, ...]:
    return (
        num(fmt_ms(lat.mean_ms), lat.mean_ms),
        num(fmt_ms(lat.p50_ms), lat.p50_ms),
        num(fmt_ms(lat.p90_ms), lat.p90_ms),
        num(fmt_ms(lat.p99_ms), lat.p99_ms),
        num(fmt_throughput(lat.throughput), lat.throughput),
        speedup(lat.speedup_latency),
        speedup(lat.speedup_throughput),
        num(fmt_pct(lat.cov, 1), lat.cov),
        num(fmt_sig(lat.peak_rss_mb), lat.peak_rss_mb),
        num(fmt_sig(lat.model_rss_mb), lat.model_rss_mb),
        num(fmt_sig(lat.load_s), lat.load_s),
        num(fmt_speedup(lat.x_floor), lat.x_floor),
        num(fmt_sig(lat.energy_j), lat.energy_j),
    )


RESOURCES_NOTE = (
    "Peak RSS = the worker process's peak resident memory; model RSS = its growth over the worker's "
    "memory right before the engine's prepare(); load = seconds of prepare() (session creation / "
    "compile / engine build or deserialize)."
)


def _method_notes(report: Report) -> list[Note]:
    configs = fmt_fp32_configs(report)
    methods = "; ".join(f"{md_escape(m.backend)}: {md_escape(fmt_method(m))}" for m in report.methods)
    md = ("Speedups against the fp32 scheme of the same model, task, backend and shape in this run. "
          f"Method: {methods}." + (f" {md_escape(configs)}" if configs else ""))
    if not report.methods:
        return [Note(md=md)]
    html = (
        "Method: each latency cell is timed after warm-up over many iterations; "
        "speedup (latency) = fp32 mean / mean and speedup (throughput) = throughput / fp32 "
        "throughput, both against the fp32 scheme of the same model, task, backend and shape "
        f"<em>in this run</em> (— when that baseline is missing). CoV = std / mean. {RESOURCES_NOTE}"
        + (f" {esc(configs)}" if configs else "")
    )
    items = "".join(
        f"<li><b>{esc(m.backend)}</b>: {esc(fmt_method(m))} ({m.cells} cell{'s' if m.cells != 1 else ''})</li>"
        for m in report.methods
    )
    return [Note(html=html, md=md), Note(html=items, tag="ul")]


def _mlperf_blocks(report: Report) -> list:
    if not report.mlperf_style:
        return []
    rows = tuple(
        Row((
            text(m.model), text(m.task), scheme(m.scheme, m.is_peer), text(m.backend), text(m.precision),
            num(fmt_int(m.seq), m.seq),
            num(fmt_ms(m.singlestream_p90_ms), m.singlestream_p90_ms),
            num(fmt_throughput(m.offline_throughput), m.offline_throughput),
            num(fmt_int(m.offline_batch), m.offline_batch),
        ), f"mlperf-{i}")
        for i, m in enumerate(report.mlperf_style)
    )
    columns = (*WHERE, Column("Seq", True), Column("MLPerf-style SingleStream p90 (b1) (ms)", True),
               Column("Offline-style throughput (largest batch) (seq/s)", True), Column("Largest batch", True))
    return [
        Heading(html="MLPerf-style figures", md="#### MLPerf-style figures", anchor="mlperf-style"),
        Note(html=esc(MLPERF_STYLE_NOTE), md=md_escape(MLPERF_STYLE_NOTE)),
        Table("mlperf-style-table", columns, rows),
    ]


def _time_share_blocks(t: timeshare.Table | None) -> list:
    """"Where the time goes" (``report.timeshare``): heading, notes, the shares table."""
    if t is None:
        return []
    columns = tuple(Column(c, k != "text") for c, k in zip(t.columns, t.kinds))
    rows = tuple(
        Row(tuple(num(shown, raw) if k != "text" else text(shown) for shown, raw, k in zip(cells, row, t.kinds)),
            f"{t.anchor}-{i}")
        for i, (cells, row) in enumerate(zip(t.text_rows(), t.rows))
    )
    return [Heading(html=esc(t.title), md=f"#### {t.title}", anchor=t.anchor),
            *[Note(html=esc(n), md=md_escape(n)) for n in t.notes],
            Table(f"{t.anchor}-table", columns, rows)]


def latency_section(report: Report) -> Section:
    """Every latency cell with its speedups, resources and the timing method; MLPerf-style figures."""
    rows = tuple(
        Row((text(lat.model), text(lat.task), scheme(lat.scheme, lat.is_peer), text(lat.backend),
             text(lat.precision), num(fmt_int(lat.batch), lat.batch), num(fmt_int(lat.seq), lat.seq),
             *_latency_cells(lat)), f"lat-{lat.anchor}", "baseline" if lat.is_baseline else "")
        for lat in report.latency
    )
    columns = (*WHERE, Column("Batch", True), Column("Seq", True), *LATENCY_NUMBERS)
    blocks = ()
    if rows:
        blocks = (*_method_notes(report), Table("latency-table", columns, rows),
                  Note(md=RESOURCES_NOTE), *_mlperf_blocks(report), *_time_share_blocks(report.time_shares))
    return Section("latency", "Latency and throughput", blocks, md_title="### Latency", nav="Latency",
                   csv=(CsvTable("latency.csv", LATENCY_COLUMNS, report.latency),
                        CsvTable("mlperf_style.csv", MLPERF_STYLE_COLUMNS, report.mlperf_style),
                        CsvTable("where_time_goes.csv", *timeshare.csv_table(report.time_shares))))


def charts_section(report: Report) -> Section:
    """Throughput against batch size per model × task × backend, each chart beside its numbers."""
    figures = []
    columns = (Column("Scheme"), Column("Precision"), Column("Batch", True), Column("Seq", True),
               Column("Throughput (seq/s)", True), Column("Mean (ms)", True), Column("Speedup (thr.)", True))
    for c in report.charts:
        rows = tuple(
            Row((scheme(lat.scheme, lat.is_peer), text(lat.precision), num(fmt_int(lat.batch), lat.batch),
                 num(fmt_int(lat.seq), lat.seq), num(fmt_throughput(lat.throughput), lat.throughput),
                 num(fmt_ms(lat.mean_ms), lat.mean_ms), speedup(lat.speedup_throughput)),
                f"chartrow-{lat.anchor}", "baseline" if lat.is_baseline else "")
            for lat in c.rows
        )
        figures.append(Box("figure", f"chart-{c.anchor}", (
            Pair((Chart(throughput_chart_svg(c, f"svg-{c.anchor}")),
                  Table(f"chart-table-{c.anchor}", columns, rows, formats=HTML))),
        ), caption=(f"{esc(c.model)} · {esc(c.task)} · {esc(c.backend)}: throughput "
                    "(sequences per second) against batch size; fp32 dashed.")))
    return Section("charts", "Throughput vs batch", tuple(figures), nav="Charts")


# ----------------------------------------------------------------------------------------------
# exports, failed cells, environment


def exports_section(report: Report) -> Section:
    """Every ONNX export: size, Q/DQ nodes, path."""
    rows = tuple(
        Row((text(x.model), text(x.task), text(x.scheme), num(fmt_sig(x.onnx_mb, 4, 1), x.onnx_mb),
             num(fmt_speedup(x.size_ratio), x.size_ratio),
             num(fmt_int(x.qdq_nodes), x.qdq_nodes), code(x.path, sort=x.path or "")), f"exp-{x.anchor}")
        for x in report.exports
    )
    columns = (*MODEL_TASK, Column("Scheme"), Column("ONNX (MB)", True), Column("Size vs fp32", True),
               Column("Q/DQ nodes", True), Column("Path"))
    blocks = (Table("export-table", columns, rows, formats=HTML),) if rows else ()
    return Section("exports", "ONNX exports", blocks, nav="Exports")


def failed_section(report: Report) -> Section:
    """Every failed or skipped cell with its one-line error."""
    n = report.summary.failed_cells
    common = {"nav": f"Failed ({n})" if n else "Failed", "nav_cls": "bad" if n else ""}
    if not report.failed:
        return Section("failed", "Failed cells", (Note(html="No failed or skipped cells.", cls="good"),), **common)
    rows = tuple(
        Row((code(f.cell, sort=f.cell), text(f.status, cls="status"), text(f.model), text(f.task), text(f.scheme),
             text(f.backend), text(f.kind), text(f.error, cls="error")), f"fail-{f.anchor}", f.status)
        for f in report.failed
    )
    columns = (Column("Cell"), Column("Status"), Column("Model", formats=HTML), Column("Task", formats=HTML),
               Column("Scheme", formats=HTML), Column("Backend", formats=HTML), Column("Kind", formats=HTML),
               Column("Error"))
    title_html = f'Failed cells <span class="bad">({n})</span>' if n else None
    return Section("failed", "Failed cells", (Table("failed-table", columns, rows),),
                   md_title="### Failed and skipped cells", title_html=title_html, **common)


def environment_section(report: Report) -> Section:
    """How each backend was timed (with its engine facts), and the run's versions and machine."""
    blocks: list = []
    if report.methods:
        rows = tuple(
            Row((text(m.backend), text(m.method), num(fmt_int(m.warmup_iters), m.warmup_iters),
                 num(fmt_int(m.iterations), m.iterations), num(fmt_int(m.threads), m.threads),
                 num(str(m.cells), m.cells),
                 Cell(DASH, html="<br>".join(f"{esc(k)}: {esc(v)}" for k, v in m.facts) or DASH)), f"method-{i}")
            for i, m in enumerate(report.methods)
        )
        columns = (Column("Backend"), Column("Timing method"), Column("Warm-up", True), Column("Iterations", True),
                   Column("Threads", True), Column("Cells", True), Column("Engine facts"))
        blocks += [Heading(html="Timing"), Table("method-table", columns, rows, sortable=False, formats=HTML)]
    if report.environment:
        rows = tuple(Row((text(r.section), text(r.key), code(r.value, sort=r.value)), f"env-{i}")
                     for i, r in enumerate(report.environment))
        blocks += [Heading(html="Run"), Table("env-table", (Column("Section"), Column("Key"), Column("Value")),
                                              rows, sortable=False, formats=HTML)]
    else:
        blocks.append(Note(html="No run.json: versions and machine unknown."))
    return Section("environment", "Environment and method", tuple(blocks), nav="Environment")


# ----------------------------------------------------------------------------------------------
# the list

SectionBuilder = Callable[[Report], Section]

# The report, in order. HTML shows every section with an HTML block, Markdown every section with
# a Markdown block, and CSV writes every section's files (in this order).
SECTIONS: tuple[SectionBuilder, ...] = (
    verdict_section,
    accuracy_section,
    engines_section,
    calibrators_section,
    pareto_section,
    fidelity_section,
    latency_section,
    charts_section,
    layers_section,
    exports_section,
    failed_section,
    environment_section,
)


def build_sections(report: Report) -> list[Section]:
    """Every section of the report, in order, built once for all the renderers."""
    return [build(report) for build in SECTIONS]


__all__ = ["ACCURACY_COLUMNS", "FIDELITY_COLUMNS", "LATENCY_COLUMNS", "SECTIONS",
           "build_sections"]
