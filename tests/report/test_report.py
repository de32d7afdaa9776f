"""Tests of the report: one row model, rendered as HTML, Markdown and CSV from a small fake run."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import Metric, Record, ResultStore, Shape, Verdict, write_json_atomic
from qdqbench.report import build_report, load_report, write_report
from qdqbench.report.charts import nice_ticks
from qdqbench.report.render.html import render_html
from qdqbench.report.render.markdown import md_escape, render_markdown
from qdqbench.report.rows import fmt_ms, fmt_pct, fmt_score, fmt_speedup, slug
from qdqbench.report.sections import ACCURACY_COLUMNS, LATENCY_COLUMNS

MODEL = "bert-base-sst2"
EVIL = "<script>alert(1)</script>"
LAT_NAMES = ("mean", "median", "p90", "p95", "p99", "min", "max", "std")


def _acc(cell, model, task, scheme, kind, backend, precision, value, verdict=None, changed=None):
    return Record(
        cell=cell,
        status="ok",
        model=model,
        task=task,
        scheme=scheme,
        scheme_kind=kind,
        backend=backend,
        precision=precision,
        kind="accuracy",
        metrics=[
            Metric(
                name="accuracy",
                value=value,
                unit="ratio",
                higher_is_better=True,
                ci_low=value - 0.02,
                ci_high=value + 0.02,
            ),
        ],
        verdict=verdict,
        details={"primary_metric": "accuracy", "examples": 872, "changed": changed, "eval_s": 3.1},
    )


def _verdict(baseline, value, passed, ci=(0.002, 0.014), within_noise=False):
    drop = baseline - value
    return Verdict(
        metric="accuracy",
        bound=0.01,
        mode="relative",
        baseline=baseline,
        value=value,
        drop=drop,
        relative_drop=drop / baseline,
        threshold=baseline * 0.99,
        passed=passed,
        drop_ci_low=ci[0],
        drop_ci_high=ci[1],
        within_noise=within_noise,
    )


def _lat(scheme, kind, precision, batch, mean, thr, backend="onnxruntime"):
    metrics = [
        Metric(name=f"latency_{n}_ms", value=mean * f, unit="ms", higher_is_better=False)
        for n, f in zip(LAT_NAMES, (1.0, 0.98, 1.1, 1.15, 1.3, 0.9, 1.5, 0.05))
    ]
    metrics += [
        Metric(name="cov", value=0.05, unit="ratio", higher_is_better=False),
        Metric(name="throughput", value=thr, unit="seq/s", higher_is_better=True),
    ]
    return Record(
        cell=f"{MODEL}/sst2/{scheme}/{backend}/b{batch}s128/latency",
        status="ok",
        model=MODEL,
        task="sst2",
        scheme=scheme,
        scheme_kind=kind,
        backend=backend,
        precision=precision,
        shape=Shape(batch=batch, seq=128),
        kind="latency",
        metrics=metrics,
        details={
            "iterations": 200,
            "warmup_iters": 20,
            "threads": 4,
            "method": "perf_counter_ns",
            "info": {"provider": "CPUExecutionProvider"},
        },
    )


def run_records() -> list[Record]:
    """A realistic small run: fp32 + 2 int8 schemes, engine accuracy, latency, one failure."""
    p = MODEL
    return [
        _acc(f"{p}/sst2/fp32/torch/accuracy", p, "sst2", "fp32", "fp32", "torch", "fp32", 0.9060),
        _acc(
            f"{p}/sst2/int8-max/torch/accuracy",
            p,
            "sst2",
            "int8-max",
            "qdq",
            "torch",
            "int8-fakequant",
            0.9002,
            _verdict(0.9060, 0.9002, True, (-0.002, 0.014), True),
            5,
        ),
        _acc(
            f"{p}/sst2/int8-entropy/torch/accuracy",
            p,
            "sst2",
            "int8-entropy",
            "qdq",
            "torch",
            "int8-fakequant",
            0.8830,
            _verdict(0.9060, 0.8830, False, (0.012, 0.034)),
            31,
        ),
        _acc(
            f"{p}/sst2/int8-max/onnxruntime/accuracy",
            p,
            "sst2",
            "int8-max",
            "qdq",
            "onnxruntime",
            "int8",
            0.8991,
            _verdict(0.9060, 0.8991, True),
            7,
        ),
        # a second pair whose model name is hostile markup; its only scheme fails the bound
        _acc("evil/mrpc/fp32/torch/accuracy", EVIL, "mrpc", "fp32", "fp32", "torch", "fp32", 0.84),
        _acc(
            "evil/mrpc/int8-max/torch/accuracy",
            EVIL,
            "mrpc",
            "int8-max",
            "qdq",
            "torch",
            "int8-fakequant",
            0.80,
            _verdict(0.84, 0.80, False, (0.02, 0.06)),
            20,
        ),
        _lat("fp32", "fp32", "fp32", 1, 10.0, 100.0),
        _lat("int8-max", "qdq", "int8", 1, 4.0, 250.0),
        _lat("fp32", "fp32", "fp32", 8, 40.0, 200.0),
        _lat("int8-max", "qdq", "int8", 8, 20.0, 400.0),
        _lat("int8-max", "qdq", "int8", 32, 60.0, 533.3),  # no fp32 at batch 32: no speedup
        Record(
            cell=f"{p}/sst2/int8-max/tensorrt/b8s128/latency",
            status="failed",
            error="BackendError: TensorRT engine build failed: <no INT8 kernels for layer 12>",
            model=p,
            task="sst2",
            scheme="int8-max",
            scheme_kind="qdq",
            backend="tensorrt",
            precision="int8",
            shape=Shape(batch=8, seq=128),
            kind="latency",
        ),
        Record(
            cell=f"{p}/sst2/int8-max/onnx/export",
            status="ok",
            model=p,
            task="sst2",
            scheme="int8-max",
            scheme_kind="qdq",
            backend="onnx",
            kind="export",
            metrics=[
                Metric(name="onnx_mb", value=110.2, unit="MB"),
                Metric(name="qdq_nodes", value=420, unit=""),
            ],
            details={"path": "artifacts/abc123/model.onnx"},
        ),
    ]


RUN_INFO = {
    "suite": {"name": "glue-small", "path": "suites/glue-small.yaml"},
    "run_id": "20250101-120000",
    "git": {"commit": "0123456789abcdef", "dirty": True},
    "versions": {
        "python": "3.11.7",
        "torch": "2.5.1",
        "transformers": "5.0.0",
        "onnx": "1.17",
        "onnxruntime": "1.20.1",
        "openvino": None,
        "tensorrt": None,
        "cuda": None,
        "driver": None,
    },
    "machine": {"cpu": "Intel Xeon", "cores": 16, "flags": ["avx2", "avx512_vnni"], "gpu": None},
    "started_at": "2025-01-01T12:00:00Z",
    "finished_at": "2025-01-01T12:30:00Z",
    "timing": {"warmup_iters": 20, "iterations": 200},
    "accuracy_bound": {"bound": 0.01, "mode": "relative"},
}


def make_run(tmp_path: Path, records: list[Record], run_info: dict = RUN_INFO) -> Path:
    run_dir = tmp_path / "run"
    store = ResultStore(run_dir / "results.jsonl")
    for r in records:
        store.append(r)
    write_json_atomic(run_dir / "run.json", run_info)
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path, run_records())


@pytest.fixture
def written(run_dir: Path) -> dict[str, str]:
    paths = write_report(run_dir)
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


class _Collect(HTMLParser):
    """Element ids, classes by id, script tags and resource attributes of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.classes: dict[str, str] = {}
        self.scripts: list[dict] = []
        self.resources: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
            self.classes[a["id"]] = a.get("class") or ""
        if tag == "script":
            self.scripts.append(a)
        for name in ("src", "href"):
            if name in a and not a[name].startswith("#"):
                self.resources.append((tag, name, a[name]))


def parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    return p


def row_html(html: str, element_id: str) -> str:
    m = re.search(rf'<tr id="{re.escape(element_id)}"[^>]*>.*?</tr>', html, re.S)
    assert m, f"no row {element_id}"
    return m.group(0)


# ----------------------------------------------------------------------------------------------


def test_verdict_summary_counts_pairs_best_and_worst():
    report = build_report(run_records(), RUN_INFO)
    s = report.summary
    assert (s.pairs_total, s.pairs_passing, s.pairs_unjudged) == (2, 1, 0)
    assert (s.verdicts_total, s.verdicts_passing) == (4, 2)
    assert (s.failed_cells, s.skipped_cells) == (1, 0)
    sst2 = next(p for p in report.pairs if p.task == "sst2")
    assert sst2.passed and (sst2.n_passing, sst2.n_quantized) == (2, 3)
    assert (sst2.best.scheme, sst2.best.backend) == ("int8-max", "torch")  # highest passing value
    assert sst2.worst.scheme == "int8-entropy"
    mrpc = next(p for p in report.pairs if p.task == "mrpc")
    assert mrpc.passed is False and mrpc.best.scheme == "int8-max"  # highest even though failing
    assert s.worst_regression.model == EVIL  # drop 4.00 pts is the largest
    assert fmt_score(s.worst_regression.drop) == "4.00"
    assert report.bound == 0.01 and report.bound_mode == "relative"
    fp32 = next(a for a in report.accuracy if a.cell.endswith("sst2/fp32/torch/accuracy"))
    assert fp32.passed is None and fp32.fp32_value == pytest.approx(0.9060) and fp32.drop is None
    assert report.accuracy[0].scheme == "fp32"  # fp32 reference first within its pair


