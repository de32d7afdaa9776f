"""Results across runs in one SQLite file, and trend charts drawn from it.

``qdqbench history ingest RUN_DIR... --db FILE`` copies each run folder's ``run.json`` and
``results.jsonl`` into three tables (standard-library ``sqlite3``, no server):

* ``runs``    one row per run, keyed by ``run_id`` (``run.json``'s, else the folder name);
* ``cells``   one row per (run_id, cell): status, model, task, scheme, backend, shape, verdict;
* ``metrics`` one row per (run_id, cell, metric): value, unit, direction, interval.

Ingest is idempotent: a run is replaced as a whole inside one transaction, so ingesting the same
folder twice (or again after ``--resume`` finished more cells) leaves exactly one row per key.
``qdqbench history report --db FILE --out DIR`` writes ``history.html`` (inline SVG line charts of
each accuracy cell's primary metric (``Record.primary_metric``), each fidelity cell's SQNR and
each latency cell's mean, runs ordered by ``started_at``) and ``history.csv`` (every charted
number, long format). The commands themselves are ``cli.history``.

Lines of ``results.jsonl`` that cannot be read are never dropped silently: ingest warns about
each on stderr (``warning: PATH: line N skipped: why``) and says how many it skipped per run. A
damaged ``run.json`` is a one-line error naming it, and nothing is ingested.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import Record, SkippedLine, load_records, load_run_info, warn_skipped, write_text_atomic

DB_SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  started_at TEXT, finished_at TEXT, suite TEXT,
  git_commit TEXT, git_dirty INTEGER, cpu TEXT, gpu TEXT,
  source TEXT, ingested_at TEXT NOT NULL, run_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
  run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
  cell TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
  model TEXT, task TEXT, scheme TEXT, scheme_kind TEXT, backend TEXT, kind TEXT, precision TEXT,
  batch INTEGER, seq INTEGER, primary_metric TEXT, verdict_passed INTEGER, verdict_drop REAL,
  PRIMARY KEY (run_id, cell)
);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, cell TEXT NOT NULL, metric TEXT NOT NULL,
  value REAL, unit TEXT, higher_is_better INTEGER, ci_low REAL, ci_high REAL,
  PRIMARY KEY (run_id, cell, metric),
  FOREIGN KEY (run_id, cell) REFERENCES cells(run_id, cell) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS metrics_by_metric ON metrics(metric);
"""


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did: the run, its row counts, and whether it replaced an earlier copy."""

    run_id: str
    cells: int
    metrics: int
    replaced: bool
    skipped_lines: int = 0  # lines of results.jsonl that could not be read (warned about on stderr)


@dataclass(frozen=True)
class RunRow:
    """One run in the history, in trend order."""

    index: int  # position in started_at order (0 = oldest)
    run_id: str
    started_at: str | None
    suite: str | None
    commit: str | None
    gpu: str | None
    cpu: str | None
    cells: int
    failed: int

    @property
    def label(self) -> str:
        """A short x-axis label: the start date, or the run id."""
        return (self.started_at or "")[:10] or self.run_id


@dataclass(frozen=True)
class Trend:
    """One chart: a series per scheme (× backend), each a list of (run index, value)."""

    anchor: str
    title: str
    kind: str  # accuracy | fidelity | latency
    metric: str
    series: tuple[tuple[str, tuple[tuple[int, float], ...]], ...]
    baselines: tuple[str, ...]  # fp32 series (drawn dashed)


# ----------------------------------------------------------------------------------------------
# the database


def connect(db: Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (and create or check the schema of) a history database."""
    db = Path(db)
    if not create and not db.is_file():
        raise QdqbenchError(f"history database not found: {db}")
    if create:
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise QdqbenchError(f"{db}: not a qdqbench history database ({exc})") from None
    if row is None:
        with conn:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(DB_SCHEMA_VERSION),))
    elif int(row[0]) > DB_SCHEMA_VERSION:
        conn.close()
        raise QdqbenchError(f"{db}: history schema {row[0]} is newer than this qdqbench "
                            f"(supports {DB_SCHEMA_VERSION})")
    return conn


