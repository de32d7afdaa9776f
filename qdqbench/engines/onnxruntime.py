"""ONNX Runtime backend: the CPU execution provider, and the CUDA / TensorRT providers of
onnxruntime-gpu as the backends ``onnxruntime@cuda`` and ``onnxruntime@trt``.

CPU. ORT runs a Q/DQ model with real integer kernels only when its graph optimizer fuses the
QuantizeLinear/DequantizeLinear pairs around a MatMul into ``QLinearMatMul`` /
``MatMulIntegerToFloat``; otherwise it dequantizes and runs float MatMuls. So the session saves its
optimized graph once (``optimized_model_filepath``), counts the op types in it, and derives the
effective precision from what it finds rather than from the request.

GPU. ``execution_providers`` (pure) builds the provider list and options of a variant in one place.
A GPU session cannot save its optimized graph (ORT refuses to serialize nodes compiled by the
TensorRT EP), so ``prepare`` runs one inference with ORT's profiler on and reads which provider
ran each node (``provider_summary``, pure, on the profile JSON); the effective precision follows
from that (``gpu_effective_precision``): the CUDA EP has no integer kernels for a Q/DQ graph (it
dequantizes and multiplies in float), and the TensorRT EP builds INT8 from the Q/DQ nodes it takes
(``trt_int8_enable``, explicit quantization) but exposes no per-layer types through ORT, so that
claim is marked unverified. ORT silently falls back to the next provider when one fails to load
(a missing libnvinfer, say); ``prepare`` checks the session really got the provider it asked for.

``transformer_fusion=True`` first runs ``onnxruntime.transformers.optimizer.optimize_model``
(Attention / SkipLayerNormalization / BiasGelu fusion) for the "best fp32" baseline. With
transformers 5 exports its num_heads/hidden_size auto-detection fails (ORT 1.32 logs "Failed to
detect num_heads and hidden_size") and Attention is then not fused: pass ``num_heads`` and
``hidden_size`` from the model config.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import BackendError
from qdqbench.engines.base import (
    EngineBase,
    EngineOptions,
    Feeds,
    Fp32Configuration,
    check_precision,
    feeds_shape,
    one_line,
    predict_in_profile,
    select_feeds,
)

# Op types worth reporting from the optimized graph: integer kernels, the float fallbacks they
# replace, and the transformer fusions.
INTERESTING_OPS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
                   "QGemm", "QAttention", "QuantizeLinear", "DequantizeLinear", "MatMul", "Gemm",
                   "FusedMatMul", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
                   "EmbedLayerNormalization", "BiasGelu", "FastGelu")
INTEGER_KERNELS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
                   "QGemm", "QAttention")
# Nodes that decide the precision of a Q/DQ graph: outside TensorRT they run as ORT kernels.
PRECISION_OPS = ("QuantizeLinear", "DequantizeLinear", "MatMul", "Gemm", "FusedMatMul", "FusedGemm",
                 *INTEGER_KERNELS)

# ``onnxruntime@<provider>`` -> the execution provider it names.
GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "trt": "TensorrtExecutionProvider"}
GPU_FIX = "pip install 'qdqbench[gpu]'"
PROVIDER_PRECISIONS = {None: ("fp32", "int8", "fp16"), "cuda": ("fp32", "int8"),
                      "trt": ("fp32", "int8", "fp16")}

_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
              "tensor(float16)": np.float16, "tensor(int8)": np.int8}


def choose_providers(precision: str, available: list[str]) -> list[Any]:
    """Execution providers of the plain ``onnxruntime`` backend for a requested precision."""
    if precision == "fp16":
        # fp16 only makes sense on a GPU build; TensorRT EP converts the float graph itself.
        if "TensorrtExecutionProvider" in available:
            return [("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                    "CUDAExecutionProvider", "CPUExecutionProvider"]
        raise BackendError("onnxruntime runs fp16 only through its TensorRT execution provider "
                           "(onnxruntime-gpu); this build has " + ", ".join(available))
    return ["CPUExecutionProvider"]


def missing_provider_message(provider: str, available: Iterable[str]) -> str:
    """The one line for ``onnxruntime@<provider>`` when this ORT build lacks its execution provider."""
    return (f"onnxruntime@{provider} needs onnxruntime-gpu with {GPU_PROVIDERS[provider]} "
            f"(available: {', '.join(available) or 'none'}); {GPU_FIX}")


def profile_shapes(profile: dict[str, tuple[tuple[int, int], ...]]) -> dict[str, str]:
    """TensorRT EP explicit-profile options from {input: (min, opt, max)} (batch, seq) pairs."""
    def fmt(i: int) -> str:
        return ",".join(f"{name}:{d[i][0]}x{d[i][1]}" for name, d in sorted(profile.items()))

    return {"trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1),
            "trt_profile_max_shapes": fmt(2)}


def execution_providers(provider: str | None, precision: str, available: list[str], *,
                        cache_dir: Path | None = None,
                        profile: dict[str, tuple[tuple[int, int], ...]] | None = None,
                        device_id: int = 0) -> list[Any]:
    """The provider list (with options) for an execution provider (None: CPU) and precision; pure.

    ``None``: the plain CPU backend (``choose_providers``). ``"cuda"``: CUDAExecutionProvider with
    TF32 off (fp32 means fp32), CPU for what it lacks. ``"trt"``: TensorrtExecutionProvider with
    INT8 on for int8 (TensorRT takes its scales from the Q/DQ nodes; no calibration table),
    FP16 on for fp16, engine and timing caches in ``cache_dir`` and, when given, one explicit
    optimization profile (so one engine serves every shape in it instead of a rebuild per new
    shape), then CUDA and CPU for nodes TensorRT does not take. A provider this build lacks is a
    BackendError with the fix.
    """
    if provider is None:
        return choose_providers(precision, available)
    if provider not in GPU_PROVIDERS:
        raise BackendError(f"onnxruntime has no @{provider} variant; variants: "
                           + ", ".join(f"onnxruntime@{v}" for v in GPU_PROVIDERS))
    check_precision(f"onnxruntime@{provider}", precision, PROVIDER_PRECISIONS[provider])
    if GPU_PROVIDERS[provider] not in available:
        raise BackendError(missing_provider_message(provider, available))
    cuda = ("CUDAExecutionProvider", {"device_id": device_id, "use_tf32": 0})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    if cache_dir is None:
        raise BackendError("onnxruntime@trt needs an engine cache folder")
    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_int8_enable": precision == "int8",
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
    }
    if profile:
        options.update(profile_shapes(profile))
    chain: list[Any] = [("TensorrtExecutionProvider", options)]
    if "CUDAExecutionProvider" in available:
        chain.append(cuda)
    return chain + ["CPUExecutionProvider"]


def provider_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Which provider ran which node, from an ORT profile (``SessionOptions.enable_profiling``).

    Reads the ``"cat": "Node"`` kernel events (``args.provider``, ``args.op_name``); a node run
    several times counts once. Returns ``{"nodes": {provider: count}, "ops": {provider: {op:
    count}}}``. Nodes are the graph after ORT's partitioning and fusion: a TensorRT subgraph is
    one ``TRTKernel_*`` node however many ONNX nodes it holds.
    """
    seen: dict[str, tuple[str, str]] = {}
    for node, event in kernel_events(events):
        args = event["args"]
        seen[node] = (str(args["provider"]), str(args["op_name"]))
    nodes: collections.Counter = collections.Counter()
    ops: dict[str, collections.Counter] = {}
    for provider, op in seen.values():
        nodes[provider] += 1
        ops.setdefault(provider, collections.Counter())[op] += 1
    return {"nodes": dict(nodes.most_common()),
            "ops": {p: dict(sorted(c.items())) for p, c in sorted(ops.items())}}