def test_speedups_come_from_the_same_run_baseline():
    report = build_report(run_records(), RUN_INFO)
    by = {(r.scheme, r.batch): r for r in report.latency}
    b1 = by[("int8-max", 1)]
    assert b1.speedup_latency == pytest.approx(2.5) and b1.speedup_throughput == pytest.approx(2.5)
    assert fmt_speedup(b1.speedup_latency) == "2.50×" and b1.baseline_scheme == "fp32"
    assert by[("int8-max", 8)].speedup_latency == pytest.approx(2.0)
    assert by[("fp32", 8)].is_baseline and by[("fp32", 8)].speedup_latency == pytest.approx(1.0)
    assert by[("int8-max", 32)].speedup_latency is None  # no fp32 at batch 32
    assert report.summary.best_speedup is b1
    # fp32 before int8 at each shape, shapes ascending
    assert [(r.scheme, r.batch) for r in report.latency][:4] == [
        ("fp32", 1),
        ("int8-max", 1),
        ("fp32", 8),
        ("int8-max", 8),
    ]
    (chart,) = report.charts
    assert dict(chart.series)["int8-max"] == ((1, 250.0), (8, 400.0), (32, 533.3))
    assert chart.baselines == ("fp32",)


def test_write_report_writes_every_format(run_dir: Path):
    paths = write_report(run_dir)
    assert [p.name for p in paths] == [
        "report.html",
        "report.md",
        # the CSV files of each section, in the sections' order (report.sections.SECTIONS)
        "peers.csv",
        "accuracy.csv",
        "engines.csv",
        "calibrators.csv",
        "pareto.csv",
        "fidelity.csv",
        "latency.csv",
        "mlperf_style.csv",
        "where_time_goes.csv",
        "amax.csv",
        "sensitivity.csv",
        "recipe_trace.csv",
        "float_part_costs.csv",
    ]
    assert all(p.parent == run_dir and p.stat().st_size > 0 for p in paths)
    assert [p.name for p in write_report(run_dir, formats=["md"])] == ["report.md"]
    with pytest.raises(QdqbenchError, match="did you mean 'html'"):
        write_report(run_dir, formats=["htm"])
    with pytest.raises(QdqbenchError, match="run folder not found"):
        write_report(run_dir / "missing")


