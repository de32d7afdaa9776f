"""PyTorch backend: the eager model itself — fp32, fp16/bf16, or the fake-quant QDQBERT variant.

The artifact is a ``.pt`` file written by ``save_torch_artifact`` (the whole ``nn.Module`` pickled
with ``torch.save``, so the worker process rebuilds the exact variant the runner scored, its
fake quantizers and amax included). It is trusted input: qdqbench wrote it into its own run folder.

Precisions: ``fp32``; ``fp16`` and ``bf16`` (the module cast to that dtype; fp16 is refused on CPU,
where PyTorch runs it through slow fallbacks that measure nothing useful); ``int8``, which means
the fake-quant model — the arithmetic stays floating point, every Q/DQ pair is simulated — and is
reported as ``int8-fakequant``, never as ``int8``: it is the accuracy reference of an INT8 engine,
not an INT8 engine. Asking for ``int8`` on a model without enabled quantizers is an error, as is
asking for a float precision on a model that has them.

Timing: on CUDA the inputs are copied to the GPU once and each iteration is timed with a CUDA
event pair on the current stream (GPU time; the host latency goes to ``extra``), the way
``trtexec`` reports GPU compute time; on CPU with ``perf_counter_ns`` and ``torch.set_num_threads``
pinned to the cell's thread count. ``cuda_graph=True`` captures the forward in a CUDA graph and
times its replay (launch overhead removed, as TensorRT's ``--useCudaGraph``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import BackendError
from qdqbench.core.files import save_atomic
from qdqbench.engines.base import EngineBase, EngineOptions, Feeds, feeds_shape, one_line


def save_torch_artifact(model: Any, path: Path, *, output: str = "logits") -> Path:
    """Write ``model`` (eval mode, on CPU) where the torch backend's ``prepare`` can load it."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    model.eval().to("cpu")
    try:
        save_atomic(path, lambda fh: torch.save(
            {"format": "qdqbench-torch-module/1", "output": output, "module": model}, fh))
    finally:
        model.to(device)
    return path


def enabled_quantizer_count(model: Any) -> int:
    """How many fake quantizers in ``model`` are enabled (quantizing)."""
    from qdqbench.quant.quantizer import TensorQuantizer

    return sum(1 for m in model.modules() if isinstance(m, TensorQuantizer) and m.mode == "quantize")


def pick_device(requested: str, cuda_available: bool) -> str:
    """``auto`` → cuda when available else cpu; ``cuda`` without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise BackendError(f"torch: device must be auto, cpu or cuda (got '{requested}')")
    if requested == "cuda" and not cuda_available:
        raise BackendError("torch: device 'cuda' asked for but torch.cuda.is_available() is False")
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    return requested


def use_sdpa_attention(model: Any) -> str | None:
    """Time PyTorch's fused attention (sdpa) rather than the eager path the runner loads for export.

    The runner loads checkpoints with ``attn_implementation="eager"`` so the ONNX export has plain
    MatMul/Softmax; a torch deployment uses sdpa, and the eager path's mask building copies a host
    tensor to the GPU, which CUDA-graph capture refuses. The QDQBERT attention does its own math
    and accepts either mask (same outputs); a float model's outputs move by ~1e-7.
    """
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl == "eager" and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")
        except (ValueError, ImportError):  # a model class without sdpa support keeps eager
            return impl
        return getattr(model.config, "_attn_implementation", "sdpa")
    return impl


class TorchSession:
    """An eager PyTorch module on one device and dtype."""

    backend = "torch"

    def __init__(self, model: Any, output: str, device: str, precision: str,
                 info: dict[str, Any], cuda_graph: bool = False):
        self._model = model
        self._output = output
        self._device = device
        self.precision = precision
        self.info = info
        self._cuda_graph = cuda_graph

    def _inputs(self, feeds: Feeds) -> dict[str, Any]:
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v.astype(np.int64, copy=False))).to(self._device)
                for k, v in feeds.items()}

    def _forward(self, inputs: dict[str, Any]) -> Any:
        out = self._model(**inputs)
        try:
            return getattr(out, self._output)
        except AttributeError:
            raise BackendError(f"torch: the model's output has no '{self._output}'") from None

    def predict(self, feeds: Feeds) -> np.ndarray:
        """The selected output as float32."""
        import torch

        feeds_shape(feeds)
        with torch.inference_mode():
            try:
                y = self._forward(self._inputs(feeds))
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"torch forward failed: {one_line(exc, typed=False, join=True)}") from exc
            return y.float().cpu().numpy()

    def time(self, feeds: Feeds, settings: Any) -> Any:
        """CUDA events on GPU (optionally CUDA-graph replay), perf_counter_ns on CPU."""
        import torch

        from qdqbench.engines.timing import measure, measure_cuda

        batch, seq = feeds_shape(feeds)
        inputs = self._inputs(feeds)
        if self._device == "cpu":
            def run() -> None:
                with torch.inference_mode():
                    self._forward(inputs)

            return measure(run, settings, batch=batch, seq=seq,
                           method="host perf_counter_ns around the eager forward (torch, CPU)")

        stream = torch.cuda.current_stream()
        method = "CUDA events around the eager forward (GPU time, inputs on device)"
        if self._cuda_graph:
            graph = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream()
            side.wait_stream(stream)
            try:
                with torch.inference_mode():
                    with torch.cuda.stream(side):  # warm-up on a side stream before capture
                        for _ in range(3):
                            self._forward(inputs)
                    stream.wait_stream(side)
                    with torch.cuda.graph(graph):
                        self._forward(inputs)
                torch.cuda.synchronize()
            except RuntimeError as exc:
                # A model that syncs or copies from the host inside forward cannot be captured:
                # time it eagerly and say so, rather than lose the cell.
                torch.cuda.synchronize()
                self.info["cuda_graph"] = f"capture failed, timed eagerly: {one_line(exc, 200, typed=False, join=True)}"
                method = "CUDA events around the eager forward (CUDA-graph capture failed; GPU time)"
            else:
                return measure_cuda(graph.replay, settings, batch=batch, seq=seq, stream=stream,
                                    method="CUDA events around CUDA-graph replay (GPU time, inputs on device)")

        def enqueue() -> None:
            with torch.inference_mode():
                self._forward(inputs)

        return measure_cuda(enqueue, settings, batch=batch, seq=seq, stream=stream, method=method)

    def op_profile(self, feeds: Feeds, iterations: int, reprepare: Any) -> dict[str, Any]:
        """Per-aten-op self time from ``torch.profiler`` around extra forwards after the timed loop
        (device time on CUDA, CPU time on the CPU); ``record_shapes`` gives the input ranks."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        from qdqbench.engines.profile import OpTime, summarize

        inputs = self._inputs(feeds)
        cuda = self._device != "cpu"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch.inference_mode():
            self._forward(inputs)  # first forward (allocations) left out
            with profile(activities=activities, record_shapes=True) as prof:
                for _ in range(iterations):
                    self._forward(inputs)
                if cuda:
                    torch.cuda.synchronize()
        times = []
        for avg in prof.key_averages(group_by_input_shape=True):
            us = (getattr(avg, "self_device_time_total", 0) if cuda else avg.self_cpu_time_total)
            if us <= 0:
                continue
            ranks = tuple(len(shape) for shape in (avg.input_shapes or []) if isinstance(shape, list))
            times.append(OpTime(op=str(avg.key), ms=us / 1000.0, precision=self.precision,
                                input_ranks=ranks, nodes=int(avg.count)))
        clock = "self device time (CUDA)" if cuda else "self CPU time"
        return summarize(times, iterations, source=f"torch.profiler {clock} per aten op, extra "
                                                   "forwards after the timed loop")