def kernel_events(events: list[dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(node name, event) of every kernel event of an ORT profile: ``"cat": "Node"`` events named
    ``<node>_kernel_time`` with ``args.provider`` and ``args.op_name`` (the one reader of them)."""
    for event in events:
        if not isinstance(event, dict) or event.get("cat") != "Node":
            continue
        args = event.get("args") or {}
        name = str(event.get("name", ""))
        if not args.get("provider") or not args.get("op_name") or not name.endswith("_kernel_time"):
            continue  # fence events and events of other kinds carry no placement
        yield name[: -len("_kernel_time")], event


# ORT profile type names -> our precision names (a kernel's first input).
_PROFILE_TYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "uint8": "int8",
                  "int8": "int8", "int32": "int32", "int64": "int64", "bool": "bool"}


def op_times(events: list[dict[str, Any]], skip_runs: int = 0) -> list[Any]:
    """``profile.OpTime`` of every kernel event, leaving out the first ``skip_runs`` runs.

    Runs are delimited by the profile's ``model_run`` session events; a kernel's precision is
    int8 for the integer kernels, else its first input's type; input ranks come from
    ``args.input_type_shape`` (how attention matmuls are told from weight GEMMs).
    """
    from qdqbench.engines.profile import OpTime

    starts = sorted(e.get("ts", 0) for e in events
                    if isinstance(e, dict) and e.get("cat") == "Session" and e.get("name") == "model_run")
    since = starts[skip_runs] if 0 < skip_runs < len(starts) else (float("inf") if skip_runs else 0)
    out = []
    for node, event in kernel_events(events):
        if event.get("ts", 0) < since:
            continue
        args = event["args"]
        op = str(args["op_name"])
        shapes = [s for s in args.get("input_type_shape") or [] if isinstance(s, dict)]
        ranks = tuple(len(next(iter(s.values()))) for s in shapes if s and isinstance(next(iter(s.values())), list))
        first = next(iter(shapes[0]), "") if shapes else ""
        prec = "int8" if op in INTEGER_KERNELS else _PROFILE_TYPES.get(first, first)
        out.append(OpTime(op=op, ms=float(event.get("dur", 0)) / 1000.0, precision=prec, name=node,
                          input_ranks=ranks))
    return out


def read_profile(path: Path) -> list[dict[str, Any]]:
    """The event list of an ORT profile JSON file (a BackendError naming the file if unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read ONNX Runtime profile {path}: {exc}") from exc
    if isinstance(data, dict):  # some writers wrap the events: {"traceEvents": [...]}
        data = data.get("traceEvents", [])
    if not isinstance(data, list):
        raise BackendError(f"ONNX Runtime profile {path} holds no event list")
    return data


def gpu_effective_precision(provider: str, requested: str, summary: dict[str, Any],
                            model_has_qdq: bool) -> str:
    """What a GPU provider really ran, from ``provider_summary`` of one profiled inference.

    TensorRT took nodes: the requested precision, int8 marked "unverified" (ORT shows no
    per-layer types of TensorRT's engine) and fp32 "TF32 allowed"; the nodes that decide the
    precision (Q/DQ, MatMul, Gemm, integer kernels) left to other providers are counted in the
    label. Otherwise (the CUDA provider, or TensorRT took nothing): int8 when integer kernels ran
    (said so when only on the CPU), else float, "fp32 (Q/DQ not fused)" for a Q/DQ graph.
    """
    ops = summary.get("ops", {})
    trt = ops.get("TensorrtExecutionProvider", {})
    outside = {p: sum(n for op, n in per.items() if op in PRECISION_OPS)
               for p, per in ops.items() if p != "TensorrtExecutionProvider"}
    outside = {p: n for p, n in outside.items() if n}
    if provider == "trt" and trt:
        # TensorRT allows TF32 for fp32 layers by default and the EP has no option to stop it.
        fp32 = "fp32 (TF32 allowed)"
        label = {"int8": "int8 (unverified)" if model_has_qdq else fp32,
                 "fp16": "fp16", "fp32": fp32}[requested]
        if outside:
            where = ", ".join(f"{n} on {p.replace('ExecutionProvider', '')}" for p, n in outside.items())
            label = f"{label}; Q/DQ/MatMul nodes outside TensorRT: {where}"
        return label
    integer = {p: sum(n for op, n in per.items() if op in INTEGER_KERNELS) for p, per in ops.items()}
    gpu = GPU_PROVIDERS[provider]
    if integer.get(gpu) or integer.get("CUDAExecutionProvider"):
        return "int8"
    if any(integer.values()):
        return "int8 (integer kernels on CPU)"
    base = "fp16" if requested == "fp16" else "fp32"
    note = " (TensorRT took no node)" if provider == "trt" else ""
    return (f"{base} (Q/DQ not fused){note}" if model_has_qdq else f"{base}{note}")


def count_ops(model_path: Path) -> dict[str, int]:
    """Op-type counts of an ONNX graph (weights not loaded)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def effective_precision(optimized_ops: dict[str, int], model_has_qdq: bool) -> str:
    """What the optimized graph runs: "int8" with integer matmul kernels, else an honest fp32."""
    if any(optimized_ops.get(op, 0) for op in INTEGER_KERNELS):
        return "int8"
    return "fp32 (Q/DQ not fused)" if model_has_qdq else "fp32"


class OnnxRuntimeSession:
    """An ``onnxruntime.InferenceSession`` with the facts of its optimized graph."""

    def __init__(self, sess: Any, precision: str, info: dict[str, Any], *, backend: str = "onnxruntime",
                 device: str = "cpu", profile: tuple[tuple[int, int], tuple[int, int]] | None = None):
        self._sess = sess
        self.backend = backend
        self.precision = precision
        self.info = info
        self._device = device
        self._profile = profile  # (lo, hi) (batch, seq) of an engine that refuses other shapes
        self._inputs = [i.name for i in sess.get_inputs()]
        self._dtypes = {i.name: _ORT_TYPES.get(i.type) for i in sess.get_inputs()}
        out = sess.get_outputs()[0]
        self._output = out.name
        shape = list(getattr(out, "shape", None) or [])
        # A symbolic second axis ("sequence") means the output has one value per token.
        self._seq_output = len(shape) >= 2 and not isinstance(shape[1], int)

    def predict(self, feeds: Feeds) -> np.ndarray:
        """The first output as float32 (copied to the host)."""
        x = select_feeds(feeds, self._inputs, self._dtypes)
        try:
            if self._profile is not None:
                out = predict_in_profile(x, self._run, *self._profile, seq_output=self._seq_output)
            else:
                out = self._run(x)
        except BackendError:
            raise
        except Exception as exc:  # ORT raises its own exception types per error code
            raise BackendError(f"{self.backend} run failed: {one_line(exc, typed=False, join=True)}") from exc
        return np.asarray(out, dtype=np.float32)

    def _run(self, x: Feeds) -> np.ndarray:
        return self._sess.run([self._output], x)[0]

    def time(self, feeds: Feeds, settings: Any) -> Any:
        """Latency via IOBinding: inputs bound once, so the loop times ORT's run alone."""
        from qdqbench.engines.timing import measure

        x = select_feeds(feeds, self._inputs, self._dtypes)
        batch, seq = feeds_shape(x)
        binding = self._sess.io_binding()
        run = self._sess.run_with_iobinding
        if self._device == "cpu":
            for name, arr in x.items():
                binding.bind_cpu_input(name, arr)
            # ORT allocates the output each run (as a real caller's run() would); only the numpy
            # conversion of inputs and outputs is kept out of the loop.
            binding.bind_output(self._output, "cpu")
            return measure(lambda: run(binding), settings, batch=batch, seq=seq,
                           method="host perf_counter_ns around InferenceSession.run_with_iobinding")
        import onnxruntime as ort

        device_id = int(self.info.get("device_id", 0))
        for name, arr in x.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", device_id))
        binding.bind_output(self._output, "cuda", device_id)
        binding.synchronize_inputs()
        # run_with_iobinding returns after ORT synchronised its CUDA stream; synchronize_outputs
        # makes the wait explicit, so each sample is finished GPU work, seen from the host.
        return measure(lambda: run(binding), settings, batch=batch, seq=seq,
                       sync=binding.synchronize_outputs,
                       method="host perf_counter_ns around InferenceSession.run_with_iobinding + "
                              "IOBinding.synchronize_outputs, inputs and output on the GPU "
                              "(CUDA-synchronised; no H2D/D2H)")

    def op_profile(self, feeds: Feeds, iterations: int, reprepare: Any) -> dict[str, Any]:
        """Per-op time from ORT's profiler on a second session of the same model (profiling is a
        session-creation switch, so the timed session never has it on); CPU provider only."""
        from qdqbench.engines.profile import ProfilerUnavailable, summarize

        if self._device != "cpu":
            raise ProfilerUnavailable(f"{self.backend}: per-op profile of the GPU providers is not "
                                      "implemented (the TensorRT EP runs fused subgraphs as one node)")
        if reprepare is None:
            raise ProfilerUnavailable("onnxruntime: no way to prepare a profiling session here")
        with tempfile.TemporaryDirectory(prefix="qdqbench-ort-opprofile-") as tmp:
            profiled = reprepare({"profile_prefix": str(Path(tmp) / "op-profile")})
            x = select_feeds(feeds, profiled._inputs, profiled._dtypes)
            for _ in range(iterations + 1):  # the first run (allocations, caches) is left out
                profiled._run(x)
            events = read_profile(Path(profiled._sess.end_profiling()))
        return summarize(op_times(events, skip_runs=1), iterations,
                         source="ONNX Runtime profiler (SessionOptions.enable_profiling) on a second "
                                "session, kernel times per node, after the timed loop")


@dataclass(frozen=True)
class OrtOptions(EngineOptions):
    """``prepare`` options of ONNX Runtime (CPU and the GPU execution providers)."""

    transformer_fusion: bool = False  # CPU fp32 only: ORT's transformer optimizer first
    num_heads: int = 0  # for transformer_fusion (0: ORT detects, which fails on transformers 5 exports)
    hidden_size: int = 0
    cache_dir: str | None = None  # GPU providers: TensorRT EP engine cache
    device_id: int = 0  # GPU providers
    profile_prefix: str | None = None  # CPU: ORT's profiler on (the op profile's own session only)


class OnnxRuntimeBackend(EngineBase):
    """ONNX Runtime: CPU execution provider, or a GPU provider for the ``@cuda``/``@trt`` variants."""

    Options = OrtOptions

    def __init__(self, provider: str | None = None):
        if provider is not None and provider not in GPU_PROVIDERS:
            raise BackendError(f"onnxruntime has no @{provider} variant; variants: "
                               + ", ".join(f"onnxruntime@{v}" for v in GPU_PROVIDERS))
        self.provider = provider
        self.name = "onnxruntime" if provider is None else f"onnxruntime@{provider}"
        self.precisions = PROVIDER_PRECISIONS[provider]

    def unavailable_reason(self) -> str | None:
        """None when onnxruntime imports (and has this backend's provider), else why not."""
        try:
            import onnxruntime as ort
        except ImportError:
            if self.provider is None:
                return ("onnxruntime is not installed: pip install 'qdqbench[cpu]' "
                        "(or 'qdqbench[gpu]' for onnxruntime-gpu, which runs CPU cells too)")
            return f"onnxruntime-gpu is not installed: {GPU_FIX}"
        if self.provider is None:
            return None
        available = ort.get_available_providers()
        if GPU_PROVIDERS[self.provider] not in available:
            return missing_provider_message(self.provider, available)
        return None

    def fp32_configurations(self, model_config: Any = None) -> list[Fp32Configuration]:
        """CPU: the plain ORT_ENABLE_ALL graph and ORT's transformer fusion (the faster is the fp32
        baseline, so no speedup is measured against a weak one). Head count and hidden size come
        from the model config: ORT's own detection fails on transformers 5 exports. GPU variants:
        the plain graph only."""
        plain = Fp32Configuration("plain")
        if self.provider is not None:
            return [plain]
        heads = getattr(model_config, "num_attention_heads", None) or getattr(model_config, "n_heads", 0) or 0
        hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "dim", 0) or 0
        fused = Fp32Configuration(
            "transformer_fusion",
            {"transformer_fusion": True, "num_heads": int(heads), "hidden_size": int(hidden)},
            facts=(("fused_ops", "transformer_fusion_ops"),))
        return [plain, fused]

    def prepare(self, artifact: Path, precision: str, shapes: list, threads: int | None = None,
                **options: Any) -> OnnxRuntimeSession:
        """An InferenceSession with full graph optimization and the facts of what it runs.

        ``options``: ``OrtOptions``. CPU: the optimized graph's ops in ``info``. GPU variants:
        ``cache_dir`` (TensorRT engines; default ``ort_trt_engines/`` next to the artifact) and
        ``device_id``; one profiled inference on ``shapes[0]`` tells which provider ran each node
        (``info["providers_used"]``).
        """
        artifact, opts = self.begin_prepare(artifact, precision, options)
        transformer_fusion, num_heads, hidden_size = opts.transformer_fusion, opts.num_heads, opts.hidden_size
        cache_dir, device_id = opts.cache_dir, opts.device_id
        import onnxruntime as ort

        if transformer_fusion and self.provider is not None:
            raise BackendError(f"{self.name}: transformer_fusion is the CPU fp32 baseline option")
        try:
            source_ops = count_ops(artifact)
        except Exception as exc:
            raise BackendError(f"cannot read ONNX file {artifact}: {one_line(exc, typed=False, join=True)}") from exc
        model_has_qdq = bool(source_ops.get("QuantizeLinear") or source_ops.get("DequantizeLinear"))
        if self.provider is not None:
            return self._prepare_gpu(ort, artifact, precision, shapes, model_has_qdq,
                                     cache_dir=cache_dir, device_id=device_id, threads=threads)
        providers = choose_providers(precision, ort.get_available_providers())

        so = self._session_options(ort, threads)
        if opts.profile_prefix:
            so.enable_profiling, so.profile_file_prefix = True, opts.profile_prefix
        info: dict[str, Any] = {
            "onnxruntime_version": ort.__version__,
            "onnxruntime_package": getattr(ort, "package_name", "onnxruntime"),
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "transformer_fusion": transformer_fusion,
            "model_has_qdq": model_has_qdq,
        }
        with tempfile.TemporaryDirectory(prefix="qdqbench-ort-") as tmp:
            model_path = artifact
            if transformer_fusion:
                model_path, stats = _fuse_transformer(artifact, Path(tmp), num_heads, hidden_size)
                info["transformer_fusion_ops"] = stats
            optimized = Path(tmp) / "optimized.onnx"
            if providers == ["CPUExecutionProvider"]:
                # Only a CPU graph can be saved: ORT refuses to serialize nodes compiled by the
                # TensorRT EP, and that refusal would fail the whole session.
                so.optimized_model_filepath = str(optimized)
            disabled = _disabled_optimizers(model_has_qdq)
            info["disabled_optimizers"] = disabled
            try:
                sess = ort.InferenceSession(str(model_path), so, providers=providers,
                                            disabled_optimizers=disabled or None)
            except Exception as exc:
                why = one_line(exc, typed=False, join=True)
                raise BackendError(f"onnxruntime cannot load {artifact}: {why}") from exc
            ops = count_ops(optimized) if optimized.exists() else {}
        info["providers"] = sess.get_providers()
        info["provider"] = info["providers"][0]
        info["fused_ops"] = {op: ops.get(op, 0) for op in INTERESTING_OPS}
        if not ops:
            # Providers that take the whole graph (TensorRT EP) leave no CPU graph to inspect.
            info["fused_ops_note"] = "optimized graph not saved by this provider"
        if precision == "fp16":
            eff = "fp16"
        else:
            eff = effective_precision(ops, model_has_qdq)
        return OnnxRuntimeSession(sess, eff, info)

    @staticmethod
    def _session_options(ort: Any, threads: int | None) -> Any:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads or 0  # 0 = ORT's default (one per physical core)
        so.inter_op_num_threads = 1
        # ORT 1.32 warns on every save of an ENABLE_ALL graph that it is hardware specific; we
        # only read it back here, on the same machine.
        so.log_severity_level = 3
        return so

    def _prepare_gpu(self, ort: Any, artifact: Path, precision: str, shapes: list, model_has_qdq: bool, *,
                     cache_dir: str | None, device_id: int, threads: int | None = None) -> OnnxRuntimeSession:
        """A session on the variant's GPU provider, checked and profiled once."""
        variant = self.provider
        assert variant is not None
        info: dict[str, Any] = {
            "onnxruntime_version": ort.__version__,
            "onnxruntime_package": getattr(ort, "package_name", "onnxruntime"),
            "onnxruntime_cuda": getattr(ort, "cuda_version", None) or None,
            "graph_optimization_level": "ORT_ENABLE_ALL", "model_has_qdq": model_has_qdq,
            "device_id": device_id, "intra_op_num_threads": threads,  # for nodes left on the CPU
        }
        info["preload"] = _preload_gpu_libraries(ort, variant)
        profile = lo_hi = None
        cache = None
        if variant == "trt":
            from qdqbench.engines.tensorrt import onnx_input_names, optimization_profile

            problem = _int8_capability_problem(self.name, precision, device_id)
            if problem:
                raise BackendError(problem)
            if shapes:
                profile = optimization_profile(shapes, onnx_input_names(artifact))
                first = next(iter(profile.values()))
                lo_hi = (first[0], first[2])
            # One folder per profile: a cached engine is reused only for the profile it was built for.
            key = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:12]
            cache = Path(cache_dir) if cache_dir else artifact.parent / "ort_trt_engines"
            cache = cache / f"profile-{key}"
            cache.mkdir(parents=True, exist_ok=True)
            info["engine_cache"] = str(cache)
            info["profile"] = {k: [list(d) for d in v] for k, v in (profile or {}).items()}
            info["tf32"] = "TensorRT default (the TensorRT EP has no switch for it)"
        else:
            info["tf32"] = False
        available = ort.get_available_providers()
        providers = execution_providers(variant, precision, available, cache_dir=cache,
                                        profile=profile, device_id=device_id)
        info["requested_providers"] = [p if isinstance(p, str) else p[0] for p in providers]
        info["provider_options"] = {p[0]: p[1] for p in providers if not isinstance(p, str)}
        wanted = GPU_PROVIDERS[variant]

        with tempfile.TemporaryDirectory(prefix="qdqbench-ort-profile-") as tmp:
            so = self._session_options(ort, threads)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort-profile")
            disabled = _disabled_optimizers(model_has_qdq)
            info["disabled_optimizers"] = disabled
            printed = io.StringIO()
            try:
                # ORT's Python wrapper prints "EP Error ... Falling back" and retries on the next
                # provider; the check below turns that fallback into an error.
                with contextlib.redirect_stdout(printed):
                    sess = ort.InferenceSession(str(artifact), so, providers=providers,
                                                disabled_optimizers=disabled or None)
            except Exception as exc:
                why = one_line(exc, typed=False, join=True)
                raise BackendError(f"{self.name} cannot load {artifact}: {why}") from exc
            got = sess.get_providers()
            info["providers"] = got
            info["provider"] = got[0]
            if wanted not in got:
                said = one_line(Exception(printed.getvalue())) if printed.getvalue().strip() else ""
                hint = (" (is TensorRT 10's libnvinfer.so.10 installed? the TensorRT EP of "
                        "onnxruntime-gpu links TensorRT 10)" if variant == "trt" else
                        " (are the CUDA 13 runtime and cuDNN 9 libraries installed?)")
                raise BackendError(f"{self.name}: {wanted} did not load{hint}; ORT fell back to "
                                   f"{', '.join(got)}{': ' + said if said else ''}; {GPU_FIX}")
            session = OnnxRuntimeSession(sess, precision, info, backend=self.name, device="cuda",
                                         profile=lo_hi)
            feeds = _dummy_feeds(sess, shapes)
            try:
                session.predict(feeds)  # builds the TensorRT engine (or loads it from the cache)
                path = sess.end_profiling()
                events = read_profile(Path(path))
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"{self.name} first inference failed on {artifact}: "
                                   f"{one_line(exc, typed=False, join=True)}") from exc
        summary = provider_summary(events)
        info["providers_used"] = summary["nodes"]
        info["ops_by_provider"] = summary["ops"]
        session.precision = gpu_effective_precision(variant, precision, summary, model_has_qdq)
        return session


