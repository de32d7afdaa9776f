"""OpenVINO backend: reads the ONNX file directly and compiles it for the CPU plugin.

OpenVINO's CPU plugin picks its float precision from ``INFERENCE_PRECISION_HINT``; on CPUs with
bf16 support it defaults to bf16 for float models, so "fp32" (and "int8", whose non-quantized
parts should stay f32 for a fair comparison) pins the hint to f32, and "bf16" asks for bf16. On a
CPU without bf16 (OpenVINO 2026.4 on an AVX2-only EPYC) the bf16 request silently compiles to
f32, which is why the effective precision is read back from the compiled model: the compiled
``INFERENCE_PRECISION_HINT`` and the ``runtimePrecision`` of every FullyConnected/MatMul node of
the runtime graph (``compiled.get_runtime_model()``), reported in ``info["runtime_precisions"]``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import BackendError
from qdqbench.engines.base import (
    EngineBase,
    EngineOptions,
    Feeds,
    feeds_shape,
    one_line,
    select_feeds,
)

# Requested precision -> INFERENCE_PRECISION_HINT. int8 keeps f32 for what is not quantized.
_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
# Runtime-graph layer types whose precision says what the heavy math runs in.
MATMUL_LAYERS = ("FullyConnected", "MatMul", "ScaledDotProductAttention", "Convolution", "Gemm")
_INT8 = ("i8", "u8")
_NP_TYPES = {"i64": np.int64, "i32": np.int32, "f32": np.float32, "i8": np.int8}


def runtime_precisions(runtime_model: Any) -> dict[str, dict[str, int]]:
    """{layerType: {runtimePrecision: count}} of the matmul-like nodes of a runtime graph."""
    counts: dict[str, collections.Counter] = {}
    for op in runtime_model.get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" not in rt:
            continue
        layer = rt["layerType"].astype(str)
        if layer not in MATMUL_LAYERS:
            continue
        prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
        counts.setdefault(layer, collections.Counter())[prec] += 1
    return {layer: dict(c) for layer, c in counts.items()}


def effective_precision(precisions: dict[str, dict[str, int]], model_has_qdq: bool,
                        hint: str) -> str:
    """The precision the heavy layers run in: int8 if any matmul is integer, else the float one."""
    seen = collections.Counter()
    for per_layer in precisions.values():
        seen.update(per_layer)
    if any(seen.get(p) for p in _INT8):
        return "int8"
    if seen.get("bf16"):
        float_prec = "bf16"
    elif seen.get("f16"):
        float_prec = "fp16"
    elif seen:
        float_prec = "fp32"
    else:  # no matmul-like node found: fall back to the compiled hint
        float_prec = {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
    return f"{float_prec} (Q/DQ not fused)" if model_has_qdq else float_prec


def _hint_name(value: Any) -> str:
    """'f32' / 'bf16' / 'f16' from a compiled-model property (an ov.Type or a string)."""
    text = str(getattr(value, "get_type_name", lambda: value)())
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(text, text)


class OpenVINOSession:
    """A compiled OpenVINO model and one reused InferRequest."""

    backend = "openvino"

    def __init__(self, compiled: Any, precision: str, info: dict[str, Any]):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.precision = precision
        self.info = info
        self._inputs = [p.get_any_name() for p in compiled.inputs]
        self._dtypes = {p.get_any_name(): _NP_TYPES.get(p.get_element_type().to_string())
                        for p in compiled.inputs}

    @property
    def compiled(self) -> Any:
        """The ``openvino.CompiledModel`` (to read its properties)."""
        return self._compiled

    def predict(self, feeds: Feeds) -> np.ndarray:
        """The first output as float32."""
        x = select_feeds(feeds, self._inputs, self._dtypes)
        try:
            result = self._request.infer(x)
        except Exception as exc:
            raise BackendError(f"openvino inference failed: {one_line(exc, typed=False, join=True)}") from exc
        return np.array(result[self._compiled.output(0)], dtype=np.float32)

    def time(self, feeds: Feeds, settings: Any) -> Any:
        """Latency of start_async()+wait() on the reused request with inputs set once."""
        import openvino as ov

        from qdqbench.engines.timing import measure

        x = select_feeds(feeds, self._inputs, self._dtypes)
        batch, seq = feeds_shape(x)
        request = self._request
        for name, arr in x.items():
            request.set_tensor(name, ov.Tensor(arr))
        # start_async+wait skips infer()'s result-dict wrapping (about 5% of a tiny model's
        # latency with OpenVINO 2026.4), leaving the engine's own time.
        start, wait = request.start_async, request.wait

        def once() -> None:
            start()
            wait()

        return measure(once, settings, batch=batch, seq=seq,
                       method="host perf_counter_ns around InferRequest.start_async()+wait()")

    def op_profile(self, feeds: Feeds, iterations: int, reprepare: Any) -> dict[str, Any]:
        """Per-layer time from OpenVINO's performance counters of a second compiled model with
        ``PERF_COUNT`` on (a compile-time switch, so the timed model never counts)."""
        import openvino as ov

        from qdqbench.engines.profile import ProfilerUnavailable, summarize

        if reprepare is None:
            raise ProfilerUnavailable("openvino: no way to compile a profiling model here")
        profiled = reprepare({"perf_count": True})
        x = select_feeds(feeds, profiled._inputs, profiled._dtypes)
        request = profiled._request
        for name, arr in x.items():
            request.set_tensor(name, ov.Tensor(arr))
        request.infer()  # first inference (allocations) left out
        ranks = layer_input_ranks(profiled.compiled.get_runtime_model())
        times = []
        for _ in range(iterations):
            request.infer()
            times += perf_counter_times(request.profiling_info, ranks)
        return summarize(times, iterations,
                         source="OpenVINO performance counters (PERF_COUNT, InferRequest.profiling_"
                                "info real_time) of a second compiled model, after the timed loop")


def exec_precision(exec_type: str) -> str:
    """The precision in an OpenVINO CPU exec type ("brgemm_avx512_I8" -> "int8"), or ""."""
    token = exec_type.rsplit("_", 1)[-1].upper() if exec_type else ""
    return {"I8": "int8", "U8": "int8", "FP32": "fp32", "F32": "fp32", "BF16": "bf16",
            "FP16": "fp16", "F16": "fp16", "I32": "int32", "I64": "int64"}.get(token, "")


def layer_input_ranks(runtime_model: Any) -> dict[str, tuple[int, ...]]:
    """{runtime-graph node name: ranks of its inputs} (how attention MatMuls are told apart)."""
    out = {}
    for op in runtime_model.get_ordered_ops():
        ranks = []
        for i in range(op.get_input_size()):
            rank = op.get_input_partial_shape(i).rank
            ranks.append(rank.get_length() if rank.is_static else 0)
        out[op.get_friendly_name()] = tuple(ranks)
    return out


def perf_counter_times(infos: Any, ranks: dict[str, tuple[int, ...]]) -> list[Any]:
    """``profile.OpTime`` of the executed nodes of one inference's ``ProfilingInfo`` list."""
    from qdqbench.engines.profile import OpTime

    out = []
    for info in infos:
        if "EXECUTED" not in str(info.status) or "NOT" in str(info.status):
            continue  # NOT_RUN / OPTIMIZED_OUT nodes take no time
        ms = info.real_time.total_seconds() * 1000.0
        out.append(OpTime(op=str(info.node_type), ms=ms, precision=exec_precision(str(info.exec_type)),
                          name=str(info.node_name), input_ranks=ranks.get(str(info.node_name), ())))
    return out


