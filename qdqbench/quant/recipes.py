"""Recipes that adjust a calibrated QDQBERT variant: GELU10 clipping and fused-QKV ranges.

Both follow NVIDIA's QDQBERT example (transformers' ``examples/research_projects/
quantization-qdqbert/quant_trainer.py``, ``clip_gelu`` and ``fuse_qkv``) and act on amax buffers
only, so they are saved with the state dict and exported as the Q/DQ scales:

``clip_gelu(model, maxval)``
    amax = min(amax, maxval) for the input quantizer of each layer's FFN second linear (BERT's
    ``layer.N.output.dense``, DistilBERT's ``layer.N.ffn.lin2``): the tensor GELU produced. GELU's
    output is bounded below by -0.17 but has a long positive tail, and one outlier would stretch
    the 8-bit grid over it; with 10.0 ("GELU10") the rest of the range keeps its resolution.
``fuse_qkv(model)``
    one range for Q, K and V, as an engine that runs the three projections as one GEMM needs:
    each layer's ``matmul_{q,k,v}_input_quantizer`` (the projections' outputs) get the max of
    their three amaxes; with per-tensor weights the three ``weight_quantizer`` s get theirs too.
    Per-channel weight amaxes are left as they are, as NVIDIA does: a fused GEMM's weight is the
    three weights stacked by output row, and per-channel scales are per row, so every row keeps
    its own. The three projections' input quantizers see the same tensor and so are calibrated
    to the same amax; they are set to their max as well, which changes nothing unless they were
    loaded or set apart.

Call ``apply_post_calibration(model, settings)`` after ``finish_calibration`` (which recomputes
weight amaxes from the weights, and would undo a per-tensor weight fusion if called after).
Disabled quantizers (skip patterns) are left alone. Each function returns what it changed,
{quantizer name: [before, after]} (max over channels), for the record.
"""

from __future__ import annotations

import torch
from torch import nn

from qdqbench.quant.qdqbert import QDQSettings, layer_parts
from qdqbench.quant.quantizer import TensorQuantizer, quantizers

Changes = dict[str, list[float]]


def clip_gelu(model: nn.Module, maxval: float) -> Changes:
    """Clip the amax of every FFN second linear's input quantizer to ``maxval`` (GELU10: 10.0)."""
    if not maxval > 0:
        raise ValueError(f"clip_gelu needs a positive amax, got {maxval}")
    changes: Changes = {}
    for _, ffn_out in layer_parts(model):
        q = getattr(ffn_out, "input_quantizer", None)
        if q is None or q.mode == "disabled":
            continue  # linear group off, or skipped: the input is float, nothing to clip
        before = float(q.amax.max())
        q.set_amax(torch.clamp(q.amax, max=maxval))  # an uncalibrated (NaN) amax raises, naming q
        changes[q.qname] = [before, float(q.amax.max())]
    return changes


def fuse_qkv(model: nn.Module) -> Changes:
    """Give each layer's Q, K and V one range (see the module docstring for what is fused)."""
    changes: Changes = {}
    for attn, _ in layer_parts(model):
        projections = [getattr(attn, n) for n in attn.projections]
        if attn.quantize_matmul:
            _fuse([attn.matmul_q_input_quantizer, attn.matmul_k_input_quantizer,
                   attn.matmul_v_input_quantizer], changes)
        inputs = [getattr(p, "input_quantizer", None) for p in projections]
        if all(q is not None for q in inputs):
            _fuse(inputs, changes)
        weights = [getattr(p, "weight_quantizer", None) for p in projections]
        if all(q is not None and q.axis is None for q in weights):
            _fuse(weights, changes)
    return changes


def _fuse(group: list[TensorQuantizer], changes: Changes) -> None:
    enabled = [q for q in group if q.mode != "disabled"]
    if len(enabled) < 2:
        return
    before = [float(q.amax.max()) for q in enabled]
    for q in enabled:
        if not q.is_calibrated:
            q.set_amax(q.amax)  # raises a CalibrationError naming the quantizer
    amax = torch.stack([q.amax for q in enabled]).amax(dim=0)
    for q, b in zip(enabled, before):
        q.set_amax(amax)
        if float(amax.max()) != b:
            changes[q.qname] = [b, float(amax.max())]


def apply_post_calibration(model: nn.Module, settings: QDQSettings) -> dict[str, Changes]:
    """Apply the settings' post-calibration recipes (fuse_qkv, then clip_gelu); return their changes."""
    out: dict[str, Changes] = {}
    if settings.fuse_qkv:
        out["fuse_qkv"] = fuse_qkv(model)
    if settings.clip_gelu is not None:
        out["clip_gelu"] = clip_gelu(model, settings.clip_gelu)
    return out


def amaxes(model: nn.Module) -> dict[str, float]:
    """{quantizer name: amax (max over channels)} of every enabled quantizer, for the record."""
    return {name: float(q.amax.max()) for name, q in quantizers(model) if q.mode != "disabled"}


__all__ = ["clip_gelu", "fuse_qkv", "apply_post_calibration", "amaxes"]
