"""Calibrators: turn the activations seen during calibration into an ``amax`` (clipping range).

A ``TensorQuantizer`` in calibrate mode feeds every tensor it sees to one calibrator; at the end
``compute_amax(method, ...)`` returns the range that the symmetric quantizer then uses
(scale = amax / (2^(bits-1) - 1), zero point 0). ``MaxCalibrator`` keeps a running max of |x| per
tensor or per channel (weights, "max" activations); ``HistogramCalibrator`` keeps a histogram of
|x| and picks a clipped range by KL divergence ("entropy"), a CDF threshold ("percentile") or the
least expected squared quantization error ("mse"). Definitions follow TensorRT and NVIDIA
pytorch-quantization (``calib/max.py``, ``calib/histogram.py``); the code is our own and is
vectorised (one ``bincount`` per batch on the tensor's device, no Python loop over elements or
over histogram bins). No calibrator keeps activations, and none changes global state.

Histogram scheme (exact, bounded)
    The first batch with a non-zero max ``m`` fixes ``num_bins`` bins of width ``w = m/num_bins``
    over ``[0, m]``; bin ``j`` is ``[j*w, (j+1)*w)`` and the last bin is closed (float32 rounding
    of ``|x| / w`` decides values within an ulp of an edge). When a later batch has a larger max
    ``M`` (and ``grow=True``) the range grows as in pytorch-quantization and ONNX Runtime: the
    width is kept and bins are appended up to ``ceil(M/w)``. Where that would reach
    ``2*num_bins`` bins, groups of ``k`` adjacent bins are merged instead, with the smallest
    integer ``k`` that keeps the count below ``2*num_bins``. Appending and merging whole bins
    move no count across an edge, so the histogram is always exactly the histogram of all data
    on its current edges. It holds between ``num_bins`` and ``2*num_bins - 1`` bins, so the
    data never spans fewer than about ``num_bins`` bins, and one outlier cannot make it
    arbitrarily long (pytorch-quantization's can: a 100x outlier means 204,800 bins). In the
    usual case -- the max creeps up by less than 2x over the batches -- the edges equal
    pytorch-quantization's. With ``grow=False`` the range stays that of the first batch and
    larger values are counted in the last bin. Elements seen while every value so far was exactly
    zero are kept as a count and added to bin 0 later. Counts are int64, exact at any size.

Method definitions (``edges[i] = i * w``; candidates ``i`` run over
``start_bin, start_bin + stride, ... <= stop``, ``stop`` = index after the last non-empty bin)
    entropy: as pytorch-quantization. First ``hist[0]`` is replaced by ``hist[1]`` (so a spike
    of exact zeros, e.g. padding or ReLU output, does not dominate the distribution). For each
    ``i``: ``P = hist[:i]`` with the outliers ``sum(hist[i:])`` added to ``P[i-1]``; ``Q`` maps
    bin ``j < i`` to level ``floor(j * L / i)`` with ``L = 2^(bits-1+unsigned)`` (128 for
    signed 8-bit), gives every non-empty bin the mean of the non-empty ``hist[:i]`` bins of its
    level, and leaves empty bins at zero (outliers are not in ``Q``). ``KL(P/sum P || Q/sum Q)``
    is infinite where ``P > 0`` and ``Q = 0``. The largest ``i`` among the minimisers wins, and
    ``amax = edges[i]`` (the upper edge of the last bin kept, as pytorch-quantization). On
    Gaussian data with ~1e6 samples this keeps most of the tail (about 4.5 sigma for 8 bits);
    it clips harder on heavy-tailed data and at fewer bits.
    percentile: ``amax = edges[k]`` for the smallest ``k`` with ``sum(hist[:k]) >= p/100 * total``,
    i.e. the upper edge of the bin where the CDF reaches ``p``; ``p = 100`` gives the max edge.
    pytorch-quantization returns ``edges[k-1]``, the lower edge of that bin, one bin lower.
    mse: every bin is represented by its center ``c`` weighted by its count; for each candidate
    ``a = edges[i]`` the error is ``sum(count * (fq(c, a) - c)^2)`` with
    ``fq(c, a) = clip(round(c / s), 0, qmax) * s``, ``s = a / qmax``, ``qmax = 2^(bits-1+unsigned)
    - 1``; the first minimiser wins. pytorch-quantization takes the candidates at bin centers
    ``centers[i]`` (half a bin lower); we use edges so that "no clipping" (the max edge) is a
    candidate and all three methods return bin edges. The |x| histogram cannot see that the
    signed grid reaches ``-128 s`` on the negative side, so negatives are costed as if clipped at
    ``-127 s``; the effect on the chosen amax is below a bin for 8 bits.

Differences from ONNX Runtime's calibrators (onnxruntime.quantization.calibrate, 1.32)
    MinMax (``symmetric=True``): ``max(|min|, |max|)`` over all batches -- identical to
    ``MaxCalibrator`` per tensor (bit-exact in float32).
    Percentile (``symmetric=True``, default ``num_bins=2048``, ``percentile=99.999``): histogram of
    |x| over ``[min|x|, max|x|]`` of the first batch (not from 0), grown by appending bins of the
    same width without bound. Later values below that first ``min|x|`` fall outside its edges
    and are not counted (we saw 999,999 of 1,000,000 counted). The threshold is
    ``edges[searchsorted(cdf, p/100)]``, the *lower* edge of the crossing bin, clamped to the
    signed max. So with the same bin count ORT returns one bin width less than
    ``HistogramCalibrator`` (our upper edge), give or take a bin where its ``min|x|`` edge offset
    moves a few tail elements across the crossing.
    Entropy (defaults ``num_bins=128``, ``num_quantized_bins=128``): MXNet's algorithm on a
    histogram of the *signed* values over ``[-t, t]``. Its window ``[zero-i, zero+i]`` covers
    both signs, so ``num_quantized_bins`` levels span the whole signed range (the default 128
    means 64 per side, effectively 7-bit); ``num_bins=4096, num_quantized_bins=256`` gives our
    bin width, 128 levels per side and the same first candidate (128). Its level mapping
    differs: the window is cut into runs of ``floor(size/levels)`` bins with the whole remainder
    in the last level (ours spreads bins evenly, ``floor(j*L/i)``); its expanded ``Q`` is
    truncated to integers; ``P`` and ``Q`` are smoothed with ``eps=1e-4`` before a float32 KL;
    there is no ``hist[0] = hist[1]`` step; ties take the smallest threshold; the returned range
    is ``(-i*w, (i+1)*w)``, one bin wider on the positive side; and its Python loops take
    seconds per tensor (~7 s at 4096 bins). The KL minimum is flat, so on 1e6 Gaussian and
    Laplace samples the two picks differ by up to ~14% of amax, in either direction (8-bit:
    ORT -11% Gaussian, +4% Laplace; 6-bit with 512/1024 bins: +8%, +14%); on uniform data
    both keep the full range. The tests pin a 15% bound.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import numpy as np
import torch

from qdqbench.core.errors import CalibrationError, did_you_mean
from qdqbench.quant.registry import CALIBRATION_METHODS, calibrator_class

__all__ = [
    "CALIBRATION_METHODS",
    "Calibrator",
    "HistogramCalibrator",
    "MaxCalibrator",
    "make_calibrator",
]

# Elements binned per bincount call: bounds the int64 index buffer (8 bytes per element) to
# 128 MiB however large the activation is.
_CHUNK_ELEMENTS = 1 << 24
# Candidate thresholds evaluated at once by the mse search: 256 x 2048 float64 matrices are
# 4 MiB each, so memory stays small and numpy still does the looping.
_CANDIDATE_CHUNK = 256
# Keyword parameters any compute_amax accepts, so a quantizer can pass one set to either class.
_AMAX_PARAMS = ("percentile", "start_bin", "stride")


def _check_num_bits(num_bits: int) -> None:
    """Reject bit widths the symmetric integer grid cannot represent."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits must be an integer in [2, 16], got {num_bits!r}")


