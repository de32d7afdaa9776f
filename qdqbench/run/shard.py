"""Split a suite's cells into N shards of about equal expected cost, for N machines in parallel.

The unit of work is a model × task group: its cells share one model load, one tokenization, the
fp32 outputs every verdict compares with, each scheme's calibrated variant and its ONNX export
(an engine cell needs the export cell of its scheme in the same run folder), and the fp32 latency
every speedup is measured beside. So a group is never split; groups are assigned to shards by
LPT (longest processing time first: the costliest group goes to the least-loaded shard), which
is deterministic (ties broken by the group's name, then the shard number) and within 4/3 of the
best possible makespan. With fewer groups than shards some shards are empty.

The cost model is deliberately simple and only its ratios matter (``estimate_cost``):

* accuracy / fidelity cell: examples scored × ``SECONDS_PER_EXAMPLE`` (examples: the task's
  ``eval_limit``, else its known GLUE dev size, else ``DEFAULT_EXAMPLES``; fidelity: ``texts``);
  a quantized scheme's torch cell adds its calibration samples;
* latency cell: ``warmup_s + min_duration_s`` of the suite's timing plus a process start (twice
  for ONNX Runtime's fp32 cells, which time the plain and the fused graph);
* export cell: ``EXPORT_SECONDS``; each group adds ``GROUP_SECONDS`` for loading model and data.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence

from qdqbench.config.suite import Cell, Suite, TaskSpec, TimingSpec
from qdqbench.core.errors import QdqbenchError

# Dev-set sizes of the GLUE tasks (the evaluation split qdqbench scores) and SQuAD.
DEV_EXAMPLES = {
    "cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "qqp": 40430, "mnli": 9815,
    "mnli-mm": 9832, "qnli": 5463, "rte": 277, "wnli": 71, "squad": 10570, "squad-v2": 11873,
}
DEFAULT_EXAMPLES = 1000
SECONDS_PER_EXAMPLE = 0.01  # BERT-base at seq 128, batched, on a CPU engine; GPU is faster, alike for all
EXPORT_SECONDS = 10.0
GROUP_SECONDS = 15.0
PROCESS_START_SECONDS = 2.0

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' → (2, 4): shard K of N, 1-based; a one-line QdqbenchError otherwise."""
    m = _SHARD_RE.match(str(text))
    if not m:
        raise QdqbenchError(f"--shard '{text}': expected K/N with whole numbers, e.g. 2/4")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise QdqbenchError(f"--shard '{text}': N must be at least 1")
    if not 1 <= k <= n:
        raise QdqbenchError(f"--shard '{text}': K must be between 1 and N={n} (shards are numbered from 1)")
    return k, n


def _task_examples(name: str, spec: TaskSpec | None) -> int:
    if spec is not None and spec.kind == "embedding-fidelity":
        return spec.texts
    key = ((spec.name if spec is not None else None) or name).lower().replace("-", "").replace("_", "")
    size = {k.replace("-", ""): v for k, v in DEV_EXAMPLES.items()}.get(key, DEFAULT_EXAMPLES)
    if spec is not None and spec.eval_limit:
        size = min(size, spec.eval_limit)
    return size


def estimate_cost(cell: Cell, suite: Suite | None = None) -> float:
    """Expected seconds of one cell under the module's cost model."""
    timing = suite.timing if suite is not None else TimingSpec()
    if cell.kind == "latency":
        one = timing.warmup_s + timing.min_duration_s + PROCESS_START_SECONDS
        scheme = suite.schemes.get(cell.scheme) if suite is not None else None
        if timing.best_fp32 and scheme is not None and scheme.kind == "fp32":
            from qdqbench.engines import fp32_timing_runs

            return fp32_timing_runs(cell.backend) * one  # each fp32 configuration the engine declares
        return one
    if cell.kind == "export":
        return EXPORT_SECONDS
    task = suite.tasks.get(cell.task) if suite is not None else None
    cost = _task_examples(cell.task, task) * SECONDS_PER_EXAMPLE
    if suite is not None and cell.backend == "torch":
        scheme = suite.schemes.get(cell.scheme)
        if scheme is not None and scheme.kind == "qdq":
            cost += scheme.calibration.samples * SECONDS_PER_EXAMPLE
    return cost


def group_key(cell: Cell) -> tuple[str, str]:
    """The unit of sharding: (model, task)."""
    return (cell.model, cell.task)


def assign_groups(costs: dict[tuple[str, str], float], n: int) -> dict[tuple[str, str], int]:
    """LPT: each group, costliest first (ties by name), to the least-loaded shard (ties: lowest index)."""
    loads = [0.0] * n
    out = {}
    for key in sorted(costs, key=lambda k: (-costs[k], k)):
        i = min(range(n), key=lambda j: (loads[j], j))
        out[key] = i
        loads[i] += costs[key]
    return out


def shard_cells(cells: Sequence[Cell], k: int, n: int, suite: Suite | None = None,
                cost: Callable[[Cell], float] | None = None) -> list[Cell]:
    """The cells of shard ``k`` of ``n`` (1-based), in their original order."""
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
        raise QdqbenchError(f"shard {k}/{n}: K must be between 1 and N")
    cost_of = cost or (lambda c: estimate_cost(c, suite))
    parts: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
    for c in cells:
        parts.setdefault(group_key(c), [GROUP_SECONDS]).append(cost_of(c))
    # fsum is exact, so a group's cost (and so every tie) does not depend on the cells' order.
    where = assign_groups({key: math.fsum(costs) for key, costs in parts.items()}, n)
    return [c for c in cells if where[group_key(c)] == k - 1]


