"""The building blocks of every Markdown table qdqbench writes (the report and ``review``'s
compare): escaping for one GitHub table cell, and the table itself.

Cell text is escaped for GitHub tables: pipes are backslash-escaped, angle brackets become
entities (so a model called ``<script>`` shows as text), newlines become spaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from qdqbench.report.fmt import DASH


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
