"""Peer INT8 recipes' settings and their registry: pure and torch-free, read by suite validation.

A peer scheme (``ort-dynamic``, ``ort-static``, ``modelopt``) does not build a QDQBERT variant: it
turns the fp32 ONNX export of the model (and, for the calibrated kinds, the scheme's calibration
batches) into a quantized ONNX artifact with another tool's own recipe, so the engines can score
and time it beside QDQBERT. Each kind is one entry of ``PEER_KINDS``: a frozen pydantic settings
model, where its builder lives (``quant/peer_builders.py``, imported only to build), and the
package it needs (checked with ``importlib.util.find_spec``, never imported, so ``validate`` stays
fast and works without the optional tools).


Kinds:
- ``ort-dynamic`` — ``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations
  quantized per batch at run time (uint8, ORT's only choice); no calibration.
- ``ort-static`` — ``quantize_static``: calibrated activation ranges (minmax, entropy or
  percentile), QDQ format by default (QOperator optional).
- ``modelopt`` — NVIDIA ModelOpt INT8, optional (``nvidia-modelopt``). ``api: torch`` (default):
  ``mtq.quantize(model, mtq.INT8_DEFAULT_CFG | INT8_SMOOTHQUANT_CFG, forward_loop)`` on a copy of
  the fp32 torch model, then the same TorchScript ONNX export as QDQBERT (ModelOpt's int8
  quantizers export as QuantizeLinear/DequantizeLinear). ``api: onnx``:
  ``modelopt.onnx.quantization.quantize`` on the fp32 ONNX (needs ``nvidia-modelopt[onnx]``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qdqbench.core.errors import SuiteError, did_you_mean

# Op types each ORT quantizer knows (mirrors onnxruntime.quantization.registry of ORT 1.32;
# tests/quant/test_peers.py checks they are still known to the installed ORT). Listed here so settings
# validate without importing onnxruntime.quantization (half a second).
ORT_DYNAMIC_OP_TYPES = ("Attention", "Conv", "EmbedLayerNormalization", "Gather", "LSTM", "MatMul", "Transpose")
ORT_QDQ_OP_TYPES = (
    "AveragePool", "BatchNormalization", "Clip", "Conv", "ConvTranspose", "CumSum", "Flatten", "Gather",
    "GatherElements", "Gemm", "InstanceNormalization", "LayerNormalization", "MatMul", "MaxPool", "Pad",
    "Relu", "Reshape", "Resize", "Slice", "Split", "Squeeze", "TopK", "Transpose", "Unsqueeze", "Where",
)
ORT_QOPERATOR_OP_TYPES = (
    "Add", "ArgMax", "AveragePool", "Clip", "Concat", "Conv", "EmbedLayerNormalization", "Flatten", "Gather",
    "Gemm", "GlobalAveragePool", "LeakyRelu", "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape", "Resize",
    "Sigmoid", "Softmax", "Split", "Squeeze", "Transpose", "Unsqueeze", "Where",
)


class PeerSettingsError(SuiteError, ValueError):
    """Peer settings that do not validate; one line per problem (a ValueError, so pydantic
    validators of the suite can raise it through)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _check_op_types(op_types: list[str], known: tuple[str, ...], what: str) -> list[str]:
    if not op_types:
        raise ValueError("op_types: give at least one op type")
    if len(set(op_types)) != len(op_types):
        raise ValueError(f"op_types: duplicates in {op_types}")
    for op in op_types:
        if op not in known:
            raise ValueError(f"op_types: '{op}' is not an op type {what} quantizes{did_you_mean(op, known)}")
    return op_types


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrtDynamicSettings(_Settings):
    """``quantize_dynamic``: int8 weights, uint8 activations quantized per batch at run time.

    ``op_types`` defaults to the encoder's matmuls: ``MatMul`` (every linear layer; dynamic mode
    only quantizes MatMuls with a constant weight) and ``Attention`` (ORT's fused attention, when
    the graph has one). ORT's own default (an empty list) would quantize every op it knows,
    including ``Gather`` (the embedding tables), which QDQBERT keeps in float; add it here to get
    ORT's default.
    """

    per_channel: bool = False
    weight_type: Literal["int8", "uint8"] = "int8"
    op_types: list[str] = Field(default_factory=lambda: ["MatMul", "Attention"])
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 overflow on AVX2/AVX-512 without VNNI
    preprocess: bool = True  # run quant_pre_process first (see the module docstring)

    @field_validator("op_types")
    @classmethod
    def _ops(cls, v: list[str]) -> list[str]:
        return _check_op_types(v, ORT_DYNAMIC_OP_TYPES, "quantize_dynamic")


