"""Compare: matched cells, direction-aware deltas, significance, environment, outputs, exit codes."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from qdqbench.cli import compare as compare_mod
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import Metric, Record, ResultStore, Shape, write_json_atomic
from qdqbench.core.verdict import make_verdict
from qdqbench.review.compare import summary_json
from qdqbench.review.comparison import build_comparison, compare_runs, latency_significant

EVIL = "<script>alert(1)</script>"


def info(run_id: str, **changes) -> dict:
    """A realistic run.json; ``changes`` maps 'section.key' to a new value."""
    data = {
        "run_id": run_id,
        "suite": {"name": "glue", "path": "suites/glue.yaml", "description": ""},
        "started_at": "2025-03-01T02:00:00+00:00",
        "finished_at": "2025-03-01T05:00:00+00:00",
        "accuracy_bound": {"bound": 0.01, "mode": "relative"},
        "timing": {"warmup_s": 1.0, "min_duration_s": 3.0, "threads_used": 16},
        "versions": {"python": "3.11.7", "torch": "2.5.1", "onnxruntime": "1.20.1", "openvino": "2024.6.0",
                     "tensorrt": "10.7.0", "transformers": "5.0.0"},
        "machine": {"cpu": "AMD EPYC 9654", "cores": 16, "flags": ["avx2", "avx512f"],
                    "gpu": "NVIDIA A100-SXM4-80GB", "driver": "550.54", "cuda": "12.4"},
        "git": {"commit": "a" * 40, "dirty": False},
    }
    for key, value in changes.items():
        section, k = key.split(".", 1)
        data[section][k] = value
    return data


def acc(model: str, scheme: str, value: float, backend: str = "torch", ci: float = 0.02,
        baseline: float | None = 0.9) -> Record:
    kind = "fp32" if scheme == "fp32" else "qdq"
    verdict = None
    if kind == "qdq" and baseline is not None:
        drop = baseline - value
        verdict = make_verdict("accuracy", baseline, value, 0.01, "relative", (drop - 0.01, drop + 0.01))
    return Record(cell=f"{model}/sst2/{scheme}/{backend}/accuracy", status="ok", model=model, task="sst2",
                  scheme=scheme, scheme_kind=kind, backend=backend, kind="accuracy",
                  precision="fp32" if kind == "fp32" else "int8-fakequant",
                  metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True,
                                  ci_low=value - ci, ci_high=value + ci)],
                  verdict=verdict, details={"primary_metric": "accuracy", "examples": 872})


def lat(model: str, scheme: str, mean: float, backend: str = "onnxruntime", std: float = 0.05,
        n: int = 500, batch: int = 8) -> Record:
    ms = {"mean": mean, "median": mean, "p90": mean * 1.1, "p95": mean * 1.15, "p99": mean * 1.3,
          "min": mean * 0.9, "max": mean * 1.6, "std": std}
    metrics = [Metric(name=f"latency_{k}_ms", value=v, unit="ms", higher_is_better=False) for k, v in ms.items()]
    metrics += [Metric(name="cov", value=std / mean, unit="ratio", higher_is_better=False),
                Metric(name="throughput", value=1000 * batch / mean, unit="seq/s", higher_is_better=True)]
    return Record(cell=f"{model}/sst2/{scheme}/{backend}/latency/b{batch}s128", status="ok", model=model,
                  task="sst2", scheme=scheme, scheme_kind="fp32" if scheme == "fp32" else "qdq",
                  backend=backend, kind="latency", precision="int8", shape=Shape(batch=batch, seq=128),
                  metrics=metrics, details={"iterations": n, "method": "perf_counter", "threads": 16})


def write_run(path: Path, records: list[Record], run_info: dict | None) -> Path:
    store = ResultStore(path / "results.jsonl")
    for r in records:
        store.append(r)
    if run_info is not None:
        write_json_atomic(path / "run.json", run_info)
    (path / "suite.json").write_text(json.dumps({"name": "glue"}), encoding="utf-8")
    return path


def base_records(model: str = "bert") -> list[Record]:
    return [acc(model, "fp32", 0.92, baseline=None), acc(model, "int8", 0.915, baseline=0.92),
            lat(model, "fp32", 20.0), lat(model, "int8", 8.0), lat(model, "int8", 9.0, backend="openvino")]


def cli(argv: list[str]) -> int:
    """Parse like ``qdqbench compare`` and map QdqbenchError to exit 2, as cli.main does."""
    parser = argparse.ArgumentParser(prog="qdqbench")
    compare_mod.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", *argv])
    try:
        return compare_mod.run(args)
    except QdqbenchError:
        return 2


# ----------------------------------------------------------------------------------------------


def test_matched_cells_deltas_and_direction():
    cand = [acc("bert", "fp32", 0.92, baseline=None), acc("bert", "int8", 0.905, baseline=0.92),
            lat("bert", "fp32", 20.0), lat("bert", "int8", 7.0), lat("bert", "int8", 9.9, backend="openvino")]
    c = build_comparison(base_records(), info("a"), cand, info("b"))
    assert len(c.cells) == 5 and not c.only_base and not c.only_cand and not c.environment
    by = {cd.cell: cd for cd in c.cells}
    a = by["bert/sst2/int8/torch/accuracy"].metric("accuracy")
    assert a.delta == pytest.approx(-0.01) and a.direction == "worse"
    assert a.significant is False and a.rule == "ci"  # ±0.02 intervals overlap
    drop = by["bert/sst2/int8/torch/accuracy"].metric("verdict_drop")
    assert drop.base == pytest.approx(0.005) and drop.cand == pytest.approx(0.015) and drop.direction == "worse"
    m = by["bert/sst2/int8/onnxruntime/latency/b8s128"].metric("latency_mean_ms")
    assert m.delta == pytest.approx(-1.0) and m.relative == pytest.approx(-0.125)
    assert m.direction == "better" and m.significant is True
    t = by["bert/sst2/int8/onnxruntime/latency/b8s128"].metric("throughput")
    assert t.direction == "better" and t.delta > 0
    assert by["bert/sst2/int8/openvino/latency/b8s128"].metric("latency_p99_ms").direction == "worse"
    assert by["bert/sst2/fp32/torch/accuracy"].metric("accuracy").direction == "same"


def test_accuracy_significance_from_intervals():
    base = [acc("bert", "int8", 0.90, ci=0.01)]
    far = build_comparison(base, info("a"), [acc("bert", "int8", 0.85, ci=0.01)], info("b"))
    near = build_comparison(base, info("a"), [acc("bert", "int8", 0.89, ci=0.01)], info("b"))
    assert far.cells[0].metric("accuracy").significant is True
    assert near.cells[0].metric("accuracy").significant is False


def test_latency_significance_rule():
    # |Δ| = 0.2 ms; SE = sqrt(2 * 1²/100) = 0.1414: 2·SE = 0.283 > 0.2, not significant.
    assert latency_significant(lat("m", "s", 10.0, std=1.0, n=100), lat("m", "s", 10.2, std=1.0, n=100)) is False
    assert latency_significant(lat("m", "s", 10.0, std=1.0, n=100), lat("m", "s", 10.3, std=1.0, n=100)) is True
    no_count = lat("m", "s", 10.3).model_copy(update={"details": {}})
    assert latency_significant(lat("m", "s", 10.0), no_count) is None


def test_cells_only_in_one_run_and_status_changes():
    base = base_records() + [acc("gone", "int8", 0.9)]
    failed = lat("bert", "int8", 8.0).model_copy(update={"status": "failed", "metrics": [], "error": "OOM"})
    cand = [r for r in base_records() if r.cell != failed.cell] + [failed, acc("new", "int8", 0.9)]
    c = build_comparison(base, info("a"), cand, info("b"))
    assert [r.cell for r in c.only_base] == ["gone/sst2/int8/torch/accuracy"]
    assert [r.cell for r in c.only_cand] == ["new/sst2/int8/torch/accuracy"]
    changed = [cd for cd in c.cells if cd.status_changed]
    assert [cd.cell for cd in changed] == [failed.cell] and changed[0].metrics == ()
    assert [r.cell for r in c.cand_failed] == [failed.cell]


def test_environment_differences_and_latency_comparability():
    same = build_comparison([], info("a"), [], info("b"))
    assert same.environment == () and same.latency_incomparable("tensorrt") is None

    gpu = build_comparison([], info("a"), [], info("b", **{"machine.gpu": "NVIDIA H100 80GB HBM3"}))
    assert [d.key for d in gpu.environment] == ["machine.gpu"]
    assert "machine.gpu NVIDIA A100-SXM4-80GB vs NVIDIA H100 80GB HBM3" in gpu.latency_incomparable("openvino")

    ort = build_comparison([], info("a"), [], info("b", **{"versions.onnxruntime": "1.21.0"}))
    assert ort.latency_incomparable("onnxruntime") and ort.latency_incomparable("openvino") is None
    assert ort.latency_incomparable("tensorrt") is None

    trt = build_comparison([], info("a"), [], info("b", **{"versions.tensorrt": "10.8.0", "machine.driver": "560.1"}))
    assert trt.latency_incomparable("tensorrt") and trt.latency_incomparable("openvino") is None
    assert "versions.tensorrt" in trt.latency_incomparable("tensorrt@fp16")  # a variant is its engine
    assert trt.latency_incomparable("openvino@bf16") is None

    noted = build_comparison([], info("a"), [], info("b", **{"versions.python": "3.12.1", "git.commit": "b" * 40}))
    assert {d.key for d in noted.environment} == {"versions.python", "git.commit"}
    assert all(d.affects == () for d in noted.environment)
    assert noted.latency_incomparable("onnxruntime") is None

    unknown = build_comparison([], {}, [], info("b"))
    assert "BASE has no run.json" in unknown.latency_incomparable("onnxruntime")


def test_outputs_are_self_contained_escaped_and_strict_json(tmp_path):
    base = write_run(tmp_path / "base", base_records(EVIL), info("base-run"))
    cand_recs = base_records(EVIL)
    cand_recs[3] = lat(EVIL, "int8", 9.0)
    cand = write_run(tmp_path / "cand", cand_recs,
                     info("cand-run", **{"machine.cpu": EVIL, "versions.python": "3.12.0"}))
    out = tmp_path / "out"
    # Every latency cell is incomparable (another CPU), so the gate is checked on 0 cells: exit 2.
    assert cli([str(base), str(cand), "--out", str(out), "--fail-on", "latency-p99+5%"]) == 2
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html and len(re.findall(r"<script\b", html)) == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert 'id="incomparable"' in html and "Latency deltas are not comparable" in html
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "&lt;script&gt;" in md and "<script>" not in md and "not comparable" in md

    def no_constants(x):
        raise AssertionError(f"non-standard JSON constant {x}")

    data = json.loads((out / "compare.json").read_text(encoding="utf-8"), parse_constant=no_constants)
    assert data["passed"] is False and data["base"]["run_id"] == "base-run"
    assert set(data["latency_incomparable"]) == {"onnxruntime", "openvino"}
    assert data["gates"][0]["checked"] == 0 and len(data["gates"][0]["skipped"]) == 3
    assert data["gates"][0]["status"] == "not-checked" and data["gates"][0]["passed"] is False
    cell = next(x for x in data["cells"] if x["cell"] == cand_recs[3].cell)
    mean = next(m for m in cell["metrics"] if m["name"] == "latency_mean_ms")
    assert mean["direction"] == "worse" and mean["delta"] == pytest.approx(1.0)


def test_delta_colouring_in_html(tmp_path):
    cand_recs = base_records()
    cand_recs[3] = lat("bert", "int8", 6.0)  # faster: better
    cand_recs[1] = acc("bert", "int8", 0.80, ci=0.01, baseline=0.92)  # much worse, significant
    c = build_comparison(base_records(), info("a"), cand_recs, info("b"))
    from qdqbench.review.render_html import render_compare_html

    html = render_compare_html(c)
    row = re.search(r'<tr id="lat-bert-sst2-int8-onnxruntime-latency-b8s128">.*?</tr>', html).group(0)
    assert 'class="num better"' in row and "worse" not in row
    row = re.search(r'<tr id="acc-bert-sst2-int8-torch-accuracy">.*?</tr>', html).group(0)
    assert 'class="num worse"' in row and "-11.50 pts" in row


def test_cli_exit_codes(tmp_path):
    base = write_run(tmp_path / "base", base_records(), info("a"))
    slower = base_records()
    slower[3] = lat("bert", "int8", 9.0)
    cand = write_run(tmp_path / "cand", slower, info("b"))
    assert cli([str(base), str(cand), "--fail-on", "latency-p99+5%"]) == 1
    assert (cand / "compare.html").is_file()  # default --out is CAND
    assert cli([str(base), str(cand), "--fail-on", "latency-p99+20%"]) == 0
    assert cli([str(base), str(cand), "--fail-on", "latency-p99+5%", "--fail-on", "bogus>1%"]) == 2
    assert cli([str(base), str(tmp_path / "missing")]) == 2
    failed = write_run(tmp_path / "failed", base_records() + [
        lat("x", "int8", 1.0).model_copy(update={"status": "failed", "metrics": [], "error": "e"})], info("c"))
    assert cli([str(base), str(failed)]) == 3
    assert cli([str(base), str(failed), "--fail-on", "failed-cells>0"]) == 1


def test_compare_runs_needs_run_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(QdqbenchError, match="BASE is not a run folder"):
        compare_runs(tmp_path / "empty", tmp_path / "empty")


def test_summary_json_without_gates_passes():
    c = build_comparison(base_records(), info("a"), base_records(), info("b"))
    s = summary_json(c)
    assert s["passed"] is True and s["gates"] == [] and len(s["cells"]) == 5


# ----------------------------------------------------------------------------------------------
# nothing comparable, gates checked on 0 cells, unreadable lines


def test_zero_matched_cells_is_exit_2_not_a_pass(tmp_path, capsys):
    base = write_run(tmp_path / "base", base_records("bert"), info("a"))
    cand = write_run(tmp_path / "cand", base_records("roberta")[:3], info("b"))  # no cell id in common
    for gates in ([], ["--fail-on", "accuracy-drop>1%"], ["--fail-on", "latency-p99+5%"]):
        capsys.readouterr()
        assert cli([str(base), str(cand), *gates]) == 2
        err = capsys.readouterr().err
        assert "All gates passed" not in err and "gate passed" not in err
        (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
        assert line == (f"error: compare: nothing comparable: no cell is in both runs "
                        f"(BASE {base}: 5 cells; CAND {cand}: 3 cells)")
    data = json.loads((cand / "compare.json").read_text(encoding="utf-8"))
    assert data["passed"] is False and data["nothing_comparable"].startswith("nothing comparable")
    assert data["gates"][0]["status"] == "not-checked"
    md = (cand / "compare.md").read_text(encoding="utf-8")
    assert "Nothing comparable" in md and "All 1 gates passed" not in md
    assert "checked on 0 cells (no cell is in both runs)" in md
    html = (cand / "compare.html").read_text(encoding="utf-8")
    assert 'id="nothing-comparable"' in html and "All 1 gates passed" not in html


def test_a_gate_checked_on_0_cells_is_not_passed(tmp_path, capsys):
    accuracy_only = [acc("bert", "fp32", 0.92, baseline=None), acc("bert", "int8", 0.915, baseline=0.92)]
    base = write_run(tmp_path / "base", accuracy_only, info("a"))
    cand = write_run(tmp_path / "cand", accuracy_only, info("b"))
    capsys.readouterr()
    assert cli([str(base), str(cand), "--fail-on", "accuracy-drop>1%", "--fail-on", "latency-p99+5%"]) == 2
    err = capsys.readouterr().err
    assert "gate passed: accuracy-drop>1%: checked on 1 cell" in err
    assert ("gate not checked: latency-p99+5%: checked on 0 cells (no latency cell is in both runs "
            "(2 matched cells: 2 accuracy))") in err
    assert ("error: compare: nothing comparable for gate latency-p99+5%: no latency cell is in both runs "
            "(2 matched cells: 2 accuracy)") in err
    md = (cand / "compare.md").read_text(encoding="utf-8")
    assert "1 of 2 gates not checked" in md and "All 2 gates passed" not in md
    assert "**latency-p99+5%** NOT CHECKED" in md and "checked on 0 cells" in md
    html = (cand / "compare.html").read_text(encoding="utf-8")
    assert 'data-status="not-checked"' in html and "NOT CHECKED" in html
    assert 'class="headline fail"' in html
    data = json.loads((cand / "compare.json").read_text(encoding="utf-8"))
    assert data["passed"] is False and [g["status"] for g in data["gates"]] == ["passed", "not-checked"]
    assert data["gates"][1]["not_checked_reason"].startswith("no latency cell is in both runs")
    # The same gate alone on runs that have latency cells passes, and says on how many.
    full_b = write_run(tmp_path / "fb", base_records(), info("a"))
    full_c = write_run(tmp_path / "fc", base_records(), info("b"))
    capsys.readouterr()
    assert cli([str(full_b), str(full_c), "--fail-on", "latency-p99+5%"]) == 0
    assert "gate passed: latency-p99+5%: checked on 3 cells" in capsys.readouterr().err


def test_a_failed_gate_wins_over_a_gate_not_checked(tmp_path, capsys):
    base = write_run(tmp_path / "base", [acc("bert", "int8", 0.90)], info("a"))
    cand = write_run(tmp_path / "cand", [acc("bert", "int8", 0.85)], info("b"))
    capsys.readouterr()
    assert cli([str(base), str(cand), "--fail-on", "accuracy-1%", "--fail-on", "throughput-5%"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^gate failed: accuracy-1%: bert/sst2/int8/torch/accuracy: .*\(checked on 1 cell\)$",
                     err, re.M)
    assert "gate not checked: throughput-5%: checked on 0 cells" in err
    md = (cand / "compare.md").read_text(encoding="utf-8")
    assert "1 of 2 gates failed, 1 not checked" in md and "checked on 1 cell" in md


def test_gate_lines_carry_counts_in_every_output(tmp_path, capsys):
    base = write_run(tmp_path / "base", base_records(), info("a"))
    slower = base_records()
    slower[3] = lat("bert", "int8", 9.0)
    cand = write_run(tmp_path / "cand", slower, info("b"))
    capsys.readouterr()
    assert cli([str(base), str(cand), "--fail-on", "latency-p99+5%", "--fail-on", "accuracy-drop>1%"]) == 1
    err = capsys.readouterr().err.splitlines()
    gate_lines = [x for x in err if x.startswith("gate ")]
    assert len(gate_lines) == 2
    assert gate_lines[0].startswith("gate failed: latency-p99+5%: bert/sst2/int8/onnxruntime/latency/b8s128: ")
    assert gate_lines[0].endswith("(checked on 3 cells)")
    assert gate_lines[1] == "gate passed: accuracy-drop>1%: checked on 1 cell"
    md = (cand / "compare.md").read_text(encoding="utf-8")
    assert "**latency-p99+5%** FAILED" in md and "checked on 3 cells" in md and "checked on 1 cell" in md
    html = (cand / "compare.html").read_text(encoding="utf-8")
    assert "checked on 3 cells" in html and "checked on 1 cell" in html


def damage(path: Path) -> None:
    """Binary garbage as line 3 and a torn last line (no newline), as a crash would leave it."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2, b"\xff\xfe\x00garbage\x9c\n")
    path.write_bytes(b"".join(lines) + b'{"cell": "bert/sst2/int8/torch/acc')


