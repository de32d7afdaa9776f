"""TensorRT backend: builds an engine from the Q/DQ ONNX file (explicit quantization) and times it
with CUDA events, as trtexec reports GPU compute time.

Versions. TensorRT 10 builds either *strongly typed* networks (``STRONGLY_TYPED`` creation flag:
every tensor keeps the type the ONNX graph gives it, Q/DQ decides what runs in int8) or weakly
typed ones where builder flags (``INT8``, ``FP16``, ``BF16``) let it pick lower-precision kernels.
TensorRT 11 removed the weak-typing flags: every network is strongly typed and the creation flag is
accepted but ignored, so an fp16 engine needs an fp16 ONNX (converted here with ModelOpt AutoCast
when installed, else onnxruntime's float16 converter). Networks are always explicit-batch in 10+.

What is built is decided by ``build_plan`` (pure) and keyed by ``engine_cache_key`` (pure): the
sha256 of the ONNX bytes, the TensorRT version, the GPU name and compute capability, the
optimization profile and the build plan. Engines are cached next to the artifact in
``trt_engines/`` and reused when the key matches.

Buffers, stream and events come from torch.cuda (torch is always installed): inputs and outputs
are CUDA tensors whose ``data_ptr()`` is handed to ``set_tensor_address``, and
``execute_async_v3`` runs on a torch stream. ``cuda_graph=True`` captures one enqueue in a CUDA
graph and times its replay (less launch overhead for small shapes).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import BackendError
from qdqbench.core.files import write_bytes_atomic
from qdqbench.engines.base import (
    EngineBase,
    EngineOptions,
    Feeds,
    feeds_shape,
    one_line,
    predict_in_profile,
    select_feeds,
)

Dims = tuple[int, int]


@dataclass(frozen=True)
class BuildPlan:
    """How to build for one precision on one TensorRT major version."""

    strongly_typed: bool
    flags: tuple[str, ...] = ()  # BuilderFlag names to set (weak typing, TensorRT 10 only)
    convert_to: str | None = None  # convert the float ONNX to this type first ("fp16" / "bf16")
    tf32: bool = True  # TensorRT enables TF32 matmuls by default; strict fp32 turns it off
    float_precision: str = "fp32"  # what the non-quantized layers run in

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (part of the cache key)."""
        return asdict(self)


def build_plan(trt_major: int, precision: str, *, has_strongly_typed_flag: bool = True,
               strongly_typed: bool | None = None, int8_float: str | None = None) -> BuildPlan:
    """Decide strong typing, builder flags and ONNX conversion for ``precision``.

    ``strongly_typed=None`` means: always on TensorRT >= 11; on 10, on for int8 (Q/DQ decides,
    float layers stay fp32) when the flag exists, off for fp16/bf16 (builder flags).
    ``strongly_typed=False`` with int8 on TensorRT 10 gives the classic QDQBERT build, INT8+FP16
    flags (trtexec --int8 --fp16): the layers Q/DQ leaves in float may run in fp16.
    ``int8_float`` ("fp16"/"bf16", the float precision of ``tensorrt@fp16``) asks for that build:
    INT8 plus the float flag, weakly typed; TensorRT 11 builds only strongly typed networks, where
    the float parts' precision is the ONNX graph's own, so it is refused there.
    """
    if int8_float is not None:
        if precision != "int8" or int8_float not in ("fp16", "bf16"):
            raise BackendError(f"tensorrt: float_precision '{int8_float}' applies to int8 only (fp16 or bf16)")
        if trt_major >= 11:
            raise BackendError(f"tensorrt: INT8 with {int8_float} float layers needs TensorRT 10's builder "
                               "flags; TensorRT 11 is strongly typed (use the plain tensorrt backend)")
        if strongly_typed:
            raise BackendError("tensorrt: float_precision needs strongly_typed=False (builder flags)")
        flag = {"fp16": "FP16", "bf16": "BF16"}[int8_float]
        return BuildPlan(strongly_typed=False, flags=("INT8", flag), float_precision=int8_float)
    if trt_major >= 11:
        if strongly_typed is False:
            raise BackendError("TensorRT 11 builds only strongly typed networks; "
                               "strongly_typed=False needs TensorRT 10")
        if precision == "fp32":
            return BuildPlan(strongly_typed=True, tf32=False)
        if precision == "int8":
            return BuildPlan(strongly_typed=True)
        return BuildPlan(strongly_typed=True, convert_to=precision, float_precision=precision)
    typed = strongly_typed
    if typed is None:
        typed = precision == "int8" and has_strongly_typed_flag
    if typed and not has_strongly_typed_flag:
        raise BackendError("this TensorRT has no STRONGLY_TYPED network flag")
    if precision == "fp32":
        return BuildPlan(strongly_typed=typed, tf32=False)
    if precision == "int8":
        if typed:
            return BuildPlan(strongly_typed=True)
        return BuildPlan(strongly_typed=False, flags=("INT8", "FP16"), float_precision="fp16")
    flag = {"fp16": "FP16", "bf16": "BF16"}[precision]
    if typed:
        return BuildPlan(strongly_typed=True, convert_to=precision, float_precision=precision)
    return BuildPlan(strongly_typed=False, flags=(flag,), float_precision=precision)


