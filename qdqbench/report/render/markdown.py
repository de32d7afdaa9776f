"""Render a ``Report`` as GitHub-flavoured Markdown, sized for a pull-request comment.

The verdict comes first (with the peer statements), then the accuracy tables (each engine beside
fake-quant, calibrators, accuracy vs latency), fidelity when the run has it, latency, the
per-layer views (amax outliers, sensitivity, the auto recipe's trace) and the failed cells. Cell
text is escaped for GitHub tables: pipes are backslash-escaped, angle brackets become entities
(so a model called ``<script>`` shows as text), newlines become spaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from qdqbench.report.layers import OUTLIER_FACTOR, PART_COST_HEADERS, fmt_delta_ms, part_costs_note
from qdqbench.report.rows import (
    DASH,
    Report,
    best_label,
    fmt_bound,
    fmt_changed,
    fmt_ci_points,
    fmt_db,
    fmt_delta_points,
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


def md_escape(text: Any) -> str:
    """Text made safe for one GitHub table cell."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\|`*":  # backslash first, so the escapes added after it stay single
        s = s.replace(ch, "\\" + ch)
    return s or DASH


def md_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()
) -> str:
    """A GitHub table; columns whose index is in ``numeric`` are right-aligned."""
    align = ["---:" if i in numeric else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(md_escape(c) for c in row) + " |")
    return "\n".join(lines)


def _verdict_mark(passed: bool | None) -> str:
    return DASH if passed is None else "✅ pass" if passed else "❌ FAIL"


def _scheme(scheme: str, is_peer: bool) -> str:
    return f"{scheme} (peer)" if is_peer else scheme


def _verdict(report: Report) -> list[str]:
    s = report.summary
    mark = {None: "", True: "✅ ", False: "❌ "}[s.passed]
    out = [f"{mark}**{md_escape(fmt_headline(report))}**"]
    if s.verdicts_total:
        out[0] += f"; {s.verdicts_passing} of {s.verdicts_total} quantized accuracy cells pass."
    facts = []
    w = s.worst_regression
    if w is not None:
        facts.append(
            f"- Worst regression: {md_escape(label(w))} on {md_escape(w.model)} · "
            f"{md_escape(w.task)}: drop {fmt_points(w.drop)} pts ({fmt_pct(w.relative_drop)} "
            f"relative), {_verdict_mark(w.passed)}"
        )
    b = s.best_speedup
    if b is not None:
        facts.append(
            f"- Best speedup over fp32: {fmt_speedup(b.speedup_latency)} mean latency, "
            f"{md_escape(label(b))} on {md_escape(b.model)} · {md_escape(b.task)}, "
            f"batch {b.batch} × seq {b.seq}"
        )
    if s.pairs_unjudged:
        facts.append(f"- ⚠️ {s.pairs_unjudged} model × task pair(s) have no verdict")
    facts.append(
        f"- ❌ **{s.failed_cells} failed cell{'s' if s.failed_cells != 1 else ''}**"
        if s.failed_cells
        else "- No failed cells"
    )
    if s.skipped_cells:
        facts.append(f"- {s.skipped_cells} skipped cell(s)")
    out.append("\n".join(facts))
    if report.pairs:
        out.append(
            md_table(
                [
                    "Model",
                    "Task",
                    "Verdict",
                    "Passing",
                    "Best scheme",
                    "Best value",
                    "Best drop (pts)",
                ],
                (
                    [
                        p.model,
                        p.task,
                        _verdict_mark(p.passed) if p.n_quantized else "❌ no verdict",
                        f"{p.n_passing} / {p.n_quantized}",
                        best_label(p),
                        fmt_score(p.best.value) if p.best else DASH,
                        fmt_points(p.best.drop) if p.best else DASH,
                    ]
                    for p in report.pairs
                ),
                numeric=(3, 5, 6),
            )
        )
    if report.peers:
        lines = [
            (
                "**Against peer tools** (best = highest on-engine score among passing schemes, "
                "else among all; speed = mean latency at each shape timed for both)"
            )
        ]
        for p in report.peers:
            where = f"{md_escape(p.model)} · {md_escape(p.task)}"
            for c in p.engines:
                lines.append(f"- {where}: **{md_escape(c.beats)}** — {md_escape(c.statement)}")
            if not p.engines:
                lines.append(f"- {where}: {md_escape(p.note)}")
        out.append("\n".join(lines))
    return out


