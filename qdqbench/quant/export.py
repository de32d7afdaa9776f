"""torch → ONNX with QuantizeLinear/DequantizeLinear, and a structural check of the result.

Export uses the TorchScript exporter (``dynamo=False``, opset 17): every enabled
``TensorQuantizer`` becomes one QuantizeLinear → DequantizeLinear pair through
``FakeQuantize.symbolic`` (``axis=1`` on the transposed weight for per-channel weights, so the
pattern is DQ(Wᵀ) → MatMul, which ONNX Runtime and TensorRT fuse). Activations must be 8-bit;
weights may use a narrower grid (``weight_bits``), stored in int8, which is exact because no
weight exceeds its amax (checked). Batch and sequence axes are dynamic; the graph passes
``onnx.checker``. Run as written (ONNX Runtime without graph optimizations) the graph computes
what the torch variant computes to float rounding (~1e-8 on the logits of a 2-layer BERT).

Weights are stored as int8 (``weights="int8"``, the default): the exporter writes each weight as
a float initializer → QuantizeLinear → DequantizeLinear, and ``int8_weights`` then replaces every
QuantizeLinear of an initializer by its result, computed as QuantizeLinear computes it (float32
division by the scale, round half to even, saturation), so the graph reads int8 initializer →
DequantizeLinear — what ONNX Runtime's quantize_static and ModelOpt write — and computes exactly
what the float-weight graph computes, at a quarter of the weights' size. A per-tensor
DequantizeLinear whose only consumers are Gathers of its table (a quantized embedding) moves
behind them: int8 table → Gather → DequantizeLinear, so the table is never dequantized whole.
``weights="float"`` keeps the float-weight form: no engine qdqbench drives needs it (ONNX Runtime,
OpenVINO and TensorRT 10 read int8 weight initializers); it is the form to compare against.

``check_qdq_structure`` reads the graph back. The exporter names every node after the module
that made it (``/model/bert/encoder/layer.0/attention/self/query/MatMul``), so each encoder
MatMul and residual Add is tied to a module, and each of its inputs to the quantizer that should
feed it; the check then reports per input whether a DequantizeLinear is there, and counts Q/DQ
pairs per group. What it asserts, for the groups that are on and the quantizers not switched off
(skip patterns switch quantizers off; pass the model or their names):
  - every linear MatMul/Gemm of an encoder layer (one input is a weight) has Q/DQ on its
    activation and on its weight (a DequantizeLinear of an int8 initializer counts as a Q/DQ pair);
    every attention MatMul (Q·Kᵀ and P·V) on both inputs;
  - every residual Add of an encoder layer (an Add whose output is a LayerNormalization's input)
    has Q/DQ on both inputs, local (the sublayer's output) first, then the residual;
  - no Q/DQ where it should not be: on an input whose quantizer is off, on an input of
    Softmax / LayerNormalization / Erf / Gelu / Tanh, or anywhere outside a quantizer (which
    would put Q/DQ inside a float-only function such as GELU).
Pooler and task head are not encoder layers and stay float.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from qdqbench.core.errors import ExportError
from qdqbench.core.files import publish, temp_path
from qdqbench.quant.qdqbert import disabled_quantizers, quantizer_group
from qdqbench.quant.quantizer import TensorQuantizer
from qdqbench.quant.registry import GROUPS, check_groups

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_OPSET = 17
_WRAPPER_ATTR = "model"  # the attribute of _OutputOnly, the first component of every node's scope


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

    def __init__(self, model: nn.Module, input_names: Sequence[str], output: str):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output = output

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)))
        return getattr(out, self.output)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_input_names(model: nn.Module, sample: dict[str, torch.Tensor]) -> list[str]:
    """The standard inputs that both the sample has and the model's forward names (DistilBERT: no token types)."""
    params = inspect.signature(model.forward).parameters
    return [n for n in INPUT_NAMES if n in sample and n in params]


