"""Render the report's sections as GitHub-flavoured Markdown, sized for a pull-request comment.

The verdict comes first (with the peer statements), then the accuracy tables (each engine beside
fake-quant, calibrators, accuracy vs latency), fidelity when the run has it, latency, the
per-layer views (amax outliers, sensitivity, the auto recipe's trace) and the failed cells: the
sections of ``report.sections`` that have a Markdown form, in their order. Charts are HTML only;
their numbers are here as tables. Cells are escaped by ``mdparts.md_escape``.
"""

from __future__ import annotations

from typing import Any

from qdqbench.report.blocks import Heading, Note, Section, Table
from qdqbench.report.mdparts import md_escape, md_table
from qdqbench.report.rows import DASH, Report
from qdqbench.report.sections import build_sections

__all__ = ["md_escape", "md_table", "render_markdown"]


def _table(t: Table) -> str:
    shown = [i for i, col in enumerate(t.columns) if "md" in col.formats]
    headers = [md_escape(t.columns[i].md_header or t.columns[i].header) for i in shown]
    rows = ([r.cells[i].md if r.cells[i].md is not None else r.cells[i].text for i in shown] for r in t.rows)
    numeric = [j for j, i in enumerate(shown) if t.columns[i].numeric]
    return md_table(headers, rows, numeric=numeric)


def _block(b: Any) -> str:
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, (Note, Heading)):
        return b.md
    raise TypeError(f"no Markdown form for a {type(b).__name__} block")


def _section(s: Section) -> list[str]:
    blocks = s.blocks_for("md")
    if not blocks:
        return []
    return ([s.md_title] if s.md_title else []) + [_block(b) for b in blocks]


def _footer(report: Report) -> list[str]:
    bits = []
    if report.suite:
        bits.append(f"suite {md_escape(report.suite)}")
    if report.run_id:
        bits.append(f"run {md_escape(report.run_id)}")
    if report.commit:
        bits.append(f"commit {md_escape(report.commit[:12])}" + (" (dirty)" if report.dirty else ""))
    versions = [r for r in report.environment if r.section == "versions" and r.value != DASH]
    if versions:
        bits.append(", ".join(f"{md_escape(r.key)} {md_escape(r.value)}" for r in versions))
    return [f"<sub>{' · '.join(bits)}</sub>"] if bits else []


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown: verdict, accuracy and its views, latency, layers."""
    parts = [
        f"## {md_escape(report.title)}",
        *(f"> ⚠️ **{md_escape(w)}**" for w in report.warnings),
        *(part for s in build_sections(report) for part in _section(s)),
        *_footer(report),
    ]
    return "\n\n".join(parts) + "\n"
