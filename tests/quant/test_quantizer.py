"""Tests for FakeQuantize, TensorQuantizer and QuantLinear: numerics equal to ONNX Q/DQ (checked
against ONNX Runtime's own kernels), straight-through gradients, modes and their context managers,
calibration errors that name the quantizer, state-dict ranges and the repr."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from qdqbench.core.errors import CalibrationError
from qdqbench.quant.quantizer import (
    FakeQuantize,
    QuantLinear,
    TensorQuantizer,
    calibrating,
    finish_calibration,
    name_quantizers,
    quantizers,
    quantizers_disabled,
    sqnr_db,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine, 2 threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ort_qdq(x: np.ndarray, scale: np.ndarray, axis: int | None = None) -> np.ndarray:
    """QuantizeLinear → DequantizeLinear (int8, zero point 0) run by ONNX Runtime's CPU kernels."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    scale = np.asarray(scale, np.float32)
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, scale.shape, scale.reshape(-1).tolist()),
             helper.make_tensor("z", TensorProto.INT8, scale.shape, [0] * scale.size)]
    shape = [None] * x.ndim
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def calibrated(amax, **kwargs) -> TensorQuantizer:
    q = TensorQuantizer(**kwargs)
    q.qname = "test.q"
    q.set_amax(torch.as_tensor(amax, dtype=torch.float32))
    return q


# ---------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("amax", [3.0, 7.3, 0.917, 12.345, 1.1, 0.0123])
def test_fake_quant_equals_onnx_runtime_per_tensor(amax):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(50_000) * amax / 2).astype(np.float32)
    x[:2] = [10 * amax, -10 * amax]  # saturated
    ours = calibrated(amax)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, ort_qdq(x, np.float32(amax) / np.float32(127)))


def test_round_half_to_even_and_saturation():
    scale = 2.0**-5  # exact in float32, so k.5 * scale is an exact tie
    q = calibrated(127 * scale)
    steps = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 300.0, -128.5, -300.0])
    out = q(steps * scale) / scale
    assert out.tolist() == [0, 2, 2, 0, -2, -2, 126, 127, 127, -128, -128]
    np.testing.assert_array_equal((out * scale).numpy(), ort_qdq((steps * scale).numpy(), np.float32(scale)))


def test_fake_quant_equals_onnx_runtime_per_channel():
    rng = np.random.default_rng(1)
    w_t = (rng.standard_normal((24, 16)) * rng.uniform(0.1, 3, 16)).astype(np.float32)  # (in, out)
    amax = np.abs(w_t).max(axis=0)
    q = calibrated(amax, axis=1, channels=16, is_weight=True)
    ours = q(torch.from_numpy(w_t)).numpy()
    np.testing.assert_array_equal(ours, ort_qdq(w_t, amax.astype(np.float32) / np.float32(127), axis=1))
    # Every column uses its own grid: the largest magnitude of each column is exactly representable.
    np.testing.assert_allclose(np.abs(ours).max(axis=0), amax, rtol=1e-6)


def test_lower_bit_widths_use_their_own_grid():
    q = calibrated(7.0, num_bits=4)
    assert (q.qmin, q.qmax) == (-8, 7)
    x = torch.linspace(-20, 20, 1001)
    levels = torch.unique(q(x))
    assert len(levels) == 16 and levels.min().item() == -8.0 and levels.max().item() == 7.0
    with pytest.raises(ValueError, match="num_bits"):
        TensorQuantizer(num_bits=9)


def test_half_precision_inputs_are_quantized_in_float32():
    q = calibrated(2.0)
    x = torch.randn(64) * 0.5
    np.testing.assert_array_equal(q(x.to(torch.bfloat16)).float().numpy(),
                                  q(x.to(torch.bfloat16).float()).to(torch.bfloat16).float().numpy())


# ---------------------------------------------------------------------------------- gradients


def test_straight_through_gradient_is_zero_where_clipped():
    q = calibrated(1.0)
    x = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.4, 1.0, 1.003, 2.0], requires_grad=True)
    q(x).sum().backward()
    # Inside [-128, 127] steps (rounded) the gradient passes; beyond it, zero (torch's convention).
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert not q.amax.requires_grad


def test_same_gradient_as_torch_fake_quant():
    x = torch.randn(1000) * 2
    scale = torch.tensor(1.5 / 127)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    (FakeQuantize.apply(a, scale, -128, 127, None) * torch.arange(1000.0)).sum().backward()
    (torch.fake_quantize_per_tensor_affine(b, scale, 0, -128, 127) * torch.arange(1000.0)).sum().backward()
    assert torch.equal(a.grad, b.grad)
    assert (a.grad == 0).sum() > 0  # some inputs were clipped


def test_qat_gradients_flow_through_quant_linear():
    torch.manual_seed(0)
    lin = QuantLinear.from_linear(nn.Linear(8, 4))
    lin.input_quantizer.set_amax(1.0)
    x = torch.randn(16, 8) * 0.3
    x[0, 0] = 5.0  # clipped by the input quantizer
    x.requires_grad_()
    lin(x).pow(2).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert lin.bias.grad.abs().sum() > 0
    assert x.grad[0, 0] == 0 and (x.grad[1:] != 0).all()


