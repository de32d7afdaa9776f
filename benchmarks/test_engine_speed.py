"""Tests of benchmarks/engine_speed.py: the target-check logic, and a quick-mode run end to end.

benchmarks/ is not in the default test paths. Run with
``.venv/bin/python -m pytest benchmarks/test_engine_speed.py`` (the end-to-end test is marked
``slow``: it builds BERT-base artifacts and takes minutes on 2 cores; set
``QDQBENCH_ENGINE_SPEED_ARTIFACTS=DIR`` to build them once into DIR and reuse them, the cache is
keyed by recipe, versions and sources). Latencies are never asserted, only that every row, check
and overhead figure is there and well-formed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# Written out here rather than imported, so a row dropped from the script fails the test.
ROW_IDS = (
    "ort-fp32", "ort-fp32-fused", "ort-int8-qdqbench-all", "ort-int8-qdqbench-linear-matmul",
    "ort-int8-static-default", "ort-int8-static-matmul", "ov-fp32", "ov-int8-qdqbench-all",
    "ov-int8-qdqbench-linear-matmul", "ov-bf16",
)
NUMBERS = ("mean_ms", "median_ms", "p90_ms", "p99_ms", "min_ms", "std_ms", "cov", "throughput_seq_s", "wall_s")


def _engine_speed():
    spec = importlib.util.spec_from_file_location("engine_speed", HERE / "engine_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("engine_speed", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["engine_speed"])
    return sys.modules["engine_speed"]


def _row(row_id: str, batch: int, mean_ms: float, label: str | None = None) -> dict:
    return {"id": row_id, "label": label or row_id, "batch": batch, "status": "ok", "mean_ms": mean_ms}


def test_checks_use_the_faster_fp32_and_state_both_numbers():
    es = _engine_speed()
    rows = [
        _row("ort-fp32", 8, 100.0), _row("ort-fp32-fused", 8, 80.0),
        _row("ort-int8-qdqbench-all", 8, 30.0), _row("ort-int8-qdqbench-linear-matmul", 8, 40.0),
        _row("ort-int8-static-default", 8, 35.0), _row("ort-int8-static-matmul", 8, 32.0),
        _row("ov-int8-qdqbench-all", 8, 20.0), _row("ov-int8-qdqbench-linear-matmul", 8, 30.0),
        _row("ort-int8-qdqbench-all", 1, 10.0),
    ]
    overhead = {"noop": {"loop_ns_per_iteration": 500.0}}
    checks = {c["name"]: c for c in es.target_checks(rows, overhead, [1, 8])}
    assert len(checks) == 7
    vs_fp32 = checks["qdqbench-all int8 ORT ≥ 2.5× ORT fp32 best"]
    # 80 / 30 = 2.67 against the fused (faster) fp32, not 100 / 30 against the plain one.
    assert vs_fp32["status"] == "PASS" and vs_fp32["slow"]["row"] == "ort-fp32-fused"
    assert vs_fp32["value"] == pytest.approx(80 / 30, abs=1e-3)
    assert "30.00 ms" in vs_fp32["detail"] and "80.00 ms" in vs_fp32["detail"]
    assert checks["qdqbench-linear-matmul int8 ORT ≥ 2.5× ORT fp32 best"]["status"] == "FAIL"  # 2.0×
    static = checks["qdqbench-all int8 ORT at least as fast as ORT quantize_static (fastest variant)"]
    assert static["status"] == "PASS" and static["slow"]["row"] == "ort-int8-static-matmul"  # 32 vs 30
    assert checks["qdqbench-linear-matmul int8 ORT at least as fast as ORT quantize_static (fastest variant)"][
        "status"] == "FAIL"  # 32 vs 40
    assert checks["qdqbench-all int8 OpenVINO ≥ 3× ORT fp32 best"]["status"] == "PASS"  # 80 / 20 = 4
    assert checks["qdqbench-linear-matmul int8 OpenVINO ≥ 3× ORT fp32 best"]["status"] == "FAIL"  # 2.67
    over = checks["harness overhead < 2% of ORT int8 batch-1 latency"]
    assert over["status"] == "PASS" and over["value"] == pytest.approx(100 * 0.0005 / 10.0)


def test_missing_rows_make_a_check_not_applicable_rather_than_pass():
    es = _engine_speed()
    rows = [_row("ort-fp32", 1, 100.0), {"id": "ort-int8-qdqbench-all", "label": "x", "batch": 1,
                                          "status": "failed", "error": "boom"}]
    checks = es.target_checks(rows, {}, [1])
    assert all(c["status"] == "N/A" and c["passed"] is None for c in checks)
    assert all("no successful row" in c["detail"] or "needs" in c["detail"] for c in checks)


def test_markdown_renders_ok_failed_and_skipped_rows():
    es = _engine_speed()
    ok = {**_row("ort-fp32", 1, 50.0, "ORT fp32 (ORT_ENABLE_ALL)"), "precision": "fp32", "median_ms": 49.0,
          "p90_ms": 55.0, "p99_ms": 60.0, "throughput_seq_s": 20.0, "cov": 0.05, "iterations": 12,
          "matmuls_integer": 0, "matmuls_float": 96, "fused_ops": "MatMul×96", "peak_rss_mb": 812.4,
          "onnx_mb": 436.1, "load_s": 1.25, "gemm_floor_ms": 40.0, "x_floor": 1.25, "gemm_floor_gops": 540.2,
          "op_shares": {"matmul": 0.8}, "cpu_flags": ["avx2", "fma"]}
    failed = {"id": "ov-fp32", "label": "OpenVINO fp32 (f32 forced)", "batch": 1, "status": "failed",
              "error": "openvino cannot compile x"}
    skipped = {"id": "ov-bf16", "label": "OpenVINO bf16 (if the CPU has it)", "batch": 1,
               "status": "skipped", "precision": "fp32", "error": "CPU reports no BF16"}
    rows = [ok, failed, skipped]
    result = {
        "mode": "full", "model": {"name": "bert-base (random weights)",
                                   "shape": {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "vocab": 30522}},
        "started": "t0", "finished": "t1", "loadavg_start": [0.1, 0, 0], "loadavg_end": [0.2, 0, 0],
        "environment": {"machine": {"cpu": "cpu", "flags": ["avx2"]}, "versions": {}},
        "settings": {"threads": 2, "calibration": {"texts": 64},
                     "timing": {"warmup_s": 2.0, "warmup_iters": 2, "min_duration_s": 5.0, "min_iters": 10,
                                "max_duration_s": 60.0}},
        "rows": rows, "checks": es.target_checks(rows, {}, [1, 8]), "overhead": {},
    }
    md = es.render_markdown(result)
    assert "| ORT fp32 (ORT_ENABLE_ALL) | fp32 | 1 | 50.00 |" in md
    assert "failed: openvino cannot compile x" in md and "skipped: CPU reports no BF16" in md
    assert md.count("**N/A**") == 7 and "Quick mode" not in md
    # Footprint and floor columns, with the CPU flags next to the figure.
    assert "| 812 | 436.1 | 1.25 | 40.00 | 1.25 | 540.2 | 80% | avx2 fma |" in md
    assert "GEMM floor ms" in md and "CPU flags" in md


def test_floor_columns_say_why_not_for_float16_rows(tmp_path):
    es = _engine_speed()
    spec = next(s for s in es.row_specs(es.TINY) if s.precision == "bf16")
    out = es.floor_columns(spec, tmp_path / "x.onnx", 1, None, 2, tmp_path)
    assert out == {"floor_error": "no GEMM floor for bf16 (fp32 and int8 only)"}


@pytest.mark.slow
def test_quick_mode_writes_complete_results(tmp_path):
    cmd = [sys.executable, str(HERE / "engine_speed.py"), "--quick", "--out", str(tmp_path)]
    if os.environ.get("QDQBENCH_ENGINE_SPEED_ARTIFACTS"):
        cmd += ["--artifacts", os.environ["QDQBENCH_ENGINE_SPEED_ARTIFACTS"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert result["schema"] == "qdqbench.engine_speed/1"
    assert result["mode"] == "quick" and result["complete"] is True
    assert result["model"]["shape"] == {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "vocab": 30522}
    assert result["settings"]["batches"] == [1] and result["settings"]["threads"] == 2
    assert result["settings"]["seq"] == 128

    rows = {r["id"]: r for r in result["rows"]}
    assert sorted(rows) == sorted(ROW_IDS) and len(result["rows"]) == len(ROW_IDS)
    for row_id, r in rows.items():
        assert r["batch"] == 1 and r["seq"] == 128
        if r["status"] == "skipped":
            assert row_id == "ov-bf16" and r["error"] and r["precision"]
            continue
        assert r["status"] == "ok", (row_id, r.get("error"))
        for key in NUMBERS:
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] >= 0, (row_id, key)
        assert r["iterations"] >= 3 and len(r["samples_ms"]) == r["iterations"]
        assert r["precision"] and r["method"] and isinstance(r["fused_ops"], str)
        expected = "int8" if r["requested_precision"] == "int8" else r["requested_precision"]
        assert r["precision"] == expected, (row_id, r["precision"])
    for r in rows.values():
        if r["status"] == "ok":
            assert r["peak_rss_mb"] > 0 and r["onnx_mb"] > 0 and r["load_s"] > 0, r["id"]
            assert r["cpu_flags"] == result["environment"]["machine"]["flags"]
            assert r["op_shares"]["matmul"] > 0, r["id"]
            if r["requested_precision"] in ("fp32", "int8"):
                assert r["gemm_floor_ms"] > 0 and r["x_floor"] > 0, (r["id"], r.get("floor_error"))
    assert rows["ort-fp32-fused"]["attention_fused"] is True
    assert rows["ort-fp32"]["engine_info"]["transformer_fusion"] is False

    checks = result["checks"]
    assert len(checks) == 7
    for c in checks:
        assert c["status"] in ("PASS", "FAIL") and c["detail"], c
    noop = result["overhead"]["noop"]
    assert noop["loop_ns_per_iteration"] > 0 and noop["iterations"] > 0
    assert "gap_mean_ms" in result["overhead"]["profiler"], result["overhead"]["profiler"]

    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## Target checks" in md and "Quick mode" in md
    for r in result["rows"]:
        assert r["label"] in md
