"""The task registry: ``get_task("sst-2")`` returns the task object the runner evaluates.

Tasks are data (``TextTask`` in ``base.py``); each task family lives in its own module and adds
its tasks to ``_REGISTRY`` here, so a new family (SQuAD) is one module and one registry line.
Importing this package needs only numpy: metric back ends (scipy) and data back ends (datasets,
pandas) are imported when used, so ``qdqbench ls`` and ``validate`` work without them.
"""

from __future__ import annotations

import re

from qdqbench.core.errors import TaskError, did_you_mean
from qdqbench.tasks import glue, squad
from qdqbench.tasks.base import MetricSpec, PreparedTask, TaskSettings, TextExample, TextTask
from qdqbench.tasks.fidelity import FidelityTask
from qdqbench.tasks.glue import GlueTask, align_labels

Task = GlueTask | squad.SquadTask  # what get_task returns

# What a run prepares (``prepare(model, tokenizer, TaskSettings) -> PreparedTask``): a registered
# task, or the offline embedding-fidelity task, which needs no registry entry.
RunnableTask = GlueTask | squad.SquadTask | FidelityTask

__all__ = [
    "GLUE_TASKS",
    "TASK_NAMES",
    "GlueTask",
    "FidelityTask",
    "MetricSpec",
    "PreparedTask",
    "RunnableTask",
    "Task",
    "TaskSettings",
    "TextExample",
    "TextTask",
    "align_labels",
    "get_task",
    "task_for",
]

_REGISTRY: dict[str, Task] = {
    **{task.name: task for task in glue.TASKS},
    **{task.name: task for task in squad.TASKS},
}

GLUE_TASKS: tuple[str, ...] = tuple(task.name for task in glue.TASKS)
TASK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _key(name: str) -> str:
    """A task name without case, '-', '_' or spaces: "SST-2", "sst_2" and "sst2" are one task."""
    return re.sub(r"[\s_\-]+", "", name.lower())


# Other names for registered tasks, by _key; each task's own name is added below.
_ALIASES: dict[str, str] = {
    "mnlim": "mnli",
    "mnlimatched": "mnli",
    "mnlimismatched": "mnli-mm",
}
_LOOKUP: dict[str, str] = {**_ALIASES, **{_key(name): name for name in _REGISTRY}}


def get_task(name: str) -> Task:
    """The registered task called ``name`` (case-insensitive; "sst-2" is "sst2"), else TaskError."""
    found = _LOOKUP.get(_key(name))
    if found is None:
        raise TaskError(
            f"unknown task {name!r}{did_you_mean(name.strip().lower(), TASK_NAMES)}; "
            f"known tasks: {', '.join(TASK_NAMES)}"
        )
    return _REGISTRY[found]


def task_for(kind: str, name: str | None, key: str) -> RunnableTask:
    """The task a suite entry runs: ``kind`` and optional registry ``name`` as the suite gives
    them, ``key`` the suite's key (the name when none is given; "squad" for kind squad)."""
    if kind == "embedding-fidelity":
        return FidelityTask()
    return get_task(name or ("squad" if kind == "squad" else key))
