"""Typed, versioned result records and the run folder that stores them.

A run folder holds ``run.json`` (suite, commit, versions, machine), ``results.jsonl`` (one JSON
object per finished cell, appended atomically with fsync so an interrupted run loses nothing and
resumes where it stopped) and ``artifacts/``. Every line of ``results.jsonl`` is plain JSON that
other tools can read without importing qdqbench; ``Record`` documents its fields.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qdqbench.core.errors import QdqbenchError

# The one atomic writer and the artifact hash live in core.files; re-exported for the run folder API.
from qdqbench.core.files import file_sha256, write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: F401

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

    @property
    def primary_metric(self) -> str | None:
        """The name of the cell's primary metric, or None; the one rule compare, history and report use.

        ``details.primary_metric`` (the runner records the task's), else the verdict's metric, each
        only when the record has that metric; else, for an accuracy cell, its first metric (tasks
        list their primary metric first); else None (latency, export and fidelity cells).
        """
        name = self.details.get("primary_metric")
        if isinstance(name, str) and self.metric(name) is not None:
            return name
        if self.verdict is not None and self.metric(self.verdict.metric) is not None:
            return self.verdict.metric
        if self.kind == "accuracy" and self.metrics:
            return self.metrics[0].name
        return None


class ResultStoreError(QdqbenchError):
    """``results.jsonl`` cannot be written (disk full, I/O error); the file is left parseable."""


@dataclass(frozen=True)
class SkippedLine:
    """A line of ``results.jsonl`` a reader could not use, and why."""

    path: Path
    line: int  # 1-based
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: line {self.line} skipped: {self.reason}"


def warn_skipped(skipped: Iterable[SkippedLine]) -> None:
    """Tell the user on stderr about every skipped line (readers never drop lines silently)."""
    for s in skipped:
        print(f"warning: {s}", file=sys.stderr)


class ResultStore:
    """Append-only JSONL of ``Record`` s; the last record of a cell wins on read.

    Writers append whole lines (``os.write`` looped until every byte is down, then ``fsync``); a
    write that fails part-way is cut back to the previous end, so the file always ends on a
    newline. A tail torn by a crash (bytes after the last newline) is moved aside by ``repair``
    before the next append, so a redone cell never lands on a fragment.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    # ------------------------------------------------------------------ writing

    def append(self, record: Record) -> None:
        """Append one record as one line, fsynced; ResultStoreError (file intact) if it can't."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (record.model_dump_json(exclude_none=False) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ResultStoreError(f"{self.path}: cannot open for appending: {exc.strerror or exc}") from None
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    n = _write(fd, view)
                    if n <= 0:
                        raise OSError(errno.EIO, "write wrote nothing")
                    view = view[n:]
                os.fsync(fd)
            except OSError as exc:
                # Cut back to the last whole line, so the file stays parseable for every reader.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                raise ResultStoreError(
                    f"{self.path}: the record of {record.cell} could not be written "
                    f"({exc.strerror or exc}); the file was left at its last whole line") from None
        finally:
            os.close(fd)

    def repair(self) -> SkippedLine | None:
        """Cut a torn last line (no newline) off the file, keeping it aside; what was cut, or None.

        The fragment goes to ``results.jsonl.torn-<n>`` beside the file for inspection.
        """
        if not self.path.is_file():
            return None
        with open(self.path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return None
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return None
            # Find the last newline by reading backwards in blocks.
            end, cut = size, 0
            while end > 0:
                start = max(0, end - 65536)
                fh.seek(start)
                block = fh.read(end - start)
                i = block.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                    break
                end = start
            fh.seek(cut)
            fragment = fh.read()
            n = 1
            while (aside := self.path.with_name(f"{self.path.name}.torn-{n}")).exists():
                n += 1
            aside.write_bytes(fragment)
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        line = self._count_lines(cut) + 1
        return SkippedLine(self.path, line, f"torn last line ({len(fragment)} bytes without a newline) "
                                            f"cut off and kept in {aside.name}")

    def _count_lines(self, upto: int) -> int:
        with open(self.path, "rb") as fh:
            return fh.read(upto).count(b"\n")

    # ------------------------------------------------------------------ reading

    def scan(self) -> tuple[list[Record], list[SkippedLine]]:
        """(records, skipped lines): later lines replace earlier ones of the same cell."""
        if not self.path.exists():
            return [], []
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise QdqbenchError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        by_cell: dict[str, Record] = {}
        skipped: list[SkippedLine] = []
        lines = raw.split(b"\n")
        torn = lines[-1] != b""
        for i, chunk in enumerate(lines, start=1):
            if not chunk.strip():
                continue
            last = i == len(lines)
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                skipped.append(SkippedLine(self.path, i, f"not UTF-8 (byte {exc.start})"))
                continue
            try:
                data = json.loads(text)
            except RecursionError:
                skipped.append(SkippedLine(self.path, i, "not a result record (JSON nested too deeply)"))
                continue
            except ValueError as exc:
                why = (f"torn last line ({len(chunk)} bytes without a newline)" if last and torn
                       else f"not valid JSON ({getattr(exc, 'msg', exc)} at column {getattr(exc, 'colno', '?')})")
                skipped.append(SkippedLine(self.path, i, why))
                continue
            try:
                rec = Record.model_validate(data)
            except (ValueError, RecursionError) as exc:
                first = exc.errors()[0] if hasattr(exc, "errors") else {}
                where = ".".join(str(p) for p in first.get("loc", ())) or "record"
                skipped.append(SkippedLine(self.path, i, f"not a result record ({where}: {first.get('msg', exc)})"))
                continue
            by_cell.pop(rec.cell, None)
            by_cell[rec.cell] = rec
        return list(by_cell.values()), skipped

    def __iter__(self) -> Iterator[Record]:
        return iter(self.read())

    def read(self) -> list[Record]:
        """All usable records (use ``scan`` to learn which lines were skipped)."""
        return self.scan()[0]

    def finished(self) -> dict[str, Record]:
        """Cells recorded as ok or skipped (a failed cell is retried on resume)."""
        return {r.cell: r for r in self.read() if r.status in ("ok", "skipped")}


def _write(fd: int, data: memoryview) -> int:
    """``os.write``; one seam so tests can inject short writes and ENOSPC."""
    return os.write(fd, data)


def load_records(run_dir: Path, *, on_skip: Callable[[list[SkippedLine]], None] | None = warn_skipped
                 ) -> list[Record]:
    """The records of a run folder; skipped lines go to ``on_skip`` (default: warnings on stderr)."""
    records, skipped = ResultStore(Path(run_dir) / "results.jsonl").scan()
    if skipped and on_skip is not None:
        on_skip(skipped)
    return records


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file of a run folder; QdqbenchError naming the file when it is unreadable or damaged."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise QdqbenchError(f"{path}: {what} is damaged (not UTF-8 at byte {exc.start})") from None
    except ValueError as exc:
        raise QdqbenchError(f"{path}: {what} is damaged (not valid JSON: {exc})") from None
    except OSError as exc:
        raise QdqbenchError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def load_run_info(run_dir: Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder, or an empty dict; QdqbenchError when it is damaged."""
    p = Path(run_dir) / "run.json"
    if not p.exists():
        return {}
    info = read_json_file(p, "run.json")
    if not isinstance(info, dict):
        raise QdqbenchError(f"{p}: run.json is damaged (a JSON {type(info).__name__}, not an object)")
    return info


def records_by(records: Iterable[Record], **match: Any) -> list[Record]:
    """Records whose named fields equal the given values."""
    return [r for r in records if all(getattr(r, k) == v for k, v in match.items())]