def _accuracy(report: Report) -> list[str]:
    if not report.accuracy:
        return []
    rows = [
        [
            a.model,
            a.task,
            _scheme(a.scheme, a.is_peer),
            a.backend,
            a.precision,
            a.metric,
            fmt_score(a.fp32_value),
            fmt_score(a.value),
            fmt_points(a.drop),
            fmt_pct(a.relative_drop),
            fmt_ci_points(a.drop_ci_low, a.drop_ci_high) + (" (noise)" if a.within_noise else ""),
            fmt_changed(a.changed, a.examples),
            _verdict_mark(a.passed),
        ]
        for a in report.accuracy
    ]
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
    return [
        "### Accuracy",
        f"Scores in percent points; drop = fp32 − quantized; bound: "
        f"{fmt_bound(report.bound, report.bound_mode)}; (peer) marks a peer tool's recipe.",
        md_table(headers, rows, numeric=(6, 7, 8, 9, 11)),
    ]


def _engines(report: Report) -> list[str]:
    if not report.engines or not report.side_by_side:
        return []

    def cell(row, backend: str) -> str:
        e = row.engine(backend)
        if e is None:
            return DASH
        bits = [f"{fmt_delta_points(e.gap)} vs FQ"] if e.gap is not None else []
        if e.changed_vs_torch is not None:
            bits.append(f"{e.changed_vs_torch} changed vs torch")
        text = fmt_score(e.value) + (f" ({', '.join(bits)})" if bits else "")
        return text + (" ⚠️ ≠ fake-quant" if e.flagged else "")

    rows = [
        [
            r.model,
            r.task,
            _scheme(r.scheme, r.is_peer),
            r.metric,
            fmt_score(r.fp32_value),
            fmt_score(r.fakequant_value),
            *(cell(r, b) for b in report.engines),
        ]
        for r in report.side_by_side
    ]
    headers = [
        "Model",
        "Task",
        "Scheme",
        "Metric",
        "fp32",
        "Fake-quant (torch)",
        *(f"{md_escape(b)} (ships)" for b in report.engines),
    ]
    return [
        "### Accuracy on each engine",
        "The engine's score is the one that ships; ⚠️ ≠ fake-quant: the engine differs from the "
        "fake-quant score by more than its paired drop CI half-width.",
        md_table(headers, rows, numeric=tuple(range(4, len(headers)))),
    ]


def _calibrators(report: Report) -> list[str]:
    if not report.calibrators:
        return []
    rows = [
        [
            c.model,
            c.task,
            r.method,
            r.calibrator,
            r.scheme,
            fmt_score(r.torch_value),
            _verdict_mark(r.torch_passed),
            fmt_score(r.engine_value),
            fmt_score(c.fp32_value),
            fmt_score(c.threshold),
        ]
        for c in report.calibrators
        for r in c.rows
    ]
    headers = [
        "Model",
        "Task",
        "Method",
        "Calibrator",
        "Scheme",
        "Fake-quant (torch)",
        "Verdict",
        md_escape(report.calibrators[0].engine),
        "fp32",
        "Threshold",
    ]
    return ["### Calibrators", md_table(headers, rows, numeric=(5, 7, 8, 9))]


def _pareto(report: Report) -> list[str]:
    if not report.pareto:
        return []
    rows = [
        [
            c.model,
            c.task,
            _scheme(p.scheme, p.is_peer),
            p.backend,
            fmt_shape(p.batch, p.seq),
            fmt_score(p.value),
            fmt_ms(p.mean_ms),
            "✅ yes" if p.optimal else "no",
        ]
        for c in report.pareto
        for p in c.points
    ]
    headers = [
        "Model",
        "Task",
        "Scheme",
        "Backend",
        "Shape",
        "Score",
        "Mean (ms)",
        "Pareto-optimal",
    ]
    return [
        "### Accuracy vs latency",
        "Score on each backend (fake-quant for torch) against mean latency at its largest timed "
        "batch; Pareto-optimal = no other point is as accurate and as fast, and better in one.",
        md_table(headers, rows, numeric=(5, 6)),
    ]


