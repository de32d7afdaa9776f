"""ONNX Runtime backend: CPU execution provider, with CUDA/TensorRT providers for fp16 on a GPU build.

ORT runs a Q/DQ model with real integer kernels only when its graph optimizer fuses the
QuantizeLinear/DequantizeLinear pairs around a MatMul into ``QLinearMatMul`` /
``MatMulIntegerToFloat``; otherwise it dequantizes and runs float MatMuls. So the session saves its
optimized graph once (``optimized_model_filepath``), counts the op types in it, and derives the
effective precision from what it finds rather than from the request.

``transformer_fusion=True`` first runs ``onnxruntime.transformers.optimizer.optimize_model``
(Attention / SkipLayerNormalization / BiasGelu fusion) for the "best fp32" baseline. With
transformers 5 exports its num_heads/hidden_size auto-detection fails (ORT 1.32 logs "Failed to
detect num_heads and hidden_size") and Attention is then not fused: pass ``num_heads`` and
``hidden_size`` from the model config.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.backends.base import (Feeds, check_onnx_file, check_precision, feeds_shape,
                                    one_line, select_feeds)
from qdqbench.errors import BackendError

# Op types worth reporting from the optimized graph: integer kernels, the float fallbacks they
# replace, and the transformer fusions.
INTERESTING_OPS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
                   "QGemm", "QAttention", "QuantizeLinear", "DequantizeLinear", "MatMul", "Gemm",
                   "FusedMatMul", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
                   "EmbedLayerNormalization", "BiasGelu", "FastGelu")
INTEGER_KERNELS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
                   "QGemm", "QAttention")

_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
              "tensor(float16)": np.float16}


def choose_providers(precision: str, available: list[str]) -> list[Any]:
    """Execution providers for a requested precision given ORT's available providers."""
    if precision == "fp16":
        # fp16 only makes sense on a GPU build; TensorRT EP converts the float graph itself.
        if "TensorrtExecutionProvider" in available:
            return [("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                    "CUDAExecutionProvider", "CPUExecutionProvider"]
        raise BackendError("onnxruntime runs fp16 only through its TensorRT execution provider "
                           "(onnxruntime-gpu); this build has " + ", ".join(available))
    return ["CPUExecutionProvider"]


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

    backend = "onnxruntime"

    def __init__(self, sess: Any, precision: str, info: dict[str, Any]):
        self._sess = sess
        self.precision = precision
        self.info = info
        self._inputs = [i.name for i in sess.get_inputs()]
        self._dtypes = {i.name: _ORT_TYPES.get(i.type) for i in sess.get_inputs()}
        self._output = sess.get_outputs()[0].name

    def predict(self, feeds: Feeds) -> np.ndarray:
        """The first output as float32."""
        x = select_feeds(feeds, self._inputs, self._dtypes)
        try:
            out = self._sess.run([self._output], x)[0]
        except Exception as exc:  # ORT raises its own exception types per error code
            raise BackendError(f"onnxruntime run failed: {one_line(exc)}") from exc
        return np.asarray(out, dtype=np.float32)

    def time(self, feeds: Feeds, settings: Any) -> Any:
        """Latency via IOBinding: inputs bound once, so the loop times ORT's run alone."""
        from qdqbench.timing import measure

        x = select_feeds(feeds, self._inputs, self._dtypes)
        batch, seq = feeds_shape(x)
        binding = self._sess.io_binding()
        for name, arr in x.items():
            binding.bind_cpu_input(name, arr)
        # ORT allocates the output each run (as a real caller's run() would); only the numpy
        # conversion of inputs and outputs is kept out of the loop.
        binding.bind_output(self._output, "cpu")
        run = self._sess.run_with_iobinding
        return measure(lambda: run(binding), settings, batch=batch, seq=seq,
                       method="host perf_counter_ns around InferenceSession.run_with_iobinding")


class OnnxRuntimeBackend:
    """ONNX Runtime, CPU execution provider by default."""

    name = "onnxruntime"
    precisions = ("fp32", "int8", "fp16")

    def unavailable_reason(self) -> str | None:
        """None when onnxruntime imports, else why not."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    def prepare(self, artifact: Path, precision: str, shapes: list, threads: int | None = None, *,
                transformer_fusion: bool = False, num_heads: int = 0, hidden_size: int = 0,
                **options: Any) -> OnnxRuntimeSession:
        """An InferenceSession with full graph optimization; the optimized graph's ops in info."""
        if options:
            raise BackendError(f"onnxruntime: unknown options {sorted(options)}")
        reason = self.unavailable_reason()
        if reason:
            raise BackendError(reason)
        import onnxruntime as ort

        check_precision(self.name, precision, self.precisions)
        artifact = check_onnx_file(Path(artifact))
        providers = choose_providers(precision, ort.get_available_providers())
        try:
            source_ops = count_ops(artifact)
        except Exception as exc:
            raise BackendError(f"cannot read ONNX file {artifact}: {one_line(exc)}") from exc
        model_has_qdq = bool(source_ops.get("QuantizeLinear") or source_ops.get("DequantizeLinear"))

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads or 0  # 0 = ORT's default (one per physical core)
        so.inter_op_num_threads = 1
        # ORT 1.32 warns on every save of an ENABLE_ALL graph that it is hardware specific; we
        # only read it back here, on the same machine.
        so.log_severity_level = 3

        info: dict[str, Any] = {
            "onnxruntime_version": ort.__version__,
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
            # ORT's common-subexpression elimination merges identical QuantizeLinear nodes (Q, K
            # and V see one tensor with one scale); a Q feeding several DequantizeLinear nodes
            # then blocks the QDQ → integer-kernel fusion and leaves those MatMuls in float
            # (48 of 96 on a BERT-base export, ORT 1.32). Q/DQ models skip that one pass.
            disabled = ["CommonSubexpressionElimination"] if model_has_qdq else []
            info["disabled_optimizers"] = disabled
            try:
                sess = ort.InferenceSession(str(model_path), so, providers=providers,
                                            disabled_optimizers=disabled or None)
            except Exception as exc:
                raise BackendError(f"onnxruntime cannot load {artifact}: {one_line(exc)}") from exc
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
                           f"{one_line(exc)}") from exc
    finally:
        logger.setLevel(level)
    return out, stats
