"""The executor seam: where the model × task groups of a run are computed.

The run loop (``runner.Runner``) owns the run folder: it decides what is pending, hands the
executor one ``GroupJob`` per model × task, and is the only writer of ``results.jsonl``. An
executor runs each job with a ``GroupWork`` (``group.GroupRun``: load model and data, build each
scheme's variant, run every cell in its own error boundary) and yields each finished cell's
``Record`` back to the loop as soon as it exists, so an interrupted run loses nothing.

``InProcessExecutor`` runs the groups one after another in this process (what every run does
today). A distributed executor (one remote task per group, e.g. Ray) implements the same
``run``: submit ``work`` for each job, stream each record back, and let the loop append it; the
jobs and records are plain data that pickle. Workers need the artifacts (``run --artifacts DIR``,
or the run folder) on a shared filesystem: engine cells read the export cell's ONNX file and the
fp32 outputs. An executor that loses its cluster raises ``ExecutorLost``; the loop stops, keeps
what it stored and leaves the folder resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qdqbench.config.suite import Cell
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import Record


@dataclass(frozen=True)
class GroupJob:
    """One model × task group: its pending cells (in suite order) and the records already
    finished for that model × task (an engine cell of a resumed run needs its export's record)."""

    model: str
    task: str
    cells: tuple[Cell, ...]
    finished: dict[str, Record] = field(default_factory=dict)


@dataclass
class GroupHooks:
    """Callbacks from the work to the driver (no-ops where the driver cannot be reached)."""

    started: Callable[[Cell], None] = lambda cell: None  # a cell begins (progress display)
    say: Callable[[str], None] = lambda msg: None  # a line for the console


class ExecutorLost(QdqbenchError):
    """The executor lost what runs the groups (a Ray cluster's connection): the run stops with
    this one line, keeps every record already stored, and resumes with ``run --resume``."""


class GroupWork(Protocol):
    """Runs one group; yields one record per cell of the job, in order, never raising for a cell."""

    def __call__(self, job: GroupJob, hooks: GroupHooks) -> Iterator[Record]:
        ...


class Executor(Protocol):
    """Runs group jobs and yields their records to the loop as they finish (any order across
    groups; within a group, cell order). KeyboardInterrupt propagates; the loop records it;
    ``ExecutorLost`` stops the run (resumable)."""

    def run(self, jobs: Sequence[GroupJob], work: GroupWork, hooks: GroupHooks) -> Iterator[Record]:
        ...


class InProcessExecutor:
    """Every group in this process, one after another."""

    def run(self, jobs: Sequence[GroupJob], work: GroupWork, hooks: GroupHooks) -> Iterator[Record]:
        """Each job's records, in job order."""
        for job in jobs:
            yield from work(job, hooks)
