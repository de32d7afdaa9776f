"""A tiny run end to end with op profiles and the opt-in GEMM floor: records, report, CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from qdqbench.cli import main
from qdqbench.core.memory import NOT_AVAILABLE
from qdqbench.core.results import load_records


def test_latency_cells_carry_profile_floor_and_energy(make_tiny_suite, tmp_path):
    suite = make_tiny_suite(timing={"floor": True, "profile_iters": 3, "best_fp32": False})
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    latency = [r for r in load_records(run_dir) if r.kind == "latency"]
    assert latency and all(r.status == "ok" for r in latency)
    for r in latency:
        prof = r.details["op_profile"]
        assert prof["status"] == "ok" and prof["by_category"]["matmul"] > 0, r.cell
        floor = r.details["gemm_floor"]
        assert floor["status"] == "ok" and floor["precision"] == ("fp32" if r.scheme_kind == "fp32" else "int8")
        assert floor["ratio"] == round(r.metric("latency_mean_ms").value / floor["floor_ms"], 3)
        assert floor["ratio"] > 0.3  # the whole model is never much faster than its own GEMMs
        energy = r.details["resources"]["energy"]
        assert energy["status"] in ("ok", NOT_AVAILABLE)
        if energy["status"] != "ok":
            assert r.metric("energy_j_per_inference") is None and energy["why"].startswith(NOT_AVAILABLE)
    # One floor timing per engine × precision × GEMM shape, cached in the run folder.
    assert list((run_dir / "artifacts" / "gemm-floor").glob("onnxruntime-*.json"))
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "#### Where the time goes" in md and "× GEMM floor" in md
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="time-shares"' in html and "Size vs fp32" in html
    with (run_dir / "where_time_goes.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["scheme"] for r in rows} >= {"fp32", "int8-max"} and all(float(r["x_floor"]) > 0 for r in rows)
    with (run_dir / "latency.csv").open(encoding="utf-8") as fh:
        assert all(float(r["x_floor"]) > 0 for r in csv.DictReader(fh))
    assert Path(run_dir / "mlperf_style.csv").read_text(encoding="utf-8").startswith("model,task,scheme")
