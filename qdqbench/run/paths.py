"""Where a run folder keeps what it writes: the one place its layout is spelled out.

``<run>/run.json``, ``suite.json``, ``results.jsonl``; per model × task × scheme an artifacts
folder (``model.onnx``, ``amax.json``, ``torch-outputs.npy``, ``torch-model.pt``, ``qat/``,
``auto/``); timing inputs per model × task × shape under ``artifacts/inputs/``. Records store
paths relative to the run folder (``rel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_JSON = "run.json"
SUITE_JSON = "suite.json"
RESULTS = "results.jsonl"


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder."""

    root: Path

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

    def artifacts(self, model: str, task: str, scheme: str, *, create: bool = True) -> Path:
        """The artifacts folder of one scheme of one model × task."""
        p = self.root / "artifacts" / model / task / scheme
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
        return self.root / "artifacts" / "inputs" / f"{model}-{task}-b{batch}s{seq}.npz"

    def gemm_floor(self) -> Path:
        """One-MatMul models, inputs and timings of the GEMM floor (``timing.floor``), per run."""
        return self.root / "artifacts" / "gemm-floor"

    def rel(self, path: Path) -> str:
        """``path`` relative to the run folder, as records store it."""
        return str(Path(path).relative_to(self.root))
