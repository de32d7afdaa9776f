"""Where a run folder keeps what it writes: the one place its layout is spelled out.

``<run>/run.json``, ``suite.json``, ``results.jsonl``; per model × task × scheme an artifacts
folder (``model.onnx``, ``amax.json``, ``torch-outputs.npy``, ``torch-model.pt``, ``qat/``,
``auto/``, engine caches beside the ONNX file); timing inputs per model × task × shape under
``inputs/``. The artifacts root is ``<run>/artifacts`` — or, with ``run --artifacts DIR`` (storage
every node of a cluster reaches), ``DIR/<run id>``, recorded in ``run.json`` (``artifacts``) so a
resume finds and verifies them there. Records store an artifact's path relative to the run folder
when it lies inside it and absolute otherwise (``rel``); ``resolve`` turns either back into a path.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdqbench.core.errors import QdqbenchError

RUN_JSON = "run.json"
SUITE_JSON = "suite.json"
RESULTS = "results.jsonl"
ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder (and of its artifacts, wherever they live)."""

    root: Path
    artifacts_dir: Path | None = None  # --artifacts: DIR/<run id>; None: <run>/artifacts

    @property
    def results(self) -> Path:
        """``results.jsonl``: one record per finished cell."""
        return self.root / RESULTS

    @property
    def run_json(self) -> Path:
        """``run.json``: environment, state, repairs."""
        return self.root / RUN_JSON

    @property
    def suite_json(self) -> Path:
        """``suite.json``: the suite the run was started with (for --resume)."""
        return self.root / SUITE_JSON

    @property
    def artifacts_root(self) -> Path:
        """Where every artifact of the run lives: ``<run>/artifacts`` or ``DIR/<run id>``."""
        return Path(self.artifacts_dir) if self.artifacts_dir is not None else self.root / ARTIFACTS

    def artifacts(self, model: str, task: str, scheme: str, *, create: bool = True) -> Path:
        """The artifacts folder of one scheme of one model × task."""
        p = self.artifacts_root / model / task / scheme
        if create:
            p.mkdir(parents=True, exist_ok=True)
        return p

    def onnx(self, model: str, task: str, scheme: str) -> Path:
        """The scheme's ONNX export (what the engines run)."""
        return self.artifacts(model, task, scheme) / "model.onnx"

    def torch_model(self, model: str, task: str, scheme: str, *, create: bool = True) -> Path:
        """The scheme's pickled torch module for the timing worker (removed after the scheme)."""
        return self.artifacts(model, task, scheme, create=create) / "torch-model.pt"

    def timing_inputs(self, model: str, task: str, batch: int, seq: int) -> Path:
        """Real-text timing feeds of one shape (shared by every scheme and engine)."""
        return self.artifacts_root / "inputs" / f"{model}-{task}-b{batch}s{seq}.npz"

    def gemm_floor(self) -> Path:
        """One-MatMul models, inputs and timings of the GEMM floor (``timing.floor``), per run."""
        return self.artifacts_root / "gemm-floor"

    def rel(self, path: Path) -> str:
        """``path`` as records store it: relative to the run folder when inside it, else absolute."""
        path = Path(path)
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path.absolute())

    def resolve(self, stored: str) -> Path:
        """The file a record's stored path (``rel``) names."""
        return self.root / stored

    def describe(self, path: Path) -> dict[str, Any]:
        """``{"path", "bytes", "sha256"}`` of an artifact, as a record carries it."""
        from qdqbench.core.files import file_sha256

        path = Path(path)
        return {"path": self.rel(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def artifacts_dir_for(given: Path, run_id: str) -> Path:
    """The artifacts root of run ``run_id`` under ``--artifacts DIR``: ``DIR/<run id>``, so two runs
    sharing DIR never overwrite each other's files."""
    return Path(given) / run_id


def check_artifacts_dir(given: Path) -> Path:
    """``--artifacts DIR`` made absolute, created if needed and proven writable; else one line."""
    path = Path(given).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise QdqbenchError(f"--artifacts {given}: not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QdqbenchError(f"--artifacts {given}: cannot create it ({exc.strerror or exc})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".qdqbench-probe-"):
            pass
    except OSError as exc:
        raise QdqbenchError(f"--artifacts {given}: not writable ({exc.strerror or exc})") from None
    return path
