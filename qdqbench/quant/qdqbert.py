"""Turn a transformers BERT-family model into a QDQBERT variant by module surgery.

Q/DQ placement (docs/ARCHITECTURE.md), each group switchable:
  ``linear``   — every encoder ``nn.Linear``: input per-tensor (calibrated), weight per-channel;
  ``matmul``   — both attention matmuls: Q and Kᵀ of Q·Kᵀ, softmax output and V of P·V;
  ``residual`` — both inputs of the two residual adds of each layer, so TensorRT can fuse the add
                 into its INT8 kernels.
LayerNorm, Softmax and GELU stay float, and so do the pooler and the task head. The embeddings
stay float too unless ``quantize_embeddings`` is set: then the word-embedding table is
fake-quantized per tensor (``QuantEmbedding``; group ``embedding``), exported as an int8 table →
Gather → DequantizeLinear. Position and token-type tables stay float (under 1 MB for BERT). The
encoder's modules are replaced by the classes below, which adopt the original parameters; nothing
in torch or transformers is patched, so the fp32 model class and every other model in the process
are untouched. ``quantize_bert`` changes the model it is given: pass a copy to keep the original.

Two encoder layouts are supported, picked from the model's modules (``LAYOUTS``):
  ``bert``       — ``encoder.layer[i]`` with ``attention.self.{query,key,value}``,
                   ``attention.output`` / ``output`` (dense, dropout, LayerNorm of dense + residual)
                   and ``intermediate.dense``: BERT, MiniLM, RoBERTa, ELECTRA (transformers 5);
  ``distilbert`` — ``transformer.layer[i]`` with ``attention.{q_lin,k_lin,v_lin,out_lin}``,
                   ``sa_layer_norm``, ``ffn.{lin1,lin2}``, ``output_layer_norm``; the residual
                   adds live in the block's forward, so the block is replaced as a whole.
Attention runs the eager computation (matmul, scale, additive or boolean mask, softmax, matmul)
whatever ``config._attn_implementation`` says, because the Q/DQ pairs sit between those steps.

Quantizer names follow transformers' QDQBERT (``*.input_quantizer``, ``*.weight_quantizer``,
``*.matmul_{q,k,v,a}_input_quantizer``, ``*.add_{local,residual}_input_quantizer``), so amax
dumps compare with NVIDIA's toolkit; the group of a quantizer follows from its name
(``quantizer_group``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from qdqbench.quant.quantizer import QuantEmbedding, QuantLinear, TensorQuantizer, name_quantizers, quantizers
from qdqbench.quant.registry import GROUPS, calibrator_entry, check_bits, check_groups

_ATTENTION_IMPLEMENTATIONS = (None, "eager", "sdpa")  # the masks QuantSelfAttention understands


@dataclass(frozen=True)
class QDQSettings:
    """How a QDQBERT variant is built and finished: bits, groups, weights, calibrator, skips, recipes.

    ``clip_gelu`` (GELU10 when 10.0) and ``fuse_qkv`` act after calibration, through
    ``qdqbench.quant.recipes.apply_post_calibration``.
    """

    bits: int = 8
    groups: tuple[str, ...] = GROUPS
    per_channel_weights: bool = True
    calib_method: str = "max"
    num_bins: int = 2048
    skip: tuple[str, ...] = field(default_factory=tuple)  # fnmatch patterns on module names
    clip_gelu: float | None = None  # clip the amax of each FFN second linear's input to this value
    fuse_qkv: bool = False  # one range for Q, K and V, as one fused QKV GEMM needs
    # Weights on a narrower grid than activations (None: ``bits``). 7 is ONNX Runtime's
    # "reduce_range": its u8×s8 kernels on x86 without VNNI add pairs of products in int16
    # (VPMADDUBSW), which saturates with full-range int8 weights; 7-bit weights cannot.
    weight_bits: int | None = None
    # The word-embedding table in int8 (per tensor, same bits as the weights): 4x smaller on disk.
    quantize_embeddings: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", check_groups(self.groups))
        object.__setattr__(self, "skip", tuple(self.skip))
        # The one bit range of schemes and quantizers (qdqbench.quant.registry).
        check_bits(self.bits)
        if self.weight_bits is not None:
            check_bits(self.weight_bits, "weight_bits")
        calibrator_entry(self.calib_method)  # unknown methods fail here, not at the first batch
        if self.clip_gelu is not None and not self.clip_gelu > 0:
            raise ValueError(f"clip_gelu must be a positive amax, got {self.clip_gelu}")


# ---------------------------------------------------------------------------------- modules


class QuantSelfAttention(nn.Module):
    """Self-attention computed eagerly with Q/DQ on both matmuls' inputs.

    ``projections`` names the Q, K, V linears as the original module does (``query``/``key``/
    ``value`` in BERT, ``q_lin``/``k_lin``/``v_lin`` in DistilBERT); ``out_proj`` names an output
    projection applied inside the attention (DistilBERT's ``out_lin``), if any.
    """

    def __init__(self, orig: nn.Module, s: QDQSettings, projections: tuple[str, str, str] = ("query", "key", "value"),
                 out_proj: str | None = None):
        super().__init__()
        self.projections = projections
        self.out_proj = out_proj
        self.attention_head_size = orig.attention_head_size
        self.scaling = getattr(orig, "scaling", self.attention_head_size**-0.5)
        self.dropout = orig.dropout
        lin = "linear" in s.groups
        for proj in projections + ((out_proj,) if out_proj else ()):
            layer = getattr(orig, proj)
            setattr(self, proj, _quant_linear(layer, s) if lin else layer)
        self.quantize_matmul = "matmul" in s.groups
        if self.quantize_matmul:
            for name in ("matmul_q_input", "matmul_k_input", "matmul_v_input", "matmul_a_input"):
                setattr(self, f"{name}_quantizer", _act_quantizer(s))

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        if cache is not None or kwargs.get("encoder_hidden_states") is not None:
            raise NotImplementedError("QDQBERT variants are encoder-only: no cache, no cross-attention")
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        pq, pk, pv = (getattr(self, n) for n in self.projections)
        q = pq(hidden_states).view(hidden_shape).transpose(1, 2)
        k = pk(hidden_states).view(hidden_shape).transpose(1, 2)
        v = pv(hidden_states).view(hidden_shape).transpose(1, 2)
        if self.quantize_matmul:
            q = self.matmul_q_input_quantizer(q)
            k = self.matmul_k_input_quantizer(k)
            v = self.matmul_v_input_quantizer(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                # sdpa-style masks are boolean "keep" masks; eager ones are additive floats.
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + attention_mask
        probs = nn.functional.softmax(scores, dim=-1)
        if self.quantize_matmul:
            # Quantize before dropout (NVIDIA's QDQBERT does it after): in QAT, dropout's 1/(1-p)
            # scaling would push the probabilities past the amax calibrated in eval mode, where the
            # straight-through gradient is zero, and cut Q and K off from training. The same at inference.
            probs = self.matmul_a_input_quantizer(probs)
        probs = self.dropout(probs)
        context = torch.matmul(probs, v).transpose(1, 2).contiguous().reshape(*input_shape, -1)
        if self.out_proj:
            context = getattr(self, self.out_proj)(context)
        return context, None

    def extra_repr(self) -> str:
        return f"eager, head_size={self.attention_head_size}, matmul_qdq={self.quantize_matmul}"


class QuantResidualOutput(nn.Module):
    """BERT's ``*.output``: dense → dropout → LayerNorm(dense_out + residual), Q/DQ on both add inputs."""

    def __init__(self, orig: nn.Module, s: QDQSettings):
        super().__init__()
        self.dense = _quant_linear(orig.dense, s) if "linear" in s.groups else orig.dense
        self.dropout = orig.dropout
        self.LayerNorm = orig.LayerNorm
        self.add_local_input_quantizer = _act_quantizer(s)
        self.add_residual_input_quantizer = _act_quantizer(s)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        # Operand order (local, residual) is what export.check_qdq_structure reads back.
        local = self.add_local_input_quantizer(hidden_states)
        residual = self.add_residual_input_quantizer(input_tensor)
        return self.LayerNorm(local + residual)


class QuantResidualAdd(nn.Module):
    """``local + residual`` with Q/DQ on both inputs (DistilBERT's adds, which have no module)."""

    def __init__(self, s: QDQSettings):
        super().__init__()
        self.add_local_input_quantizer = _act_quantizer(s)
        self.add_residual_input_quantizer = _act_quantizer(s)

    def forward(self, local: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.add_local_input_quantizer(local) + self.add_residual_input_quantizer(residual)


class QuantDistilBertBlock(nn.Module):
    """DistilBERT's ``TransformerBlock`` with Q/DQ attention, linears and (optionally) residual adds."""

    def __init__(self, orig: nn.Module, s: QDQSettings):
        super().__init__()
        self.attention = QuantSelfAttention(orig.attention, s, ("q_lin", "k_lin", "v_lin"), "out_lin")
        self.sa_layer_norm = orig.sa_layer_norm
        self.ffn = orig.ffn
        if "linear" in s.groups:
            self.ffn.lin1 = _quant_linear(self.ffn.lin1, s)
            self.ffn.lin2 = _quant_linear(self.ffn.lin2, s)
        self.output_layer_norm = orig.output_layer_norm
        quant_residual = "residual" in s.groups
        self.sa_residual = QuantResidualAdd(s) if quant_residual else None
        self.ffn_residual = QuantResidualAdd(s) if quant_residual else None

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs) -> torch.Tensor:
        attention_output, _ = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
        attention_output = self.sa_layer_norm(_add(self.sa_residual, attention_output, hidden_states))
        ffn_output = self.ffn(attention_output)
        return self.output_layer_norm(_add(self.ffn_residual, ffn_output, attention_output))


def _add(adder: QuantResidualAdd | None, local: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return local + residual if adder is None else adder(local, residual)


def _act_quantizer(s: QDQSettings) -> TensorQuantizer:
    return TensorQuantizer(s.bits, calib_method=s.calib_method, num_bins=s.num_bins)


def _quant_linear(linear: nn.Linear, s: QDQSettings) -> QuantLinear:
    if isinstance(linear, QuantLinear):
        raise ValueError("the model is already a QDQBERT variant (it has QuantLinear modules)")
    return QuantLinear.from_linear(
        linear, num_bits=s.bits, per_channel=s.per_channel_weights,
        calib_method=s.calib_method, num_bins=s.num_bins, weight_bits=s.weight_bits,
    )


# ---------------------------------------------------------------------------------- layouts


def _bert_layer(layer: nn.Module, s: QDQSettings) -> nn.Module:
    attn = layer.attention
    if not all(hasattr(attn.self, p) for p in ("query", "key", "value")):
        raise ValueError(f"{type(attn.self).__name__} has no query/key/value projections")
    attn.self = QuantSelfAttention(attn.self, s)
    if "residual" in s.groups:
        attn.output = QuantResidualOutput(attn.output, s)
        layer.output = QuantResidualOutput(layer.output, s)
    elif "linear" in s.groups:
        attn.output.dense = _quant_linear(attn.output.dense, s)
        layer.output.dense = _quant_linear(layer.output.dense, s)
    if "linear" in s.groups:
        layer.intermediate.dense = _quant_linear(layer.intermediate.dense, s)
    return layer


def _is_bert_layer(layer: nn.Module) -> bool:
    a = getattr(layer, "attention", None)
    return (hasattr(getattr(a, "self", None), "query") and hasattr(getattr(a, "output", None), "dense")
            and hasattr(getattr(layer, "intermediate", None), "dense")
            and hasattr(getattr(layer, "output", None), "dense"))


def _is_distilbert_layer(layer: nn.Module) -> bool:
    a, f = getattr(layer, "attention", None), getattr(layer, "ffn", None)
    return (all(hasattr(a, n) for n in ("q_lin", "k_lin", "v_lin", "out_lin"))
            and all(hasattr(f, n) for n in ("lin1", "lin2"))
            and hasattr(layer, "sa_layer_norm") and hasattr(layer, "output_layer_norm"))


@dataclass(frozen=True)
class Layout:
    """One encoder layout: where its layers are, how to recognise and quantize one, and its parts."""

    name: str
    container: str  # attribute of the base model holding ``.layer``
    is_layer: Callable[[nn.Module], bool]
    quantize_layer: Callable[[nn.Module, QDQSettings], nn.Module]  # returns the layer to keep
    attention: Callable[[nn.Module], nn.Module]  # the (quantized) self-attention of a layer
    ffn_output: Callable[[nn.Module], nn.Module]  # the FFN's second linear (its input is GELU's output)


LAYOUTS: tuple[Layout, ...] = (
    Layout("bert", "encoder", _is_bert_layer, _bert_layer,
           lambda layer: layer.attention.self, lambda layer: layer.output.dense),
    Layout("distilbert", "transformer", _is_distilbert_layer, QuantDistilBertBlock,
           lambda layer: layer.attention, lambda layer: layer.ffn.lin2),
)


def _find_layers(model: nn.Module) -> tuple[Layout, nn.ModuleList]:
    base = getattr(model, "base_model", model)
    for layout in LAYOUTS:
        layers = getattr(getattr(base, layout.container, None), "layer", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and all(layout.is_layer(x) for x in layers):
            return layout, layers
    raise ValueError(
        f"{type(model).__name__} has no supported encoder: expected BERT's encoder.layer[i] "
        "(attention.self.query/key/value, attention.output, intermediate, output) or DistilBERT's "
        "transformer.layer[i] (attention.q_lin/k_lin/v_lin/out_lin, ffn.lin1/lin2)"
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a supported model; ValueError naming the class otherwise."""
    return _find_layers(model)[1]


def layer_parts(model: nn.Module) -> list[tuple[QuantSelfAttention, nn.Module]]:
    """(quantized self-attention, FFN second linear) of every layer of a QDQBERT variant."""
    layout, layers = _find_layers(model)
    parts = [(layout.attention(layer), layout.ffn_output(layer)) for layer in layers]
    if not all(isinstance(a, QuantSelfAttention) for a, _ in parts):
        raise ValueError(f"{type(model).__name__} is not a QDQBERT variant (run quantize_bert first)")
    return parts


# ---------------------------------------------------------------------------------- entry points


def quantize_bert(model: nn.Module, settings: QDQSettings) -> nn.Module:
    """Replace the encoder's modules with their Q/DQ counterparts in place; return the model."""
    config = getattr(model, "config", None)
    if getattr(config, "is_decoder", False):
        raise ValueError("decoder BERT models are not supported: QDQBERT variants are encoder-only")
    impl = getattr(config, "_attn_implementation", None)
    if impl not in _ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"{type(model).__name__} uses attn_implementation='{impl}'; "
                         "load it with attn_implementation='eager' (or 'sdpa') to quantize it")
    layout, layers = _find_layers(model)
    if any(isinstance(m, (QuantLinear, QuantSelfAttention)) for m in layers.modules()):
        raise ValueError(f"{type(model).__name__} is already a QDQBERT variant")
    for i in range(len(layers)):
        layers[i] = layout.quantize_layer(layers[i], settings)
    if settings.quantize_embeddings:
        embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
        table = getattr(embeddings, "word_embeddings", None)
        if not isinstance(table, nn.Embedding):
            raise ValueError(f"{type(model).__name__} has no embeddings.word_embeddings table to quantize")
        embeddings.word_embeddings = QuantEmbedding.from_embedding(
            table, num_bits=settings.weight_bits or settings.bits)
    name_quantizers(model)
    apply_skip_patterns(model, settings.skip)
    return model


def apply_skip_patterns(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Disable every quantizer whose name, or the name of a module it sits in, matches a pattern.

    ``"*.layer.0.*"`` or ``"bert.encoder.layer.0"`` disable a whole layer,
    ``"*.output.dense"`` the FFN second linears' two quantizers. A pattern that matches no
    quantizer is a ValueError naming it (a typo would otherwise quantize what was meant to stay
    float). Returns the disabled quantizers' names.
    """
    disabled, used = [], set()
    for name, q in quantizers(model):
        parts = name.split(".")
        scopes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hits = {p for p in patterns if any(fnmatch.fnmatchcase(s, p) for s in scopes)}
        if hits:
            q.mode = "disabled"
            disabled.append(name)
            used |= hits
    unused = [p for p in patterns if p not in used]
    if unused:
        example = next((n for n, _ in quantizers(model)), "")
        raise ValueError(f"skip pattern '{unused[0]}' matches no quantizer or module of "
                         f"{type(model).__name__} (names look like '{example}')")
    return disabled


def quantizer_group(name: str) -> str:
    """Which placement group a quantizer name belongs to: linear, matmul, residual or embedding."""
    if name.endswith("word_embeddings.weight_quantizer"):
        return "embedding"  # not one of GROUPS: switched by QDQSettings.quantize_embeddings
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("matmul_"):
        return "matmul"
    if leaf.startswith("add_"):
        return "residual"
    return "linear"


def count_quantizers(model: nn.Module) -> dict[str, int]:
    """Enabled quantizers per group (linear counts input and weight quantizers separately)."""
    counts = {g: 0 for g in GROUPS}
    for name, q in quantizers(model):
        if q.mode != "disabled":
            group = quantizer_group(name)
            counts[group] = counts.get(group, 0) + 1  # "embedding" only where it is on
    return counts


def disabled_quantizers(model: nn.Module) -> set[str]:
    """Names of the quantizers that are switched off (skip patterns): they export as float."""
    return {name for name, q in quantizers(model) if q.mode == "disabled"}
