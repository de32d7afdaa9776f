"""What a report section is made of: declarative blocks that every renderer walks.

``sections.build_sections`` turns the row model into one ordered list of ``Section``s; the HTML,
Markdown and CSV renderers (``report/render/``) lay that same list out. A section is a title, an
anchor, a nav label and its blocks: tables of typed cells (``Table``/``Column``/``Row``/``Cell``),
notes, headings, charts (HTML only, pre-rendered SVG), containers (``Box``: figure, details,
div) and the CSV files of its rows (``CsvTable``). A block says which formats show it
(``formats``); a section with no block for a format is left out of that format.

Cells hold plain text; the renderers escape it. Where a format shows more than text (a link, a
badge, a coloured verdict), the cell carries that format's form (``html``, ``md``) beside it, so a
cell is written once, in one place, with every form it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qdqbench.report.fmt import DASH, fmt_verdict
from qdqbench.report.htmlparts import esc

HTML = frozenset({"html"})
MD = frozenset({"md"})
BOTH = frozenset({"html", "md"})


# ----------------------------------------------------------------------------------------------
# table pieces


@dataclass(frozen=True)
class Cell:
    """One table cell: plain ``text``; ``html``/``md`` when a format shows it otherwise.

    ``sort`` is the raw value the HTML sorter uses ("" for none; None sorts last); ``numeric``
    right-aligns it; ``cls``, ``cell_id``, ``style`` and ``title`` are HTML attributes.
    """

    text: str
    sort: Any = ""
    numeric: bool = False
    cls: str = ""
    html: str | None = None  # already-escaped HTML content
    md: str | None = None  # Markdown text (escaped by the renderer like ``text``)
    cell_id: str = ""
    style: str = ""
    title: str = ""


@dataclass(frozen=True)
class Column:
    """A column: its header (plain text; ``html_header`` when it needs markup), whether it is
    numeric (right-aligned in Markdown) and which formats show it."""

    header: str
    numeric: bool = False
    formats: frozenset[str] = BOTH
    md_header: str | None = None  # a shorter header for Markdown
    html_header: str | None = None  # already-escaped HTML


@dataclass(frozen=True)
class Row:
    """A row of cells (one per column), with a stable HTML id and class."""

    cells: tuple[Cell, ...]
    row_id: str = ""
    cls: str = ""


@dataclass(frozen=True)
class Table:
    """A table of typed cells; ``table_id`` is its HTML id."""

    table_id: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    sortable: bool = True
    formats: frozenset[str] = BOTH


# ----------------------------------------------------------------------------------------------
# other blocks


@dataclass(frozen=True)
class Note:
    """A paragraph: ``html`` (already escaped) in HTML, ``md`` in Markdown; None leaves it out."""

    html: str | None = None
    md: str | None = None
    cls: str = "note"
    block_id: str = ""
    tag: str = "p"

    @property
    def formats(self) -> frozenset[str]:
        """The formats that show this note."""
        return frozenset(f for f, text in (("html", self.html), ("md", self.md)) if text is not None)


@dataclass(frozen=True)
class Heading:
    """A sub-heading: ``html`` inside an ``<h3>`` (with ``anchor`` as id), ``md`` as written."""

    html: str | None = None
    md: str | None = None
    anchor: str = ""

    @property
    def formats(self) -> frozenset[str]:
        """The formats that show this heading."""
        return frozenset(f for f, text in (("html", self.html), ("md", self.md)) if text is not None)


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart (HTML only; the table beside it carries its numbers everywhere)."""

    svg: str
    formats: frozenset[str] = HTML


@dataclass(frozen=True)
class Pair:
    """Blocks side by side (a chart and its table)."""

    children: tuple[Any, ...]
    formats: frozenset[str] = HTML


@dataclass(frozen=True)
class Box:
    """An HTML container of blocks: a ``figure`` (with ``caption``), a ``details`` (with
    ``summary``, open or not) or a ``div``; all texts already-escaped HTML."""

    tag: str
    box_id: str
    children: tuple[Any, ...]
    caption: str | None = None
    summary: str | None = None
    open: bool = False
    cls: str = ""
    formats: frozenset[str] = HTML


@dataclass(frozen=True)
class CsvTable:
    """One CSV file: its columns (raw field names) and rows (row objects or mappings); each
    column reads the attribute (or key) of its name, ``peer`` reading ``is_peer``."""

    filename: str
    columns: tuple[str, ...]
    rows: Sequence[Any]


@dataclass(frozen=True)
class Section:
    """One section of the report, in the order the reports show it.

    ``title`` heads it in HTML (``title_html`` when it needs markup), ``md_title`` in Markdown
    (None: no heading there); ``nav`` is its link text in the HTML page's navigation (None: not
    linked; ``nav_cls`` its class). ``csv`` are the files of its rows, written whether or not the
    run has any.
    """

    anchor: str
    title: str
    blocks: tuple[Any, ...] = ()
    md_title: str | None = None
    nav: str | None = None
    nav_cls: str = ""
    title_html: str | None = None
    csv: tuple[CsvTable, ...] = field(default=())

    def blocks_for(self, fmt: str) -> list[Any]:
        """The blocks that format ``fmt`` shows."""
        return [b for b in self.blocks if fmt in b.formats]


# ----------------------------------------------------------------------------------------------
# typed cells


def text(value: Any, cls: str = "") -> Cell:
    """A text cell (a dash when empty)."""
    return Cell(str(value) if value not in (None, "") else DASH, cls=cls)


def num(shown: str, value: Any, cls: str = "") -> Cell:
    """A number cell: formatted ``shown``, sorted by the raw ``value``."""
    return Cell(shown, sort=value, numeric=True, cls=cls)


def verdict(passed: bool | None, missing: str = DASH, *, md: str | None = None, coloured: bool = False) -> Cell:
    """A verdict cell: pass / FAIL / ``missing``; in Markdown ``md`` or the ✅/❌ mark.

    ``coloured``: the cell carries its own pass/fail class (for rows that mix verdicts)."""
    own = "" if passed is None else "pass" if passed else "fail"
    cls = f"verdict {own}".strip() if coloured else "verdict"
    return Cell(fmt_verdict(passed, missing), sort=passed, cls=cls, md=md if md is not None else verdict_mark(passed))


def verdict_mark(passed: bool | None) -> str:
    """The Markdown verdict: ✅ pass, ❌ FAIL, or a dash."""
    return DASH if passed is None else "✅ pass" if passed else "❌ FAIL"


PEER_BADGE = '<span class="badge peer" title="a peer tool\'s recipe, not QDQBERT">peer</span>'


def scheme(name: str, is_peer: bool) -> Cell:
    """A scheme cell; a peer tool's recipe gets the peer badge (HTML) or "(peer)" (Markdown)."""
    return Cell(name, sort=name, html=esc(name) + (" " + PEER_BADGE if is_peer else ""),
                md=f"{name} (peer)" if is_peer else name)


def code(value: str | None, sort: Any = None) -> Cell:
    """Text shown as code in HTML (a path, a cell id, a version)."""
    return Cell(value or DASH, sort=value if sort is None else sort, html=f"<code>{esc(value or DASH)}</code>")
