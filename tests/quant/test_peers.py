"""Tests for the peer recipes (ORT dynamic/static, ModelOpt): each ORT peer builds an integer model
that ONNX Runtime runs with integer kernels and close to fp32; settings reject unknown keys with
did-you-mean and round-trip; ModelOpt stays optional (one-line requirement message; the real
path runs where nvidia-modelopt is installed); bad inputs are one-line ExportErrors naming the file."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from qdqbench.core.errors import ExportError, QdqbenchError
from qdqbench.core.results import Shape
from qdqbench.quant import peer_settings
from qdqbench.quant.peer_builders import build_peer_onnx
from qdqbench.quant.peer_settings import (
    PEER_KINDS,
    OrtDynamicSettings,
    PeerSettingsError,
    missing_requirement,
    validate_settings,
)

ort = pytest.importorskip("onnxruntime")

INTEGER_KERNELS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul")


def random_feeds(batch: int, seq: int, seed: int, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, max(1, seq - 3):] = 0  # padding in the first row
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, tmp_path_factory):
    """(fp32 model, fp32 ONNX path, vocab size) of the tiny checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from qdqbench.quant.export import export_onnx

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    path = tmp_path_factory.mktemp("peers") / "fp32.onnx"
    sample = {k: torch.from_numpy(v) for k, v in random_feeds(2, 8, 0, vocab).items()}
    export_onnx(model, path, sample, output="logits")
    return model, path, vocab


@pytest.fixture(scope="module")
def calibration(tiny):
    """Length-bucketed calibration batches of different sequence lengths (as the runner makes)."""
    _, _, vocab = tiny
    return [random_feeds(4, seq, 100 + i, vocab) for i, seq in enumerate((16, 12, 9, 5))]


def check_close_to_fp32(path: Path, fp32: Path, vocab: int, kernels: tuple[str, ...]) -> dict:
    """Prepare on onnxruntime int8: integer kernels fused, predictions close to fp32."""
    from qdqbench.engines import get_backend

    backend = get_backend("onnxruntime")
    session = backend.prepare(path, "int8", [Shape(batch=1, seq=16)])
    assert session.precision == "int8"
    fused = session.info["fused_ops"]
    assert any(fused.get(k, 0) for k in kernels), fused
    ref = backend.prepare(fp32, "fp32", [Shape(batch=1, seq=16)])
    tests = [random_feeds(8, seq, 1000 + seq, vocab) for seq in (16, 11, 7)]
    q = np.concatenate([session.predict(f) for f in tests])
    r = np.concatenate([ref.predict(f) for f in tests])
    agreement = float((q.argmax(1) == r.argmax(1)).mean())
    relative = float(np.abs(q - r).max() / np.abs(r).max())
    assert agreement >= 0.8, agreement
    assert relative < 0.1, relative
    return fused


# --------------------------------------------------------------------------- ORT peers


def test_ort_dynamic_builds_an_integer_model(tiny, tmp_path):
    _, fp32, vocab = tiny
    out = tmp_path / "dyn.onnx"
    facts = build_peer_onnx("ort-dynamic", {}, fp32, out)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert facts["path"] == str(out) and len(facts["sha256"]) == 64 and facts["size_mb"] > 0
    assert facts["op_counts"].get("DynamicQuantizeLinear", 0) > 0 and facts["op_counts"].get("MatMulInteger", 0) > 0
    assert facts["calibration_samples"] == 0 and facts["settings"] == OrtDynamicSettings().model_dump()
    assert facts["preprocessed"] is True and facts["tool_version"] == ort.__version__
    assert not list(tmp_path.glob("*.tmp.onnx"))
    fused = check_close_to_fp32(out, fp32, vocab, ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"))
    assert fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] + fused["MatMulInteger"] >= 12  # 2 layers × 6


