"""Render a ``Report`` as GitHub-flavoured Markdown, sized for a pull-request comment.

The verdict comes first, then the accuracy and latency tables (fidelity when the run has it) and
the failed cells. Cell text is escaped for GitHub tables: pipes are backslash-escaped, angle
brackets become entities (so a model called ``<script>`` shows as text), newlines become spaces.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from qdqbench.report.rows import (
    DASH,
    Report,
    fmt_bound,
    fmt_changed,
    fmt_ci_points,
    fmt_db,
    fmt_headline,
    fmt_int,
    fmt_method,
    fmt_ms,
    fmt_pct,
    fmt_points,
    fmt_ratio,
    fmt_score,
    fmt_speedup,
    fmt_throughput,
    label,
)


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
                        label(p.best) if p.best else DASH,
                        fmt_score(p.best.value) if p.best else DASH,
                        fmt_points(p.best.drop) if p.best else DASH,
                    ]
                    for p in report.pairs
                ),
                numeric=(3, 5, 6),
            )
        )
    return out


def _accuracy(report: Report) -> list[str]:
    if not report.accuracy:
        return []
    rows = [
        [
            a.model,
            a.task,
            a.scheme,
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
        f"{fmt_bound(report.bound, report.bound_mode)}.",
        md_table(headers, rows, numeric=(6, 7, 8, 9, 11)),
    ]


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
            row.scheme,
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
    ]
    methods = "; ".join(
        f"{md_escape(m.backend)}: {md_escape(fmt_method(m))}" for m in report.methods
    )
    return [
        "### Latency",
        "Speedups against the fp32 scheme of the same model, task, backend and shape in this run. "
        f"Method: {methods}.",
        md_table(headers, rows, numeric=tuple(range(5, 15))),
    ]


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
    """The report as GitHub-flavoured Markdown: verdict, accuracy, fidelity, latency, failures."""
    parts = [
        f"## {md_escape(report.title)}",
        *_verdict(report),
        *_accuracy(report),
        *_fidelity(report),
        *_latency(report),
        *_failed(report),
        *_footer(report),
    ]
    return "\n\n".join(parts) + "\n"
