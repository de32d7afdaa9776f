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


def get_backend(name: str) -> "Backend":
    """An instance of the backend called ``name``; unknown names get a did-you-mean error."""
    target = BACKENDS.get(name)
    if target is None:
        raise BackendError(f"unknown backend '{name}'{did_you_mean(name, BACKEND_NAMES)}; "
                           f"known: {', '.join(BACKEND_NAMES)}")
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