@pytest.mark.parametrize("settings", [
    {},  # minmax, uint8 activations, QDQ, per-channel: every encoder MatMul becomes QLinearMatMul
    {"calibrate_method": "entropy", "per_channel": False, "preprocess": False},
    {"calibrate_method": "percentile", "percentile": 99.99, "quant_format": "qoperator"},
], ids=["minmax-qdq", "entropy-no-preprocess", "percentile-qoperator"])
def test_ort_static_calibrates_ragged_batches_and_runs_integer_kernels(tiny, calibration, tmp_path, settings):
    _, fp32, vocab = tiny
    out = tmp_path / "static.onnx"
    facts = build_peer_onnx("ort-static", settings, fp32, out, calibration_feeds=iter(calibration))
    assert facts["calibration_samples"] == 16 and facts["calibration_batches"] == 4
    assert facts["preprocessed"] is settings.get("preprocess", True)
    if settings.get("quant_format") == "qoperator":
        assert facts["op_counts"].get("QLinearMatMul", 0) > 0
    else:
        assert facts["qdq_nodes"] > 0
    fused = check_close_to_fp32(out, fp32, vocab, ("QLinearMatMul", "MatMulIntegerToFloat"))
    if not settings:
        assert fused["QLinearMatMul"] == 16 and fused["MatMul"] == 0, fused  # 12 linear + 4 attention


def test_ort_static_needs_calibration_batches_with_the_model_inputs(tiny, tmp_path):
    _, fp32, _ = tiny
    with pytest.raises(ExportError, match="needs calibration batches for .*fp32.onnx"):
        build_peer_onnx("ort-static", {}, fp32, tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="lacks input"):
        build_peer_onnx("ort-static", {}, fp32, tmp_path / "x.onnx",
                        calibration_feeds=[{"input_ids": np.ones((1, 4), np.int64)}])
    assert not (tmp_path / "x.onnx").exists()


def test_registered_op_types_are_known_to_the_installed_onnxruntime():
    from onnxruntime.quantization import registry

    assert set(peer_settings.ORT_DYNAMIC_OP_TYPES) <= set(registry.IntegerOpsRegistry)
    assert set(peer_settings.ORT_QDQ_OP_TYPES) <= set(registry.QDQRegistry)
    assert set(peer_settings.ORT_QOPERATOR_OP_TYPES) <= set(registry.QLinearOpsRegistry)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("content", [b"", b"\x00garbage, not protobuf", None], ids=["empty", "garbage", "missing"])
def test_bad_fp32_onnx_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ExportError) as info:
        build_peer_onnx("ort-dynamic", {}, path, tmp_path / "out.onnx")
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert not (tmp_path / "out.onnx").exists()


def test_a_tool_failure_is_one_line_naming_the_file(tiny, tmp_path, monkeypatch):
    _, fp32, _ = tiny

    def explode(**_):
        raise RuntimeError("boom\nsecond line of a C++ trace")

    monkeypatch.setitem(PEER_KINDS, "ort-dynamic", dataclasses.replace(PEER_KINDS["ort-dynamic"], build=explode))
    with pytest.raises(ExportError) as info:
        build_peer_onnx("ort-dynamic", {}, fp32, tmp_path / "out.onnx")
    assert str(info.value) == f"ort-dynamic quantization of {fp32} failed: RuntimeError: boom"


# --------------------------------------------------------------------------- settings


def test_settings_reject_unknown_keys_with_did_you_mean():
    with pytest.raises(PeerSettingsError) as info:
        validate_settings("ort-static", {"per_chanel": True, "calibrate_methd": "entropy"})
    assert info.value.problems == ["per_chanel: unknown key (did you mean 'per_channel'?)",
                                   "calibrate_methd: unknown key (did you mean 'calibrate_method'?)"]
    assert isinstance(info.value, QdqbenchError) and isinstance(info.value, ValueError)
    with pytest.raises(PeerSettingsError, match="weight_typ: unknown key \\(did you mean 'weight_type'\\?\\)"):
        validate_settings("ort-dynamic", {"weight_typ": "int8"})
    with pytest.raises(PeerSettingsError, match="algoritm: unknown key \\(did you mean 'algorithm'\\?\\)"):
        validate_settings("modelopt", {"algoritm": "max"})