def test_html_verdict_classes_and_stable_ids(written):
    html = written["report.html"]
    page = parse(html)
    assert len(page.ids) == len(set(page.ids)), "element ids must be unique"
    ok = f"acc-{slug(MODEL)}-sst2-int8-max-torch-accuracy"
    bad = f"acc-{slug(MODEL)}-sst2-int8-entropy-torch-accuracy"
    assert page.classes[ok] == "pass" and page.classes[bad] == "fail"
    assert page.classes[f"acc-{slug(MODEL)}-sst2-fp32-torch-accuracy"] == "baseline"
    assert "within noise" in row_html(html, ok) and "within noise" not in row_html(html, bad)
    assert '<td class="verdict" data-sort="0">FAIL</td>' in row_html(html, bad)
    assert page.classes["pair-bert-base-sst2-sst2"] == "pass"
    assert page.classes["pair-script-alert-1-script-mrpc"] == "fail"
    assert page.classes["headline"] == "headline fail"
    assert "1 of 2 model × task pairs have a quantized scheme within the bound" in html
    assert "relative drop ≤ 1.00%" in html
    for section in ("verdict", "accuracy", "latency", "charts", "exports", "failed", "environment"):
        assert section in page.ids
    lat = row_html(html, f"lat-{slug(MODEL)}-sst2-int8-max-onnxruntime-b1s128-latency")
    assert ">2.50×<" in lat and ">4.00<" in lat and ">250<" in lat
    assert f"chart-{slug(MODEL)}-sst2-onnxruntime" in page.ids
    assert f"svg-{slug(MODEL)}-sst2-onnxruntime" in page.ids
    assert "fail-" + slug(f"{MODEL}/sst2/int8-max/tensorrt/b8s128/latency") in page.ids
    assert '<span class="bad">(1)</span>' in html  # failed-cell count in red
    assert "perf_counter_ns, 20 warm-up, 200 timed iterations, 4 threads" in html
    assert "0123456789ab" in html and "onnxruntime" in html and "avx512_vnni" in html


def test_html_escapes_everything_user_provided(written):
    html = written["report.html"]
    assert EVIL not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;no INT8 kernels for layer 12&gt;" in html  # error text escaped too
    assert len(parse(html).scripts) == 1  # only the page's own sorter


def test_html_is_self_contained(written):
    html = written["report.html"]
    page = parse(html)
    assert "http://" not in html and "https://" not in html
    assert page.resources == []  # no src= or external href= anywhere (in-page #anchors only)
    assert all("src" not in s for s in page.scripts)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_markdown_has_verdict_and_table_rows(written):
    md = written["report.md"]
    assert (
        "❌ **1 of 2 model × task pairs have a quantized scheme within the bound "
        "(relative drop ≤ 1.00%)**; 2 of 4 quantized accuracy cells pass." in md
    )
    assert "| Model | Task | Scheme | Backend | Precision | Metric | fp32 | Value |" in md
    assert (
        f"| {MODEL} | sst2 | int8-entropy | torch | int8-fakequant | accuracy | 90.60 | 88.30 "
        "| 2.30 | 2.54% | [1.20, 3.40] | 31 / 872 | ❌ FAIL |"
    ) in md
    assert f"| {MODEL} | sst2 | int8-max | onnxruntime | int8 | 1 | 128 | 4.00 |" in md
    assert "| 250 | 2.50× | 2.50× | 5.0% |" in md
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "❌ **1 failed cell**" in md