def _disabled_optimizers(model_has_qdq: bool) -> list[str]:
    # ORT's common-subexpression elimination merges identical QuantizeLinear nodes (Q, K and V
    # see one tensor with one scale); a Q feeding several DequantizeLinear nodes then blocks the
    # QDQ → integer-kernel fusion and leaves those MatMuls in float (48 of 96 on a BERT-base
    # export, ORT 1.32). Q/DQ models skip that one pass.
    return ["CommonSubexpressionElimination"] if model_has_qdq else []


def _int8_capability_problem(engine: str, precision: str, device_id: int) -> str | None:
    """The INT8 tensor-core check of the TensorRT backend, where torch can see the GPU."""
    if precision != "int8":
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        from qdqbench.engines.tensorrt import int8_capability_problem

        return int8_capability_problem(engine, precision, torch.cuda.get_device_name(device_id),
                                       tuple(torch.cuda.get_device_capability(device_id)))
    except Exception:  # no torch, or no usable CUDA in it: TensorRT itself will say so
        return None


def _dummy_feeds(sess: Any, shapes: list) -> Feeds:
    """Inputs of the first prepared shape (or 1x8) for the profiled first inference."""
    batch, seq = (int(shapes[0].batch), int(shapes[0].seq)) if shapes else (1, 8)
    feeds = {}
    for inp in sess.get_inputs():
        dtype = _ORT_TYPES.get(inp.type, np.int64)
        arr = np.zeros((batch, seq), dtype=dtype)
        if inp.name == "attention_mask":
            arr[:] = 1
        elif inp.name == "input_ids":
            arr[:] = 1 + (np.arange(batch * seq).reshape(batch, seq) % 7)
        feeds[inp.name] = arr
    return feeds