def test_settings_reject_bad_values_in_one_line_each():
    with pytest.raises(PeerSettingsError, match="calibrate_method: Input should be 'minmax', 'entropy' or "
                                                "'percentile', got 'max'"):
        validate_settings("ort-static", {"calibrate_method": "max"})
    with pytest.raises(PeerSettingsError, match="'Matmul' is not an op type quantize_dynamic quantizes "
                                                "\\(did you mean 'MatMul'\\?\\)"):
        validate_settings("ort-dynamic", {"op_types": ["Matmul"]})
    with pytest.raises(PeerSettingsError, match="'Softmax' is not an op type quantize_static \\(qdq format\\)"):
        validate_settings("ort-static", {"op_types": ["MatMul", "Softmax"]})
    assert validate_settings("ort-static", {"op_types": ["MatMul", "Softmax"], "quant_format": "qoperator"})
    with pytest.raises(PeerSettingsError, match="calibration_method only apply with api: onnx"):
        validate_settings("modelopt", {"calibration_method": "entropy"})
    with pytest.raises(PeerSettingsError, match="config only apply with api: torch"):
        validate_settings("modelopt", {"api": "onnx", "config": "INT8_SMOOTHQUANT_CFG"})
    with pytest.raises(PeerSettingsError, match="unknown peer scheme kind 'ort-dynamc' "
                                                "\\(did you mean 'ort-dynamic'\\?\\)"):
        validate_settings("ort-dynamc", {})
    with pytest.raises(PeerSettingsError, match="samples: Input should be greater than or equal to 1"):
        validate_settings("ort-static", {"samples": 0})


@pytest.mark.parametrize("kind,data", [
    ("ort-dynamic", {"per_channel": True, "op_types": ["MatMul", "Gather"]}),
    ("ort-static", {"activation_type": "int8", "symmetric_activations": True, "calibrate_method": "percentile"}),
    ("modelopt", {"config": "INT8_SMOOTHQUANT_CFG", "algorithm": "smoothquant"}),
    ("modelopt", {"api": "onnx", "calibration_method": "entropy", "calibration_eps": ["cuda:0", "cpu"]}),
])
def test_settings_round_trip_and_are_frozen(kind, data):
    s = validate_settings(kind, data)
    assert validate_settings(kind, s.model_dump()) == s
    assert validate_settings(kind, s) is s
    assert type(s).model_validate_json(s.model_dump_json()) == s
    with pytest.raises(ValidationError):
        s.seed = 3  # type: ignore[misc]


