"""One model × task group: load the model and the task's data once, then per scheme build the
variant lazily and run each cell inside its own error boundary.

``GroupRun`` is the ``GroupWork`` every executor runs (``executor.py``): plain data in (the
suite, the run folder, a ``GroupJob``), records out. A cell that raises becomes a failed record
with one line; cells that need a failed dependency fail with a message naming it; a group whose
model or data cannot load fails all its cells with that one reason.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qdqbench.config.suite import Cell, Suite
from qdqbench.core.errors import QdqbenchError, one_line
from qdqbench.core.results import Record, Shape
from qdqbench.run import steps, variants
from qdqbench.run.context import CellFailure, GroupContext, Lazy
from qdqbench.run.executor import GroupHooks, GroupJob
from qdqbench.run.paths import RunPaths
from qdqbench.tasks.base import PreparedTask, TaskSettings


def now() -> str:
    """UTC timestamp, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record(suite: Suite, cell: Cell, *, status: str, **fields: Any) -> Record:
    """The record of a finished cell."""
    return Record(
        cell=cell.id, status=status, model=cell.model, task=cell.task, scheme=cell.scheme,
        scheme_kind=suite.schemes[cell.scheme].kind, backend=cell.backend, kind=cell.kind,
        shape=Shape(batch=cell.batch, seq=cell.seq) if cell.batch is not None else None,
        **fields,
    )


def prepare_task(suite: Suite, mname: str, tname: str, say=lambda msg: None) -> tuple[Any, PreparedTask]:
    """(resolved model, prepared task) of one model × task: the task decides its data and scoring."""
    from qdqbench.tasks import models, task_for

    mspec, tspec = suite.models[mname], suite.tasks[tname]
    resolved = models.resolve(mname, mspec)
    say(f"{mname}: weights from {resolved.source}")
    task = task_for(tspec.kind, tspec.name, tname)
    model, tokenizer = models.load_model(resolved, task.head)
    needed = max((variants.calibration_spec(s).samples for s in suite.schemes.values() if s.kind != "fp32"),
                 default=0)
    settings = TaskSettings(
        key=tname, model_name=mname, max_length=tspec.max_length or mspec.max_length, seed=suite.seed,
        data_dir=Path(tspec.data_dir) if tspec.data_dir else None, eval_limit=tspec.eval_limit,
        calibration_samples=needed, doc_stride=tspec.doc_stride, max_query_length=tspec.max_query_length,
        allow_dev_calibration=tspec.allow_dev_calibration, texts=tspec.texts,
    )
    return resolved, task.prepare(model, tokenizer, settings)


class GroupRun:
    """Runs the cells of one group job (``GroupWork``)."""

    def __init__(self, suite: Suite, run_dir: Path, artifacts_dir: Path | None = None):
        self.suite = suite
        self.paths = RunPaths(Path(run_dir), artifacts_dir)  # artifacts_dir: --artifacts DIR/<run id>

    def __call__(self, job: GroupJob, hooks: GroupHooks) -> Iterator[Record]:
        """One record per cell of ``job``, in order."""
        try:
            resolved, data = prepare_task(self.suite, job.model, job.task, hooks.say)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 — the whole group fails with one reason
            msg = one_line(exc)
            for c in job.cells:
                yield record(self.suite, c, status="failed", error=f"{job.model}/{job.task}: {msg}")
            return
        ctx = GroupContext(self.suite, self.paths, job.model, job.task, resolved, data,
                           dict(job.finished), say=hooks.say)
        by_scheme: OrderedDict[str, list[Cell]] = OrderedDict()
        for c in job.cells:
            by_scheme.setdefault(c.scheme, []).append(c)
        for sname, scells in by_scheme.items():
            variant = Lazy(lambda s=sname: variants.build(ctx, s))
            for c in scells:
                hooks.started(c)
                rec = self.run_cell(ctx, c, variant)
                ctx.finished[c.id] = rec
                yield rec
            variant.drop()
            # A pickled module per scheme is tens of MB; it only served this scheme's torch timing.
            self.paths.torch_model(job.model, job.task, sname, create=False).unlink(missing_ok=True)

    def run_cell(self, ctx: GroupContext, cell: Cell, variant: Lazy) -> Record:
        """The cell's record: its step's fields, or failed with one line (the error boundary)."""
        start, t0 = now(), time.perf_counter()
        step = steps.step_for(cell)
        try:
            fields = step(ctx, cell, variant)
            status = fields.pop("status", "ok")
            return record(self.suite, cell, status=status, started_at=start,
                          duration_s=time.perf_counter() - t0, **fields)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 — recorded, the run goes on
            details = {} if isinstance(exc, (QdqbenchError, CellFailure)) else {
                "traceback": traceback.format_exc(limit=8)}
            return record(self.suite, cell, status="failed", error=one_line(exc), started_at=start,
                          duration_s=time.perf_counter() - t0, details=details)
