"""The run loop: walk the cells of a suite into a run folder, resumable, one writer of results.

Work is grouped per model × task (one model load, one tokenization; ``group.GroupRun``) and per
scheme (one QDQBERT variant, calibrated once; ``variants``); each cell runs one step (``steps``)
inside its own error boundary: a cell that raises is recorded as failed with a one-line error
and the run goes on; cells that need its output fail with a message naming it. The loop here
holds the run folder's lock, repairs and verifies what a resumed run reuses, hands the pending
groups to an executor (``executor``: in-process today) and appends every finished cell to
``results.jsonl`` at once, so an interrupted run resumes (``--resume``) without recomputing or
losing anything. Latency is measured in a fresh process per cell (``timing.measure_in_subprocess``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from qdqbench.config.suite import Cell, Suite, expand
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.files import save_atomic
from qdqbench.core.results import (
    Record,
    ResultStore,
    ResultStoreError,
    load_run_info,
    read_json_file,
    write_json_atomic,
    write_text_atomic,
)
from qdqbench.run.context import CellFailure, threads
from qdqbench.run.executor import Executor, ExecutorLost, GroupHooks, GroupJob, InProcessExecutor
from qdqbench.run.group import GroupRun, now
from qdqbench.run.paths import RESULTS, RUN_JSON, SUITE_JSON, RunPaths, artifacts_dir_for, check_artifacts_dir

__all__ = ["CellFailure", "RESULTS", "RUN_JSON", "RunSummary", "Runner", "SUITE_JSON", "load_run_suite",
           "new_run_dir", "now", "save_atomic"]

class _StoreStopped(Exception):
    """``results.jsonl`` could not take a record: the run stops (nothing further could be kept)."""


@dataclass
class RunSummary:
    """Counts of a finished (or interrupted) run."""

    run_dir: Path
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    reused: int = 0
    interrupted: bool = False
    signal: int = 2  # the signal that interrupted the run (SIGINT 2, SIGTERM 15, SIGHUP 1)
    stopped: str | None = None  # why the run stopped early: results.jsonl could not be written
    lost: str | None = None  # why the run stopped early: the executor lost its cluster (resumable)
    notes: list[str] = field(default_factory=list)  # repairs and re-runs done before the first cell
    records: list[Record] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all cells ok, 3 some cell failed, 2 the store or a lost cluster stopped the run, 128+N
        interrupted by signal N."""
        if self.interrupted:
            return 128 + self.signal
        if self.stopped or self.lost:
            return 2
        return 3 if self.failed else 0


