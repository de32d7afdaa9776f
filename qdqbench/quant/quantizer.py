"""The fake-quant building blocks: ``FakeQuantize``, ``TensorQuantizer`` and ``QuantLinear``.

A ``TensorQuantizer`` is a module with an ``amax`` buffer (so ranges live in the state dict) and
three modes: ``quantize`` (fake-quantize with ``FakeQuantize``: exactly ONNX
QuantizeLinear → DequantizeLinear in the forward, exported as that Q/DQ pair, a straight-through
gradient for QAT), ``calibrate`` (feed the input to a calibrator, pass it through unchanged) and
``disabled`` (identity). Modes are switched with the ``calibrating`` / ``quantizers_disabled``
context managers, which always restore what was there before.

Numerics (docs/ARCHITECTURE.md): symmetric, zero point 0, scale = amax / (2**(bits-1) - 1), quantized range
[-2**(bits-1), 2**(bits-1) - 1] — for 8 bits [-128, 127], the range ONNX QuantizeLinear uses.
The original design named ``torch.fake_quantize_per_*_affine``; we do not use it because it rounds
``x * (1/scale)``, not ``x / scale`` (see ``FakeQuantize``), so its results differ from every
ONNX runtime's QuantizeLinear on elements next to a rounding boundary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from qdqbench.core.errors import CalibrationError, ExportError
from qdqbench.quant.calib import make_calibrator
from qdqbench.quant.registry import check_bits

Mode = Literal["quantize", "calibrate", "disabled"]


class FakeQuantize(torch.autograd.Function):
    """``clamp(round(x / scale), qmin, qmax) * scale`` with a straight-through gradient.

    The forward is exactly ONNX QuantizeLinear → DequantizeLinear (zero point 0): a true division
    by ``scale`` in float32, as ONNX Runtime's kernels do, and round-half-to-even.
    ``torch.fake_quantize_*`` multiplies by ``1 / scale`` instead, which on rare elements (about 1
    in 10^5 for some scales, torch 2.13) lands on the other side of a rounding boundary than
    QuantizeLinear. The backward passes the gradient where the rounded value lies in
    ``[qmin, qmax]`` and zeroes it where the input was clipped, as torch's fake quant does; amax
    is a buffer, not a learned parameter, so ``scale`` gets no gradient.

    ``symbolic`` exports the op as a QuantizeLinear/DequantizeLinear pair (``axis`` per channel)
    for the TorchScript exporter, each pair with its own zero-point Constant. A zero point shared
    by all pairs (what passing it in as a tensor gives: the exporter de-duplicates constants) lets
    ONNX Runtime's common-subexpression elimination merge the Q nodes of the several quantizers
    that read one tensor (Q, K, V inputs and the residual) into one Q with several consumers,
    and its s8→u8 rewrite for x86 integer kernels skips such a Q: those MatMuls then stay float
    (onnxruntime 1.32, AVX2).
    """

    @staticmethod
    def forward(ctx, x, scale, qmin: int, qmax: int, axis: int | None, keep_mask: bool = True):
        if axis is not None:
            shape = [1] * x.dim()
            shape[axis] = -1
            scale = scale.reshape(shape)
        q = torch.round(x / scale)
        # The STE mask costs two kernels and a tensor per call; inference never reads it.
        ctx.save_for_backward((q >= qmin) & (q <= qmax) if keep_mask else None)
        return torch.clamp(q, qmin, qmax) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        if inside is None:
            raise RuntimeError("FakeQuantize: backward through a call made without keep_mask")
        return grad * inside, None, None, None, None, None

    @staticmethod
    def symbolic(g, x, scale, qmin: int, qmax: int, axis: int | None, keep_mask: bool = True):
        # A narrower grid fits the int8 container; export_onnx allows it only where nothing can
        # exceed amax (weights), since QuantizeLinear clamps at -128/127, not at qmin/qmax.
        if qmin < -128 or qmax > 127:
            raise ExportError(f"the range [{qmin}, {qmax}] does not fit ONNX int8 Q/DQ")
        if axis is None:
            zero = torch.zeros((), dtype=torch.int8)
            kwargs = {}
        else:
            sizes = scale.type().sizes()
            if not sizes:
                raise ExportError("per-channel scale of unknown size in the traced graph")
            zero = torch.zeros(sizes, dtype=torch.int8)
            kwargs = {"axis_i": axis}
        zero_point = g.op("Constant", value_t=zero)
        q = g.op("QuantizeLinear", x, scale, zero_point, **kwargs)
        return g.op("DequantizeLinear", q, scale, zero_point, **kwargs)


class TensorQuantizer(nn.Module):
    """Symmetric fake quantization of one tensor, per-tensor or per-channel along ``axis``."""

    def __init__(
        self,
        num_bits: int = 8,
        axis: int | None = None,
        channels: int | None = None,
        calib_method: str = "max",
        num_bins: int = 2048,
        is_weight: bool = False,
    ):
        super().__init__()
        check_bits(num_bits, "num_bits")
        if axis is not None and not channels:
            raise ValueError("a per-channel quantizer needs the channel count")
        self.num_bits = num_bits
        self.axis = axis
        self.calib_method = calib_method
        self.num_bins = num_bins
        self.is_weight = is_weight  # weights take amax from the parameter, never from data
        self.mode: Mode = "quantize"
        self.qname = ""  # set by the placement code to the module's dotted name, for messages
        shape = (channels,) if axis is not None else ()
        # NaN marks "never calibrated": quantizing with it is an error, not a silent identity.
        self.register_buffer("amax", torch.full(shape, float("nan")))
        self._calibrator = None
        self._checked: tuple | None = None  # (data_ptr, version, dtype) of the amax last found usable

    def __getstate__(self) -> dict:
        # A copy or an unpickled module holds a different amax tensor: check it afresh.
        state = self.__dict__.copy()
        state["_checked"] = None
        return state

    @property
    def qmax(self) -> int:
        """Largest quantized value, e.g. 127 for 8 bits."""
        return 2 ** (self.num_bits - 1) - 1

    @property
    def qmin(self) -> int:
        """Smallest quantized value, e.g. -128 for 8 bits."""
        return -(2 ** (self.num_bits - 1))

    @property
    def is_calibrated(self) -> bool:
        """True when amax holds a finite positive range."""
        return bool(torch.isfinite(self.amax).all() and (self.amax > 0).all())

    def calibrator(self):
        """The calibrator that collects statistics in calibrate mode (made on first use)."""
        if self._calibrator is None:
            method = "max" if self.axis is not None else self.calib_method
            self._calibrator = make_calibrator(
                method, num_bits=self.num_bits, axis=self.axis, num_bins=self.num_bins
            )
        return self._calibrator

    def load_calib_amax(self, method: str | None = None, **params) -> None:
        """Set amax from the collected statistics; an unusable range is an error naming this quantizer."""
        if self._calibrator is None:
            raise CalibrationError(f"quantizer '{self.qname}' saw no data during calibration")
        method = method or ("max" if self.axis is not None else self.calib_method)
        if method != "max":
            params = {k: v for k, v in params.items() if v is not None}
        else:
            params = {}
        try:
            amax = self._calibrator.compute_amax(method, **params)
        except CalibrationError as exc:
            raise CalibrationError(f"quantizer '{self.qname}': {exc}") from None
        self.set_amax(amax)
        self._calibrator = None

    def set_amax(self, amax: torch.Tensor | float) -> None:
        """Set the range; NaN, infinite, zero or negative values are an error naming this quantizer."""
        amax = torch.as_tensor(amax, dtype=torch.float32).detach().to(self.amax.device)
        if amax.shape != self.amax.shape:
            raise CalibrationError(
                f"quantizer '{self.qname}': amax shape {tuple(amax.shape)} != {tuple(self.amax.shape)}"
            )
        bad = ~torch.isfinite(amax) | (amax <= 0)
        if bad.any():
            first = amax.reshape(-1)[bad.reshape(-1)][0].item()
            raise CalibrationError(
                f"quantizer '{self.qname}': amax is {first} after calibration "
                f"({int(bad.sum())} of {amax.numel()} values unusable)"
            )
        self.amax.copy_(amax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "disabled":
            return x
        if self.mode == "calibrate":
            self.calibrator().collect(x.detach())
            return x
        return self._fake_quantize(x)

    def _check_amax(self) -> None:
        """Raise unless amax is usable; checked once per amax value, not once per call.

        Reading amax on the host synchronises a GPU: per call that made every fake-quant forward
        wait on the device ~100 times (44 ms for MiniLM on an H200 instead of a few). The check is
        redone when the buffer is replaced (``.to``) or written in place (``set_amax``,
        ``load_state_dict``), which the tensor's version counter records.
        """
        stamp = (self.amax.data_ptr(), self.amax._version, self.amax.dtype)
        if stamp == self._checked:
            return
        if not self.is_calibrated:
            raise CalibrationError(f"quantizer '{self.qname}' is used before calibration (amax is {self._amax_text()})")
        self._checked = stamp

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        self._check_amax()
        dtype = x.dtype
        xf = x if dtype == torch.float32 else x.float()
        scale = (self.amax.float() / self.qmax).to(xf.device)
        axis = None if self.axis is None else self.axis % xf.dim()
        keep_mask = torch.is_grad_enabled() and xf.requires_grad
        out = FakeQuantize.apply(xf, scale, self.qmin, self.qmax, axis, keep_mask)
        return out if dtype == torch.float32 else out.to(dtype)

    def _amax_text(self) -> str:
        bad = self.amax[~torch.isfinite(self.amax) | (self.amax <= 0)].reshape(-1)
        return f"{bad[0].item()}" if bad.numel() else "unset"

    def extra_repr(self) -> str:
        if self.amax.numel() == 0 or torch.isnan(self.amax).all():
            amax = "uncalibrated"
        elif self.amax.dim() == 0:
            amax = f"amax={self.amax.item():.4g}"
        else:
            amax = f"amax=[{self.amax.min().item():.4g}, {self.amax.max().item():.4g}]({self.amax.numel()})"
        axis = "per-tensor" if self.axis is None else f"axis={self.axis}"
        calib = "max" if self.axis is not None else self.calib_method
        return f"{self.num_bits}bit, {axis}, {amax}, calib={calib}, mode={self.mode}"


class QuantLinear(nn.Linear):
    """``nn.Linear`` with a per-tensor input quantizer and a (per-channel) weight quantizer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 num_bits: int = 8, per_channel: bool = True, calib_method: str = "max",
                 num_bins: int = 2048, weight_bits: int | None = None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._add_quantizers(num_bits, per_channel, calib_method, num_bins, weight_bits)

    def _add_quantizers(self, num_bits: int, per_channel: bool, calib_method: str, num_bins: int,
                        weight_bits: int | None) -> None:
        self.input_quantizer = TensorQuantizer(num_bits, calib_method=calib_method, num_bins=num_bins)
        # The weight is quantized in its transposed (in, out) layout, per output channel (axis 1
        # there, axis 0 of the nn.Linear weight): the export then reads DQ(W^T) -> MatMul, the
        # pattern ONNX Runtime and TensorRT fuse into integer GEMMs without a Transpose between.
        self.weight_quantizer = TensorQuantizer(
            num_bits if weight_bits is None else weight_bits,
            axis=1 if per_channel else None,
            channels=self.out_features if per_channel else None,
            is_weight=True,
        )
        self.input_quantizer.to(self.weight.device)
        self.weight_quantizer.to(self.weight.device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, num_bits: int = 8, per_channel: bool = True,
                    calib_method: str = "max", num_bins: int = 2048,
                    weight_bits: int | None = None) -> QuantLinear:
        """A QuantLinear sharing ``linear``'s parameters, with its weight amax set from them."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = linear.in_features, linear.out_features
        q.weight, q.bias = linear.weight, linear.bias
        q._add_quantizers(num_bits, per_channel, calib_method, num_bins, weight_bits)
        q.calibrate_weight()
        return q

    @torch.no_grad()
    def calibrate_weight(self) -> None:
        """amax = max |w| per output row (per-channel) or over the whole weight (per-tensor)."""
        w = self.weight.detach().float().abs()
        if self.weight_quantizer.axis is not None:
            amax = w.amax(dim=1)
            # An all-zero row quantizes exactly to zero with any positive scale; 1.0 keeps it exact
            # instead of failing the calibration on a pruned or padded output channel.
            amax = torch.where(amax > 0, amax, torch.ones_like(amax))
        else:
            amax = w.max()
        self.weight_quantizer.set_amax(amax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.input_quantizer(x)
        wq = self.weight_quantizer(self.weight.t())
        out = torch.matmul(xq, wq)
        return out + self.bias if self.bias is not None else out


class QuantEmbedding(nn.Embedding):
    """``nn.Embedding`` whose table is fake-quantized per tensor before the lookup.

    Per tensor, not per row: the export stores the table as int8 and moves the DequantizeLinear
    behind the Gather (int8 table → Gather → DequantizeLinear, as ONNX Runtime's quantize_static
    writes), and a DequantizeLinear after a Gather can only take one scale — per-row scales would
    have to be gathered too, which is no longer a DequantizeLinear. Lookup then dequantize equals
    dequantize then lookup element for element, so torch and the export agree exactly.
    """

    def _add_quantizer(self, num_bits: int) -> None:
        self.weight_quantizer = TensorQuantizer(num_bits, is_weight=True)
        self.weight_quantizer.to(self.weight.device)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, *, num_bits: int = 8) -> QuantEmbedding:
        """A QuantEmbedding sharing ``emb``'s table, with its amax set from it."""
        if emb.max_norm is not None:
            raise ValueError("embeddings with max_norm renormalise the table in the forward: not quantizable")
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        for attr in ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                     "scale_grad_by_freq", "sparse"):
            setattr(q, attr, getattr(emb, attr))
        q.weight = emb.weight
        q._add_quantizer(num_bits)
        q.calibrate_weight()
        return q

    @torch.no_grad()
    def calibrate_weight(self) -> None:
        """amax = max |w| over the whole table."""
        self.weight_quantizer.set_amax(self.weight.detach().float().abs().max())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight_quantizer(self.weight), self.padding_idx,
                                       None, self.norm_type, self.scale_grad_by_freq, self.sparse)


