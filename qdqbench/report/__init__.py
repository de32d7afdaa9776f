"""Reports of a run folder: HTML for reviewers, Markdown for pull requests, CSV for scripts.

``write_report(run_dir)`` loads ``results.jsonl`` and ``run.json``, builds the one row model
(``rows.build_report``) and hands it to each renderer in ``RENDERERS``, a registry keyed by
format name whose entries return ``{file name: text}``. Every renderer (``render/``) walks the
same ordered list of sections (``sections.SECTIONS``), built once from the rows. Files are written atomically into the
run folder. To add a format, add a renderer module and one registry entry. Lines of
``results.jsonl`` that cannot be read are warned about on stderr and listed at the top of the
HTML and Markdown reports; a damaged ``run.json`` is a one-line ``QdqbenchError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from qdqbench.core.errors import QdqbenchError, did_you_mean
from qdqbench.core.results import SkippedLine, load_records, load_run_info, warn_skipped, write_text_atomic
from qdqbench.report.render.csv import render_csv
from qdqbench.report.render.html import render_html
from qdqbench.report.render.markdown import render_markdown
from qdqbench.report.rows import Report, build_report

RENDERERS: Mapping[str, Callable[[Report], dict[str, str]]] = {
    "html": lambda report: {"report.html": render_html(report)},
    "md": lambda report: {"report.md": render_markdown(report)},
    "csv": render_csv,
}


def load_report(run_dir: Path) -> Report:
    """The row model of a run folder; a one-line error when the folder holds no run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QdqbenchError(f"run folder not found: {run_dir}")
    if not (run_dir / "results.jsonl").exists() and not (run_dir / "run.json").exists():
        raise QdqbenchError(f"not a run folder (no results.jsonl or run.json): {run_dir}")
    info = load_run_info(run_dir)
    skipped: list[SkippedLine] = []
    records = load_records(run_dir, on_skip=skipped.extend)
    warn_skipped(skipped)  # on stderr, and at the top of the report
    return build_report(records, info, run_dir=run_dir, skipped=skipped)


def write_report(run_dir: Path, formats: Iterable[str] = ("html", "md", "csv")) -> list[Path]:
    """Write report.html, report.md and the CSVs of a run into its folder; return their paths."""
    formats = list(formats)
    for name in formats:
        if name not in RENDERERS:
            raise QdqbenchError(
                f"unknown report format '{name}'{did_you_mean(name, RENDERERS)}; "
                f"choose from {', '.join(RENDERERS)}"
            )
    report = load_report(run_dir)
    written = []
    for name in dict.fromkeys(formats):  # keep order, drop repeats
        for filename, text in RENDERERS[name](report).items():
            path = Path(run_dir) / filename
            write_text_atomic(path, text)
            written.append(path)
    return written


__all__ = [
    "RENDERERS",
    "Report",
    "build_report",
    "load_report",
    "render_csv",
    "render_html",
    "render_markdown",
    "write_report",
]
