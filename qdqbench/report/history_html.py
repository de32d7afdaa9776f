"""Render the history trends as one self-contained HTML page of inline SVG line charts.

One chart per model × task for accuracy (the primary metric of every scheme × backend, y axis
fitted to the data because changes are small next to the level; SQNR for embedding-fidelity
cells, which have no accuracy) and one per model × task × backend × shape for mean latency (y
axis from zero, so a bar-like reading stays honest); fp32 series are dashed. The x axis is the
runs in ``started_at`` order. Each chart has a table of the latest values beside it. Everything
from the database is escaped; nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from qdqbench import __version__
from qdqbench.report.charts import line_chart_svg
from qdqbench.report.render.html import CSS, JS, csp
from qdqbench.report.rows import DASH, fmt_db, fmt_ms, fmt_pct, fmt_score

RECENT_RUNS = 30  # rows of the runs table


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _fmt(kind: str, x: float | None) -> str:
    return {"accuracy": fmt_score, "fidelity": fmt_db}.get(kind, fmt_ms)(x)


def _chart(t, labels: dict[int, str]) -> str:
    if t.kind == "accuracy":
        svg = line_chart_svg(t.series, title=t.title, x_label="run", y_label=f"{t.metric} (%)",
                             element_id=f"svg-{t.anchor}", dashed=t.baselines, x_labels=labels,
                             y_format=lambda v: f"{v * 100:.1f}", zero_based=False, max_x_labels=6)
    elif t.kind == "fidelity":
        svg = line_chart_svg(t.series, title=t.title, x_label="run", y_label="SQNR (dB)",
                             element_id=f"svg-{t.anchor}", x_labels=labels, y_format=lambda v: f"{v:.1f}",
                             zero_based=False, max_x_labels=6)
    else:
        svg = line_chart_svg(t.series, title=t.title, x_label="run", y_label="mean latency (ms)",
                             element_id=f"svg-{t.anchor}", dashed=t.baselines, x_labels=labels,
                             y_format=fmt_ms, zero_based=True, max_x_labels=6)
    rows = []
    for name, points in t.series:
        last = points[-1][1] if points else None
        prev = points[-2][1] if len(points) > 1 else None
        if t.kind == "accuracy":  # a change of a score reads best in points
            change = f"{(last - prev) * 100:+.2f} pts" if last is not None and prev is not None else DASH
        else:
            change = fmt_pct((last - prev) / abs(prev)) if last is not None and prev else DASH
        rows.append(
            f"<tr><td>{_e(name)}</td><td class=\"num\">{len(points)}</td>"
            f"<td class=\"num\">{_e(_fmt(t.kind, last))}</td><td class=\"num\">{_e(_fmt(t.kind, prev))}</td>"
            f"<td class=\"num\">{_e(change)}</td></tr>"
        )
    table = (f'<table id="table-{_e(t.anchor)}"><thead><tr><th>Series</th><th>Runs</th><th>Latest</th>'
             f"<th>Previous</th><th>Change</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    unit = {"accuracy": "percent points", "fidelity": "dB"}.get(t.kind, "ms")
    return (f'<figure id="trend-{_e(t.anchor)}"><div class="chart-pair">{svg}{table}</div>'
            f"<figcaption>{_e(t.title)} ({unit}) across runs; fp32 dashed.</figcaption></figure>")


def render_history_html(run_rows: Sequence, charts: Sequence) -> str:
    """The history page: accuracy trends, latency trends, then the runs."""
    labels = {r.index: r.label for r in run_rows}
    run_lines = [
        f'<tr><td class="num">{r.index}</td><td><code>{_e(r.run_id)}</code></td>'
        f"<td>{_e(r.started_at or DASH)}</td><td>{_e(r.suite or DASH)}</td>"
        f"<td><code>{_e((r.commit or DASH)[:12])}</code></td><td>{_e(r.gpu or r.cpu or DASH)}</td>"
        f'<td class="num">{r.cells}</td><td class="num{" bad" if r.failed else ""}">{r.failed}</td></tr>'
        for r in list(run_rows)[-RECENT_RUNS:][::-1]
    ]
    runs_table = (
        '<div class="scroll"><table id="runs-table" class="sortable"><thead><tr><th>#</th><th>Run</th>'
        "<th>Started</th><th>Suite</th><th>Commit</th><th>Machine</th><th>Cells</th><th>Failed</th>"
        f"</tr></thead><tbody>{''.join(run_lines)}</tbody></table></div>"
    )
    sections = []
    for kind, title in (("accuracy", "Accuracy (primary metric)"), ("fidelity", "Fidelity (SQNR)"),
                        ("latency", "Mean latency")):
        figures = [_chart(t, labels) for t in charts if t.kind == kind]
        if not figures and kind == "fidelity":
            continue  # only the offline quickstart suite has fidelity cells
        body = "".join(figures) or '<p class="note">No data.</p>'
        sections.append(f'<section id="{kind}"><h2>{_e(title)}</h2>{body}</section>')
    sections.append(f'<section id="runs"><h2>Runs ({len(run_rows)})</h2>'
                    f'<p class="note">Newest first; the latest {RECENT_RUNS} are listed.</p>{runs_table}</section>')
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(JS)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>qdqbench history</title>\n<style>{CSS}</style></head>\n<body><main>\n"
        '<header><h1>qdqbench history</h1><p class="meta">Runs ordered by start time; '
        "one point per run that has the cell.</p></header>\n"
        + "\n".join(sections)
        + f"\n<footer>Generated by qdqbench {_e(__version__)} from a history database.</footer>\n"
        f"</main>\n<script>{JS}</script>\n</body></html>\n"
    )
