"""Where the time of one inference goes: per-op profiles of an engine, in one shape for every engine.

Each engine that can profile itself implements ``Session.op_profile(feeds, iterations, reprepare)``
and returns a list of ``OpTime`` (op type, the precision the engine says it ran, milliseconds summed
over the profiled iterations, node name, input ranks); ``summarize`` turns them into the record's
``details.op_profile``. ``run_op_profile`` (called by the worker after the timed loop, never
around it) decides what a cell records:

* ``{"status": "ok", ...}``: per op type and precision, the milliseconds per inference, its
  category and the category totals (see below);
* ``{"status": "not available", "why": "not available on this engine/machine: ..."}``: the engine
  or machine offers no profiler (or the suite turned profiling off);
* ``{"status": "failed", "error": "..."}``: the profile run raised; the latency cell stays intact.

The profile comes from its own iterations, after the timed ones: ONNX Runtime and OpenVINO
profile a second session / compiled model prepared with profiling on (their profilers are
switched at creation and would slow the timed one), TensorRT attaches an ``IProfiler`` to the
timed context only after timing, torch runs ``torch.profiler`` around extra forwards.

Categories (``CATEGORIES``): ``OP_CATEGORY`` is the one mapping table from the op and layer types
of ONNX / ONNX Runtime, OpenVINO's CPU plugin, TensorRT and aten to the categories the report
shows. Matrix multiplies are split by their inputs: two batched activations (rank >= 3 each, as Q·Kᵀ
and P·V) are the attention matmuls, one activation against a weight is a ``matmul`` (a GEMM of a
linear layer); an engine that does not say the ranks keeps them all under ``matmul``. Softmax
stays its own category, so attention = fused attention kernels + the attention matmuls where they
are separable, and "attention incl. softmax" is attention + softmax. Types that say nothing about
their content (OpenVINO ``Eltwise``/``Subgraph``, TensorRT ``PointWise``/Myelin) fall back to
``NAME_HINTS`` on the node name (names of our BERT exports); the rest is ``other``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from qdqbench.core.errors import one_line
from qdqbench.core.memory import NOT_AVAILABLE

CATEGORIES = ("matmul", "attention", "layernorm", "gelu", "softmax", "qdq", "other")

# The one mapping table: op / layer type -> category. Keys are compared case-sensitively first,
# then lower-cased (engines differ in capitalisation: Softmax / SoftMax).
OP_CATEGORY: dict[str, str] = {
    # GEMMs: ONNX / ORT (float and integer kernels), OpenVINO CPU, TensorRT, aten.
    **{op: "matmul" for op in (
        "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulIntegerToFloat", "QLinearMatMul",
        "MatMulInteger", "DynamicQuantizeMatMul", "QGemm", "MatMulNBits",
        "FullyConnected", "Convolution", "MatrixMultiply", "Gemm_TRT",
        "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
    )},
    # Fused attention kernels.
    **{op: "attention" for op in (
        "Attention", "MultiHeadAttention", "QAttention", "PackedAttention", "GroupQueryAttention",
        "ScaledDotProductAttention", "aten::_scaled_dot_product_attention_math",
        "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
        "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_flash_attention_forward", "aten::_efficient_attention_forward",
    )},
    **{op: "layernorm" for op in (
        "LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization",
        "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "MVN", "Normalization",
        "aten::layer_norm", "aten::native_layer_norm",
    )},
    **{op: "gelu" for op in (
        "Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf", "aten::gelu",
    )},
    **{op: "softmax" for op in ("Softmax", "SoftMax", "aten::softmax", "aten::_softmax")},
    **{op: "qdq" for op in (
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize",
        "Quantize", "Dequantize", "aten::fake_quantize_per_tensor_affine",
        "aten::fake_quantize_per_channel_affine",
    )},
}
# Substrings of a node name (lower-cased) for op types that say nothing of their content.
# First match wins: "attention/output/LayerNorm" is layernorm; a fused node under "attention/self"
# (OpenVINO's MHA snippet, named after its last Transpose) is attention.
NAME_HINTS = (("softmax", "softmax"), ("layernorm", "layernorm"), ("layer_norm", "layernorm"),
              ("gelu", "gelu"), ("intermediate_act_fn", "gelu"), ("quantize", "qdq"),
              ("attention/self", "attention"), ("mha", "attention"))
# Op-type prefixes of engine-specific GEMM variants (OpenVINO's FullyConnectedQuantizedLegacy).
MATMUL_PREFIXES = ("fullyconnected", "matmul", "gemm")
# Words in TensorRT's kernel-level layer types (CaskGemmMatrixMultiply, CaskConvolution, ...).
GEMM_WORDS = ("gemm", "matrixmultiply", "convolution")
# Op types whose name hints are read (fused or element-wise nodes of unknown content).
HINTED_TYPES = {"eltwise", "subgraph", "pointwise", "myelin", "reformat", "other", ""}

_LOWER = {k.lower(): v for k, v in OP_CATEGORY.items()}


def categorize(op: str, *, input_ranks: Iterable[int] = (), name: str = "") -> str:
    """The report category of one op (see the module notes for the rules)."""
    low_op = op.lower()
    cat = OP_CATEGORY.get(op) or _LOWER.get(low_op)
    if cat is None and (low_op.startswith(MATMUL_PREFIXES) or any(k in low_op for k in GEMM_WORDS)):
        cat = "matmul"
    # OpenVINO's FullyConnected is a weight GEMM by definition (its dequantization scales can be
    # rank-3 inputs, which the rank rule would take for a second activation).
    if (cat == "matmul" and not low_op.startswith("fullyconnected")
            and sum(1 for r in input_ranks if r >= 3) >= 2):
        return "attention"
    if cat is not None:
        return cat
    if low_op in HINTED_TYPES or low_op.startswith(("myelin", "pointwise", "unknown")):
        low = name.lower()
        if low.startswith("{foreignnode[") and "..." in low:
            # A TensorRT Myelin region named by its first and last op: a category only when
            # both ends agree (a region spanning MatMul...Softmax is not all softmax).
            ends = {categorize(op, name=part) for part in low[13:].rstrip("]}").split("...")}
            if len(ends) > 1 and ends <= {"attention", "softmax"}:
                return "attention"  # Q·Kᵀ ... softmax ... P·V fused into one region
            return ends.pop() if len(ends) == 1 else "other"
        for needle, hinted in NAME_HINTS:
            if needle in low:
                return hinted
    return "other"


@dataclass(frozen=True)
class OpTime:
    """One profiled node (or an aggregate of nodes) over all profiled iterations."""

    op: str
    ms: float  # summed over the profiled iterations
    precision: str = ""
    name: str = ""
    input_ranks: tuple[int, ...] = ()
    category: str | None = None  # set when the engine knows better than ``categorize``
    nodes: int = 1


def summarize(times: Iterable[OpTime], iterations: int, source: str,
              notes: dict[str, str] | None = None) -> dict[str, Any]:
    """``details.op_profile`` (status ok) from the profiled nodes of ``iterations`` inferences."""
    if iterations < 1:
        raise ValueError("summarize: iterations must be >= 1")
    per: dict[tuple[str, str, str], list[float]] = {}
    for t in times:
        cat = t.category or categorize(t.op, input_ranks=t.input_ranks, name=t.name)
        slot = per.setdefault((t.op, t.precision, cat), [0.0, 0])
        slot[0] += t.ms
        slot[1] += t.nodes
    ops = [{"op": op, "precision": prec, "category": cat, "ms": round(ms / iterations, 4),
            "nodes": int(round(n / iterations)) or 1}
           for (op, prec, cat), (ms, n) in per.items()]
    ops.sort(key=lambda o: -o["ms"])
    by_cat: collections.Counter = collections.Counter()
    for o in ops:
        by_cat[o["category"]] += o["ms"]
    total = sum(by_cat.values())
    out: dict[str, Any] = {
        "status": "ok", "source": source, "iterations": iterations,
        "total_ms": round(total, 4),
        "by_category": {c: round(by_cat.get(c, 0.0), 4) for c in CATEGORIES},
        "shares": {c: (round(by_cat.get(c, 0.0) / total, 4) if total > 0 else 0.0) for c in CATEGORIES},
        "ops": ops,
    }
    if notes:
        out["notes"] = notes
    return out


def not_available(why: str) -> dict[str, Any]:
    """The op profile of an engine or machine without a profiler."""
    return {"status": NOT_AVAILABLE, "why": f"{NOT_AVAILABLE}: {why}"}


def run_op_profile(session: Any, feeds: Any, iterations: int,
                   reprepare: Callable[[dict[str, Any]], Any] | None) -> dict[str, Any]:
    """The op profile of ``session`` from ``iterations`` extra inferences; never raises.

    ``reprepare(extra_options)`` prepares the same model again with engine options added (the
    engines whose profiler is switched on at creation use it); None when the caller cannot.
    """
    if iterations < 1:
        return not_available("profiling turned off (timing.profile_iters: 0)")
    profile = getattr(session, "op_profile", None)
    if profile is None:
        return not_available(f"{getattr(session, 'backend', 'this engine')} offers no per-op profiler here")
    try:
        return profile(feeds, iterations, reprepare)
    except ProfilerUnavailable as exc:
        return not_available(str(exc))
    except Exception as exc:  # any profiler failure: recorded, the latency stays
        return {"status": "failed", "error": f"profile run failed: {one_line(exc, 300, join=True)}"}


class ProfilerUnavailable(Exception):
    """Raised by an engine's ``op_profile`` when its profiler is not offered here (with why)."""