def test_csv_parses_back_with_the_right_columns(written):
    acc = list(csv.DictReader(io.StringIO(written["accuracy.csv"])))
    assert tuple(acc[0].keys()) == ACCURACY_COLUMNS and len(acc) == 6
    ent = next(r for r in acc if r["scheme"] == "int8-entropy")
    assert ent["passed"] == "false" and float(ent["drop"]) == pytest.approx(0.023)
    assert ent["changed"] == "31" and ent["precision"] == "int8-fakequant"
    assert next(r for r in acc if r["model"] == EVIL)["model"] == EVIL  # raw text, not HTML
    lat = list(csv.DictReader(io.StringIO(written["latency.csv"])))
    assert tuple(lat[0].keys()) == LATENCY_COLUMNS and len(lat) == 5
    b1 = next(r for r in lat if r["scheme"] == "int8-max" and r["batch"] == "1")
    assert float(b1["speedup_latency"]) == pytest.approx(2.5) and b1["mean_ms"] == "4.0"
    assert next(r for r in lat if r["batch"] == "32")["speedup_latency"] == ""
    fid = list(csv.DictReader(io.StringIO(written["fidelity.csv"])))
    assert fid == [] and written["fidelity.csv"].startswith("cell,model,task,scheme,")


def test_a_run_where_every_cell_failed_still_renders(tmp_path: Path):
    failed = [
        r.model_copy(
            update={"status": "failed", "error": f"boom {i}", "metrics": [], "verdict": None}
        )
        for i, r in enumerate(run_records())
    ]
    run_dir = make_run(tmp_path, failed, run_info={})
    out = {p.name: p.read_text(encoding="utf-8") for p in write_report(run_dir)}
    html = out["report.html"]
    assert "No quantized accuracy verdicts in this run" in html
    assert f'<span class="bad">({len(failed)})</span>' in html
    assert html.count('<tr id="fail-') == len(failed) and 'id="acc-' not in html
    assert "no run.json found" in html
    assert "No quantized accuracy verdicts in this run" in out["report.md"]
    assert out["accuracy.csv"].count("\n") == 1  # header only
    assert load_report(run_dir).summary.failed_cells == len(failed)


def test_fidelity_rows_render(tmp_path: Path):
    rec = Record(
        cell="minilm/sts/int8/onnxruntime/fidelity",
        status="ok",
        model="all-MiniLM-L6-v2",
        task="sts",
        scheme="int8",
        scheme_kind="qdq",
        backend="onnxruntime",
        precision="int8",
        kind="fidelity",
        metrics=[
            Metric(name="cosine_mean", value=0.99871, unit="ratio", higher_is_better=True),
            Metric(name="cosine_min", value=0.9812, unit="ratio", higher_is_better=True),
            Metric(name="sqnr_db", value=24.53, unit="dB", higher_is_better=True),
            Metric(name="nn_agreement", value=0.97, unit="ratio", higher_is_better=True),
        ],
        details={"examples": 64, "reference": "fp32 torch"},
    )
    report = build_report([rec], {})
    html, md = render_html(report), render_markdown(report)
    row = row_html(html, "fid-minilm-sts-int8-onnxruntime-fidelity")
    assert ">0.9987<" in row and ">24.5<" in row and ">97.00%<" in row
    assert "| all-MiniLM-L6-v2 | sts | int8 | onnxruntime | int8 | 0.9987 | 0.9812 | 24.5 |" in md


def test_formatting_helpers():
    assert fmt_score(0.8979) == "89.79" and fmt_score(None) == "—"
    assert fmt_pct(0.0254, 2) == "2.54%" and fmt_speedup(2.5) == "2.50×"
    assert [fmt_ms(x) for x in (4, 0.1234, 12.345, 1234.5)] == ["4.00", "0.123", "12.3", "1234"]
    assert fmt_ms(float("nan")) == "nan"
    assert slug("Bert/Base SST-2") == "bert-base-sst-2" and slug("<>") == "x"
    assert md_escape("a|b <c>\nd") == "a\\|b &lt;c&gt; d"
    assert nice_ticks(533.3) == [0, 200, 400, 600] and nice_ticks(0) == [0.0, 1.0]


