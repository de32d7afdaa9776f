"""``qdqbench doctor``: reporting and exit codes (pure), engine isolation, and end to end here:
ONNX Runtime on the CPU passes; a suite that needs TensorRT fails on a machine without it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qdqbench.cli.doctor import exit_code
from qdqbench.run import doctor
from qdqbench.run.doctor import (
    AGREEMENT_DB,
    TORCH_CUDA,
    EngineResult,
    format_line,
    known_engines,
    suite_engines,
    summary_line,
)

REPO = Path(__file__).resolve().parents[2]


def _tensorrt_reason() -> str | None:
    from qdqbench.engines import get_backend

    return get_backend("tensorrt").unavailable_reason()


# ---- pure reporting ----------------------------------------------------------------------------

def test_known_engines_cover_every_backend_and_variant():
    engines = known_engines()
    assert engines[0] == "torch" and engines[-1] == TORCH_CUDA
    for name in ("onnxruntime", "onnxruntime@cuda", "onnxruntime@trt", "openvino", "openvino@bf16",
                 "tensorrt", "tensorrt@fp16", "tensorrt@bf16"):
        assert name in engines
    assert len(engines) == len(set(engines))


def test_suite_engines_follow_backends_and_torch_timing(make_tiny_suite):
    from qdqbench.config.suite import load_suite

    suite = load_suite(make_tiny_suite(backends=("torch", "tensorrt", "onnxruntime@trt")))
    assert suite_engines(suite) == [("torch", True), ("tensorrt", True), ("onnxruntime@trt", True)]
    cuda = load_suite(make_tiny_suite(timing={"torch": {"device": "cuda"}}))
    assert suite_engines(cuda)[-1] == (TORCH_CUDA, True)
    auto = load_suite(make_tiny_suite(timing={"torch": {"device": "auto"}}))
    assert suite_engines(auto)[-1] == (TORCH_CUDA, False)  # used when present, not required
    cpu = load_suite(make_tiny_suite(timing={"torch": {"device": "cpu"}}))
    assert TORCH_CUDA not in dict(suite_engines(cpu))


def test_lines_and_exit_codes():
    ok = EngineResult("onnxruntime", True, "PASS", version="onnxruntime 1.32.0", device="cpu (EPYC)",
                      precision="int8", sqnr_db=40.84, latency_mean_ms=0.3421)
    assert format_line(ok) == ("onnxruntime: PASS onnxruntime 1.32.0, cpu (EPYC), int8, SQNR 40.8 dB vs "
                               f"fake-quant (>= {AGREEMENT_DB:g} dB), 0.342 ms mean at b4s16")
    missing = EngineResult("tensorrt", True, "FAIL", reason="TensorRT not importable: pip install 'qdqbench[gpu]'")
    assert format_line(missing) == "tensorrt: FAIL TensorRT not importable: pip install 'qdqbench[gpu]'"
    broken = EngineResult("onnxruntime@trt", True, "FAIL", version="onnxruntime-gpu 1.31.1", device="NVIDIA T4",
                          reason="engine build failed", fix="do X")
    assert format_line(broken) == ("onnxruntime@trt: FAIL engine build failed; fix: do X "
                                   "[onnxruntime-gpu 1.31.1, NVIDIA T4]")
    skip = EngineResult("torch-cuda", False, "SKIP", reason="torch is a CPU-only build", fix="install CUDA torch")
    assert format_line(skip).startswith("torch-cuda: SKIP torch is a CPU-only build; fix: install CUDA torch")
    for r in (ok, missing, broken, skip):
        assert "\n" not in format_line(r)
    assert exit_code([ok, skip]) == 0
    assert exit_code([ok, skip, missing]) == 2
    assert exit_code([]) == 0
    assert summary_line([ok, missing], "suites/glue.yaml") == (
        "doctor: 1 PASS, 1 FAIL, 0 SKIP; this machine cannot run suites/glue.yaml: tensorrt failed")
    assert "can run s.yaml" in summary_line([ok], "s.yaml")
    infinite = EngineResult("openvino", False, "PASS", sqnr_db=float("inf")).to_dict()
    assert infinite["sqnr_db"] is None and infinite["info"]["outputs_identical"] is True
    json.dumps(infinite, allow_nan=False)


def test_fixes_for_failures():
    assert "Turing" in doctor._fix("tensorrt", "tensorrt: INT8 needs ... (compute capability >= 7.5 ...)")
    assert doctor._fix("onnxruntime@trt", "TensorrtExecutionProvider did not load (libnvinfer.so.10)").startswith(
        "pip install 'qdqbench[gpu]' into a fresh environment")
    assert doctor._fix("tensorrt", "already says: pip install 'qdqbench[gpu]'") == ""
    assert doctor._fix(TORCH_CUDA, "no GPU") == doctor.TORCH_CUDA_FIX


# ---- isolation: one engine's crash or hang is that engine's line ------------------------------

def test_a_crashing_check_process_is_one_line(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault in libnvinfer' >&2\nkill -SEGV $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(fake))
    res = doctor._child(["check", "--engine", "tensorrt", "--workdir", str(tmp_path)], tmp_path / "o.json", 30)
    assert res == {"error": "check process crashed (SIGSEGV): Segmentation fault in libnvinfer"}


def test_a_hanging_check_process_times_out(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(fake))
    res = doctor._child(["build", "--workdir", str(tmp_path)], tmp_path / "o.json", 0.5)
    assert res["error"].startswith("timed out after 0.5 s")


def test_other_engines_go_on_after_one_crashes(monkeypatch):
    calls = []

    def fake_child(argv, out, timeout_s):
        calls.append(argv[0] if argv[0] == "build" else argv[2])
        if argv[0] == "build":
            return {"version": "torch 0", "qdq_nodes": 80}
        if argv[2] == "tensorrt":
            return {"error": "check process crashed (SIGSEGV): boom"}
        if argv[2] == "openvino":
            return {"unavailable": "openvino is not installed: pip install 'qdqbench[cpu]' (or 'qdqbench[openvino]')"}
        return {"version": "onnxruntime 1", "device": "cpu", "precision": "int8", "sqnr_db": 40.0,
                "latency_mean_ms": 0.5, "timing_method": "m"}

    monkeypatch.setattr(doctor, "_child", fake_child)
    results = doctor.check_engines([("torch", True), ("tensorrt", True), ("openvino", False), ("onnxruntime", True)])
    assert calls == ["build", "tensorrt", "openvino", "onnxruntime"]
    assert [r.status for r in results] == ["PASS", "FAIL", "SKIP", "PASS"]
    assert results[1].reason == "check process crashed (SIGSEGV): boom"
    assert exit_code(results) == 2


def test_a_failed_build_fails_every_engine(monkeypatch):
    monkeypatch.setattr(doctor, "_child", lambda argv, out, t: {"error": "ExportError: ONNX export failed"})
    results = doctor.check_engines([("torch", True), ("onnxruntime", True)])
    assert [r.status for r in results] == ["FAIL", "FAIL"]
    assert results[0].reason == "tiny Q/DQ model build failed: ExportError: ONNX export failed"


def test_doctor_imports_no_torch_or_runtime():
    code = ("import sys, qdqbench.run.doctor, qdqbench.cli;"
            "print([m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


# ---- end to end on this machine ----------------------------------------------------------------

def _doctor(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qdqbench.cli", "doctor", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_onnxruntime_cpu_passes_end_to_end():
    pytest.importorskip("onnxruntime")
    proc = _doctor("--engine", "onnxruntime", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 0 and data["agreement_threshold_db"] == AGREEMENT_DB
    (ort_row,) = data["engines"]  # --engine: only that one (the tiny model is built anyway)
    assert ort_row["engine"] == "onnxruntime" and ort_row["status"] == "PASS", ort_row
    assert ort_row["precision"] == "int8" and ort_row["sqnr_db"] >= AGREEMENT_DB
    assert ort_row["latency_mean_ms"] > 0 and "run_with_iobinding" in ort_row["timing_method"]
    assert ort_row["version"].startswith("onnxruntime")
    assert ort_row["seconds"] < 60  # fast on this 2-core CPU


@pytest.mark.slow
def test_suite_needing_tensorrt_fails_here_with_one_line(make_tiny_suite):
    reason = _tensorrt_reason()
    if reason is None:
        pytest.skip("TensorRT is usable here: the suite would pass")
    suite = make_tiny_suite(backends=("torch", "tensorrt"))
    proc = _doctor(str(suite))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("# qdqbench doctor: ")
    assert lines[1].startswith("torch: PASS ")
    assert lines[2] == f"tensorrt: FAIL {reason}"
    assert lines[-1].startswith("doctor: 1 PASS, 1 FAIL, 0 SKIP; this machine cannot run ")


def test_bad_input_is_one_line_exit_2(tmp_path):
    proc = _doctor(str(tmp_path / "missing.yaml"), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    proc = _doctor("--engine", "onnxrntime", timeout=60)
    assert proc.returncode == 2 and "did you mean 'onnxruntime'" in proc.stderr
