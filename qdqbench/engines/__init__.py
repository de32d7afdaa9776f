"""Registry of inference backends, loaded lazily.

``BACKENDS`` maps a backend name to ``"module:Class"``; ``get_backend`` imports the module only
when that backend is asked for, so importing ``qdqbench.engines`` (or listing names for
``qdqbench ls``) imports no runtime. Adding a backend means one module and one entry here.
``"torch"`` scores accuracy in-process in the runner; its entry here times the saved eager or
fake-quant module in a worker process like every other engine.

``engine@qualifier`` names are backends of their own. Two kinds of qualifier: a *float precision*
(``FLOAT_PRECISIONS``: ``openvino@bf16``, ``tensorrt@fp16``, ...) runs the engine with its float
layers in that precision; an *execution provider* (``EXECUTION_PROVIDERS``: ``onnxruntime@cuda``,
``onnxruntime@trt``) runs ONNX Runtime on another execution provider. ("Variant" is kept for a
scheme's quantized model; user-facing messages still call ``@fp16`` a "variant", which tests and
suites read.) ``engine_request`` is the one place that says what precision and ``prepare`` options
a qualified backend asks for, per scheme kind;
each engine validates its options with its own typed ``Options`` dataclass (``base.EngineOptions``).
``available_backend`` is the one availability check before a cell uses an engine, and
``fp32_configurations`` / ``fp32_timing_runs`` say which fp32 baselines an engine times (ONNX
Runtime: plain and transformer-fused; the runner keeps the fastest, the shard cost model counts them).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qdqbench.core.errors import BackendError, did_you_mean

if TYPE_CHECKING:
    from qdqbench.engines.base import Backend, Fp32Configuration

BACKENDS: dict[str, str] = {
    "torch": "qdqbench.engines.torch:TorchBackend",
    "onnxruntime": "qdqbench.engines.onnxruntime:OnnxRuntimeBackend",
    "openvino": "qdqbench.engines.openvino:OpenVINOBackend",
    "tensorrt": "qdqbench.engines.tensorrt:TensorRTBackend",
}

BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)  # registry order: torch first (the reference)

# ``engine@precision``: the engine with its float layers in a reduced float precision.
# The fp32 scheme runs entirely in it (an fp16/bf16 baseline row); INT8 schemes run their Q/DQ in
# INT8 and the rest in it (TensorRT's classic --int8 --fp16 build; OpenVINO's bf16 hint).
FLOAT_PRECISIONS: dict[str, tuple[str, ...]] = {"openvino": ("bf16", "fp16"), "tensorrt": ("fp16", "bf16")}

# ``engine@provider``: ONNX Runtime on a GPU execution provider (onnxruntime-gpu).
# ``cuda``: CUDAExecutionProvider; ``trt``: TensorrtExecutionProvider, INT8 from the Q/DQ graph.
# Each scheme runs in its own precision (fp32 scheme fp32, INT8 schemes int8).
EXECUTION_PROVIDERS: dict[str, tuple[str, ...]] = {"onnxruntime": ("cuda", "trt")}


@dataclass(frozen=True)
class EngineRequest:
    """What to ask a backend for: the requested precision and extra ``prepare`` options."""

    precision: str
    options: dict[str, Any] = field(default_factory=dict)


def split_backend(name: str) -> tuple[str, str | None]:
    """``"tensorrt@fp16"`` -> ``("tensorrt", "fp16")``: the engine and its qualifier (a float
    precision or an execution provider); a plain name -> ``(name, None)``."""
    base, sep, qualifier = name.partition("@")
    return base, (qualifier if sep else None)


def qualified_names() -> list[str]:
    """Every ``engine@qualifier`` name: float precisions first, then execution providers."""
    return ([f"{b}@{p}" for b, ps in FLOAT_PRECISIONS.items() for p in ps]
            + [f"{b}@{p}" for b, ps in EXECUTION_PROVIDERS.items() for p in ps])


def check_backend_name(name: str) -> str:
    """Raise BackendError (with did-you-mean) unless ``name`` is a backend, plain or qualified."""
    base, qualifier = split_backend(name)
    if base not in BACKEND_NAMES:
        raise BackendError(f"unknown backend '{base}'{did_you_mean(base, BACKEND_NAMES)}; "
                           f"known: {', '.join(BACKEND_NAMES)}")
    if qualifier is not None:
        allowed = FLOAT_PRECISIONS.get(base, ()) + EXECUTION_PROVIDERS.get(base, ())
        if qualifier not in allowed:
            raise BackendError(f"backend '{name}': {base} has no @{qualifier} variant"
                               f"{did_you_mean(qualifier, allowed) if allowed else ''}; "
                               f"variants: {', '.join(qualified_names())}")
    return name


def engine_request(name: str, scheme_kind: str) -> EngineRequest:
    """The precision and ``prepare`` options backend ``name`` is asked for on a scheme of
    ``scheme_kind`` (``"fp32"``, or a quantized kind: qdq and the peer recipes).

    Plain engines and execution providers: fp32 for the fp32 scheme, int8 otherwise. A float
    precision (``tensorrt@fp16``): the fp32 scheme runs entirely in it; quantized schemes run int8
    with ``float_precision`` set to it.
    """
    check_backend_name(name)
    base, qualifier = split_backend(name)
    quantized = scheme_kind != "fp32"
    if qualifier is not None and qualifier in FLOAT_PRECISIONS.get(base, ()):
        if quantized:
            # Checked against the engine's typed options here, not first in a worker process.
            options = _backend_class(base).Options.parse(name, {"float_precision": qualifier}).to_dict()
            return EngineRequest("int8", options)
        return EngineRequest(qualifier, {})
    return EngineRequest("int8" if quantized else "fp32", {})


class BackendUnavailable(BackendError):
    """The engine's runtime (or its provider) is missing on this machine; says which and the fix."""


def available_backend(name: str) -> Backend:
    """The backend called ``name``, ready to use; BackendUnavailable ("<name> unavailable: <why>")
    when its runtime is missing. The one availability check before a cell or worker uses an engine
    (``prepare`` itself still refuses with the bare reason)."""
    backend = get_backend(name)
    reason = backend.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"{name} unavailable: {reason}")
    return backend


def fp32_configurations(name: str, model_config: Any = None) -> list[Fp32Configuration]:
    """The fp32 configurations backend ``name`` times for a model (first: the plain one)."""
    return get_backend(name).fp32_configurations(model_config)


def fp32_timing_runs(name: str) -> int:
    """How many timings an fp32 latency cell of backend ``name`` takes (the cost model's factor)."""
    return len(fp32_configurations(name))


def _backend_class(base: str) -> Any:
    module_name, _, cls_name = BACKENDS[base].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def get_backend(name: str) -> Backend:
    """An instance of the backend called ``name``; unknown names get a did-you-mean error.

    An execution provider (``onnxruntime@trt``) is built into the backend; a float precision
    (``@fp16``) is ignored here (it reaches ``prepare`` through ``engine_request``).
    """
    base, qualifier = split_backend(name)
    target = BACKENDS.get(base)
    if target is None:
        raise BackendError(f"unknown backend '{base}'{did_you_mean(base, BACKEND_NAMES)}; "
                           f"known: {', '.join(BACKEND_NAMES)}")
    if qualifier is not None:
        check_backend_name(name)
    cls = _backend_class(base)
    if qualifier is not None and qualifier in EXECUTION_PROVIDERS.get(base, ()):
        return cls(provider=qualifier)
    return cls()
