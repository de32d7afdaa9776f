"""Peer INT8 recipes built: fp32 ONNX (or the fp32 torch model) in, quantized ONNX out.

``build_peer_onnx`` is the one verb: it validates the settings (``quant/peer_settings.py`` owns
them and the registry of kinds), runs the kind's builder from this module, writes the artifact
atomically and returns the facts for the record. The tools (ONNX Runtime's quantizers, ModelOpt)
are imported inside the builders, when called.

ONNX Runtime quirks handled here (seen on onnxruntime 1.32, transformers 5 exports):
- Calibration batches have different sequence lengths (length-bucketed batches). ORT's
  histogram calibrators (entropy, percentile) stack all collected outputs with ``np.asarray`` and
  fail on ragged shapes ("inhomogeneous shape"); minmax copes. The reader therefore hands ORT one
  batch per ``collect_data`` call (``CalibStridedMinMax: 1``, which despite its name strides every
  calibrator), so no padding is needed and memory stays at one batch of activations.
- ``quant_pre_process`` (symbolic shape inference + ORT's basic graph optimization) is run first
  by default, as ORT recommends: it lets ORT fuse more (4 instead of 2 SkipLayerNormalization on a
  2-layer BERT) and silences ORT's "consider pre-processing" warning; accuracy is unchanged.
  Symbolic shape inference stops with "Incomplete symbolic shape inference" on these exports
  unless ``auto_merge=True``, which is what is passed.
- With int8 *activations* in QDQ format ORT's CPU provider leaves the activation × activation
  MatMuls (Q·Kᵀ, P·V) unfused, in float; uint8 activations (the default) fuse all of them into
  QLinearMatMul. The engine's ``fused_ops`` shows which happened.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import ExportError, one_line
from qdqbench.core.files import publish, temp_path
from qdqbench.quant.peer_settings import (
    ModelOptSettings,
    OrtDynamicSettings,
    OrtStaticSettings,
    missing_requirement,
    peer_kind,
    validate_settings,
)

Feeds = dict[str, np.ndarray]


# --------------------------------------------------------------------------- building


def build_peer_onnx(
    kind: str,
    settings: Any,
    fp32_onnx: Path,
    out: Path,
    calibration_feeds: Iterable[Feeds] | None = None,
    torch_model: Any = None,
    *,
    output: str = "logits",
) -> dict[str, Any]:
    """Quantize ``fp32_onnx`` (or ``torch_model``) with ``kind``'s recipe into ``out``; its facts.

    ``calibration_feeds``: int64 batches (input_ids, attention_mask, token_type_ids; any sequence
    length) for the calibrated kinds. ``torch_model``: the fp32 model, for ModelOpt's torch API
    (``output`` names the attribute of its output that the export keeps, as in ``export_onnx``).
    The returned dict is JSON-ready: kind, settings, path, sha256, size_mb, op_counts,
    calibration_samples/batches, tool and version, seconds, notes.
    """
    entry = peer_kind(kind)
    settings = validate_settings(kind, settings)
    reason = missing_requirement(kind, settings)
    if reason:
        raise ExportError(reason)
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    input_names = _onnx_inputs(fp32_onnx)
    batches: list[Feeds] = []
    if entry.calibrated:
        batches = _calibration_batches(calibration_feeds, input_names, fp32_onnx, kind)
    if entry.uses_torch_model(settings) and torch_model is None:
        raise ExportError(f"scheme kind '{kind}' (api: torch) needs the fp32 torch model of {fp32_onnx}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)  # the peer tools write to a file name; published below
    t0 = time.perf_counter()
    try:
        facts = _builder(entry.build)(settings=settings, fp32_onnx=fp32_onnx, out=tmp, batches=batches,
                            torch_model=torch_model, output=output)
        data = tmp.read_bytes()
        counts = _op_counts(tmp)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 — a tool's failure becomes one line naming the file
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{kind} quantization of {fp32_onnx} failed: {one_line(exc, 300)}") from exc
    publish(tmp, out)
    return {
        "kind": kind,
        "settings": settings.model_dump(),
        "source": str(fp32_onnx),
        "path": str(out),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_mb": round(len(data) / 2**20, 4),
        "op_counts": counts,
        "qdq_nodes": counts.get("QuantizeLinear", 0) + counts.get("DequantizeLinear", 0),
        "calibration_samples": sum(int(b[input_names[0]].shape[0]) for b in batches),
        "calibration_batches": len(batches),
        "seconds": round(time.perf_counter() - t0, 3),
        "notes": [],
        **facts,
    }


def _builder(target: str | Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """The builder of a registry entry: the function its 'module:function' names (or a callable)."""
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _onnx_inputs(path: Path) -> list[str]:
    """The graph inputs of the fp32 ONNX (initializers excluded); one line naming a bad file."""
    import onnx

    if not path.is_file():
        raise ExportError(f"fp32 ONNX not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 — protobuf's DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    inits = {i.name for i in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    if not names or not proto.graph.node:
        raise ExportError(f"{path}: not a readable ONNX model (no graph inputs or nodes)")
    return names


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in proto.graph.node))


def _calibration_batches(feeds: Iterable[Feeds] | None, names: list[str], fp32: Path, kind: str) -> list[Feeds]:
    """The batches restricted to the model's inputs, int64, contiguous; checked for shape."""
    if feeds is None:
        raise ExportError(f"scheme kind '{kind}' needs calibration batches for {fp32}; none were given")
    out = []
    for i, batch in enumerate(feeds):
        missing = [n for n in names if n not in batch]
        if missing:
            raise ExportError(f"calibration batch {i} for {fp32} lacks input(s) {missing} (has {sorted(batch)})")
        arrays = {n: np.ascontiguousarray(batch[n], dtype=np.int64) for n in names}
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ExportError(f"calibration batch {i} for {fp32}: inputs must share one (batch, seq) shape, "
                              f"got {sorted(shapes)}")
        out.append(arrays)
    if not out:
        raise ExportError(f"scheme kind '{kind}' needs calibration batches for {fp32}; the feeds were empty")
    return out