# ---------------------------------------------------------------------------------- modes


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(QuantLinear(8, 8), nn.ReLU(), QuantLinear(8, 2))
    for m in net:
        if isinstance(m, QuantLinear):
            m.calibrate_weight()
    name_quantizers(net)
    return net


def test_calibrate_then_quantize():
    net = tiny_net()
    with pytest.raises(CalibrationError, match="'0.input_quantizer' is used before calibration"):
        net(torch.randn(2, 8))
    x = torch.randn(32, 8)
    with calibrating(net), torch.no_grad():
        assert net[0].input_quantizer.mode == "calibrate" and net[0].weight_quantizer.mode == "disabled"
        net(x)
    amaxes = finish_calibration(net)
    assert set(amaxes) == {"0.input_quantizer", "0.weight_quantizer", "2.input_quantizer", "2.weight_quantizer"}
    assert amaxes["0.input_quantizer"] == pytest.approx(x.abs().max().item())
    assert all(q.mode == "quantize" for _, q in quantizers(net))
    with torch.no_grad():
        quant = net(x)
        with quantizers_disabled(net):
            ref = net(x)
    assert 25 < sqnr_db(ref, quant) < 80  # quantized, and close


def test_context_managers_restore_modes_when_the_body_raises():
    net = tiny_net()
    net[2].input_quantizer.mode = "disabled"
    before = {n: q.mode for n, q in quantizers(net)}
    for manager in (calibrating, quantizers_disabled):
        with pytest.raises(RuntimeError, match="boom"):
            with manager(net):
                raise RuntimeError("boom")
        assert {n: q.mode for n, q in quantizers(net)} == before
    with calibrating(net):
        assert net[2].input_quantizer.mode == "disabled"  # a switched-off quantizer stays off


def test_calibrating_starts_from_fresh_statistics():
    net = tiny_net()
    with pytest.raises(RuntimeError):
        with calibrating(net), torch.no_grad():
            net(torch.full((2, 8), 100.0))
            raise RuntimeError("aborted")
    with calibrating(net), torch.no_grad():
        net(torch.full((2, 8), 0.5))
    finish_calibration(net)
    assert net[0].input_quantizer.amax.item() == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0, float("inf")])
def test_unusable_amax_is_an_error_naming_the_quantizer(bad):
    q = TensorQuantizer()
    q.qname = "encoder.layer.3.output.dense.input_quantizer"
    with pytest.raises(CalibrationError, match=r"'encoder\.layer\.3\.output\.dense\.input_quantizer'"):
        q.set_amax(bad)


def test_calibration_errors_name_the_quantizer():
    net = tiny_net()
    with pytest.raises(CalibrationError, match="'0.input_quantizer' saw no data"):
        finish_calibration(net)
    with calibrating(net), torch.no_grad():
        net(torch.zeros(4, 8))  # all-zero input: amax 0 for the first layer's input
    with pytest.raises(CalibrationError, match="'0.input_quantizer'"):
        finish_calibration(net)


def test_amax_lives_in_the_state_dict():
    net = tiny_net()
    with calibrating(net), torch.no_grad():
        net(torch.randn(8, 8))
    finish_calibration(net)
    state = net.state_dict()
    assert state["0.input_quantizer.amax"].shape == ()
    assert state["0.weight_quantizer.amax"].shape == (8,)
    fresh = tiny_net()
    fresh.load_state_dict(state)
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


def test_repr_shows_bits_axis_amax_and_mode():
    q = calibrated(torch.tensor([0.5, 2.0]), axis=1, channels=2, is_weight=True)
    assert repr(q) == "TensorQuantizer(8bit, axis=1, amax=[0.5, 2](2), calib=max, mode=quantize)"
    a = TensorQuantizer(num_bits=6, calib_method="entropy")
    assert "6bit, per-tensor, uncalibrated, calib=entropy" in repr(a)
    a.mode = "disabled"
    assert "mode=disabled" in repr(a)


def test_amax_is_checked_once_per_value_but_every_change_is_seen():
    q = TensorQuantizer()
    q.qname = "q"
    q.set_amax(2.0)
    x = torch.randn(16)
    q(x)
    assert q._checked is not None  # checked once, remembered for the next calls
    # A state dict written in place with an unusable range is caught on the next call.
    q.load_state_dict({"amax": torch.tensor(float("nan"))})
    with pytest.raises(CalibrationError, match="'q' is used before calibration"):
        q(x)
    q.amax.fill_(-1.0)  # any in-place write bumps the version counter
    with pytest.raises(CalibrationError, match="amax is -1.0"):
        q(x)
    q.set_amax(1.0)
    assert torch.equal(q(torch.tensor([0.3])), torch.tensor([round(0.3 * 127) / 127]))
    # A copy checks its own buffer afresh.
    assert copy.deepcopy(q)._checked is None


def test_inference_keeps_no_ste_mask_and_training_still_gets_gradients():
    q = TensorQuantizer()
    q.set_amax(1.0)
    x = torch.tensor([0.5, 2.0, -3.0], requires_grad=True)
    with torch.no_grad():
        y = q(x)
    assert y.grad_fn is None
    y = q(x)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0]  # straight-through inside the range, zero outside