class OrtStaticSettings(_Settings):
    """``quantize_static``: calibrated activations; QDQ format (what CPU kernels and TensorRT fuse).

    uint8 activations with int8 weights is ORT's recommendation for x86 CPUs (and the only choice
    that fuses every BERT matmul on ORT 1.32's CPU provider); TensorRT wants int8 activations with
    ``symmetric_activations: true``. ``percentile`` applies to ``calibrate_method: percentile``.
    ``samples``, ``batch_size`` and ``seed`` say which calibration batches the runner draws.
    """

    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=0, le=100)
    op_types: list[str] = Field(default_factory=lambda: ["MatMul"])
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    symmetric_activations: bool = False  # ORT extra option ActivationSymmetric
    reduce_range: bool = False
    preprocess: bool = True
    samples: int = Field(128, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _ops(self) -> OrtStaticSettings:
        known = ORT_QDQ_OP_TYPES if self.quant_format == "qdq" else ORT_QOPERATOR_OP_TYPES
        _check_op_types(self.op_types, known, f"quantize_static ({self.quant_format} format)")
        return self


_MODELOPT_TORCH_ONLY = ("config", "algorithm")
_MODELOPT_ONNX_ONLY = ("calibration_method", "calibration_eps")


class ModelOptSettings(_Settings):
    """NVIDIA ModelOpt INT8: ``api: torch`` (mtq.quantize + export) or ``api: onnx`` (ONNX PTQ).

    torch: ``config`` names ModelOpt's preset; ``algorithm`` overrides the preset's calibration
    algorithm (ModelOpt's names: "max", "smoothquant", ...; ModelOpt validates it).
    onnx: ``calibration_method`` ("max" or ModelOpt's default "entropy") and the execution
    providers ModelOpt calibrates with (ModelOpt's default tries "cuda:0" and "trt" too).
    """

    api: Literal["torch", "onnx"] = "torch"
    config: Literal["INT8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG"] = "INT8_DEFAULT_CFG"
    algorithm: str | None = None
    calibration_method: Literal["max", "entropy"] = "max"
    calibration_eps: list[Literal["cpu", "cuda:0", "trt"]] = Field(default_factory=lambda: ["cpu"], min_length=1)
    samples: int = Field(128, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _api_fields(self) -> ModelOptSettings:
        # Compared with the defaults (not model_fields_set) so a dumped settings dict validates again.
        other = _MODELOPT_ONNX_ONLY if self.api == "torch" else _MODELOPT_TORCH_ONLY
        fields = type(self).model_fields
        changed = [k for k in other if getattr(self, k) != fields[k].get_default(call_default_factory=True)]
        if changed:
            raise ValueError(f"{', '.join(changed)} only apply with api: {'onnx' if self.api == 'torch' else 'torch'}")
        return self


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class PeerKind:
    """One peer recipe: its settings model, its builder, and what it needs installed."""

    name: str
    settings: type[_Settings]
    # 'module:function' of the builder (quant.peer_builders), imported only to build; or the callable
    build: str | Callable[..., dict[str, Any]]
    calibrated: bool  # needs calibration batches
    requirement: Callable[[Any], tuple[tuple[str, str, str], ...]]  # settings -> ((module, package, pip), ...)
    uses_torch_model: Callable[[Any], bool]  # settings -> whether the builder needs the fp32 torch model
    summary: str


def _module_available(name: str) -> bool:
    """Whether a top-level module is installed, without importing it."""
    return importlib.util.find_spec(name) is not None


def peer_kind(kind: str) -> PeerKind:
    """The registry entry of ``kind``; an unknown kind is a PeerSettingsError with did-you-mean."""
    entry = PEER_KINDS.get(kind)
    if entry is None:
        raise PeerSettingsError([f"unknown peer scheme kind '{kind}'{did_you_mean(kind, PEER_KINDS)}; "
                                 f"known: {', '.join(PEER_KINDS)}"])
    return entry


def validate_settings(kind: str, data: Any = None) -> _Settings:
    """``data`` (a mapping, None, or already a settings object) validated as ``kind``'s settings."""
    entry = peer_kind(kind)
    if isinstance(data, entry.settings):
        return data
    if data is None:
        data = {}
    if isinstance(data, BaseModel):
        raise PeerSettingsError([f"{kind}: expected {entry.settings.__name__}, got {type(data).__name__}"])
    if not isinstance(data, dict):
        raise PeerSettingsError([f"{kind}: settings must be a mapping, got {type(data).__name__}"])
    try:
        return entry.settings.model_validate(data)
    except ValidationError as exc:
        raise PeerSettingsError(_problems(exc, entry.settings)) from None


def _problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"{key}: unknown key{did_you_mean(str(err['loc'][-1]), model.model_fields)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        out.append(f"{key}: {msg}" if key else msg)
    return out


def missing_requirement(kind: str, settings: Any = None) -> str | None:
    """None when ``kind`` can run here, else one line naming the package to install."""
    entry = peer_kind(kind)
    settings = validate_settings(kind, settings)
    for module, package, pip in entry.requirement(settings):
        if not _module_available(module):
            return f"scheme kind '{kind}' needs {package}: pip install '{pip}'"
    return None


def calibration_plan(kind: str, settings: Any = None) -> tuple[int, int, int] | None:
    """(samples, batch_size, seed) the runner should draw for ``kind``, or None (no calibration)."""
    entry = peer_kind(kind)
    s = validate_settings(kind, settings)
    return (s.samples, s.batch_size, s.seed) if entry.calibrated else None


def _ort_requirement(_: Any) -> tuple[tuple[str, str, str], ...]:
    return (("onnxruntime", "onnxruntime", "qdqbench[cpu]"),)


def _modelopt_requirement(settings: ModelOptSettings) -> tuple[tuple[str, str, str], ...]:
    if settings.api == "onnx":
        # modelopt.onnx imports onnx_graphsurgeon (and polygraphy, onnxslim) from the [onnx] extra,
        # which pins its own onnx / onnxruntime-gpu versions: install it in an environment of its own.
        return (("modelopt", "nvidia-modelopt[onnx]", "nvidia-modelopt[onnx]"),
                ("onnx_graphsurgeon", "nvidia-modelopt[onnx]", "nvidia-modelopt[onnx]"))
    return (("modelopt", "nvidia-modelopt", "qdqbench[modelopt]"),)


def _never(_: Any) -> bool:
    return False


_BUILDERS = "qdqbench.quant.peer_builders"

PEER_KINDS: dict[str, PeerKind] = {
    "ort-dynamic": PeerKind("ort-dynamic", OrtDynamicSettings, f"{_BUILDERS}:build_ort_dynamic", False,
                            _ort_requirement, _never,
                            "onnxruntime quantize_dynamic: int8 weights, per-batch uint8 activations"),
    "ort-static": PeerKind("ort-static", OrtStaticSettings, f"{_BUILDERS}:build_ort_static", True,
                           _ort_requirement, _never,
                           "onnxruntime quantize_static: calibrated activations, QDQ format"),
    "modelopt": PeerKind("modelopt", ModelOptSettings, f"{_BUILDERS}:build_modelopt", True,
                         _modelopt_requirement, lambda s: s.api == "torch",
                         "NVIDIA ModelOpt INT8 PTQ (torch mtq.quantize + export, or ONNX PTQ)"),
}