def test_a_pair_whose_quantized_cells_all_failed_counts_as_not_passing():
    records = [r for r in run_records() if r.model != EVIL]
    records += [
        _acc("x/qnli/fp32/torch/accuracy", "x", "qnli", "fp32", "fp32", "torch", "fp32", 0.91),
        Record(
            cell="x/qnli/int8/torch/accuracy",
            status="failed",
            error="CalibrationError: NaN",
            model="x",
            task="qnli",
            scheme="int8",
            scheme_kind="qdq",
            backend="torch",
            precision="int8-fakequant",
            kind="accuracy",
        ),
    ]
    report = build_report(records, RUN_INFO)
    s = report.summary
    assert (s.pairs_total, s.pairs_passing, s.pairs_unjudged, s.passed) == (2, 1, 1, False)
    html = render_html(report)
    assert 'class="headline fail"' in html and "1 of 2 model × task pairs have" in html
    assert parse(html).classes["pair-x-qnli"] == "fail"
    assert ">no verdict<" in row_html(html, "pair-x-qnli")
    assert "| x | qnli | ❌ no verdict | 0 / 0 |" in render_markdown(report)


# ----------------------------------------------------------------------------------------------
# damaged run folders: never a silent drop, never a traceback


def _damage(results: Path) -> tuple[int, int]:
    """Binary garbage as line 3, a torn last line (no newline); their line numbers."""
    lines = results.read_bytes().splitlines(keepends=True)
    lines.insert(2, b"\x00\x9c\xff\xfeGARBAGE\xc3\x28\n")
    results.write_bytes(b"".join(lines) + b'{"cell": "bert-base-sst2/sst2/int8-max/torch/acc')
    return 3, len(lines) + 1


def test_skipped_lines_are_warned_about_and_shown_at_the_top(tmp_path: Path, capsys):
    run_dir = make_run(tmp_path, run_records())
    garbage, torn = _damage(run_dir / "results.jsonl")
    capsys.readouterr()
    out = {p.name: p.read_text(encoding="utf-8") for p in write_report(run_dir)}
    err = capsys.readouterr().err
    path = run_dir / "results.jsonl"
    assert f"warning: {path}: line {garbage} skipped: not UTF-8" in err
    assert f"warning: {path}: line {torn} skipped: torn last line" in err
    note = (f"results.jsonl: 2 lines skipped: line {garbage}: not UTF-8 (byte 1); "
            f"line {torn}: torn last line (")
    md = out["report.md"]
    assert note in md and md.splitlines()[2].startswith("> ⚠️ **results.jsonl: 2 lines skipped")
    html = out["report.html"]
    assert note in html and html.index('id="warnings"') < html.index('id="verdict"')
    assert 'id="acc-' in html  # every readable record is still there
    assert len(load_report(run_dir).accuracy) == len(build_report(run_records()).accuracy)
    from qdqbench.cli import main

    capsys.readouterr()
    assert main(["report", str(run_dir), "--format", "md"]) == 0
    err = capsys.readouterr().err
    assert f"line {garbage} skipped" in err and f"line {torn} skipped" in err


def test_a_clean_run_has_no_warnings(written):
    assert 'id="warnings"' not in written["report.html"] and "⚠️ **" not in written["report.md"]


def test_one_torn_line_reads_as_one_line(tmp_path: Path):
    run_dir = make_run(tmp_path, run_records())
    results = run_dir / "results.jsonl"
    n = results.read_bytes().count(b"\n")
    results.write_bytes(results.read_bytes() + b'{"cell": "x", "sta')
    report = load_report(run_dir)
    assert report.warnings[0].startswith(f"results.jsonl: 1 line skipped: line {n + 1}: torn last line (")


@pytest.mark.parametrize("data, expected", [
    (b'{"run_id": "x", \xff\xfe', "run.json is damaged (not UTF-8"),
    (b'{"run_id": "x",', "run.json is damaged (not valid JSON"),
    (b'"a string"', "run.json is damaged (a JSON str"),
])
def test_a_damaged_run_json_is_one_line_naming_it(tmp_path: Path, capsys, data, expected):
    run_dir = make_run(tmp_path, run_records())
    (run_dir / "run.json").write_bytes(data)
    with pytest.raises(QdqbenchError) as exc:
        load_report(run_dir)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{run_dir / 'run.json'}: ") and expected in msg
    from qdqbench.cli import main

    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    flat = "".join(err.split())  # the CLI's console may wrap a long line
    assert "Traceback" not in err and "".join(f"{run_dir / 'run.json'}: run.json is damaged".split()) in flat


