"""The building blocks every HTML section of the report uses: escaping, cells, rows, tables.

Every string from a suite or a run goes through ``esc`` (``html.escape`` with quotes); cells
carry the raw value in ``data-sort`` so the page's sorter orders numbers as numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from qdqbench.report.fmt import DASH


def esc(text: Any) -> str:
    """Text made safe for HTML content and attribute values."""
    return escape(str(text), quote=True)


def sort_value(x: Any) -> str:
    """A raw value as the sorter's data-sort attribute (booleans 1/0, None empty)."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "1" if x else "0"
    return esc(x)


def td(content: str, sort: Any = "", cls: str = "") -> str:
    """A cell; ``content`` is already HTML, ``sort`` the raw value the sorter uses."""
    attrs = f' class="{cls}"' if cls else ""
    if sort != "":
        attrs += f' data-sort="{sort_value(sort)}"'
    return f"<td{attrs}>{content}</td>"


def num_td(text: str, value: Any, cls: str = "") -> str:
    """A right-aligned number cell: formatted ``text``, sorted by the raw ``value``."""
    return td(esc(text), sort=value, cls=("num " + cls).strip())


def text_td(value: Any, cls: str = "") -> str:
    """A cell of escaped text (a dash when empty)."""
    return td(esc(value if value not in (None, "") else DASH), cls=cls)


def table_html(
    table_id: str, headers: Sequence[str], rows: Iterable[str], sortable: bool = True
) -> str:
    """A table; ``headers`` are HTML (escape any that came from a run), ``rows`` are ``tr``s."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    cls = ' class="sortable"' if sortable else ""
    body = "\n".join(rows)
    return (
        f'<div class="scroll"><table id="{table_id}"{cls}>'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>"
    )


def tr(row_id: str, cells: Iterable[str], cls: str = "") -> str:
    """A row with a stable id."""
    attrs = f' id="{row_id}"' + (f' class="{cls}"' if cls else "")
    return f"<tr{attrs}>" + "".join(cells) + "</tr>"


def verdict_class(passed: bool | None) -> str:
    """The row class of a verdict: pass, fail or none."""
    return "" if passed is None else "pass" if passed else "fail"