def _check_float_tensor(x: torch.Tensor) -> None:
    """Calibrators see activations and weights; integer tensors are a wiring mistake."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"calibrators collect floating-point tensors, got {got}")


def _check_method(method: str, allowed: tuple[str, ...], owner: str) -> None:
    """ValueError naming the allowed methods (and the closest one) for an unsupported method."""
    if method not in allowed:
        raise ValueError(
            f"{owner} does not compute {method!r}; allowed: {', '.join(allowed)}"
            f"{did_you_mean(str(method), allowed)}"
        )


def _finite_amax(amax: torch.Tensor) -> torch.Tensor:
    """Return amax, or raise when any element is NaN or infinite."""
    if not bool(torch.isfinite(amax).all()):
        shown = amax.flatten()[:4].tolist()
        raise CalibrationError(f"amax is not finite ({shown}{'...' if amax.numel() > 4 else ''})")
    return amax


class Calibrator(abc.ABC):
    """What every calibrator does (pytorch-quantization's ``_Calibrator``): ``collect`` batches,
    ``compute_amax`` for one of its ``methods``, ``reset`` to forget. A new calibrator is one
    subclass here plus one entry in ``qdqbench.quant.registry.CALIBRATORS``."""

    methods: ClassVar[tuple[str, ...]]  # the registry methods this class computes
    num_bits: int
    axis: int | None
    unsigned: bool

    @classmethod
    @abc.abstractmethod
    def from_options(cls, *, num_bits: int, axis: int | None, num_bins: int, unsigned: bool) -> Calibrator:
        """Build from make_calibrator's options (rejecting those the class cannot honour)."""

    @abc.abstractmethod
    def collect(self, x: torch.Tensor) -> None:
        """Fold one batch of a floating-point tensor into the statistic."""

    @abc.abstractmethod
    def compute_amax(self, method: str, **params) -> torch.Tensor:
        """The finite float32 CPU amax chosen by ``method`` (0-d, or one value per channel)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything collected."""


class MaxCalibrator(Calibrator):
    """Running max of |x|, per tensor (0-d amax) or per channel along ``axis``."""

    methods: ClassVar[tuple[str, ...]] = ("max",)

    def __init__(self, num_bits: int = 8, axis: int | None = None, unsigned: bool = False):
        _check_num_bits(num_bits)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(f"axis must be an int or None, got {axis!r}")
        self.num_bits = num_bits
        self.axis = axis
        self.unsigned = unsigned
        self._amax: torch.Tensor | None = None

    @classmethod
    def from_options(cls, *, num_bits: int, axis: int | None, num_bins: int, unsigned: bool):
        """Build from make_calibrator's options (num_bins does not apply to a max calibrator)."""
        return cls(num_bits=num_bits, axis=axis, unsigned=unsigned)

    def collect(self, x: torch.Tensor) -> None:
        """Fold max |x| of this batch into the running max (per channel when axis is set)."""
        _check_float_tensor(x)
        x = x.detach()
        if x.numel() == 0:
            return
        if self.axis is None:
            lo, hi = torch.aminmax(x)
        else:
            if not -x.dim() <= self.axis < x.dim():
                raise ValueError(f"axis {self.axis} is out of range for a {x.dim()}-d tensor")
            axis = self.axis % x.dim()
            dims = tuple(d for d in range(x.dim()) if d != axis)
            # amax/amin reduce without materialising |x|; an empty dims tuple would mean "all".
            lo, hi = (x.amin(dim=dims), x.amax(dim=dims)) if dims else (x, x)
        # max and abs are exact in any float dtype, so reducing first and widening after is
        # the same as computing in float32. torch.maximum propagates NaN, which compute_amax
        # then reports.
        amax = torch.maximum(-lo, hi).to(torch.float32)
        if self._amax is None:
            self._amax = amax
            return
        if amax.shape != self._amax.shape:
            raise CalibrationError(
                f"per-channel calibration along axis {self.axis} got {amax.numel()} channels, "
                f"earlier batches had {self._amax.numel()}"
            )
        self._amax = torch.maximum(self._amax, amax.to(self._amax.device))

    def compute_amax(self, method: str = "max", **params) -> torch.Tensor:
        """The running max as a float32 CPU tensor (0-d, or one value per channel)."""
        _check_method(method, self.methods, "MaxCalibrator")
        unknown = sorted(set(params) - set(_AMAX_PARAMS))
        if unknown:
            raise TypeError(f"compute_amax got unexpected parameters {unknown}")
        if self._amax is None:
            raise CalibrationError("no data was collected; call collect() before compute_amax()")
        return _finite_amax(self._amax.detach().to("cpu", torch.float32).clone())

    def reset(self) -> None:
        """Forget everything collected."""
        self._amax = None

    def __repr__(self) -> str:
        return (
            f"MaxCalibrator(num_bits={self.num_bits}, axis={self.axis}, unsigned={self.unsigned})"
        )


class HistogramCalibrator(Calibrator):
    """Histogram of |x| (per tensor) with entropy, percentile and mse range selection."""

    methods: ClassVar[tuple[str, ...]] = ("entropy", "percentile", "mse")
    axis = None  # per tensor only; the attribute keeps the two calibrators interchangeable

    def __init__(
        self, num_bits: int = 8, num_bins: int = 2048, unsigned: bool = False, grow: bool = True
    ):
        _check_num_bits(num_bits)
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
        self.num_bits = num_bits
        self.num_bins = num_bins
        self.unsigned = unsigned
        self.grow = grow
        self.reset()

    @classmethod
    def from_options(cls, *, num_bits: int, axis: int | None, num_bins: int, unsigned: bool):
        """Build from make_calibrator's options; histograms are per tensor only."""
        if axis is not None:
            raise ValueError(
                f"histogram calibration is per tensor only (axis must be None, got {axis}); "
                "use 'max' for per-channel ranges"
            )
        return cls(num_bits=num_bits, num_bins=num_bins, unsigned=unsigned)

    def reset(self) -> None:
        """Forget everything collected."""
        self._hist: torch.Tensor | None = None  # int64 counts, on the device of the last batch
        self._base_width = 0.0  # bin width fixed by the first non-zero batch
        self._factor = 1  # bins merged since then; width = base_width * factor (exact integer)
        self._pending_zeros = 0  # elements seen while every value so far was exactly zero
        self._count = 0
        self._nonfinite = False

    @property
    def bin_width(self) -> float:
        """Current bin width (0.0 before any non-zero value was seen)."""
        return self._base_width * self._factor

    @property
    def count(self) -> int:
        """Number of finite elements collected."""
        return self._count

    @property
    def histogram(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(counts int64, edges float64) on CPU, or None before any non-zero value was seen."""
        if self._hist is None:
            return None
        edges = torch.arange(self._hist.numel() + 1, dtype=torch.float64) * self.bin_width
        return self._hist.detach().cpu().clone(), edges

    def collect(self, x: torch.Tensor) -> None:
        """Add |x| to the histogram, growing its range if x holds a larger value."""
        _check_float_tensor(x)
        x = x.detach()
        n = x.numel()
        if n == 0:
            return
        lo, hi = torch.aminmax(x)
        x_max = float(torch.maximum(-lo, hi))  # the one host sync per batch
        if not math.isfinite(x_max):
            # A NaN/inf batch cannot be binned; remember it so compute_amax fails loudly
            # instead of returning a range computed from the remaining batches.
            self._nonfinite = True
            return
        self._count += n
        if self._hist is None:
            if x_max == 0.0:
                self._pending_zeros += n  # no width yet: an all-zero tensor defines no range
                return
            self._base_width = x_max / self.num_bins
            self._factor = 1
            self._hist = torch.zeros(self.num_bins, dtype=torch.int64, device=x.device)
            self._hist[0] += self._pending_zeros
            self._pending_zeros = 0
        elif self.grow and x_max > self.bin_width * self._hist.numel():
            self._grow_to(x_max)
        if self._hist.device != x.device:
            self._hist = self._hist.to(x.device)
        length = self._hist.numel()
        scale = 1.0 / self.bin_width
        flat = x.reshape(-1)
        for start in range(0, n, _CHUNK_ELEMENTS):
            # abs() copies, so the in-place ops never touch the caller's tensor; float32 keeps
            # bin indices exact (fp16 could not even represent index 2047). Values on the top
            # edge, or above it when grow=False, land in the last bin through the clamp, which
            # comes before the int conversion because casting a float beyond int64 is undefined.
            part = flat[start : start + _CHUNK_ELEMENTS].abs().to(torch.float32)
            idx = part.mul_(scale).clamp_(max=length - 1).to(torch.int64)
            self._hist += torch.bincount(idx, minlength=length)

    def _grow_to(self, x_max: float) -> None:
        """Cover x_max: append bins of the same width, or merge k-groups past 2*num_bins-1."""
        width = self.bin_width
        needed = math.ceil(x_max / width)
        while needed * width < x_max:  # float guard: the top edge must reach x_max
            needed += 1
        k = math.ceil(needed / (2 * self.num_bins - 1))
        length = math.ceil(needed / k)
        padded = torch.zeros(length * k, dtype=torch.int64, device=self._hist.device)
        padded[: self._hist.numel()] = self._hist
        self._hist = padded.view(length, k).sum(dim=1) if k > 1 else padded
        self._factor *= k

    def compute_amax(
        self, method: str, *, percentile: float = 99.99, start_bin: int = 128, stride: int = 1
    ) -> torch.Tensor:
        """amax (0-d float32 CPU tensor) chosen from the histogram by entropy, percentile or mse."""
        _check_method(method, self.methods, "HistogramCalibrator")
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        if isinstance(start_bin, bool) or not isinstance(start_bin, int) or start_bin < 1:
            raise ValueError(f"start_bin must be an integer >= 1, got {start_bin!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
        if self._nonfinite:
            raise CalibrationError("collected data contained NaN or inf; amax would not be finite")
        if self._count == 0:
            raise CalibrationError("no data was collected; call collect() before compute_amax()")
        if self._hist is None:
            # Every collected value was exactly zero; the owning quantizer rejects amax 0.
            return torch.tensor(0.0, dtype=torch.float32)
        counts = self._hist.cpu().numpy().astype(np.float64)
        stop = int(np.flatnonzero(counts)[-1]) + 1
        counts = counts[:stop]
        if method == "percentile":
            index = _percentile_index(counts, percentile)
        else:
            candidates = np.arange(start_bin, stop + 1, stride, dtype=np.int64)
            if candidates.size == 0:
                # start_bin lies beyond the data: the only sensible range is the full one.
                candidates = np.array([stop], dtype=np.int64)
            if method == "entropy":
                levels = 1 << (self.num_bits - 1 + int(self.unsigned))
                index = _entropy_index(counts, candidates, levels)
            else:
                qmax = (1 << (self.num_bits - 1 + int(self.unsigned))) - 1
                index = _mse_index(counts, candidates, qmax)
        return _finite_amax(torch.tensor(index * self.bin_width, dtype=torch.float32))

    def __repr__(self) -> str:
        top = 0 if self._hist is None else self._hist.numel() * self.bin_width
        return (
            f"HistogramCalibrator(num_bits={self.num_bits}, num_bins={self.num_bins}, "
            f"unsigned={self.unsigned}, grow={self.grow}, count={self._count}, "
            f"range=[0, {top:.6g}])"
        )


def _percentile_index(counts: np.ndarray, percentile: float) -> int:
    """Smallest edge index k with sum(counts[:k]) >= percentile/100 of the total."""
    cumulative = np.cumsum(counts)
    # Compare counts*100 with percentile*total rather than a normalised CDF: for p = 100 the
    # normalised CDF can end at 0.9999999999 and never reach the target.
    k = int(np.searchsorted(cumulative * 100.0, percentile * cumulative[-1], side="left"))
    return min(k, counts.size - 1) + 1


def _entropy_index(counts: np.ndarray, candidates: np.ndarray, levels: int) -> int:
    """Candidate edge index i minimising KL(P_i || Q_i) (TensorRT entropy; last minimiser)."""
    hist = counts.copy()
    if hist.size > 1:
        hist[0] = hist[1]
    total = hist.sum()
    # Q is constant over the non-empty bins of a level and P > 0 only where Q > 0 (except the
    # outlier bin, handled below), so with normalised P and Q
    #   KL = sum_j p_j log p_j - sum_levels P_level log(mean_level) + log(sum hist[:i]),
    # where P_level is the level's share of P. Prefix sums give every term in O(levels) per
    # candidate instead of O(i); the result is the same divergence, re-associated.
    cum = np.concatenate(([0.0], np.cumsum(hist)))
    cum_nonzero = np.concatenate(([0], np.cumsum(hist != 0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(hist > 0, hist * np.log(hist), 0.0)
    cum_hlogh = np.concatenate(([0.0], np.cumsum(hlogh)))
    level = np.arange(levels, dtype=np.int64)[None, :]
    chunk = max(1, (1 << 20) // levels)
    divergences = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, candidates.size, chunk):
            i = candidates[start : start + chunk]
            rows = np.arange(i.size)
            # Bin j < i is on level floor(j*L/i), so level l spans [ceil(l*i/L), ceil((l+1)*i/L)).
            lo = (level * i[:, None] + levels - 1) // levels
            hi = ((level + 1) * i[:, None] + levels - 1) // levels
            level_sum = cum[hi] - cum[lo]
            level_nonzero = cum_nonzero[hi] - cum_nonzero[lo]
            inside = cum[i]
            outliers = total - inside
            last = i - 1
            # The outliers join P in bin i-1, which Q represents by its level's mean.
            level_mass = level_sum.copy()
            level_mass[rows, (last * levels) // i] += outliers
            mean = level_sum / np.maximum(level_nonzero, 1)
            p_log_q = np.where(level_nonzero > 0, level_mass * np.log(mean), 0.0).sum(axis=1)
            p_last = hist[last] + outliers
            p_log_p = cum_hlogh[last] + np.where(p_last > 0, p_last * np.log(p_last), 0.0)
            kl = (p_log_p - p_log_q) / total - np.log(total) + np.log(inside)
            # Where P == Q the re-associated sum leaves ~1e-16 of noise; snap it to the exact 0
            # that the direct sum gives, so ties resolve by the "last minimiser" rule.
            kl[np.abs(kl) < 1e-12] = 0.0
            # P > 0 where Q = 0 makes the divergence infinite (as scipy's entropy): outliers
            # piled on an empty bin i-1, or nothing at all inside the threshold.
            kl[((hist[last] == 0) & (outliers > 0)) | (inside == 0)] = np.inf
            divergences.append(kl)
    kl = np.concatenate(divergences)
    best = kl.size - 1 - int(np.argmin(kl[::-1]))
    return int(candidates[best])


def _mse_index(counts: np.ndarray, candidates: np.ndarray, qmax: int) -> int:
    """Candidate edge index whose amax minimises the count-weighted error at bin centers."""
    centers = np.arange(counts.size, dtype=np.float64) + 0.5  # in units of the bin width
    errors = []
    for start in range(0, candidates.size, _CANDIDATE_CHUNK):
        scale = candidates[start : start + _CANDIDATE_CHUNK, None].astype(np.float64) / qmax
        quantized = np.clip(np.round(centers / scale), 0, qmax) * scale
        errors.append((counts * (quantized - centers) ** 2).sum(axis=1))
    return int(candidates[int(np.argmin(np.concatenate(errors)))])


def make_calibrator(
    method: str,
    *,
    num_bits: int = 8,
    axis: int | None = None,
    num_bins: int = 2048,
    unsigned: bool = False,
) -> Calibrator:
    """The calibrator registered for ``method`` (qdqbench.quant.registry.CALIBRATORS): MaxCalibrator
    for 'max', HistogramCalibrator for 'entropy' | 'percentile' | 'mse'."""
    cls = calibrator_class(method)  # ValueError with did-you-mean for an unknown method
    return cls.from_options(num_bits=num_bits, axis=axis, num_bins=num_bins, unsigned=unsigned)