def test_binary_garbage_everywhere_does_not_crash(tmp_path: Path, capsys):
    run_dir = make_run(tmp_path, run_records())
    noise = bytes(b for b in range(256) if b != 0x0A) * 8  # every byte but the newline
    (run_dir / "results.jsonl").write_bytes(noise + b"\n[1, 2]\n42\n{}\n")
    report = load_report(run_dir)
    assert report.accuracy == () and len(report.warnings) == 1
    assert report.warnings[0].startswith("results.jsonl: 4 lines skipped: line 1: not UTF-8")
    assert "line 4: not a result record" in report.warnings[0]
    paths = write_report(run_dir)
    assert "4 lines skipped" in (run_dir / "report.md").read_text(encoding="utf-8") and len(paths) > 2
    assert capsys.readouterr().err.count("warning: ") == 8  # 4 lines, read twice (load, write)


def test_mlperf_style_table_and_resource_columns_from_hand_built_records():
    records = [_lat("fp32", "fp32", "fp32", 1, 10.0, 100.0), _lat("fp32", "fp32", "fp32", 8, 40.0, 200.0),
               _lat("int8-max", "qdq", "int8", 1, 4.0, 250.0), _lat("int8-max", "qdq", "int8", 8, 20.0, 400.0),
               _lat("int8-max", "qdq", "int8", 32, 60.0, 533.3), _lat("int8-max", "qdq", "int8", 8, 9.0, 900.0,
                                                                       backend="openvino")]
    records[3].metrics.extend([Metric(name="peak_rss_mb", value=412.5, unit="MB", higher_is_better=False),
                               Metric(name="model_rss_mb", value=87.25, unit="MB", higher_is_better=False),
                               Metric(name="load_s", value=1.75, unit="s", higher_is_better=False)])
    report = build_report(records, RUN_INFO)
    by = {(m.backend, m.scheme): m for m in report.mlperf_style}
    assert len(report.mlperf_style) == 3  # one row per engine x scheme (x model, task, seq)
    assert by[("onnxruntime", "fp32")].singlestream_p90_ms == pytest.approx(11.0)  # p90 = 1.1 x mean at b1
    assert by[("onnxruntime", "fp32")].offline_throughput == 200.0 and by[("onnxruntime", "fp32")].offline_batch == 8
    int8 = by[("onnxruntime", "int8-max")]
    assert int8.singlestream_p90_ms == pytest.approx(4.4)
    assert (int8.offline_throughput, int8.offline_batch) == (533.3, 32)
    ov = by[("openvino", "int8-max")]
    assert ov.singlestream_p90_ms is None and ov.offline_batch == 8  # batch 1 not timed there
    lat = next(r for r in report.latency if r.backend == "onnxruntime" and r.scheme == "int8-max" and r.batch == 8)
    assert (lat.peak_rss_mb, lat.model_rss_mb, lat.load_s) == (412.5, 87.25, 1.75)

    md = render_markdown(report)
    assert "MLPerf-style SingleStream p90 (b1)" in md and "Offline-style throughput (largest batch)" in md
    assert "Not an MLPerf submission" in md and "no LoadGen" in md
    line = next(ln for ln in md.splitlines() if "int8-max" in ln and "533" in ln and "4.40" in ln)
    assert "| 32 |" in line.replace(" ", " ")
    assert "Peak RSS (MB)" in md and "412" in md and "1.75" in md
    html = render_html(report)
    assert 'id="mlperf-style-table"' in html and "MLPerf-style SingleStream p90 (b1)" in html
    assert "Not an MLPerf submission" in html and "Model RSS (MB)" in html
