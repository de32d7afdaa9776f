"""torch → ONNX with QuantizeLinear/DequantizeLinear, and a structural check of the result.

Export uses the TorchScript exporter (``dynamo=False``, opset 17): the fake-quant ops of
``TensorQuantizer`` map to Q/DQ pairs natively there. Batch and sequence axes are dynamic. The
check walks the graph and counts Q/DQ per placement group, and asserts that every encoder MatMul
and every residual Add gets both inputs from a DequantizeLinear when its group is on, and that no
Q/DQ sits inside Softmax/LayerNorm/GELU (their inputs and outputs stay float).
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from qdqbench.errors import ExportError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_OPSET = 17


@dataclass
class ExportInfo:
    """What an export produced: file, hash, size, op counts."""

    path: Path
    sha256: str
    size_mb: float
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def qdq_nodes(self) -> int:
        """Number of QuantizeLinear plus DequantizeLinear nodes."""
        return self.op_counts.get("QuantizeLinear", 0) + self.op_counts.get("DequantizeLinear", 0)


class _OutputOnly(nn.Module):
    """Wrap a transformers model so the export has positional inputs and one tensor output."""

    def __init__(self, model: nn.Module, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return getattr(out, self.output)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def export_onnx(
    model: nn.Module,
    path: Path,
    sample: dict[str, torch.Tensor],
    *,
    output: str = "logits",
    opset: int = DEFAULT_OPSET,
) -> ExportInfo:
    """Export ``model`` (fp32 or QDQ) to ``path`` with dynamic batch/sequence axes; check it."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bits = {q.num_bits for q in model.modules() if hasattr(q, "num_bits") and getattr(q, "mode", "") != "disabled"}
    if bits and bits != {8}:
        raise ExportError(f"cannot export {sorted(bits)}-bit quantizers to ONNX opset {opset}: only 8-bit Q/DQ")
    args = tuple(sample[n].cpu() for n in INPUT_NAMES)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}
    dynamic[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    wrapper = _OutputOnly(model, output)
    tmp = path.with_suffix(".tmp.onnx")
    try:
        with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about python-bool conversions in HF code
            torch.onnx.export(
                wrapper, args, str(tmp), input_names=list(INPUT_NAMES), output_names=[output],
                dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 — any exporter failure becomes one line naming the file
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export to {path} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    tmp.replace(path)
    data = path.read_bytes()
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ExportInfo(path, hashlib.sha256(data).hexdigest(), len(data) / 2**20, counts)


@dataclass
class QDQCheck:
    """Result of the structural check: counts per group and the problems found."""

    matmuls: int = 0
    matmuls_quantized: int = 0
    residual_adds: int = 0
    residual_adds_quantized: int = 0
    qdq_pairs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast"}
_FLOAT_ONLY = {"Softmax", "LayerNormalization", "Erf", "Gelu", "Tanh"}


def check_qdq_structure(path: Path, groups: Sequence[str]) -> QDQCheck:
    """Check Q/DQ placement of an exported encoder against the groups that should be on."""
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}

    def source(name: str):
        node = producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        return node

    def from_dq(name: str) -> bool:
        node = source(name)
        return node is not None and node.op_type == "DequantizeLinear"

    res = QDQCheck()
    res.qdq_pairs = sum(1 for n in graph.node if n.op_type == "DequantizeLinear")
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            # Only encoder matmuls: the classifier/pooler head stays float by design.
            if "encoder" not in node.name and not any("encoder" in i for i in node.input):
                continue
            res.matmuls += 1
            if all(from_dq(i) for i in node.input[:2]):
                res.matmuls_quantized += 1
            else:
                is_linear = any(i in initializers or _is_const(source(i)) for i in node.input[:2])
                group = "linear" if is_linear else "matmul"
                if group in groups:
                    res.problems.append(f"{node.name}: MatMul input without Q/DQ ({group} group is on)")
        elif node.op_type == "Add" and _feeds_layernorm(node, graph):
            res.residual_adds += 1
            if all(from_dq(i) for i in node.input[:2]):
                res.residual_adds_quantized += 1
            elif "residual" in groups and "encoder" in node.name:
                res.problems.append(f"{node.name}: residual Add input without Q/DQ (residual group is on)")
        elif node.op_type in _FLOAT_ONLY:
            for i in node.input[:1]:
                p = producer.get(i)
                if p is not None and p.op_type == "DequantizeLinear":
                    res.problems.append(f"{node.name}: {node.op_type} reads a DequantizeLinear output")
    if res.residual_adds == 0 and "residual" in groups:
        res.problems.append("no residual Add feeding a LayerNormalization found")
    return res


def _is_const(node) -> bool:
    return node is not None and node.op_type in ("Constant", "DequantizeLinear") and not node.input[:1] == [""]


def _feeds_layernorm(node, graph) -> bool:
    out = node.output[0]
    return any(n.op_type == "LayerNormalization" and out in n.input[:1] for n in graph.node)