def export_onnx(
    model: nn.Module,
    path: Path,
    sample: dict[str, torch.Tensor],
    *,
    output: str = "logits",
    opset: int = DEFAULT_OPSET,
    weights: Literal["int8", "float"] = "int8",
) -> ExportInfo:
    """Export ``model`` (fp32 or QDQ) to ``path`` with dynamic batch/sequence axes; check it.

    ``weights="int8"`` stores quantized weights as int8 initializers (``int8_weights``);
    ``"float"`` keeps float initializers behind QuantizeLinear, as the exporter writes them.
    """
    import onnx

    path = Path(path)
    if weights not in ("int8", "float"):
        raise ExportError(f"weights must be 'int8' or 'float', got {weights!r}")
    if opset < 13:
        raise ExportError(f"opset {opset} is too old for per-channel QuantizeLinear: use 13 or later")
    enabled = [q for q in model.modules() if isinstance(q, TensorQuantizer) and q.mode != "disabled"]
    bits = {q.num_bits for q in enabled if not q.is_weight}
    if bits and bits != {8}:
        raise ExportError(f"cannot export {sorted(bits)}-bit quantizers to ONNX opset {opset}: only 8-bit Q/DQ")
    _check_narrow_weights(model)
    if any(q.mode == "calibrate" for q in enabled):
        raise ExportError("cannot export a model while it is calibrating: finish the calibration first")
    names = model_input_names(model, sample)
    args = tuple(sample[n].cpu() for n in names)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    wrapper = _OutputOnly(model, names, output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)  # onnx and torch.onnx.export write to a file name; published below
    try:
        with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter warns that it is deprecated, and traces transformers'
            # python-bool mask checks (TracerWarning); both expected on torch 2.13 / transformers 5.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, args, str(tmp), input_names=names, output_names=[output],
                dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        if weights == "int8" and int8_weights(proto):
            onnx.save(proto, str(tmp))
        onnx.checker.check_model(proto)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 — any exporter failure becomes one line naming the file
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export to {path} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    publish(tmp, path)
    data = path.read_bytes()
    counts = dict(Counter(node.op_type for node in proto.graph.node))
    return ExportInfo(path, hashlib.sha256(data).hexdigest(), len(data) / 2**20, counts)