@dataclass(frozen=True)
class TorchOptions(EngineOptions):
    """``prepare`` options of the torch engine."""

    device: str = "auto"  # auto | cpu | cuda
    cuda_graph: bool = False  # time CUDA-graph replay
    output: str | None = None  # the output to return (default: what the artifact says)


class TorchBackend(EngineBase):
    """PyTorch eager execution of a saved module (fp32, fp16, bf16, or its fake-quant variant)."""

    Options = TorchOptions

    name = "torch"
    precisions = ("fp32", "fp16", "bf16", "int8")

    def unavailable_reason(self) -> str | None:
        """None when torch imports."""
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed"
        return None

    def check_artifact(self, artifact: Path) -> Path:
        """A saved torch module (``save_torch_artifact``), not an ONNX file: it must exist."""
        if not artifact.is_file():
            raise BackendError(f"torch artifact not found: {artifact}")
        return artifact

    def prepare(self, artifact: Path, precision: str, shapes: list, threads: int | None = None,
                **options: Any) -> TorchSession:
        """Load the module saved at ``artifact`` onto ``device`` in ``precision``."""
        artifact, opts = self.begin_prepare(artifact, precision, options)
        device, cuda_graph, output = opts.device, opts.cuda_graph, opts.output
        import torch

        try:
            # Our own artifact (save_torch_artifact): a pickled module, so weights_only=False.
            saved = torch.load(artifact, map_location="cpu", weights_only=False)
        except Exception as exc:
            why = one_line(exc, typed=False, join=True)
            raise BackendError(f"cannot load torch artifact {artifact}: {why}") from exc
        if not isinstance(saved, dict) or saved.get("format") != "qdqbench-torch-module/1":
            raise BackendError(f"not a qdqbench torch artifact (save_torch_artifact writes them): {artifact}")
        model = saved["module"]
        output = output or saved.get("output", "logits")

        dev = pick_device(device, torch.cuda.is_available())
        if dev == "cpu" and threads:
            torch.set_num_threads(threads)
        if cuda_graph and dev != "cuda":
            raise BackendError("torch: cuda_graph needs the cuda device")
        n_quant = enabled_quantizer_count(model)
        if precision == "int8" and not n_quant:
            raise BackendError(f"torch: int8 asked for but {artifact.name} has no enabled fake quantizers")
        if precision != "int8" and n_quant:
            raise BackendError(f"torch: {artifact.name} has {n_quant} enabled fake quantizers; ask for int8")
        if precision == "fp16" and dev == "cpu":
            raise BackendError("torch: fp16 runs only on cuda (CPU fp16 kernels are fallbacks); use bf16 or fp32")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        model = model.to(device=dev, dtype=dtype).eval()
        attn = use_sdpa_attention(model)

        info: dict[str, Any] = {
            "torch_version": torch.__version__, "device": dev, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads() if dev == "cpu" else None,
            "fake_quantizers": n_quant, "cuda_graph": cuda_graph, "output": output,
            "attn_implementation": attn,
        }
        if dev == "cuda":
            info.update(gpu_name=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                        compute_capability=list(torch.cuda.get_device_capability()),
                        tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        effective = "int8-fakequant" if precision == "int8" else precision
        return TorchSession(model, output, dev, effective, info, cuda_graph=cuda_graph)