@contextlib.contextmanager
def _quiet_stdout():
    """Swallow ORT's calibration ``print`` progress lines (restored on exit, even on error)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _ort_preprocess(fp32: Path, folder: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    pre = folder / "preprocessed.onnx"
    try:
        # auto_merge: without it symbolic shape inference gives up on transformers-5 exports.
        quant_pre_process(str(fp32), str(pre), auto_merge=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime pre-processing (quant_pre_process) of {fp32} failed: {one_line(exc, 300)}; "
                          "set preprocess: false to quantize the export as it is") from exc
    return pre


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


def build_ort_dynamic(*, settings: OrtDynamicSettings, fp32_onnx: Path, out: Path, **_: Any) -> dict[str, Any]:
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="qdqbench-peer-") as folder:
        source = _ort_preprocess(fp32_onnx, Path(folder)) if settings.preprocess else fp32_onnx
        quantize_dynamic(
            str(source), str(out), op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
            reduce_range=settings.reduce_range, weight_type=getattr(QuantType, _QUANT_TYPES[settings.weight_type]),
        )
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "tool_version": _ort_version(),
            "preprocessed": settings.preprocess}


class _FeedsReader:
    """An ORT CalibrationDataReader over in-memory batches, with ``set_range`` so ORT's strided
    calibration hands the calibrator one batch at a time (ragged sequence lengths)."""

    def __init__(self, batches: list[Feeds]):
        self._batches = batches
        self._pos, self._end = 0, len(batches)

    def get_next(self) -> Feeds | None:
        """The next batch of the current range, or None."""
        if self._pos >= self._end:
            return None
        self._pos += 1
        return self._batches[self._pos - 1]

    def __iter__(self):
        return iter(lambda: self.get_next(), None)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve batches ``start_index`` up to ``end_index`` (exclusive) next."""
        self._pos, self._end = start_index, min(end_index, len(self._batches))


def build_ort_static(*, settings: OrtStaticSettings, fp32_onnx: Path, out: Path, batches: list[Feeds],
                      **_: Any) -> dict[str, Any]:
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibrate_method]
    extra: dict[str, Any] = {"CalibStridedMinMax": 1, "ActivationSymmetric": settings.symmetric_activations}
    if settings.calibrate_method == "percentile":
        extra["CalibPercentile"] = settings.percentile
    with tempfile.TemporaryDirectory(prefix="qdqbench-peer-") as folder:
        source = _ort_preprocess(fp32_onnx, Path(folder)) if settings.preprocess else fp32_onnx
        with _quiet_stdout():
            quantize_static(
                str(source), str(out), _FeedsReader(batches),
                quant_format=QuantFormat.QDQ if settings.quant_format == "qdq" else QuantFormat.QOperator,
                op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=getattr(QuantType, _QUANT_TYPES[settings.activation_type]),
                weight_type=getattr(QuantType, _QUANT_TYPES[settings.weight_type]),
                calibrate_method=method, extra_options=extra,
            )
    return {"tool": "onnxruntime.quantization.quantize_static", "tool_version": _ort_version(),
            "preprocessed": settings.preprocess}


# --------------------------------------------------------------------------- ModelOpt