def _layers(report: Report) -> list[str]:
    out = []
    if report.amax:
        rows = [
            [t.model, t.task, t.scheme, c.name, fmt_sig(c.amax), fmt_sig(c.ratio)]
            for t in report.amax
            for c in t.outliers
        ]
        problems = [
            f"- {md_escape(t.scheme)}: {md_escape(t.problem)}" for t in report.amax if t.problem
        ]
        out.append("### Amax outliers")
        out.append(
            md_table(
                ["Model", "Task", "Scheme", "Quantizer", "amax", "× median"], rows, numeric=(4, 5)
            )
            if rows
            else f"No outliers (an amax ≥ {fmt_sig(OUTLIER_FACTOR, 1, 1)}× the median of its "
            "quantizer type across layers)."
        )
        if problems:
            out.append("\n".join(problems))
    for v in report.sensitivity:
        unit = f" ({md_escape(v.unit)})" if v.unit else ""
        rows = [
            [
                fmt_int(p.rank),
                p.part,
                p.kind or DASH,
                fmt_int(p.quantizers),
                fmt_sig(p.only_quantized),
                fmt_sig(p.only_float),
            ]
            for p in v.parts
        ]
        out.append(
            f"### Sensitivity: {md_escape(v.model)} · {md_escape(v.task)} · "
            f"{md_escape(v.scheme)}\nProxy {md_escape(v.proxy or DASH)}{unit}; "
            f"ranking: {md_escape(v.ranking_rule or DASH)}."
        )
        out.append(
            md_table(
                [
                    "Rank",
                    "Part",
                    "Kind",
                    "Quantizers",
                    f"Only quantized{unit}",
                    f"Only float{unit}",
                ],
                rows,
                numeric=(0, 3, 4, 5),
            )
        )
    for t in report.traces:
        rows = [
            [
                str(i + 1),
                s.name + (" ⭐ chosen" if s.chosen else ""),
                s.stage or DASH,
                fmt_score(s.value),
                fmt_verdict(s.passed),
                fmt_ms(s.latency_ms),
                fmt_int(s.evaluations),
                fmt_sig(s.seconds),
            ]
            for i, s in enumerate(t.steps)
        ]
        out.append(
            f"### What the auto recipe tried: {md_escape(t.model)} · {md_escape(t.task)} · "
            f"{md_escape(t.scheme)}\nChosen: **{md_escape(t.chosen or DASH)}**."
        )
        out.append(
            md_table(
                [
                    "#",
                    "Candidate",
                    "Stage",
                    "Value",
                    "Passed",
                    "Latency (ms)",
                    "Evaluations",
                    "Seconds",
                ],
                rows,
                numeric=(0, 3, 5, 6, 7),
            )
        )
        if t.part_costs:
            out.append(f"{md_escape(part_costs_note(t))}")
            out.append(md_table(list(PART_COST_HEADERS),
                                [[c.part, fmt_int(c.quantizers), fmt_ms(c.latency_ms), fmt_delta_ms(c.delta_ms)]
                                 for c in t.part_costs], numeric=(1, 2, 3)))
    return out


def _fidelity(report: Report) -> list[str]:
    if not report.fidelity:
        return []
    rows = [
        [
            f.model,
            f.task,
            f.scheme,
            f.backend,
            f.precision,
            fmt_ratio(f.cosine_mean),
            fmt_ratio(f.cosine_min),
            fmt_db(f.sqnr_db),
            fmt_pct(f.nn_agreement),
            fmt_int(f.examples),
        ]
        for f in report.fidelity
    ]
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
    ]
    return ["### Fidelity", md_table(headers, rows, numeric=(5, 6, 7, 8, 9))]