@dataclass(frozen=True)
class OpenVINOOptions(EngineOptions):
    """``prepare`` options of OpenVINO."""

    static_shape: bool = False  # reshape to the one given shape before compiling
    float_precision: str | None = None  # the float layers' precision of an INT8 model (openvino@bf16)
    perf_count: bool = False  # per-layer performance counters on (the op profile's own model only)


class OpenVINOBackend(EngineBase):
    """OpenVINO on the CPU plugin."""

    Options = OpenVINOOptions

    name = "openvino"
    precisions = ("fp32", "int8", "bf16", "fp16")

    def unavailable_reason(self) -> str | None:
        """None when openvino imports, else why not."""
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed: pip install 'qdqbench[cpu]' (or 'qdqbench[openvino]')"
        return None

    def prepare(self, artifact: Path, precision: str, shapes: list, threads: int | None = None,
                **options: Any) -> OpenVINOSession:
        """Compile ``artifact`` on CPU with the precision hint, thread count and LATENCY hint.

        ``static_shape=True`` with exactly one shape reshapes the model to it before compiling
        (OpenVINO is usually faster on static shapes; the default keeps the dynamic axes, as the
        other CPU backends run them).
        """
        artifact, opts = self.begin_prepare(artifact, precision, options)
        static_shape, float_precision = opts.static_shape, opts.float_precision
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(artifact))
        except Exception as exc:
            raise BackendError(f"openvino cannot read {artifact}: {one_line(exc, typed=False, join=True)}") from exc
        # ONNX QuantizeLinear/DequantizeLinear arrive as FakeQuantize (or Convert+Subtract+Multiply
        # for constant weights); FakeQuantize is the marker of a Q/DQ model.
        model_has_qdq = any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
        if static_shape:
            if len(shapes) != 1:
                raise BackendError("openvino static_shape needs exactly one shape")
            shape = shapes[0]
            model.reshape({p.get_any_name(): [shape.batch, shape.seq] for p in model.inputs})

        if float_precision is not None and (precision != "int8" or float_precision not in ("bf16", "fp16")):
            raise BackendError(f"openvino: float_precision '{float_precision}' applies to int8 only "
                               f"(bf16 or fp16 for the layers Q/DQ leaves in float)")
        requested = _HINTS[float_precision or precision]
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": requested,
                                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if opts.perf_count:
            config["PERF_COUNT"] = True
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BackendError(f"openvino cannot compile {artifact}: {one_line(exc, typed=False, join=True)}") from exc

        hint = _hint_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        precisions = runtime_precisions(compiled.get_runtime_model())
        eff = effective_precision(precisions, model_has_qdq, hint)
        info: dict[str, Any] = {
            "openvino_version": ov.get_version(),
            "device": "CPU",
            "device_name": core.get_property("CPU", "FULL_DEVICE_NAME"),
            "optimization_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
            "inference_precision_hint": hint,
            "requested_hint": requested,
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")),
            "static_shape": static_shape,
            "model_has_qdq": model_has_qdq,
            "runtime_precisions": precisions,
        }
        if hint != requested:
            info["note"] = (f"requested {requested} but the CPU plugin compiled {hint} "
                            "(this CPU lacks native support)")
        return OpenVINOSession(compiled, eff, info)