@dataclass(frozen=True)
class _Folder:
    path: Path
    run_id: str
    info: dict[str, Any]
    records: list[Record]
    skipped: list[SkippedLine]


def _run_folder(path: Path) -> _Folder:
    path = Path(path)
    if not path.is_dir():
        raise QdqbenchError(f"history ingest: run folder not found: {path}")
    if not (path / "results.jsonl").is_file():
        raise QdqbenchError(f"history ingest: not a run folder (no results.jsonl): {path}")
    info = load_run_info(path)
    skipped: list[SkippedLine] = []
    records = load_records(path, on_skip=skipped.extend)
    return _Folder(path, str(info.get("run_id") or path.name), info, records, skipped)


def _text(x: Any) -> str | None:
    """A run.json value as SQLite text (a hand-edited run.json may hold a list or an object)."""
    if x is None:
        return None
    return x if isinstance(x, str) else json.dumps(x, default=str) if isinstance(x, (dict, list)) else str(x)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ingest_run(conn: sqlite3.Connection, run_dir: Path | _Folder) -> IngestResult:
    """Replace one run's rows with the folder's contents, in one transaction."""
    folder = run_dir if isinstance(run_dir, _Folder) else _run_folder(run_dir)
    if not isinstance(run_dir, _Folder):
        warn_skipped(folder.skipped)
    run_id, info, records, run_dir = folder.run_id, folder.info, folder.records, folder.path
    suite = info.get("suite")
    suite_name = suite.get("name") if isinstance(suite, dict) else suite
    git = info.get("git") if isinstance(info.get("git"), dict) else {}
    machine = info.get("machine") if isinstance(info.get("machine"), dict) else {}
    n_metrics = 0
    with conn:  # one transaction: a crash mid-ingest leaves the previous copy intact
        replaced = conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None
        conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM cells WHERE run_id = ?", (run_id,))
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, _text(info.get("started_at")), _text(info.get("finished_at")),
             _text(suite_name), _text(git.get("commit")),
             None if git.get("dirty") is None else int(bool(git.get("dirty"))),
             _text(machine.get("cpu")), _text(machine.get("gpu")), str(Path(run_dir).resolve()), _now(),
             json.dumps(info, default=str)),
        )
        for r in records:
            v = r.verdict
            conn.execute(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, r.cell, r.status, r.error, r.model, r.task, r.scheme, r.scheme_kind,
                 r.backend, r.kind, r.precision, r.shape.batch if r.shape else None,
                 r.shape.seq if r.shape else None, r.primary_metric,
                 None if v is None else int(v.passed), None if v is None else v.drop),
            )
            for m in r.metrics:
                conn.execute(
                    "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, r.cell, m.name, m.value, m.unit,
                     None if m.higher_is_better is None else int(m.higher_is_better), m.ci_low, m.ci_high),
                )
                n_metrics += 1
    return IngestResult(run_id, len(records), n_metrics, replaced, len(folder.skipped))


def ingest(db: Path, run_dirs: Sequence[Path]) -> list[IngestResult]:
    """Ingest run folders (all are read first, so a typo or a damaged run.json ingests nothing).

    Every line of a results.jsonl that could not be read is warned about on stderr.
    """
    folders = [_run_folder(d) for d in run_dirs]
    for f in folders:
        warn_skipped(f.skipped)
    with closing(connect(db)) as conn:
        return [ingest_run(conn, f) for f in folders]


def _sort_key(started_at: str | None, run_id: str) -> tuple:
    # Parse rather than compare strings: '...+02:00' and '...Z' order wrongly as text.
    when = datetime.min.replace(tzinfo=timezone.utc)
    if started_at:
        try:
            when = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return (when, run_id)


def runs(conn: sqlite3.Connection, last: int | None = None) -> list[RunRow]:
    """Every run (or the latest ``last``) in started_at order, oldest first."""
    rows = conn.execute(
        "SELECT r.run_id, r.started_at, r.suite, r.git_commit, r.gpu, r.cpu, "
        "COUNT(c.cell), COALESCE(SUM(c.status = 'failed'), 0) "
        "FROM runs r LEFT JOIN cells c ON c.run_id = r.run_id GROUP BY r.run_id"
    ).fetchall()
    rows.sort(key=lambda r: _sort_key(r[1], r[0]))
    if last is not None:
        rows = rows[-last:] if last > 0 else []
    return [RunRow(i, *r) for i, r in enumerate(rows)]