def test_importing_peers_imports_no_runtime():
    code = ("import sys, qdqbench.quant.peer_settings as p; p.validate_settings('modelopt', {}); "
            "p.missing_requirement('modelopt'); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'modelopt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_calibration_plan_follows_the_settings():
    assert peer_settings.calibration_plan("ort-dynamic") is None
    assert peer_settings.calibration_plan("ort-static", {"samples": 32, "batch_size": 8, "seed": 4}) == (32, 8, 4)
    assert peer_settings.calibration_plan("modelopt") == (128, 16, 0)


# --------------------------------------------------------------------------- ModelOpt


def test_modelopt_missing_is_the_one_line_requirement(tiny, tmp_path, monkeypatch):
    real = peer_settings._module_available
    monkeypatch.setattr(peer_settings, "_module_available", lambda name: False if name == "modelopt" else real(name))
    assert missing_requirement("ort-dynamic") is None and missing_requirement("ort-static") is None
    msg = "scheme kind 'modelopt' needs nvidia-modelopt: pip install 'qdqbench[modelopt]'"
    assert missing_requirement("modelopt") == msg
    assert missing_requirement("modelopt", {"api": "onnx"}) == \
        "scheme kind 'modelopt' needs nvidia-modelopt[onnx]: pip install 'nvidia-modelopt[onnx]'"
    model, fp32, _ = tiny
    with pytest.raises(ExportError) as info:
        build_peer_onnx("modelopt", {}, fp32, tmp_path / "mo.onnx", calibration_feeds=[], torch_model=model)
    assert str(info.value) == msg
    assert "modelopt" not in sys.modules or real("modelopt")  # checked without importing it


def _fake_modelopt(monkeypatch, calls: dict) -> None:
    """A stand-in ``modelopt`` package recording how qdqbench calls ModelOpt's documented APIs."""
    def module(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    for name in ("modelopt", "modelopt.torch", "modelopt.onnx", "onnx_graphsurgeon"):
        module(name)
    mtq = module("modelopt.torch.quantization")
    mtq.INT8_DEFAULT_CFG = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    mtq.INT8_SMOOTHQUANT_CFG = {"quant_cfg": [], "algorithm": "smoothquant"}

    def quantize(model, config, forward_loop):
        calls["config"] = config
        seen = []
        original = model.forward
        model.forward = lambda **kw: seen.append(kw["input_ids"].shape) or original(**kw)
        forward_loop(model)
        del model.forward
        calls["shapes"] = seen
        return model

    mtq.quantize = quantize
    onnxq = module("modelopt.onnx.quantization")

    def onnx_quantize(**kwargs):
        calls["onnx"] = kwargs
        Path(kwargs["output_path"]).write_bytes(Path(kwargs["onnx_path"]).read_bytes())

    onnxq.quantize = onnx_quantize


def test_modelopt_torch_path_calibrates_a_copy_and_exports(tiny, calibration, tmp_path, monkeypatch):
    model, fp32, _ = tiny
    calls: dict = {}
    _fake_modelopt(monkeypatch, calls)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    facts = build_peer_onnx("modelopt", {"algorithm": "smoothquant"}, fp32, tmp_path / "mo.onnx",
                            calibration_feeds=calibration, torch_model=model)
    assert calls["config"]["algorithm"] == "smoothquant" and calls["config"]["quant_cfg"]
    assert [tuple(s) for s in calls["shapes"]] == [(4, 16), (4, 12), (4, 9), (4, 5)]
    assert sys.modules["modelopt.torch.quantization"].INT8_DEFAULT_CFG["algorithm"] == "max"  # preset untouched
    assert facts["calibration_samples"] == 16 and facts["tool"] == "modelopt.torch.quantization.quantize"
    assert facts["algorithm"] == "smoothquant"
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())
    ort.InferenceSession(facts["path"], providers=["CPUExecutionProvider"])
    with pytest.raises(ExportError, match="needs the fp32 torch model"):
        build_peer_onnx("modelopt", {}, fp32, tmp_path / "mo2.onnx", calibration_feeds=calibration)


def test_modelopt_onnx_path_pads_ragged_batches(tiny, calibration, tmp_path, monkeypatch):
    _, fp32, _ = tiny
    calls: dict = {}
    _fake_modelopt(monkeypatch, calls)
    facts = build_peer_onnx("modelopt", {"api": "onnx"}, fp32, tmp_path / "mo.onnx", calibration_feeds=calibration)
    kw = calls["onnx"]
    assert kw["quantize_mode"] == "int8" and kw["calibration_method"] == "max" and kw["high_precision_dtype"] == "fp32"
    assert kw["calibration_eps"] == ["cpu"]
    assert kw["calibration_shapes"] == "input_ids:4x16,attention_mask:4x16,token_type_ids:4x16"
    assert {k: v.shape for k, v in kw["calibration_data"].items()} == {k: (16, 16) for k in calibration[0]}
    assert kw["calibration_data"]["attention_mask"][12:, 5:].sum() == 0  # the padded positions are masked
    assert "padded to 16 tokens" in facts["notes"][0]


def test_modelopt_real_torch_path(tiny, calibration, tmp_path):
    """Where nvidia-modelopt is installed: INT8_DEFAULT_CFG gives Q/DQ that ORT runs as int8."""
    pytest.importorskip("modelopt.torch.quantization")
    import torch

    model, fp32, vocab = tiny
    probe = {k: torch.from_numpy(v) for k, v in calibration[0].items()}
    with torch.no_grad():
        before = model(**probe).logits
    facts = build_peer_onnx("modelopt", {}, fp32, tmp_path / "mo.onnx", calibration_feeds=calibration,
                            torch_model=model)
    with torch.no_grad():
        assert torch.equal(model(**probe).logits, before)  # ModelOpt converted a copy, not the fp32 model
    assert facts["qdq_nodes"] > 0 and facts["algorithm"] == "max"
    assert any("quantizers" in n for n in facts["notes"]), facts["notes"]  # ModelOpt's "Inserted N quantizers"
    check_close_to_fp32(Path(facts["path"]), fp32, vocab, ("QLinearMatMul", "MatMulIntegerToFloat"))
