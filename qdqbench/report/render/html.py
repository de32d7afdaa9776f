"""Render a ``Report`` as one self-contained HTML page: the verdict first, then the numbers.

The page opens offline: CSS and a few lines of vanilla JavaScript (click a table header to sort)
are inline, charts are inline SVG, and nothing is fetched from anywhere; a Content-Security-Policy
meta tag that allows only this page's own script (by hash) backs that up. Every string that came
from a suite or a run (model names, errors, paths, versions) passes through ``html.escape``.
Rows carry stable ids (``acc-<cell>``, ``lat-<cell>``, ``fid-<cell>``, ``fail-<cell>``,
``pair-<model>-<task>``, ``chart-<model>-<task>-<backend>``) so tests and links can target them;
the views' sections (``html_views``) follow the same pattern.
"""

from __future__ import annotations

import base64
import hashlib

from qdqbench import __version__
from qdqbench.report.charts import throughput_chart_svg
from qdqbench.report.html_views import (
    PEER_BADGE,
    calibrators_section,
    engines_section,
    layers_section,
    pareto_section,
    peers_block,
    scheme_td,
)
from qdqbench.report.htmlparts import (
    esc,
    num_td,
    table_html,
    td,
    text_td,
    tr,
    verdict_class,
)
from qdqbench.report.rows import (
    DASH,
    AccuracyRow,
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
from qdqbench.report.views import MLPERF_STYLE_NOTE

CSS = """
:root { --pass: #1a7f37; --pass-bg: #dafbe1; --fail: #cf222e; --fail-bg: #ffebe9;
  --muted: #57606a; --line: #d0d7de; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; font-size: 14px; line-height: 1.45; color: #1f2328; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; }
.meta, .note { color: var(--muted); } .note { margin: 4px 0 10px; max-width: 90ch; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.headline { font-size: 17px; font-weight: 600; padding: 10px 14px; border-radius: 6px;
  border: 1px solid var(--line); margin: 12px 0; }
.headline.pass { background: var(--pass-bg); border-color: var(--pass); color: var(--pass); }
.headline.fail { background: var(--fail-bg); border-color: var(--fail); color: var(--fail); }
.facts { list-style: none; padding: 0; margin: 0 0 12px; } .facts li { margin: 3px 0; }
.bad { color: var(--fail); font-weight: 600; } .good { color: var(--pass); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; font-size: 10px; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; font-size: 10px; }
td.num { text-align: right; white-space: nowrap; }
tr.pass td.verdict { background: var(--pass-bg); color: var(--pass); font-weight: 600; }
tr.fail td.verdict { background: var(--fail-bg); color: var(--fail); font-weight: 600; }
td.verdict.pass { background: var(--pass-bg); color: var(--pass); font-weight: 600; }
td.verdict.fail { background: var(--fail-bg); color: var(--fail); font-weight: 600; }
tr.baseline td { color: var(--muted); }
tr.failed td.status { color: var(--fail); font-weight: 600; }
td.error { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12px; white-space: pre-wrap; word-break: break-word; max-width: 70ch; }
td.faster { color: var(--pass); font-weight: 600; } td.slower { color: var(--fail); }
.ci { color: var(--muted); font-size: 12px; }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 10px;
  border: 1px solid var(--muted); color: var(--muted); margin-left: 4px; white-space: nowrap; }
figure { margin: 16px 0 24px; } figcaption { color: var(--muted); }
.chart-pair { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
svg.chart { max-width: 100%; height: auto; }
footer { color: var(--muted); margin-top: 40px; font-size: 12px; }
.badge.peer { border-color: #8250df; color: #8250df; }
.badge.gap { border-color: var(--fail); color: var(--fail); background: var(--fail-bg); }
.badge.chosen, .badge.optimal { border-color: var(--pass); color: var(--pass);
  background: var(--pass-bg); }
tr.chosen td { background: #fff8c5; } tr.optimal td { font-weight: 600; }
tr.dominated td { color: var(--muted); }
td.amax { font-size: 12px; } td.outlier { outline: 2px solid var(--fail); outline-offset: -2px;
  color: var(--fail); font-weight: 700; }
details { margin: 8px 0; } summary { cursor: pointer; }
.peer { margin: 8px 0; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px;
  margin: 12px 0; } .warn ul { margin: 4px 0 0; padding-left: 20px; }
"""

# Click a header to sort by that column; cells sort by data-sort (raw numbers) when present,
# numbers before text, and empty cells always last.
JS = """
(function () {
  function key(td) {
    if (!td) return null;
    var v = td.hasAttribute("data-sort") ? td.getAttribute("data-sort") : td.textContent.trim();
    if (v === "" || v === "\\u2014") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function compare(a, b) {
    if (a === b) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
    return a < b ? -1 : 1;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, idx) {
      th.tabIndex = 0;
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[idx]), y = key(b.cells[idx]);
          if (x === null || y === null) return compare(x, y);
          return asc ? compare(x, y) : compare(y, x);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sort(); }
      });
    });
  });
})();
"""


def _where(row: AccuracyRow | LatencyRow) -> str:
    return f"{esc(row.model)} · {esc(row.task)}"


# ----------------------------------------------------------------------------------------------
# sections


def _header(report: Report) -> str:
    meta = []
    if report.suite:
        meta.append(f"suite <b>{esc(report.suite)}</b>")
    if report.run_id:
        meta.append(f"run <code>{esc(report.run_id)}</code>")
    if report.commit:
        dirty = " (dirty)" if report.dirty else ""
        meta.append(f"commit <code>{esc(report.commit[:12])}</code>{dirty}")
    if report.started_at:
        meta.append(f"started {esc(report.started_at)}")
    if report.finished_at:
        meta.append(f"finished {esc(report.finished_at)}")
    line = " · ".join(meta) or "no run.json found: environment unknown"
    return f'<header><h1>qdqbench report</h1><p class="meta">{line}</p></header>'


def _warnings(report: Report) -> str:
    """The report's warnings (partial merge, unread lines), before anything else."""
    if not report.warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
    return (f'<div class="warn" id="warnings" role="alert"><b>⚠ Read this first</b>'
            f"<ul>{items}</ul></div>")


def _nav(report: Report) -> str:
    links = [("verdict", "Verdict")]
    for rows, anchor, name in (
        (report.accuracy, "accuracy", "Accuracy"),
        (report.engines and report.side_by_side, "engines", "Engines"),
        (report.calibrators, "calibrators", "Calibrators"),
        (report.pareto, "pareto", "Accuracy vs latency"),
        (report.fidelity, "fidelity", "Fidelity"),
        (report.latency, "latency", "Latency"),
        (report.charts, "charts", "Charts"),
        (report.amax or report.sensitivity or report.traces, "layers", "Per layer"),
        (report.exports, "exports", "Exports"),
    ):
        if rows:
            links.append((anchor, name))
    n = report.summary.failed_cells
    links.append(("failed", f"Failed ({n})" if n else "Failed"))
    links.append(("environment", "Environment"))
    bad = ' class="bad"' if n else ""
    items = [f'<a href="#{a}"{bad if a == "failed" else ""}>{t}</a>' for a, t in links]
    return '<nav class="meta">' + " · ".join(items) + "</nav>"


def _verdict(report: Report) -> str:
    s = report.summary
    cls = {None: "", True: "pass", False: "fail"}[s.passed]
    headline = esc(fmt_headline(report))
    facts = []
    if s.verdicts_total:
        facts.append(
            f"<li>Quantized accuracy cells passing: <b>{s.verdicts_passing} of "
            f"{s.verdicts_total}</b></li>"
        )
    if s.pairs_unjudged:
        facts.append(
            f'<li class="bad">{s.pairs_unjudged} model × task pair(s) have no verdict '
            "(their quantized cells did not finish) and count as not passing</li>"
        )
    w = s.worst_regression
    if w is not None:
        facts.append(
            f'<li>Worst regression: <a href="#acc-{w.anchor}">{esc(label(w))}</a> on {_where(w)}: '
            f"drop <b>{esc(fmt_points(w.drop))} pts</b> ({esc(fmt_pct(w.relative_drop))} relative)"
            f", {esc(w.metric)} {esc(fmt_score(w.fp32_value))} → {esc(fmt_score(w.value))}, "
            f'<span class="{"good" if w.passed else "bad"}">{fmt_verdict(w.passed)}</span></li>'
        )
    b = s.best_speedup
    if b is not None:
        facts.append(
            f'<li>Best speedup over fp32: <a href="#lat-{b.anchor}">'
            f"<b>{esc(fmt_speedup(b.speedup_latency))}</b></a> mean latency "
            f"({esc(fmt_ms(b.mean_ms))} ms vs {esc(fmt_ms(b.baseline_mean_ms))} ms "
            f"{esc(b.baseline_scheme)}) for {esc(label(b))} on {_where(b)}, "
            f"batch×seq {esc(fmt_shape(b.batch, b.seq))}</li>"
        )
    if s.failed_cells:
        facts.append(
            f'<li class="bad"><a href="#failed">{s.failed_cells} failed '
            f"cell{'s' if s.failed_cells != 1 else ''}</a></li>"
        )
    else:
        facts.append('<li class="good">No failed cells</li>')
    if s.skipped_cells:
        facts.append(f'<li><a href="#failed">{s.skipped_cells} skipped</a></li>')
    facts.append(f"<li>Cells finished: {s.ok_cells}</li>")

    rows = []
    for p in report.pairs:
        best = p.best
        cells = [
            text_td(p.model),
            text_td(p.task),
            td(fmt_verdict(p.passed, "no verdict"), sort=p.passed, cls="verdict"),
            num_td(f"{p.n_passing} / {p.n_quantized}", p.n_passing),
            text_td(best_label(p) if best else None),
            num_td(fmt_score(best.value) if best else DASH, best.value if best else None),
            num_td(fmt_points(best.drop) if best else DASH, best.drop if best else None),
            num_td(
                fmt_points(p.worst.drop) if p.worst else DASH, p.worst.drop if p.worst else None
            ),
        ]
        rows.append(tr(f"pair-{p.anchor}", cells, "pass" if p.passed else "fail"))
    table = ""
    if rows:
        table = table_html(
            "pairs-table",
            [
                "Model",
                "Task",
                "Verdict",
                "Passing",
                "Best scheme",
                "Best value",
                "Best drop (pts)",
                "Worst drop (pts)",
            ],
            rows,
        ) + (
            '<p class="note">Best scheme: the highest score among passing quantized schemes, '
            "or the highest score when none passes. Drop = fp32 − quantized, in percent points.</p>"
        )
    return (
        '<section id="verdict"><h2>Verdict</h2>'
        f'<div class="headline {cls}" id="headline">{headline}</div>'
        f'<ul class="facts">{"".join(facts)}</ul>{table}{peers_block(report)}</section>'
    )


def _accuracy(report: Report) -> str:
    if not report.accuracy:
        return ""
    rows = []
    for a in report.accuracy:
        value = esc(fmt_score(a.value))
        if a.value_ci_low is not None and a.value_ci_high is not None:
            value += (
                f' <span class="ci">{esc(fmt_ci_points(a.value_ci_low, a.value_ci_high))}</span>'
            )
        ci = esc(fmt_ci_points(a.drop_ci_low, a.drop_ci_high))
        if a.within_noise:
            ci += ' <span class="badge noise">within noise</span>'
        others = "; ".join(f"{n} {fmt_score(v)}" for n, v in a.other_metrics)
        metric = esc(a.metric) + (f' <span class="ci">({esc(others)})</span>' if others else "")
        cells = [
            text_td(a.model),
            text_td(a.task),
            scheme_td(a.scheme, a.is_peer),
            text_td(a.backend),
            text_td(a.precision),
            td(metric, sort=a.metric),
            num_td(fmt_score(a.fp32_value), a.fp32_value),
            td(value, sort=a.value, cls="num"),
            num_td(fmt_points(a.drop), a.drop),
            num_td(fmt_pct(a.relative_drop), a.relative_drop),
            td(ci, sort=a.drop_ci_low, cls="num"),
            num_td(fmt_changed(a.changed, a.examples), a.changed),
            td(fmt_verdict(a.passed), sort=a.passed, cls="verdict"),
        ]
        cls = verdict_class(a.passed) or ("baseline" if not a.is_quantized else "")
        rows.append(tr(f"acc-{a.anchor}", cells, cls))
    headers = [
        "Model",
        "Task",
        "Scheme",
        "Backend",
        "Precision",
        "Metric",
        "fp32",
        "Value",
        "Drop (pts)",
        "Rel. drop",
        "Drop CI (pts)",
        "Changed",
        "Verdict",
    ]
    note = (
        f"Scores in percent points. Bound: {esc(fmt_bound(report.bound, report.bound_mode))}, "
        "stored with each verdict by the run (not recomputed here). Drop = fp32 − quantized; "
        "Drop CI is the paired bootstrap interval over examples, and <i>within noise</i> means it "
        "contains 0. Value CI is the bootstrap interval of the score. Changed = predictions that "
        "differ from fp32. Precision <code>int8-fakequant</code> is the Q/DQ model simulated in "
        "torch; <code>int8</code> is a real integer engine. A "
        f"{PEER_BADGE} scheme is a peer tool's recipe (ONNX Runtime quantization, ModelOpt) "
        "built from the fp32 export, not a QDQBERT variant."
    )
    return (
        '<section id="accuracy"><h2>Accuracy</h2>'
        f'<p class="note">{note}</p>{table_html("accuracy-table", headers, rows)}</section>'
    )


def _fidelity(report: Report) -> str:
    if not report.fidelity:
        return ""
    rows = []
    for f in report.fidelity:
        cells = [
            text_td(f.model),
            text_td(f.task),
            text_td(f.scheme),
            text_td(f.backend),
            text_td(f.precision),
            num_td(fmt_ratio(f.cosine_mean), f.cosine_mean),
            num_td(fmt_ratio(f.cosine_min), f.cosine_min),
            num_td(fmt_db(f.sqnr_db), f.sqnr_db),
            num_td(fmt_pct(f.nn_agreement), f.nn_agreement),
            num_td(fmt_int(f.examples), f.examples),
            text_td(f.reference),
        ]
        if any(x.passed is not None for x in report.fidelity):
            cells.append(td(fmt_verdict(f.passed), sort=f.passed, cls="verdict"))
        rows.append(tr(f"fid-{f.anchor}", cells, verdict_class(f.passed)))
    headers = [
        "Model",
        "Task",
        "Scheme",
        "Backend",
        "Precision",
        "Cosine mean",
        "Cosine min",
        "SQNR (dB)",
        "NN agreement",
        "Examples",
        "Reference",
    ]
    if any(x.passed is not None for x in report.fidelity):
        headers.append("Verdict")
    note = (
        "Quantized outputs against the fp32 reference on the same inputs: cosine similarity "
        "(1 = identical direction), signal-to-quantization-noise ratio (higher is better) and "
        "nearest-neighbour agreement (share of examples whose nearest neighbour is unchanged)."
    )
    return (
        '<section id="fidelity"><h2>Fidelity</h2>'
        f'<p class="note">{note}</p>{table_html("fidelity-table", headers, rows)}</section>'
    )


def _speedup_cell(x: float | None) -> str:
    cls = "" if x is None else "faster" if x > 1.0 else "slower" if x < 1.0 else ""
    return num_td(fmt_speedup(x), x, cls)


def _latency_cells(lat: LatencyRow) -> list[str]:
    return [
        num_td(fmt_ms(lat.mean_ms), lat.mean_ms),
        num_td(fmt_ms(lat.p50_ms), lat.p50_ms),
        num_td(fmt_ms(lat.p90_ms), lat.p90_ms),
        num_td(fmt_ms(lat.p99_ms), lat.p99_ms),
        num_td(fmt_throughput(lat.throughput), lat.throughput),
        _speedup_cell(lat.speedup_latency),
        _speedup_cell(lat.speedup_throughput),
        num_td(fmt_pct(lat.cov, 1), lat.cov),
        num_td(fmt_sig(lat.peak_rss_mb), lat.peak_rss_mb),
        num_td(fmt_sig(lat.model_rss_mb), lat.model_rss_mb),
        num_td(fmt_sig(lat.load_s), lat.load_s),
    ]


LATENCY_HEADERS = [
    "Mean (ms)",
    "p50 (ms)",
    "p90 (ms)",
    "p99 (ms)",
    "Throughput (seq/s)",
    "Speedup (latency)",
    "Speedup (throughput)",
    "CoV",
    "Peak RSS (MB)",
    "Model RSS (MB)",
    "Load (s)",
]


def _method_note(report: Report) -> str:
    if not report.methods:
        return ""
    items = "".join(
        f"<li><b>{esc(m.backend)}</b>: {esc(fmt_method(m))} ({m.cells} cell"
        f"{'s' if m.cells != 1 else ''})</li>"
        for m in report.methods
    )
    configs = fmt_fp32_configs(report)
    return (
        '<p class="note">Method: each latency cell is timed after warm-up over many iterations; '
        "speedup (latency) = fp32 mean / mean and speedup (throughput) = throughput / fp32 "
        "throughput, both against the fp32 scheme of the same model, task, backend and shape "
        "<em>in this run</em> (— when that baseline is missing). CoV = std / mean. Peak RSS = "
        "the worker process's peak resident memory; model RSS = its growth over the worker's "
        "memory right before the engine's prepare(); load = seconds of prepare() (session "
        "creation / compile / engine build or deserialize)."
        + (f" {esc(configs)}" if configs else "")
        + f'</p><ul class="note">{items}</ul>'
    )


def _latency(report: Report) -> str:
    if not report.latency:
        return ""
    rows = []
    for lat in report.latency:
        cells = [
            text_td(lat.model),
            text_td(lat.task),
            scheme_td(lat.scheme, lat.is_peer),
            text_td(lat.backend),
            text_td(lat.precision),
            num_td(fmt_int(lat.batch), lat.batch),
            num_td(fmt_int(lat.seq), lat.seq),
            *_latency_cells(lat),
        ]
        rows.append(tr(f"lat-{lat.anchor}", cells, "baseline" if lat.is_baseline else ""))
    headers = ["Model", "Task", "Scheme", "Backend", "Precision", "Batch", "Seq", *LATENCY_HEADERS]
    return (
        '<section id="latency"><h2>Latency and throughput</h2>'
        f"{_method_note(report)}{table_html('latency-table', headers, rows)}"
        f"{_mlperf_style(report)}</section>"
    )


def _mlperf_style(report: Report) -> str:
    if not report.mlperf_style:
        return ""
    rows = [
        tr(
            f"mlperf-{i}",
            [
                text_td(m.model),
                text_td(m.task),
                scheme_td(m.scheme, m.is_peer),
                text_td(m.backend),
                text_td(m.precision),
                num_td(fmt_int(m.seq), m.seq),
                num_td(fmt_ms(m.singlestream_p90_ms), m.singlestream_p90_ms),
                num_td(fmt_throughput(m.offline_throughput), m.offline_throughput),
                num_td(fmt_int(m.offline_batch), m.offline_batch),
            ],
        )
        for i, m in enumerate(report.mlperf_style)
    ]
    headers = ["Model", "Task", "Scheme", "Backend", "Precision", "Seq",
               "MLPerf-style SingleStream p90 (b1) (ms)",
               "Offline-style throughput (largest batch) (seq/s)", "Largest batch"]
    return (
        '<h3 id="mlperf-style">MLPerf-style figures</h3>'
        f'<p class="note">{esc(MLPERF_STYLE_NOTE)}</p>'
        f"{table_html('mlperf-style-table', headers, rows)}"
    )


def _charts(report: Report) -> str:
    if not report.charts:
        return ""
    figures = []
    for c in report.charts:
        rows = [
            tr(
                f"chartrow-{lat.anchor}",
                [
                    scheme_td(lat.scheme, lat.is_peer),
                    text_td(lat.precision),
                    num_td(fmt_int(lat.batch), lat.batch),
                    num_td(fmt_int(lat.seq), lat.seq),
                    num_td(fmt_throughput(lat.throughput), lat.throughput),
                    num_td(fmt_ms(lat.mean_ms), lat.mean_ms),
                    _speedup_cell(lat.speedup_throughput),
                ],
                "baseline" if lat.is_baseline else "",
            )
            for lat in c.rows
        ]
        headers = [
            "Scheme",
            "Precision",
            "Batch",
            "Seq",
            "Throughput (seq/s)",
            "Mean (ms)",
            "Speedup (thr.)",
        ]
        figures.append(
            f'<figure id="chart-{c.anchor}">'
            f'<div class="chart-pair">{throughput_chart_svg(c, f"svg-{c.anchor}")}'
            f"{table_html(f'chart-table-{c.anchor}', headers, rows)}</div>"
            f"<figcaption>{esc(c.model)} · {esc(c.task)} · {esc(c.backend)}: throughput "
            "(sequences per second) against batch size; fp32 dashed.</figcaption></figure>"
        )
    return '<section id="charts"><h2>Throughput vs batch</h2>' + "".join(figures) + "</section>"


def _exports(report: Report) -> str:
    if not report.exports:
        return ""
    rows = [
        tr(
            f"exp-{x.anchor}",
            [
                text_td(x.model),
                text_td(x.task),
                text_td(x.scheme),
                num_td(fmt_sig(x.onnx_mb, 4, 1), x.onnx_mb),
                num_td(fmt_int(x.qdq_nodes), x.qdq_nodes),
                td(f"<code>{esc(x.path or DASH)}</code>", sort=x.path or ""),
            ],
        )
        for x in report.exports
    ]
    headers = ["Model", "Task", "Scheme", "ONNX (MB)", "Q/DQ nodes", "Path"]
    return (
        '<section id="exports"><h2>ONNX exports</h2>'
        f"{table_html('export-table', headers, rows)}</section>"
    )


def _failed(report: Report) -> str:
    if not report.failed:
        return (
            '<section id="failed"><h2>Failed cells</h2>'
            '<p class="good">No failed or skipped cells.</p></section>'
        )
    rows = [
        tr(
            f"fail-{f.anchor}",
            [
                td(f"<code>{esc(f.cell)}</code>", sort=f.cell),
                text_td(f.status, cls="status"),
                text_td(f.model),
                text_td(f.task),
                text_td(f.scheme),
                text_td(f.backend),
                text_td(f.kind),
                text_td(f.error, cls="error"),
            ],
            f.status,
        )
        for f in report.failed
    ]
    headers = ["Cell", "Status", "Model", "Task", "Scheme", "Backend", "Kind", "Error"]
    n = report.summary.failed_cells
    title = f'Failed cells <span class="bad">({n})</span>' if n else "Failed cells"
    return f'<section id="failed"><h2>{title}</h2>{table_html("failed-table", headers, rows)}</section>'


def _environment(report: Report) -> str:
    parts = ['<section id="environment"><h2>Environment and method</h2>']
    if report.methods:
        rows = [
            tr(
                f"method-{i}",
                [
                    text_td(m.backend),
                    text_td(m.method),
                    num_td(fmt_int(m.warmup_iters), m.warmup_iters),
                    num_td(fmt_int(m.iterations), m.iterations),
                    num_td(fmt_int(m.threads), m.threads),
                    num_td(str(m.cells), m.cells),
                    td("<br>".join(f"{esc(k)}: {esc(v)}" for k, v in m.facts) or DASH),
                ],
            )
            for i, m in enumerate(report.methods)
        ]
        headers = [
            "Backend",
            "Timing method",
            "Warm-up",
            "Iterations",
            "Threads",
            "Cells",
            "Engine facts",
        ]
        parts.append("<h3>Timing</h3>" + table_html("method-table", headers, rows, sortable=False))
    if report.environment:
        rows = [
            tr(
                f"env-{i}",
                [
                    text_td(r.section),
                    text_td(r.key),
                    td(f"<code>{esc(r.value)}</code>", sort=r.value),
                ],
            )
            for i, r in enumerate(report.environment)
        ]
        parts.append(
            "<h3>Run</h3>"
            + table_html("env-table", ["Section", "Key", "Value"], rows, sortable=False)
        )
    else:
        parts.append('<p class="note">No run.json: versions and machine unknown.</p>')
    parts.append("</section>")
    return "".join(parts)


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'"
    )


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS, JS and SVG; no network)."""
    body = "\n".join(
        part
        for part in (
            _header(report),
            _warnings(report),
            _nav(report),
            _verdict(report),
            _accuracy(report),
            engines_section(report),
            calibrators_section(report),
            pareto_section(report),
            _fidelity(report),
            _latency(report),
            _charts(report),
            layers_section(report),
            _exports(report),
            _failed(report),
            _environment(report),
        )
        if part
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp(JS)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(report.title)}</title>\n<style>{CSS}</style></head>\n"
        f"<body><main>\n{body}\n"
        f"<footer>Generated by qdqbench {esc(__version__)} from results.jsonl and run.json."
        "</footer>\n</main>\n"
        f"<script>{JS}</script>\n</body></html>\n"
    )