def _preload_gpu_libraries(ort: Any, variant: str) -> dict[str, Any]:
    """Load the CUDA/cuDNN (and, for ``trt``, TensorRT) libraries the GPU providers dlopen.

    onnxruntime-gpu's providers find CUDA 13 and cuDNN 9 through ``onnxruntime.preload_dlls``
    (from the nvidia-* wheels of ``onnxruntime-gpu[cuda,cudnn]`` or torch) and TensorRT's
    ``libnvinfer.so.10`` once ``import tensorrt`` has loaded it from the pip wheel.
    """
    done: dict[str, Any] = {}
    if variant == "trt":
        try:
            import tensorrt

            done["tensorrt"] = getattr(tensorrt, "__version__", "?")
        except Exception as exc:  # ImportError, or a broken install raising OSError
            done["tensorrt"] = f"not imported: {one_line(exc, typed=False, join=True)}"
    if hasattr(ort, "preload_dlls"):
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                ort.preload_dlls()
            done["preload_dlls"] = "ok"
        except Exception as exc:
            done["preload_dlls"] = f"failed: {one_line(exc, typed=False, join=True)}"
        if printed.getvalue().strip():
            done["preload_dlls_output"] = one_line(Exception(printed.getvalue()))
    return done


def _fuse_transformer(artifact: Path, tmp: Path, num_heads: int, hidden_size: int,
                      ) -> tuple[Path, dict[str, int]]:
    """Run ORT's BERT fusion (Attention, SkipLayerNorm, BiasGelu) into ``tmp``; its fused counts."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    # The optimizer logs a warning per unmatched pattern through the root logger; keep the
    # worker's stderr to real errors.
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        model = optimize_model(str(artifact), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden_size)
        out = tmp / "transformer_fused.onnx"
        model.save_model_to_file(str(out))
        stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    except Exception as exc:
        raise BackendError(f"onnxruntime transformer fusion failed on {artifact}: "
                           f"{one_line(exc, typed=False, join=True)}") from exc
    finally:
        logger.setLevel(level)
    return out, stats