def quantizers(model: nn.Module) -> Iterator[tuple[str, TensorQuantizer]]:
    """All (name, quantizer) pairs of a model."""
    for name, m in model.named_modules():
        if isinstance(m, TensorQuantizer):
            yield name, m


@contextmanager
def calibrating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every enabled activation quantizer in calibrate mode; restore all modes on exit."""
    saved = {q: q.mode for _, q in quantizers(model)}
    try:
        for _, q in quantizers(model):
            q._calibrator = None  # start from no statistics, even after an aborted calibration
            if q.mode == "disabled":
                continue
            # Weights take their ranges from the parameters and stay float while activations
            # collect (as pytorch-quantization calibrates): the ranges then describe the fp32
            # network, and calibration does not pay for fake-quantizing every weight per batch.
            q.mode = "disabled" if q.is_weight else "calibrate"
        yield model
    finally:
        for q, mode in saved.items():
            q.mode = mode


@contextmanager
def quantizers_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run a QDQ model as float: every quantizer an identity; restore all modes on exit."""
    saved = {q: q.mode for _, q in quantizers(model)}
    try:
        for q in saved:
            q.mode = "disabled"
        yield model
    finally:
        for q, mode in saved.items():
            q.mode = mode


def finish_calibration(model: nn.Module, method: str | None = None, **params) -> dict[str, float]:
    """Compute every activation amax from collected statistics and refresh weight amaxes.

    Returns {quantizer name: amax (max over channels)} for the record. Raises CalibrationError,
    naming the quantizer, for a quantizer that saw no data or ended with an unusable range.
    Recipes that adjust ranges (``recipes.apply_post_calibration``: fused QKV, GELU10) come after
    this, since it recomputes the weight ranges.
    """
    out: dict[str, float] = {}
    for _name, q in quantizers(model):
        if q.mode == "disabled":
            continue
        if q.is_weight:
            continue
        q.load_calib_amax(method, **params)
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            m.calibrate_weight()
    for name, q in quantizers(model):
        if q.mode != "disabled":
            out[name] = float(q.amax.max()) if q.amax.numel() else math.nan
    return out


def name_quantizers(model: nn.Module) -> None:
    """Give every quantizer its dotted module name (used in error messages and reports)."""
    for name, q in quantizers(model):
        q.qname = name


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10·log10(Σref² / Σ(ref−test)²)."""
    ref = reference.detach().double()
    noise = (ref - test.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


__all__ = [
    "FakeQuantize",
    "TensorQuantizer",
    "QuantLinear",
    "QuantEmbedding",
    "quantizers",
    "calibrating",
    "quantizers_disabled",
    "finish_calibration",
    "name_quantizers",
    "sqnr_db",
]