def _points(conn: sqlite3.Connection, run_index: dict[str, int], kind: str,
            metric_sql: str) -> Iterator[tuple]:
    query = (
        "SELECT c.run_id, c.model, c.task, c.scheme, c.scheme_kind, c.backend, c.batch, c.seq, "
        "m.metric, m.value FROM cells c JOIN metrics m ON m.run_id = c.run_id AND m.cell = c.cell "
        f"WHERE c.status = 'ok' AND c.kind = ? AND m.metric = {metric_sql} AND m.value IS NOT NULL"
    )
    for row in conn.execute(query, (kind,)):
        if row[0] in run_index:
            yield (run_index[row[0]],) + tuple(row[1:])


def trends(conn: sqlite3.Connection, run_rows: Sequence[RunRow]) -> list[Trend]:
    """Accuracy (and fidelity) charts per model × task; latency per model × task × backend × shape."""
    from qdqbench.report.rows import slug

    index = {r.run_id: r.index for r in run_rows}
    groups: dict[tuple, dict[str, list[tuple[int, float]]]] = {}
    fp32: dict[tuple, set[str]] = {}
    metric_of: dict[tuple, str] = {}
    for i, model, task, scheme, skind, backend, _b, _s, metric, value in _points(
            conn, index, "accuracy", "c.primary_metric"):
        key = ("accuracy", model, task)
        name = f"{scheme} · {backend}"
        groups.setdefault(key, {}).setdefault(name, []).append((i, value))
        metric_of[key] = metric
        if skind == "fp32":
            fp32.setdefault(key, set()).add(name)
    # Embedding-fidelity cells (the offline quickstart) have no accuracy: their SQNR stands in.
    for i, model, task, scheme, _skind, backend, _b, _s, metric, value in _points(
            conn, index, "fidelity", "'sqnr_db'"):
        key = ("fidelity", model, task)
        groups.setdefault(key, {}).setdefault(f"{scheme} · {backend}", []).append((i, value))
        metric_of[key] = metric
    for i, model, task, scheme, skind, backend, batch, seq, metric, value in _points(
            conn, index, "latency", "'latency_mean_ms'"):
        key = ("latency", model, task, backend, batch, seq)
        groups.setdefault(key, {}).setdefault(scheme, []).append((i, value))
        metric_of[key] = metric
        if skind == "fp32":
            fp32.setdefault(key, set()).add(scheme)
    out = []
    for key in sorted(groups, key=lambda k: tuple("" if x is None else str(x) for x in k)):
        if key[0] in ("accuracy", "fidelity"):
            title = f"{key[1]} · {key[2]}: {metric_of[key]}"
        else:
            title = f"{key[1]} · {key[2]} · {key[3]} · batch {key[4]} × seq {key[5]}: mean latency"
        series = tuple((name, tuple(sorted(pts))) for name, pts in groups[key].items())
        out.append(Trend(slug(*key), title, key[0], metric_of[key], series,
                         tuple(sorted(fp32.get(key, ())))))
    return out


def write_history_report(db: Path, out_dir: Path, last: int | None = None) -> list[Path]:
    """Write history.html and history.csv for a database; return their paths."""
    from qdqbench.report.history_html import render_history_html

    with closing(connect(db, create=False)) as conn:
        run_rows = runs(conn, last)
        charts = trends(conn, run_rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["chart", "series", "run_index", "run_id", "started_at", "metric", "value"])
    by_index = {r.index: r for r in run_rows}
    for t in charts:
        for name, points in t.series:
            for i, value in points:
                w.writerow([t.title, name, i, by_index[i].run_id, by_index[i].started_at or "", t.metric, repr(value)])
    files = {"history.html": render_history_html(run_rows, charts), "history.csv": buf.getvalue()}
    paths = []
    for name, text in files.items():
        path = out_dir / name
        write_text_atomic(path, text)
        paths.append(path)
    return paths
