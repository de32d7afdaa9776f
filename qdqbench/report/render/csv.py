"""Render the report's sections as CSV files for spreadsheets and scripts: one file per table.

Each section of ``report.sections`` names its CSV files, their columns and rows. Unlike the HTML
and Markdown renderers, CSV keeps the raw stored numbers at full precision and in their stored
units (scores, drops and ratios as fractions, latencies in ms, throughput in seq/s) so that
nothing is lost to rounding; booleans are ``true``/``false`` and a missing value is empty.
The views get long-format files (one line per scheme × engine, per point, per quantizer, ...),
which is what a script or a pivot table wants.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return: an error message, a step name, any free text from a run) get a leading
single quote, as OWASP advises against CSV injection. Numbers are never quoted: -0.5 stays -0.5.
"""

from __future__ import annotations

import csv
import io
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from qdqbench.report.rows import Report
from qdqbench.report.sections import build_sections

# Columns whose row attribute has another name.
_ATTR = {"peer": "is_peer"}


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A text that is only a number ("-0.5", "+3e-2") evaluates to itself, never to a formula.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _cell(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, numbers.Number):  # also numpy scalars
        return str(x)  # str(float) is repr: shortest round-tripping form
    return _text(str(x))


def _text(s: str) -> str:
    """``s`` made inert for spreadsheets: a leading quote on anything that would start a formula."""
    if s.startswith(_FORMULA_START) and not _NUMBER.fullmatch(s):
        s = "'" + s
    # csv.writer quotes a field only for the characters of its "\n" line terminator, so a bare
    # CR would be written unquoted and end the row early in a spreadsheet: write it as "\n".
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _csv(columns: Sequence[str], rows: Sequence[Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        get = row.get if isinstance(row, Mapping) else lambda c, r=row: getattr(r, _ATTR.get(c, c))
        writer.writerow([_cell(get(c)) for c in columns])
    return buf.getvalue()


def render_csv(report: Report) -> dict[str, str]:
    """CSV text per file name, for every CSV table of every section in order (each header-only
    when the run has no such rows): peers, accuracy, engines, calibrators, pareto, fidelity,
    latency, mlperf_style, where_time_goes, amax, sensitivity, recipe_trace, float_part_costs."""
    return {t.filename: _csv(t.columns, t.rows) for s in build_sections(report) for t in s.csv}
