"""Registry of inference backends, loaded lazily.

``BACKENDS`` maps a backend name to ``"module:Class"``; ``get_backend`` imports the module only
when that backend is asked for, so importing ``qdqbench.backends`` (or listing names for
``qdqbench ls``) imports no runtime. Adding a backend means one module and one entry here.
``"torch"`` scores accuracy in-process in the runner; its entry here times the saved eager or
fake-quant module in a worker process like every other engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from qdqbench.errors import BackendError, did_you_mean

if TYPE_CHECKING:
    from qdqbench.backends.base import Backend

BACKENDS: dict[str, str] = {
    "onnxruntime": "qdqbench.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "qdqbench.backends.openvino:OpenVINOBackend",
    "tensorrt": "qdqbench.backends.tensorrt:TensorRTBackend",
    "torch": "qdqbench.backends.torch:TorchBackend",
}

BACKEND_NAMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "tensorrt")

# ``engine@precision`` backend variants: the engine with its float layers in a reduced precision.
# The fp32 scheme runs entirely in it (an fp16/bf16 baseline row); INT8 schemes run their Q/DQ in
# INT8 and the rest in it (TensorRT's classic --int8 --fp16 build; OpenVINO's bf16 hint).
FLOAT_VARIANTS: dict[str, tuple[str, ...]] = {"openvino": ("bf16", "fp16"), "tensorrt": ("fp16", "bf16")}


def split_backend(name: str) -> tuple[str, str | None]:
    """``"tensorrt@fp16"`` -> ``("tensorrt", "fp16")``; a plain name -> ``(name, None)``."""
    base, sep, precision = name.partition("@")
    return base, (precision if sep else None)


def check_backend_name(name: str) -> str:
    """Raise BackendError (with did-you-mean) unless ``name`` is a backend or a known variant."""
    base, precision = split_backend(name)
    if base not in BACKEND_NAMES:
        raise BackendError(f"unknown backend '{base}'{did_you_mean(base, BACKEND_NAMES)}; "
                           f"known: {', '.join(BACKEND_NAMES)}")
    if precision is not None:
        allowed = FLOAT_VARIANTS.get(base, ())
        if precision not in allowed:
            variants = ", ".join(f"{b}@{p}" for b, ps in FLOAT_VARIANTS.items() for p in ps)
            raise BackendError(f"backend '{name}': {base} has no @{precision} variant"
                               f"{did_you_mean(precision, allowed) if allowed else ''}; variants: {variants}")
    return name


def get_backend(name: str) -> "Backend":
    """An instance of the backend called ``name`` (a variant's ``@precision`` is ignored here);
    unknown names get a did-you-mean error."""
    name = split_backend(name)[0]
    target = BACKENDS.get(name)
    if target is None:
        raise BackendError(f"unknown backend '{name}'{did_you_mean(name, BACKEND_NAMES)}; "
                           f"known: {', '.join(BACKEND_NAMES)}")
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
