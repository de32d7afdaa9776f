"""What the steps of one model × task group share: the suite, the run folder's paths, the
prepared task, the records finished so far, the scheme's lazily built variant, and the torch
outputs every verdict compares with (``baseline_outputs``; ``recipe: auto`` reads them too)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.config.suite import Cell, SchemeSpec, Suite
from qdqbench.core.errors import one_line
from qdqbench.core.files import save_atomic
from qdqbench.core.results import Record
from qdqbench.run.paths import RunPaths
from qdqbench.tasks.base import PreparedTask


class CellFailure(Exception):
    """A dependency of a cell failed; the message says which."""


def threads(suite: Suite) -> int:
    """Intra-op threads of every engine: the suite's, else one per CPU."""
    return suite.timing.threads or os.cpu_count() or 1


def timing_settings(suite: Suite):
    """The suite's timing section as ``TimingSettings`` (latency cells and auto's candidates)."""
    from qdqbench.engines.timing import TimingSettings

    t = suite.timing
    return TimingSettings(warmup_s=t.warmup_s, warmup_iters=t.warmup_iters, min_iters=t.min_iters,
                          min_duration_s=t.min_duration_s, max_duration_s=t.max_duration_s)


@dataclass
class Variant:
    """A scheme's torch model (the fp32 model itself, or a calibrated QDQBERT copy) and its facts."""

    model: Any
    info: dict[str, Any]
    amaxes: dict[str, float] = field(default_factory=dict)


class Lazy:
    """Build a value on first use; remember a failure so dependent cells fail with its reason."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._value: Any = None
        self._error: str | None = None

    def get(self) -> Any:
        """The value, building it once."""
        if self._error is not None:
            raise CellFailure(self._error)
        if self._value is None:
            try:
                self._value = self._build()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001
                self._error = f"building the variant failed: {one_line(exc)}"
                raise CellFailure(self._error) from exc
        return self._value

    def drop(self) -> None:
        """Forget the value (frees a model copy between schemes)."""
        self._value = None


@dataclass
class GroupContext:
    """One model × task group in progress."""

    suite: Suite
    paths: RunPaths
    model_name: str
    task_key: str
    resolved: Any  # models.ResolvedModel
    data: PreparedTask
    finished: dict[str, Record]  # cell id -> its latest record (resumed and from this group)
    say: Callable[[str], None] = lambda msg: None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # scheme -> torch outputs

    def scheme(self, name: str) -> SchemeSpec:
        """The suite's scheme called ``name``."""
        return self.suite.schemes[name]

    @property
    def threads(self) -> int:
        """Intra-op threads of every engine."""
        return threads(self.suite)

    @property
    def eval_batch_size(self) -> int:
        """The task's evaluation batch size."""
        return self.suite.tasks[self.task_key].eval_batch_size

    def artifacts(self, scheme: str) -> Path:
        """The scheme's artifacts folder."""
        return self.paths.artifacts(self.model_name, self.task_key, scheme)

    def onnx(self, scheme: str) -> Path:
        """The scheme's ONNX export."""
        return self.paths.onnx(self.model_name, self.task_key, scheme)


def load_npy(path: Path) -> np.ndarray | None:
    """A saved output array, or None when it is unreadable (then it is recomputed, not trusted)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def npz_readable(path: Path) -> bool:
    """True when ``path`` is a complete ``.npz`` (a damaged one is rebuilt before timing)."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            return all(npz[name].size >= 0 for name in npz.files) and bool(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def cell_of(cell: Cell, *, scheme: str | None = None, backend: str | None = None, kind: str | None = None) -> Cell:
    """``cell`` with some of scheme, backend and kind replaced (a dependency's cell)."""
    return Cell(cell.model, cell.task, scheme or cell.scheme, backend or cell.backend, kind or cell.kind)


def torch_outputs(ctx: GroupContext, scheme: str, variant: Lazy) -> np.ndarray:
    """The scheme's torch outputs on the evaluation set (kept as an artifact for a resumed run)."""
    from qdqbench.tasks.evaluate import run_batches, torch_forward

    if scheme in ctx.outputs:
        return ctx.outputs[scheme]
    path = ctx.artifacts(scheme) / "torch-outputs.npy"
    out = load_npy(path) if path.exists() else None
    if out is None:
        data = ctx.data
        out = run_batches(data.eval_inputs, ctx.eval_batch_size, torch_forward(variant.get().model, data.output),
                          reduce=data.reduce)
        save_atomic(path, lambda fh: np.save(fh, out))
    ctx.outputs[scheme] = out
    return out


def baseline_outputs(ctx: GroupContext) -> np.ndarray:
    """The fp32 model's torch outputs (what every verdict and fidelity figure compares with)."""
    return torch_outputs(ctx, ctx.suite.baseline_scheme, Lazy(lambda: Variant(ctx.data.model, {})))


def engine_session(ctx: GroupContext, backend: Any, path: Path, request: Any) -> Any:
    """``backend`` prepared on the ONNX file ``path`` with ``request`` (precision, options), the
    suite's timed shapes and the group's threads: the one way a cell or ``recipe: auto`` builds an
    engine to score on."""
    from qdqbench.core.results import Shape

    suite = ctx.suite
    shapes = [Shape(batch=b, seq=q) for b in suite.shapes.batch for q in suite.shapes.seq]
    return backend.prepare(path, request.precision, shapes, threads=ctx.threads, **request.options)
