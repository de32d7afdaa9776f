"""The one calibration sequence: fp32 model → calibrated QDQBERT variant.

``build_variant`` is what a fixed scheme runs and what ``recipe: auto`` runs for each candidate
calibrator (``collect`` once per statistic kind, ``finish`` per calibrator): quantize a deep copy
(the fp32 model is never modified), run the calibration data through it with the quantizers
collecting, compute every amax, then apply the scheme's post-calibration recipes (fused QKV,
GELU10 clipping).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qdqbench.quant.qdqbert import QDQSettings, quantize_bert
from qdqbench.quant.quantizer import calibrating, finish_calibration, quantizers
from qdqbench.quant.recipes import apply_post_calibration

RunCalibration = Callable[[nn.Module], None]  # runs the calibration batches through a model


def collect(fp32_model: nn.Module, settings: QDQSettings, run_calibration: RunCalibration,
            collector: str | None = None) -> nn.Module:
    """A QDQ copy of ``fp32_model`` whose activation quantizers have seen the calibration data.

    ``collector`` overrides the statistic collected (``max`` or a histogram method; every
    histogram method collects the same histogram), default the settings' method.
    """
    if collector is not None:
        settings = dataclasses.replace(settings, calib_method=collector)
    model = quantize_bert(copy.deepcopy(fp32_model), settings)
    with calibrating(model), torch.no_grad():
        run_calibration(model)
    return model


def finish(model: nn.Module, settings: QDQSettings, method: str, **params: Any) -> dict[str, Any]:
    """Compute amaxes with ``method`` on a collected model (in place), then the post-calibration
    recipes; the recipes' changes ({} when none)."""
    for _, q in quantizers(model):
        if not q.is_weight:
            q.calib_method = method  # what extra_repr reports
    finish_calibration(model, method, **params)
    return apply_post_calibration(model, settings)


def build_variant(fp32_model: nn.Module, settings: QDQSettings, run_calibration: RunCalibration,
                  method: str, **params: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A calibrated QDQBERT copy of ``fp32_model`` and the post-calibration changes."""
    model = collect(fp32_model, settings, run_calibration)
    return model, finish(model, settings, method, **params)
