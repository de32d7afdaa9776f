"""Render the report's sections as one self-contained HTML page: the verdict first, then the numbers.

The page opens offline: CSS and a few lines of vanilla JavaScript (click a table header to sort)
are inline, charts are inline SVG, and nothing is fetched from anywhere; a Content-Security-Policy
meta tag that allows only this page's own script (by hash) backs that up. Every string that came
from a suite or a run (model names, errors, paths, versions) passes through ``html.escape`` (cells
and headers here; rich cell content where ``report.sections`` builds it). Rows carry stable ids
(``acc-<cell>``, ``lat-<cell>``, ``fid-<cell>``, ``fail-<cell>``, ``pair-<model>-<task>``,
``chart-<model>-<task>-<backend>``, and those of ``report.view_sections``) so tests and links can
target them.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from qdqbench import __version__
from qdqbench.report.blocks import Box, Cell, Chart, Heading, Note, Pair, Section, Table
from qdqbench.report.htmlparts import esc, sort_value, table_html, tr
from qdqbench.report.rows import Report
from qdqbench.report.sections import build_sections

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


def csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'"
    )


# ----------------------------------------------------------------------------------------------
# the page frame


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


def _nav(sections: list[Section]) -> str:
    items = [
        f'<a href="#{s.anchor}"' + (f' class="{s.nav_cls}"' if s.nav_cls else "") + f">{s.nav}</a>"
        for s in sections
        if s.nav
    ]
    return '<nav class="meta">' + " · ".join(items) + "</nav>"


# ----------------------------------------------------------------------------------------------
# blocks


def _td(c: Cell) -> str:
    attrs = ""
    if c.cell_id:
        attrs += f' id="{c.cell_id}"'
    cls = ("num " + c.cls).strip() if c.numeric else c.cls
    if cls:
        attrs += f' class="{cls}"'
    if c.style:
        attrs += f' style="{c.style}"'
    if c.title:
        attrs += f' title="{esc(c.title)}"'
    if c.sort != "":
        attrs += f' data-sort="{sort_value(c.sort)}"'
    return f"<td{attrs}>{c.html if c.html is not None else esc(c.text)}</td>"


def _table(t: Table) -> str:
    shown = [i for i, col in enumerate(t.columns) if "html" in col.formats]
    headers = [t.columns[i].html_header or esc(t.columns[i].header) for i in shown]
    rows = [tr(r.row_id, [_td(r.cells[i]) for i in shown], r.cls) for r in t.rows]
    return table_html(t.table_id, headers, rows, sortable=t.sortable)


def _block(b: Any) -> str:
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Note):
        attrs = (f' id="{b.block_id}"' if b.block_id else "") + (f' class="{b.cls}"' if b.cls else "")
        return f"<{b.tag}{attrs}>{b.html}</{b.tag}>"
    if isinstance(b, Heading):
        anchor = f' id="{b.anchor}"' if b.anchor else ""
        return f"<h3{anchor}>{b.html}</h3>"
    if isinstance(b, Chart):
        return b.svg
    if isinstance(b, Pair):
        return '<div class="chart-pair">' + _blocks(b.children) + "</div>"
    if isinstance(b, Box):
        opened = " open" if b.open else ""
        cls = f' class="{b.cls}"' if b.cls else ""
        summary = f"<summary>{b.summary}</summary>" if b.summary is not None else ""
        caption = f"<figcaption>{b.caption}</figcaption>" if b.caption is not None else ""
        return f'<{b.tag} id="{b.box_id}"{cls}{opened}>{summary}{_blocks(b.children)}{caption}</{b.tag}>'
    raise TypeError(f"no HTML form for a {type(b).__name__} block")


def _blocks(blocks) -> str:
    return "".join(_block(b) for b in blocks if "html" in b.formats)


def _section(s: Section) -> str:
    blocks = s.blocks_for("html")
    if not blocks:
        return ""
    title = s.title_html if s.title_html is not None else esc(s.title)
    return f'<section id="{s.anchor}"><h2>{title}</h2>{_blocks(blocks)}</section>'


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS, JS and SVG; no network)."""
    sections = [s for s in build_sections(report) if s.blocks_for("html")]
    body = "\n".join(
        part
        for part in (_header(report), _warnings(report), _nav(sections), *(_section(s) for s in sections))
        if part
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(JS)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(report.title)}</title>\n<style>{CSS}</style></head>\n"
        f"<body><main>\n{body}\n"
        f"<footer>Generated by qdqbench {esc(__version__)} from results.jsonl and run.json."
        "</footer>\n</main>\n"
        f"<script>{JS}</script>\n</body></html>\n"
    )
