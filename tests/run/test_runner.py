"""End to end on a tiny random BERT: run, records, verdicts, failures that don't stop the run, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qdqbench.cli import main
from qdqbench.config.suite import expand, load_suite
from qdqbench.core.results import ResultStore, load_records
from qdqbench.run.runner import Runner


def _run_cli(*args: str) -> int:
    return main(list(args))


def _only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_tiny_run_end_to_end(tiny_suite, tmp_path):
    out = tmp_path / "runs"
    assert _run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    run_dir = _only_run_dir(out)
    records = {r.cell: r for r in load_records(run_dir)}
    suite = load_suite(tiny_suite)
    assert set(records) == {c.id for c in expand(suite)}
    assert all(r.status == "ok" for r in records.values()), [r.error for r in records.values() if r.error]

    fp32 = records["tiny/sst2/fp32/torch/accuracy"]
    assert fp32.precision == "fp32" and fp32.verdict is None
    acc = fp32.metric("accuracy")
    assert 0.0 <= acc.value <= 1.0 and acc.ci_low <= acc.value <= acc.ci_high

    int8 = records["tiny/sst2/int8-max/torch/accuracy"]
    assert int8.precision == "int8-fakequant"
    v = int8.verdict
    assert v.baseline == pytest.approx(acc.value) and v.value == pytest.approx(int8.metric("accuracy").value)
    assert v.passed == (v.value >= 0.99 * v.baseline - 1e-12)
    assert int8.details["quantizers"] == {"linear": 24, "matmul": 8, "residual": 8}

    export = records["tiny/sst2/int8-max/onnx/export"]
    assert export.details["structure"]["problems"] == []
    assert (run_dir / export.details["path"]).is_file()

    engine = records["tiny/sst2/int8-max/onnxruntime/accuracy"]
    assert engine.precision == "int8"
    assert engine.details["engine"]["fused_ops"]["MatMulIntegerToFloat"] + \
        engine.details["engine"]["fused_ops"]["QLinearMatMul"] > 0
    # The engine scores the same dev set as the fake-quant model and rarely disagrees with it.
    assert engine.details["changed_vs_torch"] <= 1

    lat = records["tiny/sst2/int8-max/onnxruntime/latency/b2s16"]
    assert lat.shape.batch == 2 and lat.shape.seq == 16
    assert lat.details["iterations"] >= 3 and lat.metric("throughput").value > 0

    info = json.loads((run_dir / "run.json").read_text())
    assert info["versions"]["torch"] and info["finished_at"] and info["machine"]["cores"]
    assert (run_dir / "report.html").is_file()


def test_best_fp32_baseline_and_torch_latency_rows(make_tiny_suite, tmp_path):
    suite = make_tiny_suite(timing={"torch": {"device": "cpu"}})
    out = tmp_path / "runs"
    assert _run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    run_dir = _only_run_dir(out)
    records = {r.cell: r for r in load_records(run_dir)}
    assert set(records) == {c.id for c in expand(load_suite(suite))}

    # ORT's fp32 row is the faster of the plain and the transformer-fused graph, both kept.
    fp32 = records["tiny/sst2/fp32/onnxruntime/latency/b2s16"]
    configs = fp32.details["fp32_configs"]
    assert configs["transformer_fusion"]["fused_ops"].get("SkipLayerNormalization", 0) > 0
    chosen = fp32.details["fp32_baseline"]
    other = "plain" if chosen == "transformer_fusion" else "transformer_fusion"
    assert configs[chosen]["mean_ms"] <= configs[other]["mean_ms"]
    assert fp32.metric("latency_mean_ms").value == pytest.approx(configs[chosen]["mean_ms"], abs=1e-4)
    assert fp32.details["engine"]["transformer_fusion"] is (chosen == "transformer_fusion")
    assert "fp32_configs" not in records["tiny/sst2/int8-max/onnxruntime/latency/b2s16"].details
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "fp32 rows on onnxruntime are the faster of the plain ORT_ENABLE_ALL graph" in report
    import csv

    with (run_dir / "latency.csv").open(encoding="utf-8") as fh:
        configs = {r["cell"]: r["fp32_config"] for r in csv.DictReader(fh)}
    assert configs[fp32.cell] == chosen and configs["tiny/sst2/int8-max/onnxruntime/latency/b2s16"] == ""

    # Memory and load time of every latency cell, measured in its worker, in records and CSV.
    latency = [r for r in records.values() if r.kind == "latency" and r.status == "ok"]
    assert latency
    for rec in latency:
        peak, share, load = (rec.metric(n).value for n in ("peak_rss_mb", "model_rss_mb", "load_s"))
        assert peak >= share > 0 and load > 0, rec.cell
        assert rec.details["resources"]["baseline_rss_mb"] > 0
    with (run_dir / "latency.csv").open(encoding="utf-8") as fh:
        rows = {r["cell"]: r for r in csv.DictReader(fh)}
    for rec in latency:
        assert float(rows[rec.cell]["peak_rss_mb"]) == pytest.approx(rec.metric("peak_rss_mb").value)
        assert float(rows[rec.cell]["load_s"]) > 0 and float(rows[rec.cell]["model_rss_mb"]) > 0
    assert "Peak RSS (MB)" in report and "MLPerf-style SingleStream p90 (b1)" in report
    # Calibration's seconds and peak-RSS growth in the quantized scheme's torch accuracy cell.
    cal = records["tiny/sst2/int8-max/torch/accuracy"].details["calibration"]
    assert cal["seconds"] > 0 and cal["peak_rss_mb"] >= 0 and "lower bound" in cal["peak_rss_method"]

    # The torch model itself, timed in a worker: eager fp32 and the fake-quant variant.
    eager = records["tiny/sst2/fp32/torch/latency/b2s16"]
    fake = records["tiny/sst2/int8-max/torch/latency/b1s16"]
    assert eager.status == fake.status == "ok"
    assert eager.precision == "fp32" and fake.precision == "int8-fakequant"
    assert eager.details["engine"]["device"] == "cpu" and fake.details["engine"]["fake_quantizers"] > 0
    assert fake.metric("throughput").value > 0
    assert not list(run_dir.rglob("torch-model.pt"))  # the pickled modules are scratch


def test_backend_variant_runs_float_layers_in_reduced_precision(make_tiny_suite, tmp_path):
    pytest.importorskip("openvino")
    suite = make_tiny_suite(backends=("torch", "openvino", "openvino@bf16"))
    out = tmp_path / "runs"
    assert _run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    records = {r.cell: r for r in load_records(_only_run_dir(out))}
    plain = records["tiny/sst2/fp32/openvino/latency/b2s16"].details["engine"]
    fp32 = records["tiny/sst2/fp32/openvino@bf16/latency/b2s16"]
    int8 = records["tiny/sst2/int8-max/openvino@bf16/accuracy"]
    assert plain["requested_hint"] == "f32"
    assert fp32.details["engine"]["requested_hint"] == int8.details["engine"]["requested_hint"] == "bf16"
    # The precision recorded is what compiled: bf16 where the CPU has it, else an honest fp32.
    compiled = fp32.details["engine"]["inference_precision_hint"]
    assert fp32.precision == ("bf16" if compiled == "bf16" else "fp32")
    assert int8.precision == "int8" and int8.status == "ok"
    # Speedups of the variant's INT8 row are against the variant's own fp32 (bf16) row.
    report = (_only_run_dir(out) / "report.md").read_text(encoding="utf-8")
    assert "| tiny | sst2 | fp32 | openvino@bf16 |" in report


def test_failing_cell_is_recorded_and_the_run_goes_on(make_tiny_suite, tmp_path):
    # 4-bit cannot be exported to ONNX Q/DQ: export and every engine cell of that scheme fail,
    # its fake-quant accuracy and every other scheme still finish.
    suite = make_tiny_suite(schemes={
        "fp32": {"kind": "fp32"},
        "int4": {"bits": 4, "calibration": {"samples": 8}},
        "int8": {"calibration": {"samples": 8}},
    })
    out = tmp_path / "runs"
    assert _run_cli("run", str(suite), "--out", str(out), "--quiet") == 3
    records = {r.cell: r for r in load_records(_only_run_dir(out))}
    assert records["tiny/sst2/int4/torch/accuracy"].status == "ok"
    exp = records["tiny/sst2/int4/onnx/export"]
    assert exp.status == "failed" and "4]-bit" in exp.error and "\n" not in exp.error
    lat = records["tiny/sst2/int4/onnxruntime/latency/b1s16"]
    assert lat.status == "failed" and "tiny/sst2/int4/onnx/export" in lat.error
    assert records["tiny/sst2/int8/onnxruntime/latency/b1s16"].status == "ok"


def test_reused_artifacts_are_written_whole_or_not_at_all(tmp_path):
    import numpy as np

    from qdqbench.core.files import save_atomic

    path = tmp_path / "inputs.npz"

    def dies_midway(fh):
        fh.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # a run stopped while writing

    with pytest.raises(KeyboardInterrupt):
        save_atomic(path, dies_midway)
    assert list(tmp_path.iterdir()) == []  # no truncated file for a resume to trust
    save_atomic(path, lambda fh: np.savez(fh, ids=np.arange(3)))
    with np.load(path) as npz:
        assert npz["ids"].tolist() == [0, 1, 2]
    assert list(tmp_path.iterdir()) == [path]


def test_resume_skips_finished_cells(tiny_suite, tmp_path):
    suite = load_suite(tiny_suite)
    run_dir = tmp_path / "run"
    Runner(suite, run_dir, show_progress=False).run()
    lines_before = (run_dir / "results.jsonl").read_text().splitlines()
    summary = Runner(suite, run_dir, show_progress=False).run()
    assert summary.reused == len(expand(suite)) and summary.ok == 0
    assert (run_dir / "results.jsonl").read_text().splitlines() == lines_before


def test_resume_after_a_kill_loses_and_repeats_nothing(tiny_suite, tmp_path):
    """SIGKILL the CLI mid-run, resume, and check every cell is there exactly once."""
    out = tmp_path / "runs"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "qdqbench.cli", "run", str(tiny_suite), "--out", str(out),
                             "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        results = None
        while time.time() < deadline:
            found = list(out.glob("*/results.jsonl")) if out.exists() else []
            if found and len(found[0].read_text().splitlines()) >= 4:
                results = found[0]
                break
            time.sleep(0.05)
        assert results is not None, "the run never wrote 4 records"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = {r.cell: r for r in ResultStore(results).read()}
    assert 4 <= len(before) < len(expand(load_suite(tiny_suite)))
    assert _run_cli("run", "--resume", str(results.parent), "--quiet") == 0
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    cells = [x["cell"] for x in lines]
    total = {c.id for c in expand(load_suite(tiny_suite))}
    assert set(cells) == total
    # Nothing finished before the kill was computed again (a torn last line may be rewritten).
    finished_before = {c for c, r in before.items() if r.status == "ok"}
    assert all(cells.count(c) == 1 for c in finished_before)
    for c in finished_before:
        again = next(x for x in lines if x["cell"] == c)
        assert again["started_at"] == before[c].started_at


def test_interrupt_keeps_results_and_says_how_to_resume(tiny_suite, tmp_path, monkeypatch):
    suite = load_suite(tiny_suite)
    calls = {"n": 0}
    from qdqbench.run.group import GroupRun

    original = GroupRun.run_cell

    def flaky(self, ctx, cell, variant):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, ctx, cell, variant)

    monkeypatch.setattr(GroupRun, "run_cell", flaky)
    summary = Runner(suite, tmp_path / "run", show_progress=False).run()
    assert summary.interrupted and summary.exit_code == 130
    assert len(ResultStore(tmp_path / "run" / "results.jsonl").read()) == 2
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    # An interrupted run is not finished: merge and readers must see it as incomplete.
    assert info["state"] == "interrupted" and info["finished_at"] is None


def test_squad_runs_end_to_end_on_a_tiny_qa_model(tiny_qa_checkpoint, tmp_path):
    """SQuAD: features, stacked start/end logits through torch, export and the engine; EM/F1 with CIs."""
    import yaml

    qa = [("what was great", "the movie"), ("what was good", "the music"),
          ("how was the music", "very good"), ("how was the movie", "great")]
    paragraphs = []
    for p, extra in enumerate(["", " , i loved it", " , not boring"]):
        context = "the movie was great and the music was very good" + extra
        paragraphs.append({"context": context, "qas": [
            {"id": f"p{p}q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
            for i, (q, a) in enumerate(qa)]})
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}
    squad_dir = tmp_path / "squad"
    squad_dir.mkdir()
    (squad_dir / "dev-v1.1.json").write_text(json.dumps(data), encoding="utf-8")
    suite = tmp_path / "qa.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "qa",
        "models": {"tiny": {"path": str(tiny_qa_checkpoint), "tasks": ["squad"]}},
        "tasks": {"squad": {"kind": "squad", "data_dir": str(squad_dir), "max_length": 48, "doc_stride": 16,
                            "max_query_length": 8, "allow_dev_calibration": True}},
        "schemes": {"fp32": {"kind": "fp32"}, "int8": {"calibration": {"samples": 2, "batch_size": 2}}},
        "backends": ["torch", "onnxruntime"],
        "shapes": {"batch": [1], "seq": [16]},
        "accuracy": {"bootstrap": 20},
        "timing": {"warmup_s": 0.0, "warmup_iters": 1, "min_iters": 2, "min_duration_s": 0.0, "threads": 1},
    }), encoding="utf-8")
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    records = {r.cell: r for r in load_records(_only_run_dir(out))}
    fp32 = records["tiny/squad/fp32/torch/accuracy"]
    assert {m.name for m in fp32.metrics} == {"exact_match", "f1"}
    assert fp32.details["calibration_source"] == "dev"
    # Calibration held out whole paragraphs: fewer questions are scored than the file has.
    assert fp32.details["examples"] < 12
    for backend in ("torch", "onnxruntime"):
        r = records[f"tiny/squad/int8/{backend}/accuracy"]
        assert r.verdict is not None and r.verdict.metric == "f1"
        assert 0.0 <= r.metric("f1").value <= 1.0
    eng = records["tiny/squad/int8/onnxruntime/accuracy"]
    assert eng.precision == "int8" and "changed_vs_torch" in eng.details


def test_shard_runs_only_its_cells_and_gates_fail_the_run(tiny_suite, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    # --shard auto as a Kubernetes indexed Job of one completion sees it.
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    monkeypatch.setenv("QDQBENCH_SHARD_COUNT", "1")
    # A 0-point drop bound with a quantized model: the gate is evaluated on stored verdicts.
    rc = main(["run", str(tiny_suite), "--out", str(out), "--quiet", "--shard", "auto",
               "--fail-on", "failed-cells>0"])
    assert rc == 0
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.endswith("-shard1of1")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["shard"] == {"index": 1, "count": 1, "source": "kubernetes"}
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet", "--fail-on", "latency-p99+5%"]) == 2


def test_peer_recipes_run_in_the_same_matrix(make_tiny_suite, tmp_path):
    suite = make_tiny_suite(schemes={
        "fp32": {"kind": "fp32"},
        "int8": {"groups": ["linear", "matmul"], "calibration": {"samples": 8}},
        "ort-dyn": {"kind": "ort-dynamic"},
        "ort-static": {"kind": "ort-static", "peer": {"samples": 8, "batch_size": 4}},
    })
    cells = [c.id for c in expand(load_suite(suite))]
    assert "tiny/sst2/ort-dyn/torch/accuracy" not in cells  # a peer has no torch model of its own
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    records = {r.cell: r for r in load_records(_only_run_dir(out))}
    for peer in ("ort-dyn", "ort-static"):
        exp = records[f"tiny/sst2/{peer}/onnx/export"]
        assert exp.scheme_kind in ("ort-dynamic", "ort-static") and exp.details["peer"]["sha256"]
        acc = records[f"tiny/sst2/{peer}/onnxruntime/accuracy"]
        assert acc.precision == "int8" and acc.verdict is not None
        assert records[f"tiny/sst2/{peer}/onnxruntime/latency/b2s16"].status == "ok"
    assert records["tiny/sst2/ort-static/onnx/export"].details["peer"]["calibration_samples"] == 8


def test_peer_settings_are_validated(make_tiny_suite, capsys):
    suite = make_tiny_suite(schemes={"fp32": {"kind": "fp32"},
                                     "p": {"kind": "ort-static", "peer": {"per_chanel": True}}})
    assert main(["validate", str(suite)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "schemes.p" in line and "did you mean 'per_channel'" in line


def test_qat_and_auto_recipe_schemes(make_tiny_suite, tmp_path):
    """QAT fine-tunes with the given schedule; recipe: auto records its trace and choice."""
    suite = make_tiny_suite(schemes={
        "fp32": {"kind": "fp32"},
        "int8-qat": {"calibration": {"samples": 8}, "qat": {"steps": 4, "lr": 1e-4, "batch_size": 4}},
        "int8-auto": {"recipe": "auto", "calibration": {"samples": 8},
                      "auto": {"calibrators": ["max", "percentile-99.9"], "selection_examples": 16,
                               "max_evaluations": 6, "qat": False, "headroom": 0.5}},
    })
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    run_dir = _only_run_dir(out)
    records = {r.cell: r for r in load_records(run_dir)}
    qat = records["tiny/sst2/int8-qat/torch/accuracy"].details["qat"]
    assert qat["steps"] == 4 and len(qat["loss_curve"]["values"]) == 4 and qat["plan"]["lr"] == 1e-4
    assert (run_dir / "artifacts/tiny/sst2/int8-qat/qat").is_dir()
    recipe = records["tiny/sst2/int8-auto/torch/accuracy"].details["recipe"]
    assert recipe["chosen"] and recipe["trace"] and recipe["budget"]["evaluations"] <= 6
    assert "held-out training examples" in recipe["selection_split"]
    # Choices are checked against half the suite's bound on the selection split.
    assert recipe["selection_bound"] == {"bound": pytest.approx(0.005), "mode": "relative", "headroom": 0.5}
    assert records["tiny/sst2/int8-auto/onnxruntime/accuracy"].status == "ok"


def test_an_executor_plugs_in_without_touching_the_loop(make_tiny_suite, tmp_path):
    """The executor seam: jobs and work pickle (a distributed executor ships them to workers), the
    records come back to the loop, which alone appends them to results.jsonl."""
    import pickle

    from qdqbench.run.executor import GroupHooks

    class PicklingExecutor:
        def __init__(self):
            self.jobs = []

        def run(self, jobs, work, hooks):
            for job in jobs:
                self.jobs.append(job)
                remote_job, remote_work = pickle.loads(pickle.dumps((job, work)))
                for rec in remote_work(remote_job, GroupHooks()):  # a worker: no console, no progress
                    yield pickle.loads(pickle.dumps(rec))

    suite = load_suite(make_tiny_suite(backends=("torch",), schemes={"fp32": {"kind": "fp32"}}))
    executor = PicklingExecutor()
    summary = Runner(suite, tmp_path / "run", show_progress=False, executor=executor).run()
    assert summary.exit_code == 0 and summary.ok == len(expand(suite))
    assert [(j.model, j.task, len(j.cells)) for j in executor.jobs] == [("tiny", "sst2", len(expand(suite)))]
    assert {r.cell for r in ResultStore(tmp_path / "run" / "results.jsonl").read()} == {c.id for c in expand(suite)}