def optimization_profile(shapes: list, input_names: list[str]) -> dict[str, tuple[Dims, Dims, Dims]]:
    """(min, opt, max) of every (batch, seq) input over ``shapes``.

    min and max are taken per dimension; opt is the given shape with the most tokens
    (batch * seq, ties to the larger batch), so kernels are tuned for a shape that is timed.
    """
    if not shapes:
        raise BackendError("tensorrt needs at least one (batch, seq) shape for its profile")
    pairs = [(int(s.batch), int(s.seq)) for s in shapes]
    if any(b < 1 or s < 1 for b, s in pairs):
        raise BackendError(f"tensorrt profile shapes must be positive, got {pairs}")
    lo = (min(b for b, _ in pairs), min(s for _, s in pairs))
    hi = (max(b for b, _ in pairs), max(s for _, s in pairs))
    opt = max(pairs, key=lambda p: (p[0] * p[1], p[0]))
    return {name: (lo, opt, hi) for name in input_names}


# INT8 tensor-core kernels, which TensorRT's INT8 needs, start with Turing (compute capability 7.5).
MIN_INT8_CAPABILITY = (7, 5)


def int8_capability_problem(engine: str, precision: str, gpu: str,
                            capability: tuple[int, int] | None) -> str | None:
    """One line when ``precision`` is int8 and the GPU has no INT8 tensor cores, else None."""
    if precision != "int8" or capability is None or tuple(capability) >= MIN_INT8_CAPABILITY:
        return None
    cc = ".".join(str(c) for c in capability)
    need = ".".join(str(c) for c in MIN_INT8_CAPABILITY)
    return (f"{engine}: INT8 needs a GPU with INT8 tensor cores (compute capability >= {need}, "
            f"Turing or newer); {gpu} is {cc}")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def engine_cache_key(onnx_sha256: str, *, trt_version: str, gpu_name: str,
                     compute_capability: tuple[int, int] | None,
                     profile: dict[str, tuple[Dims, Dims, Dims]], plan: BuildPlan) -> str:
    """sha256 over everything that makes a serialized engine valid and identical."""
    payload = {
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "compute_capability": list(compute_capability) if compute_capability else None,
        "profile": {k: [list(d) for d in v] for k, v in sorted(profile.items())},
        "plan": plan.to_dict(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def layer_precisions(engine_info: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{LayerType: {datatype: count}} from an engine inspector JSON, by each layer's first input.

    TensorRT 10 writes a layer's tensor type inside "Format/Datatype" (e.g. "Row major linear
    INT8 format"); 11 adds a separate "DataType" field; both are read.
    """
    out: dict[str, dict[str, int]] = {}
    for layer in engine_info.get("Layers", []):
        if not isinstance(layer, dict):
            continue  # LAYER_NAMES_ONLY verbosity gives bare names
        kind = str(layer.get("LayerType", "?"))
        tensors = layer.get("Inputs") or layer.get("Outputs") or []
        dtype = _tensor_dtype(tensors[0]) if tensors else "?"
        per = out.setdefault(kind, {})
        per[dtype] = per.get(dtype, 0) + 1
    return out


def _layer_profiler(trt: Any) -> Any:
    """An ``IProfiler`` summing ``report_layer_time`` per layer name (ms)."""

    class _LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times[layer_name] = self.times.get(layer_name, 0.0) + float(ms)

    return _LayerTimes()


def inspector_layers(engine: Any, trt: Any) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """{layer name: (LayerType, first input's precision, input ranks)} from the engine inspector."""
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return layer_table(info)


def layer_table(engine_info: dict[str, Any]) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """{layer name: (LayerType, first input's precision, input ranks)} of an inspector JSON; pure."""
    out = {}
    for layer in engine_info.get("Layers", []):
        if not isinstance(layer, dict) or "Name" not in layer:
            continue
        inputs = [t for t in layer.get("Inputs") or [] if isinstance(t, dict)]
        ranks = tuple(len(t.get("Dimensions") or []) for t in inputs)
        tensors = inputs or layer.get("Outputs") or []
        out[str(layer["Name"])] = (str(layer.get("LayerType", "")),
                                   _tensor_dtype(tensors[0]) if tensors else "", ranks)
    return out


def _tensor_dtype(tensor: dict[str, Any]) -> str:
    text = str(tensor.get("DataType") or tensor.get("Format/Datatype") or "?").lower()
    for token, name in (("int8", "int8"), ("fp8", "fp8"), ("bf16", "bf16"), ("bfloat", "bf16"),
                        ("half", "fp16"), ("fp16", "fp16"), ("int32", "int32"), ("int64", "int64"),
                        ("fp32", "fp32"), ("float", "fp32"), ("bool", "bool")):
        if token in text:
            return name
    return text


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps errors (for one-line BackendErrors) and prints warnings."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            if level <= int(trt.ILogger.Severity.WARNING):
                print(f"[tensorrt] {msg}", file=sys.stderr)

    return _Logger()


class TensorRTSession:
    """A deserialized engine, one execution context, torch CUDA buffers and a stream."""

    backend = "tensorrt"

    def __init__(self, trt: Any, runtime: Any, engine: Any, logger: Any, precision: str,
                 info: dict[str, Any], cuda_graph: bool):
        import torch

        # The runtime and logger must outlive the engine: TensorRT keeps raw pointers to them.
        self._trt, self._runtime, self._engine, self._logger = trt, runtime, engine, logger
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"tensorrt could not create an execution context: "
                               f"{logger.errors[-1] if logger.errors else 'out of GPU memory?'}")
        self._stream = torch.cuda.Stream()
        self._cuda_graph = cuda_graph
        self.precision = precision
        self.info = info
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self._buffers: dict[str, Any] = {}
        self._bound: tuple[int, int] | None = None

    def _bind(self, feeds: Feeds) -> tuple[int, int]:
        """Copy inputs to the GPU, set shapes and addresses, allocate outputs."""
        import torch

        np_types = {n: _numpy_dtype(self._dtypes[n]) for n in self._inputs}
        x = select_feeds(feeds, self._inputs, np_types)
        batch, seq = feeds_shape(x)
        ctx = self._context
        for name, arr in x.items():
            t = torch.from_numpy(arr).to("cuda", non_blocking=False)
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise BackendError(f"tensorrt: shape {tuple(t.shape)} of '{name}' is outside the "
                                   f"engine's profile {self.info.get('profile', {}).get(name)}; "
                                   "prepare with this shape")
            ctx.set_tensor_address(name, t.data_ptr())
            self._buffers[name] = t
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            t = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            ctx.set_tensor_address(name, t.data_ptr())
            self._buffers[name] = t
        self._bound = (batch, seq)
        return batch, seq

    def _enqueue_checked(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            err = self._logger.errors[-1] if self._logger.errors else "execute_async_v3 failed"
            raise BackendError(f"tensorrt inference failed: {err}")

    def predict(self, feeds: Feeds) -> np.ndarray:
        """The first output as float32 (host copy after the stream finished).

        Batches outside the engine's profile (accuracy batches are not the timed shapes) are split,
        filled up and padded to fit it (``base.predict_in_profile``).
        """
        profile = self.info.get("profile") or {}
        dims = profile.get(self._inputs[0]) if self._inputs else None
        if not dims:
            return self._predict_one(feeds)
        lo, _, hi = (tuple(d) for d in dims)
        # A dynamic second output axis (-1) is the sequence: padding is cut from it again.
        shape = tuple(self._engine.get_tensor_shape(self._outputs[0]))
        seq_output = len(shape) >= 2 and shape[1] == -1
        return predict_in_profile(feeds, self._predict_one, lo, hi, seq_output=seq_output)

    def _predict_one(self, feeds: Feeds) -> np.ndarray:
        self._bind(feeds)
        self._enqueue_checked()
        self._stream.synchronize()
        return self._buffers[self._outputs[0]].float().cpu().numpy()

    def time(self, feeds: Feeds, settings: Any) -> Any:
        """GPU compute time per inference from CUDA events; H2D/D2H means measured beside it."""
        import torch

        from qdqbench.engines.timing import measure_cuda

        batch, seq = self._bind(feeds)
        stream = self._stream
        # One checked enqueue first: it validates the bindings, and TensorRT wants one enqueue
        # after a shape change before a CUDA graph capture.
        self._enqueue_checked()
        stream.synchronize()
        handle = stream.cuda_stream
        execute = self._context.execute_async_v3
        method = "CUDA events around execute_async_v3 on one stream: GPU compute time, no H2D/D2H"
        with torch.cuda.stream(stream):
            if self._cuda_graph:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    execute(handle)
                # replay() launches on the current stream, which is ``stream`` inside this block.
                enqueue = graph.replay
                method = ("CUDA events around a CUDA-graph replay of execute_async_v3: GPU compute "
                          "time, no H2D/D2H")
            else:
                def enqueue() -> None:
                    execute(handle)

            stats = measure_cuda(enqueue, settings, batch=batch, seq=seq, stream=stream,
                                 method=method)
            stats.extra.update(self._copy_times(stream))
        compute = stats.mean
        stats.extra["latency_incl_copies_mean_ms"] = (
            stats.extra["h2d_mean_ms"] + compute + stats.extra["d2h_mean_ms"])
        return stats

    def op_profile(self, feeds: Feeds, iterations: int, reprepare: Any) -> dict[str, Any]:
        """Per-layer GPU time from TensorRT's ``IProfiler`` on the timed context, attached only
        after the timed loop (as trtexec's --separateProfileRun); layer types, input ranks and
        precisions from the engine inspector (built with DETAILED profiling verbosity)."""
        from qdqbench.engines.profile import OpTime, summarize

        trt = self._trt
        profiler = _layer_profiler(trt)
        self._bind(feeds)
        context, stream = self._context, self._stream
        context.profiler = profiler
        try:
            self._enqueue_checked()  # first profiled run left out (profiler set-up)
            stream.synchronize()
            profiler.times.clear()
            for _ in range(iterations):
                self._enqueue_checked()
                stream.synchronize()
        finally:
            context.profiler = None
        layers = inspector_layers(self._engine, trt)
        times = []
        for name, ms in profiler.times.items():
            kind, precision, ranks = layers.get(name, ("", "", ()))
            times.append(OpTime(op=kind or "unknown", ms=ms, precision=precision, name=name,
                                input_ranks=ranks))
        return summarize(times, iterations,
                         source="TensorRT IProfiler per engine layer (GPU time) on the timed "
                                "context after the timed loop; a Myelin region is one layer")

    def _copy_times(self, stream: Any, reps: int = 20) -> dict[str, float]:
        """Mean H2D (all inputs) and D2H (all outputs) times with pinned host buffers."""
        import torch

        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        pairs_in = [(self._buffers[n], torch.empty_like(self._buffers[n], device="cpu").pin_memory())
                    for n in self._inputs]
        pairs_out = [(self._buffers[n], torch.empty_like(self._buffers[n], device="cpu").pin_memory())
                     for n in self._outputs]

        def timed(copy: Any) -> float:
            total = 0.0
            for _ in range(reps):
                start.record(stream)
                copy()
                stop.record(stream)
                stop.synchronize()
                total += start.elapsed_time(stop)
            return total / reps

        h2d = timed(lambda: [dev.copy_(host, non_blocking=True) for dev, host in pairs_in])
        d2h = timed(lambda: [host.copy_(dev, non_blocking=True) for dev, host in pairs_out])
        return {"h2d_mean_ms": h2d, "d2h_mean_ms": d2h}


def _torch_dtype(trt: Any, dt: Any) -> Any:
    import torch

    table = {"INT64": torch.int64, "INT32": torch.int32, "FLOAT": torch.float32,
             "HALF": torch.float16, "BF16": torch.bfloat16, "BOOL": torch.bool, "INT8": torch.int8,
             "UINT8": torch.uint8}
    for name, tdt in table.items():
        if hasattr(trt.DataType, name) and dt == getattr(trt.DataType, name):
            return tdt
    raise BackendError(f"tensorrt: unsupported I/O tensor type {dt}")


def _numpy_dtype(torch_dtype: Any) -> Any:
    import torch

    return {torch.int64: np.int64, torch.int32: np.int32}.get(torch_dtype)


def _convert_float(src: Path, target: str, out_dir: Path) -> tuple[Path, str]:
    """An fp16/bf16 copy of a float ONNX for a strongly typed build; (path, converter)."""
    import onnx

    out = out_dir / f"{src.stem}.{target}.onnx"
    try:
        import modelopt.onnx.autocast as autocast  # NVIDIA's recommended path for TensorRT 11
    except ImportError:
        autocast = None
    if autocast is not None:
        model = autocast.convert_to_mixed_precision(onnx_path=str(src), low_precision_type=target,
                                                    keep_io_types=True)
        onnx.save(model, str(out))
        return out, "modelopt.onnx.autocast"
    if target != "fp16":
        raise BackendError(f"tensorrt {target} on a strongly typed network needs an {target} ONNX; "
                           "install nvidia-modelopt (modelopt.onnx.autocast) to convert it")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: ids stay int64 and the output float32, only the inside turns fp16.
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(out))
    return out, "onnxruntime.transformers.float16"


@dataclass(frozen=True)
class TensorRTOptions(EngineOptions):
    """``prepare`` options of TensorRT (see ``build_plan``)."""

    cuda_graph: bool = False  # time CUDA-graph replay
    strongly_typed: bool | None = None  # None: TensorRT 11 strongly typed, 10 classic flags
    cache_dir: str | None = None  # default: trt_engines/ next to the artifact
    rebuild: bool = False  # ignore a cached engine
    float_precision: str | None = None  # int8 with fp16/bf16 float layers (tensorrt@fp16)


class TensorRTBackend(EngineBase):
    """TensorRT on a CUDA GPU, engines cached by content hash."""

    Options = TensorRTOptions

    name = "tensorrt"
    precisions = ("fp32", "int8", "fp16", "bf16")

    def unavailable_reason(self) -> str | None:
        """None when TensorRT imports and torch sees a CUDA GPU, else why not."""
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "TensorRT not importable: pip install 'qdqbench[gpu]'"
        except Exception as exc:  # a broken install: the wheel is there, a CUDA library is not
            why = one_line(exc, 200, typed=False, join=True)
            return f"TensorRT not importable ({why}): pip install 'qdqbench[gpu]'"
        try:
            import torch
        except ImportError:
            return "torch is not installed (the tensorrt backend uses torch.cuda for buffers)"
        if not torch.cuda.is_available():
            why = "a CPU-only torch build" if not torch.version.cuda else "no CUDA GPU or driver visible"
            return (f"no CUDA GPU for torch ({why}; torch {torch.__version__}): the tensorrt backend "
                    "needs a CUDA build of torch on a GPU machine")
        return None

    def prepare(self, artifact: Path, precision: str, shapes: list, threads: int | None = None,
                **options: Any) -> TensorRTSession:
        """Build (or load from cache) an engine for ``shapes`` and return a session on it.

        ``threads`` is ignored (GPU). Options: ``cuda_graph`` (time CUDA-graph replay),
        ``strongly_typed`` (see ``build_plan``), ``cache_dir`` (default: ``trt_engines/`` next
        to the artifact), ``rebuild`` (ignore a cached engine), ``float_precision`` (int8 with
        fp16/bf16 float layers, the ``tensorrt@fp16`` variant; see ``build_plan``).
        """
        artifact, opts = self.begin_prepare(artifact, precision, options)
        cuda_graph, strongly_typed, cache_dir = opts.cuda_graph, opts.strongly_typed, opts.cache_dir
        rebuild, float_precision = opts.rebuild, opts.float_precision
        import tensorrt as trt
        import torch

        version = trt.__version__
        plan = build_plan(int(version.split(".")[0]), precision,
                          has_strongly_typed_flag=hasattr(trt.NetworkDefinitionCreationFlag,
                                                          "STRONGLY_TYPED"),
                          strongly_typed=strongly_typed, int8_float=float_precision)
        input_names = onnx_input_names(artifact)
        profile = optimization_profile(shapes, input_names)
        gpu = torch.cuda.get_device_name()
        cc = torch.cuda.get_device_capability()
        problem = int8_capability_problem("tensorrt", precision, gpu, cc)
        if problem:
            raise BackendError(problem)
        key = engine_cache_key(file_sha256(artifact), trt_version=version, gpu_name=gpu,
                               compute_capability=cc, profile=profile, plan=plan)
        cache = Path(cache_dir) if cache_dir else artifact.parent / "trt_engines"
        engine_path = cache / f"{artifact.stem}-{key[:20]}.engine"

        logger = _make_logger(trt)
        info: dict[str, Any] = {
            "tensorrt_version": version, "gpu_name": gpu, "compute_capability": list(cc),
            "torch_cuda": torch.version.cuda, "plan": plan.to_dict(),
            "profile": {k: [list(d) for d in v] for k, v in profile.items()},
            "engine_path": str(engine_path), "cache_key": key, "cuda_graph": cuda_graph,
        }
        blob = None
        if engine_path.exists() and not rebuild:
            blob = engine_path.read_bytes()
            info["cache_hit"] = True
        else:
            t0 = time.perf_counter()
            blob = self._build(trt, logger, artifact, plan, profile, info)
            info["build_s"] = round(time.perf_counter() - t0, 2)
            info["cache_hit"] = False
            cache.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(engine_path, blob)  # a concurrent reader never sees half an engine
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            err = logger.errors[-1] if logger.errors else "deserialization failed"
            raise BackendError(f"tensorrt cannot load engine {engine_path}: {err}")
        try:
            inspector = engine.create_engine_inspector()
            details = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
            info["layer_precisions"] = layer_precisions(details)
        except Exception as exc:  # best effort: inspector output differs across versions
            info["layer_precisions_error"] = one_line(exc, typed=False, join=True)
        eff = _effective_precision(precision, plan, info.get("layer_precisions"))
        return TensorRTSession(trt, runtime, engine, logger, eff, info, cuda_graph)

    def _build(self, trt: Any, logger: Any, artifact: Path, plan: BuildPlan,
               profile: dict[str, tuple[Dims, Dims, Dims]], info: dict[str, Any]) -> bytes:
        """Parse the ONNX file and build a serialized engine; BackendError naming the file."""
        with tempfile.TemporaryDirectory(prefix="qdqbench-trt-") as tmp:
            model_path = artifact
            if plan.convert_to:
                model_path, info["converter"] = _convert_float(artifact, plan.convert_to, Path(tmp))
            builder = trt.Builder(logger)
            flags = 0
            # TensorRT 11 types every network strongly and keeps the flag only for compatibility.
            if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
                flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, logger)
            # parse_from_file resolves external weight files relative to the model.
            if not parser.parse_from_file(str(model_path)):
                errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
                raise BackendError(f"tensorrt cannot parse {artifact}: "
                                   f"{errors[0] if errors else 'unknown parser error'}")
            config = builder.create_builder_config()
            for name in plan.flags:
                config.set_flag(getattr(trt.BuilderFlag, name))
            if not plan.tf32 and hasattr(trt.BuilderFlag, "TF32"):
                config.clear_flag(trt.BuilderFlag.TF32)
            # DETAILED keeps per-layer types in the engine for the inspector; no runtime cost.
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
            opt_profile = builder.create_optimization_profile()
            for i in range(network.num_inputs):
                name = network.get_input(i).name
                if name not in profile:
                    raise BackendError(f"tensorrt: network input '{name}' of {artifact} has no "
                                       "profile shape")
                lo, opt, hi = profile[name]
                opt_profile.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(opt_profile)
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            err = logger.errors[-1] if logger.errors else "build_serialized_network returned None"
            raise BackendError(f"tensorrt engine build failed for {artifact}: {err}")
        return bytes(serialized)


def _parser_error(err: Any) -> str:
    try:
        return f"{err.desc()} (node {err.node()})"
    except Exception:
        return str(err).replace("\n", " ")


def onnx_input_names(path: Path) -> list[str]:
    """Graph inputs of an ONNX file that are not initializers (weights not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BackendError(f"cannot read ONNX file {path}: {one_line(exc, typed=False, join=True)}") from exc
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _effective_precision(precision: str, plan: BuildPlan,
                         layers: dict[str, dict[str, int]] | None) -> str:
    """The requested precision, downgraded to an honest label when the engine shows no int8."""
    if precision != "int8":
        return precision
    if layers is None:
        return "int8 (unverified)"
    has_int8 = any(per.get("int8") for per in layers.values())
    if has_int8:
        return "int8"
    # Myelin-compiled regions hide their inner types; only an engine without such regions that
    # still shows no int8 tensor is known to have dropped the quantization.
    opaque = any("myelin" in kind.lower() for kind in layers)
    return "int8 (unverified)" if opaque else f"{plan.float_precision} (Q/DQ not fused)"