def _import_modelopt(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 — installed but broken (a missing dependency, CUDA libs)
        why = one_line(exc, 300)
        raise ExportError(f"nvidia-modelopt is installed but {module} cannot be imported: {why}") from exc


def _modelopt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-modelopt")
    except PackageNotFoundError:
        return "unknown"


def _modelopt_config(settings: ModelOptSettings) -> dict[str, Any]:
    """A copy of ModelOpt's preset with the algorithm override applied (the preset stays as it is)."""
    mtq = _import_modelopt("modelopt.torch.quantization")
    config = copy.deepcopy(getattr(mtq, settings.config))
    if settings.algorithm is not None:
        config["algorithm"] = settings.algorithm
    return config


def modelopt_quantize(model: Any, settings: ModelOptSettings, batches: list[Feeds]) -> Any:
    """A ModelOpt-quantized, calibrated copy of the fp32 torch ``model`` (the original is untouched)."""
    import torch

    from qdqbench.quant.export import model_input_names

    mtq = _import_modelopt("modelopt.torch.quantization")
    config = _modelopt_config(settings)
    names = model_input_names(model, batches[0])
    device = next(model.parameters()).device

    def forward_loop(m) -> None:
        with torch.no_grad():
            for feeds in batches:
                m(**{n: torch.from_numpy(feeds[n]).to(device) for n in names})

    quantized = copy.deepcopy(model).eval()
    return mtq.quantize(quantized, config, forward_loop)


def build_modelopt(*, settings: ModelOptSettings, fp32_onnx: Path, out: Path, batches: list[Feeds],
                    torch_model: Any, output: str, **_: Any) -> dict[str, Any]:
    if settings.api == "onnx":
        return _build_modelopt_onnx(settings, fp32_onnx, out, batches)
    import torch

    from qdqbench.quant.export import export_onnx

    # ModelOpt prints what it did ("Inserted 69 quantizers", "Smoothed 14 modules"): kept as notes
    # of the record rather than interleaved with the run's progress display.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        quantized = modelopt_quantize(torch_model, settings, batches)
    sample = {k: torch.from_numpy(v[:2]) for k, v in batches[0].items()}
    export_onnx(quantized, out, sample, output=output)
    notes = [f"modelopt: {ln.strip()}" for ln in printed.getvalue().splitlines() if ln.strip()]
    return {"tool": "modelopt.torch.quantization.quantize", "tool_version": _modelopt_version(),
            "algorithm": _modelopt_config(settings).get("algorithm"), "notes": notes[:20]}


def _build_modelopt_onnx(settings: ModelOptSettings, fp32_onnx: Path, out: Path,
                         batches: list[Feeds]) -> dict[str, Any]:
    import shutil
    import tempfile

    mo = _import_modelopt("modelopt.onnx.quantization")
    # ModelOpt takes one array per input and splits it into steps of ``calibration_shapes``: the
    # ragged batches are padded to the longest (mask 0, token id 0). Padded positions still pass
    # through the linear layers, so they take part in the activation ranges; recorded as a note.
    names = list(batches[0])
    width = max(b[names[0]].shape[1] for b in batches)
    rows = min(b[names[0]].shape[0] for b in batches)
    data = {n: np.concatenate([np.pad(b[n], ((0, 0), (0, width - b[n].shape[1]))) for b in batches]) for n in names}
    total = data[names[0]].shape[0]
    shapes = ",".join(f"{n}:{rows}x{width}" for n in names)
    with tempfile.TemporaryDirectory(prefix="qdqbench-peer-") as folder:
        # ModelOpt writes its intermediate models beside its input: give it a copy in a scratch
        # folder so nothing lands (or is left after a crash) in the fp32 scheme's artifacts.
        source = Path(folder) / fp32_onnx.name
        shutil.copy2(fp32_onnx, source)
        mo.quantize(
            onnx_path=str(source), quantize_mode="int8", calibration_data=data,
            calibration_method=settings.calibration_method, calibration_shapes=shapes,
            calibration_eps=list(settings.calibration_eps), output_path=str(out),
            # ModelOpt converts the float part to fp16 by default (for TensorRT); keep fp32 so the
            # comparison with the other schemes is INT8 against fp32 on every engine.
            high_precision_dtype="fp32", log_level="WARNING",
        )
    padded = int(sum((width - b[names[0]].shape[1]) * b[names[0]].shape[0] for b in batches))
    return {"tool": "modelopt.onnx.quantization.quantize", "tool_version": _modelopt_version(),
            "notes": [f"calibration batches padded to {width} tokens ({padded} padded positions of "
                      f"{total * width}) in steps of {rows} rows"]}