def shard_loads(cells: Sequence[Cell], n: int, suite: Suite | None = None,
                cost: Callable[[Cell], float] | None = None) -> list[float]:
    """The expected cost of each of the ``n`` shards (for logs and tests)."""
    cost_of = cost or (lambda c: estimate_cost(c, suite))
    loads = [0.0] * n
    for k in range(1, n + 1):
        part = shard_cells(cells, k, n, suite, cost_of)
        groups = {group_key(c) for c in part}
        loads[k - 1] = sum(cost_of(c) for c in part) + GROUP_SECONDS * len(groups)
    return loads


# --------------------------------------------------------------------------- --shard auto

AUTO = "auto"
SHARD_ENV = "QDQBENCH_SHARD"  # K/N (1-based), e.g. set from a GitHub Actions matrix
SHARD_COUNT_ENV = "QDQBENCH_SHARD_COUNT"  # N, beside Kubernetes' JOB_COMPLETION_INDEX
AUTO_VARIABLES = (f"{SHARD_ENV}=K/N, JOB_COMPLETION_INDEX with {SHARD_COUNT_ENV} (or JOB_COMPLETIONS), "
                  "SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT")


def _whole(env, name: str) -> int:
    text = str(env.get(name, "")).strip()
    if not re.fullmatch(r"\d+", text):
        raise QdqbenchError(f"--shard auto: {name}='{env.get(name, '')}' is not a whole number")
    return int(text)


def shard_from_environment(env) -> tuple[int, int, str]:
    """``--shard auto``: (K, N, source) from a scheduler's environment variables, K 1-based.

    Checked in this order, the first that is set wins:

    * ``QDQBENCH_SHARD=K/N`` (a GitHub Actions matrix, or any scheduler by hand);
    * Kubernetes indexed Job: ``JOB_COMPLETION_INDEX`` (0-based) with ``QDQBENCH_SHARD_COUNT``
      or ``JOB_COMPLETIONS`` (either set in the manifest to ``spec.completions``);
    * Slurm job array: ``SLURM_ARRAY_TASK_ID`` with ``SLURM_ARRAY_TASK_COUNT``; the index is taken
      relative to ``SLURM_ARRAY_TASK_MIN`` (``--array=1-4`` and ``--array=0-3`` both give 1..4);
      an array with a step or gaps (``--array=0,2,7``) is refused: its ids are not 0..N-1.

    Raises a one-line QdqbenchError naming the variables when none is set or they disagree.
    """
    if str(env.get(SHARD_ENV, "")).strip():
        text = env[SHARD_ENV]
        m = _SHARD_RE.match(str(text))
        if not m:
            raise QdqbenchError(f"--shard auto: {SHARD_ENV}='{text}': expected K/N, e.g. 2/4")
        k, n = int(m.group(1)), int(m.group(2))
        if not 1 <= k <= n:
            raise QdqbenchError(f"--shard auto: {SHARD_ENV}='{text}': K must be between 1 and N")
        return k, n, SHARD_ENV
    if str(env.get("JOB_COMPLETION_INDEX", "")).strip():
        index = _whole(env, "JOB_COMPLETION_INDEX")
        count_var = next((v for v in (SHARD_COUNT_ENV, "JOB_COMPLETIONS") if str(env.get(v, "")).strip()), None)
        if count_var is None:
            raise QdqbenchError(f"--shard auto: JOB_COMPLETION_INDEX is set but neither {SHARD_COUNT_ENV} "
                                "nor JOB_COMPLETIONS gives the Job's completions")
        n = _whole(env, count_var)
        if not 0 <= index < n:
            raise QdqbenchError(f"--shard auto: JOB_COMPLETION_INDEX={index} is not below {count_var}={n}")
        return index + 1, n, "kubernetes"
    if str(env.get("SLURM_ARRAY_TASK_ID", "")).strip():
        task = _whole(env, "SLURM_ARRAY_TASK_ID")
        if not str(env.get("SLURM_ARRAY_TASK_COUNT", "")).strip():
            raise QdqbenchError("--shard auto: SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT")
        n = _whole(env, "SLURM_ARRAY_TASK_COUNT")
        low = _whole(env, "SLURM_ARRAY_TASK_MIN") if str(env.get("SLURM_ARRAY_TASK_MIN", "")).strip() else 0
        if str(env.get("SLURM_ARRAY_TASK_MAX", "")).strip():
            high = _whole(env, "SLURM_ARRAY_TASK_MAX")
            if high - low + 1 != n:
                raise QdqbenchError(f"--shard auto: the Slurm array {low}-{high} has {n} tasks, not {high - low + 1}: "
                                    "use a contiguous array without a step (--array=1-N)")
        if n < 1 or not 0 <= task - low < n:
            raise QdqbenchError(f"--shard auto: SLURM_ARRAY_TASK_ID={task} is outside the array "
                                f"(SLURM_ARRAY_TASK_MIN={low}, SLURM_ARRAY_TASK_COUNT={n})")
        return task - low + 1, n, "slurm"
    raise QdqbenchError(f"--shard auto: no scheduler variable is set (one of {AUTO_VARIABLES})")


def resolve_shard(text: str | None, env=None) -> tuple[tuple[int, int] | None, str | None]:
    """``--shard`` text → ((K, N) or None, source): 'auto' reads the environment, else ``parse_shard``."""
    import os

    if not text:
        return None, None
    if str(text).strip().lower() == AUTO:
        k, n, source = shard_from_environment(os.environ if env is None else env)
        return (k, n), source
    return parse_shard(text), "argument"
