"""Typed, versioned result records and the run folder that stores them.

A run folder holds ``run.json`` (suite, commit, versions, machine), ``results.jsonl`` (one JSON
object per finished cell, appended atomically with fsync so an interrupted run loses nothing and
resumes where it stopped) and ``artifacts/``. Every line of ``results.jsonl`` is plain JSON that
other tools can read without importing qdqbench; ``Record`` documents its fields.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Status = Literal["ok", "failed", "skipped"]


class Metric(BaseModel):
    """One measured number: what it is, its unit, which direction is better, and its interval."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: float | None
    unit: str = ""
    higher_is_better: bool | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class Verdict(BaseModel):
    """A quantized score checked against the suite's accuracy bound; stored, never recomputed."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    bound: float
    mode: Literal["relative", "absolute"]
    baseline: float
    value: float
    drop: float  # baseline - value, in the metric's own unit (fraction for scores in [0, 1])
    relative_drop: float  # drop / baseline
    threshold: float  # the lowest passing value
    passed: bool
    drop_ci_low: float | None = None  # paired bootstrap interval of (baseline - value)
    drop_ci_high: float | None = None
    within_noise: bool | None = None  # the paired interval of the drop contains 0


class Shape(BaseModel):
    """A timed input shape."""

    model_config = ConfigDict(extra="forbid")

    batch: int
    seq: int


class Record(BaseModel):
    """One finished cell of the matrix: one line of ``results.jsonl``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    cell: str
    status: Status
    error: str | None = None
    model: str
    task: str
    scheme: str
    scheme_kind: str = ""
    backend: str
    precision: str = ""  # the engine's effective precision, e.g. fp32, int8, bf16, int8-fakequant
    shape: Shape | None = None
    kind: str  # accuracy | fidelity | latency | export
    metrics: list[Metric] = Field(default_factory=list)
    verdict: Verdict | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    duration_s: float | None = None

    def metric(self, name: str) -> Metric | None:
        """The metric called ``name``, or None."""
        return next((m for m in self.metrics if m.name == name), None)


class ResultStore:
    """Append-only JSONL of ``Record`` s; the last record of a cell wins on read."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: Record) -> None:
        """Append one record as one line, flushed and fsynced before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = record.model_dump_json(exclude_none=False) + "\n"
        # One write() of one line on an O_APPEND descriptor: a crash leaves either the whole line
        # or (at worst) a truncated last line, which read() skips.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.read())

    def read(self) -> list[Record]:
        """All records, later lines replacing earlier ones of the same cell; torn lines skipped."""
        if not self.path.exists():
            return []
        by_cell: dict[str, Record] = {}
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = Record.model_validate_json(line)
                except ValueError:
                    continue  # a line torn by a crash mid-write
                by_cell.pop(rec.cell, None)
                by_cell[rec.cell] = rec
        return list(by_cell.values())

    def finished(self) -> dict[str, Record]:
        """Cells recorded as ok or skipped (a failed cell is retried on resume)."""
        return {r.cell: r for r in self.read() if r.status in ("ok", "skipped")}


def load_records(run_dir: Path) -> list[Record]:
    """The records of a run folder."""
    return ResultStore(Path(run_dir) / "results.jsonl").read()


def load_run_info(run_dir: Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder, or an empty dict."""
    p = Path(run_dir) / "run.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def records_by(records: Iterable[Record], **match: Any) -> list[Record]:
    """Records whose named fields equal the given values."""
    return [r for r in records if all(getattr(r, k) == v for k, v in match.items())]
