"""The quantization facts every layer shares, in one torch-free place: calibration methods, Q/DQ
placement groups and the bit range.

``CALIBRATORS`` binds each calibration method name to the calibrator class that collects its
statistic (``"module:Class"``, imported only when a calibrator is built, so the suite schema can
read this module without importing torch) and to the ``compute_amax`` parameters the method takes,
with their defaults (percentile's ``percentile``). Adding a calibrator is one ``Calibrator``
subclass in ``qdqbench.quant.calib`` plus one entry here; the suite schema (``calibration.method``,
``auto.calibrators``), ``make_calibrator`` and ``auto``'s ``CalibratorSpec`` all read this table.

Bits: schemes and quantizers use ``MIN_BITS..MAX_BITS`` = 4..8. 8 is what the engines run and the
only width ``export`` writes to ONNX; 4..7 are fake-quant experiments in torch (and 7-bit weights,
ONNX Runtime's "reduce_range", are stored in int8). Below 4 bits the symmetric grid has at most
three non-zero levels per side, and no recipe here is meant for it. Calibrators themselves accept
2..16 (``calib._check_num_bits``): that is the range their histogram arithmetic is exact for,
not a scheme setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from qdqbench.core.errors import did_you_mean

__all__ = [
    "CALIBRATION_METHODS", "CALIBRATORS", "CalibratorEntry", "DEFAULT_AUTO_CALIBRATORS", "GROUPS",
    "MAX_BITS", "MIN_BITS",
    "calibrator_class", "calibrator_entry", "check_bits", "check_groups", "parse_calibrator",
]


@dataclass(frozen=True)
class CalibratorEntry:
    """One calibration method: the class that collects for it and the parameters of its amax."""

    method: str
    calibrator: str  # "module:Class" of a qdqbench.quant.calib.Calibrator subclass
    # What the calibrator collects. Methods with the same statistic can finish one collected model
    # (auto's Calibrations runs the data once per statistic, not once per method).
    statistic: str
    params: Mapping[str, float] = field(default_factory=dict)  # compute_amax keywords → defaults
    summary: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


_HISTOGRAM = "qdqbench.quant.calib:HistogramCalibrator"

CALIBRATORS: Mapping[str, CalibratorEntry] = MappingProxyType({e.method: e for e in (
    CalibratorEntry("max", "qdqbench.quant.calib:MaxCalibrator", "max",
                    summary="running max of |x| (per tensor or per channel)"),
    CalibratorEntry("entropy", _HISTOGRAM, "histogram",
                    summary="histogram of |x|; the range minimising KL divergence (TensorRT)"),
    CalibratorEntry("percentile", _HISTOGRAM, "histogram", {"percentile": 99.99},
                    summary="histogram of |x|; the edge where the CDF reaches the percentile"),
    CalibratorEntry("mse", _HISTOGRAM, "histogram",
                    summary="histogram of |x|; the range with the least expected squared error"),
)})

CALIBRATION_METHODS: tuple[str, ...] = tuple(CALIBRATORS)

# Q/DQ placement groups (qdqbench.quant.qdqbert): encoder linears, the two attention matmuls, the
# inputs of the two residual adds of each layer.
GROUPS: tuple[str, ...] = ("linear", "matmul", "residual")

MIN_BITS = 4
MAX_BITS = 8

# What ``recipe: auto`` tries when a suite names no calibrators (``auto.calibrators``).
DEFAULT_AUTO_CALIBRATORS: tuple[str, ...] = ("max", "percentile-99.99", "percentile-99.999", "entropy", "mse")


def calibrator_entry(method: str) -> CalibratorEntry:
    """The registry entry of ``method``; ValueError (one line, did-you-mean) for an unknown one."""
    entry = CALIBRATORS.get(method)
    if entry is None:
        raise ValueError(f"unknown calibration method {method!r}; expected one of "
                         f"{', '.join(CALIBRATION_METHODS)}{did_you_mean(str(method), CALIBRATION_METHODS)}")
    return entry


def calibrator_class(method: str) -> type:
    """The calibrator class of ``method``, imported now (this imports torch)."""
    module, _, name = calibrator_entry(method).calibrator.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_calibrator(spec: str) -> tuple[str, dict[str, float]]:
    """``'max'``, ``'percentile'``, ``'percentile-99.999'`` (or ``'percentile:99.999'``) →
    (method, its compute_amax parameters with defaults filled in); ValueError otherwise."""
    method, sep, value = str(spec).replace(":", "-").partition("-")
    entry = CALIBRATORS.get(method)
    if entry is None:
        raise ValueError(f"unknown calibrator '{spec}'{did_you_mean(method, CALIBRATION_METHODS)}")
    params = dict(entry.params)
    if sep:
        if len(params) != 1:
            raise ValueError(f"calibrator '{spec}': {method} takes no parameter")
        try:
            params[next(iter(params))] = float(value)
        except ValueError:
            raise ValueError(f"calibrator '{spec}': '{value}' is not a number") from None
    return method, params


def check_bits(bits: Any, what: str = "bits") -> int:
    """``bits`` if it is an integer in MIN_BITS..MAX_BITS, else ValueError naming ``what``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


def check_groups(groups: Any) -> tuple[str, ...]:
    """``groups`` as a tuple if every one is a known placement group, else ValueError."""
    groups = tuple(groups)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown Q/DQ group(s) {unknown}; known: {', '.join(GROUPS)}")
    return groups