def _constant_values(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of ``graph`` as arrays."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return values


def quantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear in numpy: float32 division, round half to even, saturate to the zero point's type."""
    dtype = np.uint8 if zero_point is None else zero_point.dtype
    if dtype not in (np.int8, np.uint8):
        raise ExportError(f"QuantizeLinear to {dtype} is not supported (int8 and uint8 are)")
    x = np.asarray(x, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros((), np.int32) if zero_point is None else np.asarray(zero_point, dtype=np.int32)
    if scale.ndim == 1:  # per axis: broadcast along ``axis``
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.ndim == 1 else zp
    info = np.iinfo(dtype)
    # np.rint rounds half to even, as QuantizeLinear does; the division is float32 (ONNX Runtime's MLAS too).
    q = np.rint(x / scale).astype(np.float64) + zp
    return np.clip(q, info.min, info.max).astype(dtype)


def int8_weights(proto, *, dq_after_gather: bool = True) -> int:
    """Store quantized weights as integer initializers, in place; the number of weights rewritten.

    Every QuantizeLinear whose input is an initializer and whose consumers are all
    DequantizeLinear is computed here (``quantize_linear``) and replaced by its integer result;
    the float initializer goes when nothing else reads it. Then a per-tensor DequantizeLinear of
    an integer initializer read only as the data of Gathers moves behind them (Gather commutes
    with an element-wise dequantization), so an embedding table stays int8 at run time.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    values = _constant_values(graph)
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    taken = set(inits) | {o for n in graph.node for o in n.output}
    drop_nodes: set[int] = set()
    replaced: set[str] = set()  # float initializers that were quantized here
    rewritten = 0
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        users = consumers.get(node.output[0], [])
        if not users or node.output[0] in graph_outputs or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        if any(i not in values for i in node.input[1:] if i):
            continue  # a scale computed at run time: leave the QuantizeLinear
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zero_point = values[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        q = quantize_linear(values[node.input[0]], values[node.input[1]], zero_point, axis)
        name = f"{node.input[0]}_quantized"
        while name in taken:
            name += "_"
        taken.add(name)
        graph.initializer.append(numpy_helper.from_array(q, name))
        for u in users:
            for k, i in enumerate(u.input):
                if i == node.output[0]:
                    u.input[k] = name
        consumers.setdefault(name, []).extend(users)
        consumers[node.input[0]] = [c for c in consumers[node.input[0]] if c is not node]
        drop_nodes.add(id(node))
        replaced.add(node.input[0])
        rewritten += 1
    kept = [n for n in graph.node if id(n) not in drop_nodes]
    int_inits = {i.name for i in graph.initializer if i.data_type in (TensorProto.INT8, TensorProto.UINT8)}
    # DequantizeLinear(int8 table, per tensor) → Gather  ⇒  Gather(int8 table) → DequantizeLinear.
    moved: dict[int, list] = {}  # id(Gather) → [new Gather, new DQ]
    for dq in kept if dq_after_gather else ():
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in int_inits:
            continue
        scale = values.get(dq.input[1])
        users = consumers.get(dq.output[0], [])
        if scale is None or scale.ndim != 0 or not users or dq.output[0] in graph_outputs \
                or any(u.op_type != "Gather" or u.input[0] != dq.output[0] or list(u.input).count(dq.output[0]) != 1
                       for u in users):
            continue
        for u in users:
            gathered = f"{u.output[0]}_quantized"
            while gathered in taken:
                gathered += "_"
            taken.add(gathered)
            gather = helper.make_node("Gather", [dq.input[0], u.input[1]], [gathered], name=u.name,
                                      **{a.name: helper.get_attribute_value(a) for a in u.attribute})
            new_dq = helper.make_node("DequantizeLinear", [gathered, *dq.input[1:]], [u.output[0]],
                                      name=dq.name if len(users) == 1 else f"{dq.name}_{len(moved)}")
            moved[id(u)] = [gather, new_dq]
        drop_nodes.add(id(dq))
    nodes = []
    for n in graph.node:
        if id(n) in moved:
            nodes.extend(moved[id(n)])
        elif id(n) not in drop_nodes:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    read = {i for n in graph.node for i in n.input} | graph_outputs
    unused = [i for i in graph.initializer if i.name in replaced and i.name not in read]
    for i in unused:
        graph.initializer.remove(i)
    gone = {i.name for i in unused}
    kept_inputs = [v for v in graph.input if v.name not in gone]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    return rewritten


def _check_narrow_weights(model: nn.Module) -> None:
    """Weights on a grid narrower than int8 export exactly only if no weight exceeds its amax."""
    for name, m in model.named_modules():
        q = getattr(m, "weight_quantizer", None)
        if not isinstance(q, TensorQuantizer) or q.mode == "disabled" or q.num_bits == 8:
            continue
        w = m.weight.detach().float().abs()
        top = w.amax(dim=1) if q.axis is not None else w.max()
        if bool((top > q.amax.to(top.device)).any()):
            raise ExportError(f"{name}: weights exceed the {q.num_bits}-bit amax (trained after "
                              "calibration?): recalibrate the weights before exporting")


# ---------------------------------------------------------------------------------- structure


@dataclass
class QDQCheck:
    """Result of the structural check: what was found per group, and the problems."""

    # Q→DQ pairs per group (a DQ of an int8 initializer is one)
    pairs: dict[str, int] = field(default_factory=lambda: {g: 0 for g in GROUPS})
    linear_matmuls: int = 0
    linear_matmuls_quantized: int = 0  # Q/DQ on both inputs
    attention_matmuls: int = 0
    attention_matmuls_quantized: int = 0
    residual_adds: int = 0
    residual_adds_quantized: int = 0
    float_as_expected: list[str] = field(default_factory=list)  # switched-off quantizers, found float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def matmuls(self) -> int:
        """Encoder MatMul/Gemm nodes, linear and attention."""
        return self.linear_matmuls + self.attention_matmuls

    @property
    def matmuls_quantized(self) -> int:
        """Encoder MatMul/Gemm nodes with Q/DQ on both inputs."""
        return self.linear_matmuls_quantized + self.attention_matmuls_quantized

    @property
    def qdq_pairs(self) -> int:
        """All Q→DQ pairs in the graph."""
        return sum(self.pairs.values())

    def summary(self) -> dict:
        """A JSON-ready dict of the counts and problems."""
        return {
            "pairs": dict(self.pairs),
            "linear_matmuls": self.linear_matmuls, "linear_matmuls_quantized": self.linear_matmuls_quantized,
            "attention_matmuls": self.attention_matmuls,
            "attention_matmuls_quantized": self.attention_matmuls_quantized,
            "matmuls": self.matmuls, "matmuls_quantized": self.matmuls_quantized,
            "residual_adds": self.residual_adds, "residual_adds_quantized": self.residual_adds_quantized,
            "float_as_expected": list(self.float_as_expected), "problems": list(self.problems),
        }


# Ops a Q/DQ may sit behind on its way to a MatMul input (K is quantized, then transposed).
_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Identity", "Flatten", "Dropout"}
_FLOAT_ONLY = {"Softmax", "LayerNormalization", "Erf", "Gelu", "FastGelu", "Tanh"}
_LAYER_SCOPE = re.compile(r"(^|\.)layer\.\d+(\.|$)")


class _Graph:
    """Producer/consumer maps and scope names of an ONNX graph."""

    def __init__(self, graph):
        self.nodes = list(graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        # Tensors computed from initializers and Constants only; ONNX lists nodes in topological order.
        self.constants = {i.name for i in graph.initializer}
        self.integer_initializers = {i.name for i in graph.initializer if i.data_type in (3, 2)}  # INT8, UINT8
        for n in self.nodes:
            if n.op_type == "Constant" or (n.input and all(i == "" or i in self.constants for i in n.input)):
                self.constants.update(n.output)

    @staticmethod
    def scope(node) -> str:
        """The dotted module name a node was made in ('' when its name carries no scope)."""
        parts = node.name.split("/")
        if len(parts) < 3 or parts[0] != "":
            return ""
        parts = parts[1:-1]
        if parts and parts[0] == _WRAPPER_ATTR:
            parts = parts[1:]
        return ".".join(parts)

    def source(self, name: str):
        """The node behind ``name``, skipping shape-only ops (None for graph inputs and constants)."""
        node = self.producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = self.producer.get(node.input[0])
        return node

    def dq_behind(self, name: str):
        """The DequantizeLinear feeding ``name`` through shape-only ops, or None."""
        node = self.source(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def is_constant(self, name: str) -> bool:
        """True when ``name`` is computed from constants only (a weight, possibly quantized)."""
        return name in self.constants

    def after_softmax(self, name: str) -> bool:
        """True when ``name`` is a Softmax output, possibly through Q/DQ and shape-only ops."""
        node = self.producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH | {"QuantizeLinear", "DequantizeLinear"}:
            node = self.producer.get(node.input[0])
        return node is not None and node.op_type == "Softmax"

    def is_stored_weight(self, dq) -> bool:
        """True when a DequantizeLinear reads an integer initializer, directly or through a Gather
        of it (a quantized weight or embedding table stored as int8: a Q/DQ pair folded)."""
        src = dq.input[0]
        node = self.producer.get(src)
        if node is not None and node.op_type == "Gather":
            src = node.input[0]
        return src in self.integer_initializers

    def feeds_layernorm(self, name: str) -> bool:
        """True when ``name`` is an input of a LayerNormalization."""
        return any(c.op_type == "LayerNormalization" for c in self.consumers.get(name, []))


def check_qdq_structure(
    path: Path,
    groups: Sequence[str] = GROUPS,
    *,
    model: nn.Module | None = None,
    expected_float: Iterable[str] = (),
) -> QDQCheck:
    """Check Q/DQ placement of an exported encoder against the groups that should be on.

    ``model`` (the QDQ variant that was exported) or ``expected_float`` (quantizer names) say
    which quantizers are switched off: their inputs must be float, and are listed in
    ``float_as_expected`` instead of ``problems``.
    """
    import onnx

    try:
        check_groups(groups)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    g = _Graph(proto.graph)
    off = set(expected_float) | (disabled_quantizers(model) if model is not None else set())
    res = QDQCheck()

    def in_layer(node) -> bool:
        return bool(_LAYER_SCOPE.search(g.scope(node)))

    if not any(in_layer(n) for n in g.nodes):
        raise ExportError(f"{path}: no node is named after an encoder layer (layer.N); "
                          "check_qdq_structure reads graphs written by export_onnx")

    def expect(node, slot: int, quantizer: str) -> bool:
        """Check one input; True when it is quantized."""
        group = quantizer_group(quantizer)
        dq = g.dq_behind(node.input[slot])
        wanted = group in groups and quantizer not in off
        if dq is not None and not wanted:
            why = "is switched off" if group in groups else f"{group} group is off"
            res.problems.append(f"{node.name}: input {slot} has Q/DQ but {quantizer} {why}")
        elif dq is None and wanted:
            res.problems.append(f"{node.name}: input {slot} has no Q/DQ ({quantizer}; {group} group is on)")
        elif dq is None and group in groups:
            res.float_as_expected.append(quantizer)
        return dq is not None

    for node in g.nodes:
        op = node.op_type
        if op == "QuantizeLinear":
            pair = [c for c in g.consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
            scope = g.scope(node)
            leaf = scope.rsplit(".", 1)[-1]
            if not leaf.endswith("_quantizer"):
                res.problems.append(f"{node.name}: QuantizeLinear outside a quantizer ({scope or 'no scope'})")
            elif pair:
                group = quantizer_group(scope)
                res.pairs[group] = res.pairs.get(group, 0) + 1
        elif op == "DequantizeLinear" and g.is_stored_weight(node):
            scope = g.scope(node)
            if not scope.rsplit(".", 1)[-1].endswith("_quantizer"):
                res.problems.append(f"{node.name}: DequantizeLinear of an int8 weight outside a quantizer "
                                    f"({scope or 'no scope'})")
            else:
                group = quantizer_group(scope)
                res.pairs[group] = res.pairs.get(group, 0) + 1
        elif op in _FLOAT_ONLY:
            for i in node.input[:1]:
                p = g.producer.get(i)
                if p is not None and p.op_type == "DequantizeLinear":
                    res.problems.append(f"{node.name}: {op} reads a DequantizeLinear output")
        if not in_layer(node):
            continue  # embeddings, pooler and head stay float by design
        scope = g.scope(node)
        if op in ("MatMul", "Gemm"):
            const = [g.is_constant(i) for i in node.input[:2]]
            if any(const):  # a linear: activation × weight
                res.linear_matmuls += 1
                w = const.index(True)
                ok_a = expect(node, 1 - w, f"{scope}.input_quantizer")
                ok_w = expect(node, w, f"{scope}.weight_quantizer")
                res.linear_matmuls_quantized += ok_a and ok_w
            else:  # an attention matmul: P·V reads the softmax output, Q·Kᵀ feeds the softmax
                res.attention_matmuls += 1
                if g.after_softmax(node.input[0]):
                    names = ("matmul_a_input_quantizer", "matmul_v_input_quantizer")
                else:
                    names = ("matmul_q_input_quantizer", "matmul_k_input_quantizer")
                ok = [expect(node, s, f"{scope}.{n}") for s, n in enumerate(names)]
                res.attention_matmuls_quantized += all(ok)
        elif op == "Add" and g.feeds_layernorm(node.output[0]) \
                and not any(g.is_constant(i) for i in node.input[:2]):
            res.residual_adds += 1
            ok = [expect(node, s, f"{scope}.{n}")
                  for s, n in enumerate(("add_local_input_quantizer", "add_residual_input_quantizer"))]
            res.residual_adds_quantized += all(ok)
    if res.residual_adds == 0:
        res.problems.append("no residual Add feeding a LayerNormalization found in the encoder layers")
    if res.attention_matmuls == 0 or res.linear_matmuls == 0:
        res.problems.append(f"found {res.linear_matmuls} linear and {res.attention_matmuls} attention "
                            "MatMuls in the encoder layers; expected both")
    return res