def new_run_dir(suite: Suite, base: Path | None = None, shard: tuple[int, int] | None = None) -> Path:
    """Create ``<output.dir>/<suite>-<UTC time>[-shardKofN][-n]`` exclusively and return it.

    ``mkdir`` without ``exist_ok``: two runs started in the same second get two folders.
    """
    from qdqbench.core.runlock import create_run_dir

    root = Path(base or suite.output.dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # Shards start in the same second on different machines: the shard is part of the name.
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return create_run_dir(root, f"{suite.name}-{stamp}{suffix}")


def load_run_suite(run_dir: Path) -> Suite:
    """The suite a run folder was started with (for --resume); one line when it is damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QdqbenchError(f"{run_dir}: run folder not found")
    p = run_dir / SUITE_JSON
    if not p.is_file():
        raise QdqbenchError(f"{run_dir}: not a qdqbench run folder (no {SUITE_JSON})")
    data = read_json_file(p, SUITE_JSON)
    try:
        return Suite.model_validate(data)
    except ValueError as exc:
        errors = exc.errors() if hasattr(exc, "errors") else []
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ())) or "(top level)"
        raise QdqbenchError(f"{p}: {SUITE_JSON} is damaged ({where}: {first.get('msg', exc)}); "
                            "it cannot be resumed") from None


class Runner:
    """Runs (or resumes) a suite into a run folder."""

    def __init__(self, suite: Suite, run_dir: Path, *, suite_path: Path | None = None,
                 console=None, show_progress: bool = True, cells: list[Cell] | None = None,
                 shard: tuple[int, int] | None = None, locked: bool = False,
                 executor: Executor | None = None, shard_source: str | None = None,
                 artifacts: Path | None = None):
        self.locked = locked  # the caller already holds the run folder's lock
        self.executor = executor or InProcessExecutor()
        self.suite = suite
        self.cells = cells if cells is not None else expand(suite)
        self.shard = shard
        self.shard_source = shard_source  # argument | QDQBENCH_SHARD | kubernetes | slurm (--shard auto)
        self.run_dir = Path(run_dir)
        self.artifacts = artifacts  # --artifacts DIR (checked); None: the run folder or what run.json names
        self.paths = RunPaths(self.run_dir)
        self.suite_path = suite_path
        self.store = ResultStore(self.paths.results)
        self.console = console
        self.show_progress = show_progress
        self._notes: list[str] = []  # repairs found at start: torn tail, damaged artifacts
        self._reruns: dict[str, str] = {}  # cell id -> why a finished cell runs again

    # ------------------------------------------------------------------ bookkeeping

    def _write_run_json(self, started: str, finished: str | None, state: str = "running") -> None:
        from qdqbench.core.env import environment

        info = {
            "run_id": self.run_dir.name,
            "suite": {"name": self.suite.name, "path": str(self.suite_path) if self.suite_path else None,
                      "description": self.suite.description},
            "started_at": started,
            "finished_at": finished,
            # running | finished | interrupted | stopped: a folder whose state is not "finished"
            # is incomplete (merge refuses it without --partial).
            "state": state,
            "accuracy_bound": {"bound": self.suite.accuracy.bound, "mode": self.suite.accuracy.mode},
            "timing": self.suite.timing.model_dump() | {"threads_used": self._threads()},
            "shard": ({"index": self.shard[0], "count": self.shard[1], "source": self.shard_source or "argument"}
                      if self.shard else None),
            "cells": len(self.cells),
            # --artifacts: where this run's artifacts live (None: <run>/artifacts); resume reads it.
            "artifacts": str(self.paths.artifacts_dir) if self.paths.artifacts_dir is not None else None,
            **environment(),
        }
        if (self.paths.run_json).exists():
            try:
                old = load_run_info(self.run_dir)
            except QdqbenchError as exc:
                old = {}
                self._note(f"{exc}; rewritten")
            if old:
                info["started_at"] = old.get("started_at", started)
                info["resumed_at"] = sorted(set(old.get("resumed_at", []) + [started]))
            if old.get("repairs") or self._notes:
                info["repairs"] = list(old.get("repairs", [])) + [f"{started}: {n}" for n in self._notes
                                                                 if f"{started}: {n}" not in old.get("repairs", [])]
        write_json_atomic(self.paths.run_json, info)

    def _threads(self) -> int:
        return threads(self.suite)

    def _say(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg)

    def _note(self, msg: str) -> None:
        self._notes.append(msg)
        if self.console is not None:
            self.console.print(f"[yellow]note[/yellow]: {msg}", highlight=False)

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunSummary:
        """Run every cell not yet finished; return the summary (never raises for a failing cell).

        Holds the run folder's lock throughout (RunFolderBusy when another process has it).
        """
        from qdqbench.core.runlock import RunLock

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)  # a library caller's folder; the lock guards it
        except OSError as exc:
            raise QdqbenchError(f"{self.run_dir}: cannot create the run folder: {exc.strerror or exc}") from None
        if self.locked:
            return self._run_locked()
        with RunLock(self.run_dir):
            return self._run_locked()

    def _artifacts_dir(self) -> Path | None:
        """Where this run's artifacts live: ``--artifacts DIR/<run id>``, or what a resumed run
        folder's run.json names (then checked reachable and writable again), or None (the run folder)."""
        stored = None
        if self.paths.run_json.exists():
            try:
                stored = load_run_info(self.run_dir).get("artifacts")
            except QdqbenchError:
                stored = None  # a damaged run.json is noted and rewritten later
        if self.artifacts is not None:
            wanted = artifacts_dir_for(check_artifacts_dir(self.artifacts), self.run_dir.name)
            if stored and Path(stored) != wanted:
                raise QdqbenchError(f"--artifacts {self.artifacts}: {self.run_dir} keeps its artifacts in "
                                    f"{stored}; resume it without --artifacts")
            return wanted
        if isinstance(stored, str) and stored:
            try:
                check_artifacts_dir(Path(stored).parent)
            except QdqbenchError as exc:
                raise QdqbenchError(f"{self.run_dir}: its artifacts folder {stored} (run.json) cannot be used: "
                                    f"{str(exc).split(': ', 1)[-1]}") from None
            return Path(stored)
        return None

    def _run_locked(self) -> RunSummary:
        started = now()
        self.paths = RunPaths(self.run_dir, self._artifacts_dir())
        try:
            torn = self.store.repair()
            if torn is not None:
                self._note(str(torn))
            for skipped in self.store.scan()[1]:  # damaged lines mid-file: their cells run again
                self._note(f"{skipped}; its cell runs again")
            write_text_atomic(self.paths.suite_json, self.suite.model_dump_json(indent=2))
            cells = self.cells
            done = self.store.finished()
            self._verify_artifacts(done)
            self._write_run_json(started, None)
        except OSError as exc:
            raise QdqbenchError(f"{getattr(exc, 'filename', None) or self.run_dir}: cannot write the run folder "
                                f"({exc.strerror or exc})") from None
        summary = RunSummary(self.run_dir, reused=sum(1 for c in cells if c.id in done), notes=list(self._notes))
        pending = [c for c in cells if c.id not in done]
        jobs = group_jobs(pending, done)
        progress = self._progress(len(pending))
        completed = False
        try:
            with progress:
                task_id = progress.add_task("cells", total=len(pending), cell="") if progress.enabled else None
                hooks = GroupHooks(started=lambda c: progress.update(task_id, cell=c.id), say=self._say)
                work = GroupRun(self.suite, self.run_dir, self.paths.artifacts_dir)
                for rec in self.executor.run(jobs, work, hooks):
                    self._finish(rec, summary)
                    progress.advance(task_id)
            completed = True
        except KeyboardInterrupt as exc:
            summary.interrupted = True
            summary.signal = getattr(exc, "signum", 2)
        except _StoreStopped as exc:
            summary.stopped = str(exc)
        except ExecutorLost as exc:
            summary.lost = str(exc)
        finally:
            try:
                # Only a loop that ran to its end finishes the folder; anything that escaped (a bug)
                # leaves it "stopped", so merge and resume never take it for a whole run.
                state = ("interrupted" if summary.interrupted else "finished" if completed
                         else "stopped")
                self._write_run_json(started, now() if state == "finished" else None, state)
            except OSError as exc:
                self._say(f"run.json not updated: {exc.strerror or exc}")
        summary.records = self.store.read()
        return summary

    def _verify_artifacts(self, done: dict[str, Record]) -> None:
        """Finished cells whose artifact (path + sha256 in the record) is missing or damaged run again.

        They are dropped from ``done`` (so they run in this pass, once) and their new record says why.
        """
        from qdqbench.core.files import file_sha256

        for cell_id, rec in list(done.items()):
            rel, digest = rec.details.get("path"), rec.details.get("sha256")
            if rec.status != "ok" or not rel or not digest:
                continue
            path = self.paths.resolve(rel)
            if not path.is_file():
                why = f"its artifact {rel} is missing"
            else:
                try:
                    actual = file_sha256(path)
                except OSError as exc:
                    actual = f"unreadable ({exc.strerror or exc})"
                if actual == digest:
                    continue
                why = f"its artifact {rel} is damaged (sha256 {actual[:12]}, recorded {digest[:12]})"
            del done[cell_id]
            self._reruns[cell_id] = why
            self._note(f"{cell_id}: {why}; the cell runs again")

    def _progress(self, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return _MaybeProgress(
            Progress(
                TextColumn("[bold]{task.fields[cell]}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False,
            ),
            enabled=self.show_progress and total > 0,
        )

    def _finish(self, rec: Record, summary: RunSummary) -> None:
        """Append a finished cell's record (the loop is the only writer) and count it."""
        if rec.cell in self._reruns:
            rec = rec.model_copy(update={"details": {**(rec.details or {}), "rerun": self._reruns.pop(rec.cell)}})
        try:
            self.store.append(rec)
        except ResultStoreError as exc:
            # The result is lost for now (the cell stays pending for --resume); everything already
            # stored is intact. Further cells could not be kept either, so the run stops here.
            summary.failed += 1
            raise _StoreStopped(str(exc)) from None
        setattr(summary, rec.status, getattr(summary, rec.status) + 1)
        if rec.status == "failed":
            self._say(f"[red]failed[/red] {rec.cell}: {rec.error}")


# --------------------------------------------------------------------------- small helpers


def group_jobs(pending: list[Cell], done: dict[str, Record]) -> list[GroupJob]:
    """One job per model × task, in suite order, with the records already finished for it."""
    groups: OrderedDict[tuple[str, str], list[Cell]] = OrderedDict()
    for c in pending:
        groups.setdefault((c.model, c.task), []).append(c)
    return [GroupJob(m, t, tuple(g), {cid: rec for cid, rec in done.items() if rec.model == m and rec.task == t})
            for (m, t), g in groups.items()]


class _MaybeProgress:
    """A rich Progress that can be switched off (tests, --quiet) without changing the call sites."""

    def __init__(self, progress, enabled: bool):
        self.progress, self.enabled = progress, enabled

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            return self.progress.__exit__(*exc)
        return False

    def add_task(self, *a, **k):
        return self.progress.add_task(*a, **k) if self.enabled else None

    def update(self, task_id, **k):
        if self.enabled:
            self.progress.update(task_id, **k)

    def advance(self, task_id):
        if self.enabled:
            self.progress.advance(task_id)
