"""Turn a transformers BERT-family model into a QDQBERT variant by module surgery.

Q/DQ placement (DESIGN.md), each group switchable:
  ``linear``   — every encoder ``nn.Linear``: input per-tensor (calibrated), weight per-channel;
  ``matmul``   — both attention matmuls: Q and Kᵀ of Q·Kᵀ, softmax output and V of P·V;
  ``residual`` — both inputs of the two residual adds of each layer, so TensorRT can fuse the add
                 into its INT8 kernels.
Embeddings, LayerNorm, Softmax and GELU stay float. The encoder's modules are replaced by the
classes below, which adopt the original parameters; nothing in torch or transformers is patched,
so the fp32 model class and every other model in the process are untouched.

Works with any checkpoint whose encoder has BERT's layout (``encoder.layer[i].attention.self``
with query/key/value, ``attention.output`` and ``output`` with dense/dropout/LayerNorm and a
residual input, ``intermediate.dense``): BERT, MiniLM, RoBERTa and ELECTRA in transformers 5.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch
from torch import nn

from qdqbench.quant.quantizer import QuantLinear, TensorQuantizer, name_quantizers, quantizers

GROUPS = ("linear", "matmul", "residual")


@dataclass(frozen=True)
class QDQSettings:
    """How a QDQBERT variant is built: bits, groups, weight granularity, calibrator, skips."""

    bits: int = 8
    groups: tuple[str, ...] = GROUPS
    per_channel_weights: bool = True
    calib_method: str = "max"
    num_bins: int = 2048
    skip: tuple[str, ...] = field(default_factory=tuple)  # fnmatch patterns on module names


class QuantSelfAttention(nn.Module):
    """BERT self-attention with eager attention and Q/DQ on both matmuls' inputs."""

    def __init__(self, orig: nn.Module, s: QDQSettings):
        super().__init__()
        self.num_attention_heads = orig.num_attention_heads
        self.attention_head_size = orig.attention_head_size
        self.all_head_size = orig.all_head_size
        self.scaling = getattr(orig, "scaling", self.attention_head_size**-0.5)
        self.dropout = orig.dropout
        lin = "linear" in s.groups
        for proj in ("query", "key", "value"):
            layer = getattr(orig, proj)
            setattr(self, proj, _quant_linear(layer, s) if lin else layer)
        self.quantize_matmul = "matmul" in s.groups
        if self.quantize_matmul:
            # Names as in transformers' QDQBERT, so amax dumps compare with NVIDIA's toolkit.
            for name in ("matmul_q_input", "matmul_k_input", "matmul_v_input", "matmul_a_input"):
                setattr(self, f"{name}_quantizer", _act_quantizer(s))

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        if cache is not None or kwargs.get("encoder_hidden_states") is not None:
            raise NotImplementedError("QDQBERT variants are encoder-only: no cache, no cross-attention")
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        q = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
        k = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
        v = self.value(hidden_states).view(hidden_shape).transpose(1, 2)
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
        probs = self.dropout(probs)
        if self.quantize_matmul:
            probs = self.matmul_a_input_quantizer(probs)
        context = torch.matmul(probs, v).transpose(1, 2).contiguous()
        return context.reshape(*input_shape, -1), None


class QuantResidualOutput(nn.Module):
    """dense → dropout → LayerNorm(dense_out + residual), with Q/DQ on both inputs of the add."""

    def __init__(self, orig: nn.Module, s: QDQSettings):
        super().__init__()
        self.dense = _quant_linear(orig.dense, s) if "linear" in s.groups else orig.dense
        self.dropout = orig.dropout
        self.LayerNorm = orig.LayerNorm
        self.add_local_input_quantizer = _act_quantizer(s)
        self.add_residual_input_quantizer = _act_quantizer(s)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        local = self.add_local_input_quantizer(hidden_states)
        residual = self.add_residual_input_quantizer(input_tensor)
        return self.LayerNorm(local + residual)


def _act_quantizer(s: QDQSettings) -> TensorQuantizer:
    return TensorQuantizer(s.bits, calib_method=s.calib_method, num_bins=s.num_bins)


def _quant_linear(linear: nn.Linear, s: QDQSettings) -> QuantLinear:
    return QuantLinear.from_linear(
        linear, num_bits=s.bits, per_channel=s.per_channel_weights,
        calib_method=s.calib_method, num_bins=s.num_bins,
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a BERT-family model; ValueError naming the class otherwise."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not layers:
        raise ValueError(f"{type(model).__name__} has no BERT-style encoder.layer list")
    return layers


def quantize_bert(model: nn.Module, settings: QDQSettings) -> nn.Module:
    """Replace the encoder's modules with their Q/DQ counterparts in place; return the model."""
    unknown = set(settings.groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown Q/DQ group(s) {sorted(unknown)}; known: {', '.join(GROUPS)}")
    if getattr(model.config, "is_decoder", False):
        raise ValueError("decoder BERT models are not supported: QDQBERT variants are encoder-only")
    for layer in encoder_layers(model):
        attn = layer.attention
        if not hasattr(attn.self, "query"):
            raise ValueError(f"{type(attn.self).__name__} has no query/key/value projections")
        attn.self = QuantSelfAttention(attn.self, settings)
        if "residual" in settings.groups:
            attn.output = QuantResidualOutput(attn.output, settings)
            layer.output = QuantResidualOutput(layer.output, settings)
        elif "linear" in settings.groups:
            attn.output.dense = _quant_linear(attn.output.dense, settings)
            layer.output.dense = _quant_linear(layer.output.dense, settings)
        if "linear" in settings.groups:
            layer.intermediate.dense = _quant_linear(layer.intermediate.dense, settings)
    name_quantizers(model)
    apply_skip_patterns(model, settings.skip)
    return model


def apply_skip_patterns(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Disable every quantizer whose name, or whose owning module's name, matches a pattern."""
    disabled = []
    for name, q in quantizers(model):
        owner = name.rsplit(".", 1)[0]
        if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(owner, p) for p in patterns):
            q.mode = "disabled"
            disabled.append(name)
    return disabled


def quantizer_group(name: str) -> str:
    """Which placement group a quantizer name belongs to: linear, matmul or residual."""
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
            counts[quantizer_group(name)] += 1
    return counts