def test_unreadable_lines_are_warned_about_and_shown(tmp_path, capsys):
    base = write_run(tmp_path / "base", base_records(), info("a"))
    cand = write_run(tmp_path / "cand", base_records(), info("b"))
    damage(cand / "results.jsonl")
    capsys.readouterr()
    assert cli([str(base), str(cand), "--fail-on", "accuracy-drop>1%"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {cand / 'results.jsonl'}: line 3 skipped: not UTF-8" in err
    assert f"warning: {cand / 'results.jsonl'}: line 7 skipped: torn last line" in err
    md = (cand / "compare.md").read_text(encoding="utf-8")
    assert "Lines not read" in md and "2 lines skipped: line 3: not UTF-8" in md and "line 7: torn last line" in md
    html = (cand / "compare.html").read_text(encoding="utf-8")
    assert 'id="skipped-lines"' in html and "line 7: torn last line" in html
    data = json.loads((cand / "compare.json").read_text(encoding="utf-8"))
    assert [x["line"] for x in data["skipped_lines"]] == [3, 7]


def test_a_damaged_run_json_is_one_line_naming_it(tmp_path):
    base = write_run(tmp_path / "base", base_records(), info("a"))
    cand = write_run(tmp_path / "cand", base_records(), info("b"))
    (cand / "run.json").write_bytes(b'{"run_id": "b", "machine": {\xff')
    with pytest.raises(QdqbenchError) as exc:
        compare_runs(base, cand)
    assert "\n" not in str(exc.value) and str(cand / "run.json") in str(exc.value)
    assert cli([str(base), str(cand)]) == 2
    (cand / "run.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(QdqbenchError, match="run.json is damaged"):
        compare_runs(base, cand)


def test_a_partial_merge_is_flagged(tmp_path, capsys):
    base = write_run(tmp_path / "base", base_records(), info("a"))
    partial = info("b")
    partial["partial"] = {"missing_shards": ["2/2"], "have": ["1/2"], "unfinished_shards": [],
                          "reasons": ["shard 2/2 missing (have 1/2)"]}
    cand = write_run(tmp_path / "cand", base_records()[:3], partial)
    capsys.readouterr()
    assert cli([str(base), str(cand)]) == 0
    line = "CAND is a partial merge (shard 2/2 missing (have 1/2)): the cells it lacks are not compared"
    assert f"warning: {line}" in capsys.readouterr().err
    assert line in (cand / "compare.md").read_text(encoding="utf-8")
    assert 'id="partial-0"' in (cand / "compare.html").read_text(encoding="utf-8")
    assert json.loads((cand / "compare.json").read_text(encoding="utf-8"))["partial_runs"] == [line]


def test_latency_from_different_nodes_is_not_comparable():
    """A distributed run records each cell's node; a cell timed on another node is another machine."""
    def on(node: str | None, records: list[Record]) -> list[Record]:
        return [r.model_copy(update={"details": {**r.details, "node": node}}) if node and r.kind == "latency"
                else r for r in records]

    same = build_comparison(on("gpu-01", base_records()), info("a"), on("gpu-01", base_records()), info("b"))
    assert same.incomparable_backends == {}
    moved = build_comparison(on("gpu-01", base_records()), info("a"), on("gpu-02", base_records()), info("b"))
    reason = moved.latency_incomparable("onnxruntime")
    assert reason is not None and "different nodes" in reason and "gpu-01 vs gpu-02" in reason
    assert set(moved.incomparable_backends) == {"onnxruntime", "openvino"}
    # A distributed run against a single-machine run: the nodes differ too.
    mixed = build_comparison(base_records(), info("a"), on("gpu-02", base_records()), info("b"))
    assert "the run's own machine vs gpu-02" in mixed.latency_incomparable("onnxruntime")
    # Gates skip those cells (not checked) unless --force, as for any machine change.
    from qdqbench.review.gates import check_compare_gates, parse_gates

    (outcome,) = check_compare_gates(moved, parse_gates(["latency-mean+5%"], "compare"))
    assert outcome.checked == 0 and outcome.skipped


def test_nodes_named_by_host_cpu_flags_and_gpu():
    """Ray records name the node as ``core.env.node_facts``: same host but another GPU is another machine."""
    a = {"host": "gpu-01", "cpu_flags": "avx2 avx512f", "gpu": "NVIDIA H200"}

    def on(node, records):
        return [r.model_copy(update={"details": {**r.details, "node": node}}) if r.kind == "latency" else r
                for r in records]

    same = build_comparison(on(a, base_records()), info("a"), on(dict(a), base_records()), info("b"))
    assert same.incomparable_backends == {}
    moved = build_comparison(on(a, base_records()), info("a"), on({**a, "gpu": "none"}, base_records()), info("b"))
    reason = moved.latency_incomparable("onnxruntime")
    assert reason is not None and "different nodes" in reason
    assert "gpu-01 (CPU flags: avx2 avx512f; GPU: NVIDIA H200) vs gpu-01 (CPU flags: avx2 avx512f; GPU: none)" in reason