def _latency(report: Report) -> list[str]:
    if not report.latency:
        return []
    rows = [
        [
            row.model,
            row.task,
            _scheme(row.scheme, row.is_peer),
            row.backend,
            row.precision,
            fmt_int(row.batch),
            fmt_int(row.seq),
            fmt_ms(row.mean_ms),
            fmt_ms(row.p50_ms),
            fmt_ms(row.p90_ms),
            fmt_ms(row.p99_ms),
            fmt_throughput(row.throughput),
            fmt_speedup(row.speedup_latency),
            fmt_speedup(row.speedup_throughput),
            fmt_pct(row.cov, 1),
            fmt_sig(row.peak_rss_mb),
            fmt_sig(row.model_rss_mb),
            fmt_sig(row.load_s),
        ]
        for row in report.latency
    ]
    headers = [
        "Model",
        "Task",
        "Scheme",
        "Backend",
        "Precision",
        "Batch",
        "Seq",
        "Mean (ms)",
        "p50 (ms)",
        "p90 (ms)",
        "p99 (ms)",
        "Throughput (seq/s)",
        "Speedup (lat.)",
        "Speedup (thr.)",
        "CoV",
        "Peak RSS (MB)",
        "Model RSS (MB)",
        "Load (s)",
    ]
    methods = "; ".join(
        f"{md_escape(m.backend)}: {md_escape(fmt_method(m))}" for m in report.methods
    )
    configs = fmt_fp32_configs(report)
    return [
        "### Latency",
        "Speedups against the fp32 scheme of the same model, task, backend and shape in this run. "
        f"Method: {methods}." + (f" {md_escape(configs)}" if configs else ""),
        md_table(headers, rows, numeric=tuple(range(5, 18))),
        "Peak RSS = the worker process's peak resident memory; model RSS = its growth over the "
        "worker's memory right before the engine's prepare(); load = seconds of prepare() "
        "(session creation / compile / engine build or deserialize).",
        *_mlperf_style(report),
    ]


def _mlperf_style(report: Report) -> list[str]:
    if not report.mlperf_style:
        return []
    rows = [
        [
            m.model,
            m.task,
            _scheme(m.scheme, m.is_peer),
            m.backend,
            m.precision,
            fmt_int(m.seq),
            fmt_ms(m.singlestream_p90_ms),
            fmt_throughput(m.offline_throughput),
            fmt_int(m.offline_batch),
        ]
        for m in report.mlperf_style
    ]
    headers = [
        "Model",
        "Task",
        "Scheme",
        "Backend",
        "Precision",
        "Seq",
        "MLPerf-style SingleStream p90 (b1) (ms)",
        "Offline-style throughput (largest batch) (seq/s)",
        "Largest batch",
    ]
    return ["#### MLPerf-style figures", md_escape(MLPERF_STYLE_NOTE),
            md_table(headers, rows, numeric=(5, 6, 7, 8))]


def _failed(report: Report) -> list[str]:
    if not report.failed:
        return []
    rows = [[f.cell, f.status, f.error] for f in report.failed]
    return ["### Failed and skipped cells", md_table(["Cell", "Status", "Error"], rows)]


def _footer(report: Report) -> list[str]:
    bits = []
    if report.suite:
        bits.append(f"suite {md_escape(report.suite)}")
    if report.run_id:
        bits.append(f"run {md_escape(report.run_id)}")
    if report.commit:
        bits.append(
            f"commit {md_escape(report.commit[:12])}" + (" (dirty)" if report.dirty else "")
        )
    versions = [r for r in report.environment if r.section == "versions" and r.value != DASH]
    if versions:
        bits.append(", ".join(f"{md_escape(r.key)} {md_escape(r.value)}" for r in versions))
    return [f"<sub>{' · '.join(bits)}</sub>"] if bits else []


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown: verdict, accuracy and its views, latency, layers."""
    parts = [
        f"## {md_escape(report.title)}",
        *(f"> ⚠️ **{md_escape(w)}**" for w in report.warnings),
        *_verdict(report),
        *_accuracy(report),
        *_engines(report),
        *_calibrators(report),
        *_pareto(report),
        *_fidelity(report),
        *_latency(report),
        *_layers(report),
        *_failed(report),
        *_footer(report),
    ]
    return "\n\n".join(parts) + "\n"
