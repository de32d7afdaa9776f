"""Tests of the report's views: engines beside fake-quant, peers, calibrators, Pareto, per layer.

One small fake run is built in-test: an fp32 baseline, four QDQBERT schemes (max, entropy,
percentile and an auto recipe that chose a percentile calibrator), two peers (ort-static,
ort-dynamic), accuracy on onnxruntime and tensorrt, latency at two shapes, an amax.json artifact
and a sensitivity/trace block. Every expected number below follows from those stored numbers.
"""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from qdqbench.core.results import Metric, Record, ResultStore, Shape, Verdict, write_json_atomic
from qdqbench.report import build_report, write_report
from qdqbench.report.render.html import render_html
from qdqbench.report.render.markdown import render_markdown
from qdqbench.report.views import EngineScore, pareto_optimal

M, T = "bert", "sst2"
EVIL = "<script>alert(1)</script>"
BASE = 0.9100
AMAX_PATH = "artifacts/bert/sst2/int8-max/amax.json"
RUN_INFO = {"accuracy_bound": {"bound": 0.01, "mode": "relative"}, "run_id": "r1"}


def verdict(value: float, ci: tuple[float, float], baseline: float = BASE) -> Verdict:
    drop = baseline - value
    threshold = baseline * 0.99
    return Verdict(
        metric="accuracy", bound=0.01, mode="relative", baseline=baseline, value=value,
        drop=drop, relative_drop=drop / baseline, threshold=threshold,
        passed=value >= threshold, drop_ci_low=ci[0], drop_ci_high=ci[1],
        within_noise=ci[0] <= 0 <= ci[1],
    )  # fmt: skip


def acc(scheme, kind, backend, value, ci=(0.0, 0.02), details=None, model=M, task=T,
        baseline=BASE):  # fmt: skip
    quantized = kind != "fp32" or backend != "torch"
    precision = "fp32" if kind == "fp32" else "int8-fakequant" if backend == "torch" else "int8"
    return Record(
        cell=f"{model}/{task}/{scheme}/{backend}/accuracy", status="ok", model=model, task=task,
        scheme=scheme, scheme_kind=kind, backend=backend, precision=precision, kind="accuracy",
        metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True)],
        verdict=verdict(value, ci, baseline) if quantized else None,
        details={"primary_metric": "accuracy", "examples": 872, **(details or {})},
    )  # fmt: skip


def lat(scheme, kind, backend, batch, mean, model=M, task=T, std=None):
    return Record(
        cell=f"{model}/{task}/{scheme}/{backend}/b{batch}s128/latency", status="ok", model=model,
        task=task, scheme=scheme, scheme_kind=kind, backend=backend,
        precision="fp32" if kind == "fp32" else "int8", shape=Shape(batch=batch, seq=128),
        kind="latency",
        metrics=[Metric(name="latency_mean_ms", value=mean, unit="ms", higher_is_better=False),
                 Metric(name="throughput", value=1000 * batch / mean, unit="seq/s"),
                 *([Metric(name="latency_std_ms", value=std, unit="ms", higher_is_better=False)]
                   if std is not None else [])],
        details={"iterations": 100, "warmup_iters": 10, "threads": 2, "method": "perf_counter_ns"},
    )  # fmt: skip


def cal(method: str, **extra) -> dict:
    return {"calibration": {"method": method, "samples": 128, "seconds": 1.5},
            "quantizers": {"linear": 72, "matmul": 48, "residual": 48}, **extra}  # fmt: skip


def engine(changed: int, diff: float = 0.01) -> dict:
    return {"engine": {"provider": "CPUExecutionProvider"}, "changed_vs_torch": changed,
            "max_abs_diff_vs_torch": diff}  # fmt: skip


# fmt: off
RECIPE = {
    "chosen": "percentile-99.99",
    "selection": "fastest passing full-INT8 candidate",
    "threshold": 0.9009,
    "description": {"stage": "calibrate", "calibrator": "percentile-99.99"},
    "sensitivity": {
        "proxy": "logits_sqnr", "unit": "dB", "mode": "both",
        "ranking_rule": "mean of the two ranks", "full_score": 18.2, "float_score": None,
        "parts": [
            {"rank": 2, "part": "layer.1.linear", "kind": "layer", "group": "linear", "layer": 1,
             "quantizers": 12, "only_quantized": 31.5, "only_float": 19.0},
            {"rank": 1, "part": "layer.2.residual", "kind": "layer", "group": "residual",
             "layer": 2, "quantizers": 4, "only_quantized": 21.25, "only_float": 27.5},
            {"rank": 3, "part": "all.matmul", "kind": "group", "group": "matmul", "layer": None,
             "quantizers": 16, "only_quantized": None, "only_float": 18.4},
        ],
    },
    "trace": [
        {"name": "max", "stage": "calibrate", "value": 0.8990, "passed": False,
         "latency_ms": 30.1, "evaluations": 1, "seconds": 2.0},
        {"name": "percentile-99.99", "stage": "calibrate", "value": 0.9062, "passed": True,
         "latency_ms": 29.7, "evaluations": 1, "seconds": 2.1, "drop": 0.0045, "drop_ci_low": 0.001,
         "drop_ci_high": 0.008, "structure": {"int8_quantizers": 60, "int8_by_group": {"linear": 36, "matmul": 24},
                                             "weight_bits": 7, "activation_bits": 8,
                                             "calibrators": {"weights": "max", "linear": "mse"}}},
        {"name": "entropy", "stage": "calibrate", "value": None, "passed": None,
         "latency_ms": None, "evaluations": 0, "seconds": 0.1},
    ],
    "float_part_costs": {
        "full_int8": 29.7, "chosen": 31.0, "delta": 1.3,
        "parts": [{"part": "layer.2.residual", "quantizers": 4, "latency": 30.2, "delta": 0.5},
                  {"part": "layer.1.linear", "quantizers": 12, "latency": 29.5, "delta": -0.2}],
    },
}
# fmt: on


def records() -> list[Record]:
    return [
        acc("fp32", "fp32", "torch", BASE),
        acc("fp32", "fp32", "onnxruntime", BASE, ci=(-0.001, 0.001), details=engine(0)),
        # int8-max: onnxruntime within its CI of fake-quant, tensorrt 1.20 pts off with CI ±1.00
        acc("int8-max", "qdq", "torch", 0.9050, details=cal("max", amax=AMAX_PATH)),
        acc("int8-max", "qdq", "onnxruntime", 0.9040, ci=(0.0, 0.016), details=engine(3)),
        acc("int8-max", "qdq", "tensorrt", 0.8930, ci=(0.005, 0.025), details=engine(11, 0.4)),
        acc("int8-entropy", "qdq", "torch", 0.8990, details=cal("entropy")),
        acc("int8-entropy", "qdq", "onnxruntime", 0.8985, details=engine(2)),
        acc("int8-pct", "qdq", "torch", 0.9030, details=cal("percentile")),
        acc("int8-pct", "qdq", "onnxruntime", 0.9020, details=engine(4)),
        # an auto recipe: the scheme's default says max, the recipe chose a percentile calibrator
        acc("int8-auto", "qdq", "torch", 0.9060, details=cal("max", recipe=RECIPE)),
        # peers: neither passes (threshold 90.09), ort-static is the better one
        # (synthetic drop intervals above int8-max's [0, 1.6] pts, so "beats" holds beyond them)
        acc("ort-static", "ort-static", "onnxruntime", 0.9000, ci=(0.017, 0.03)),
        acc("ort-dynamic", "ort-dynamic", "onnxruntime", 0.8950, ci=(0.017, 0.03)),
        lat("fp32", "fp32", "onnxruntime", 1, 10.0),
        lat("fp32", "fp32", "onnxruntime", 8, 60.0),
        # std 0.2 ms over 100 iterations: every difference below is beyond the spread
        lat("int8-max", "qdq", "onnxruntime", 1, 5.0, std=0.2),
        lat("int8-max", "qdq", "onnxruntime", 8, 30.0, std=0.2),
        lat("int8-pct", "qdq", "onnxruntime", 8, 28.0),
        lat("ort-static", "ort-static", "onnxruntime", 1, 4.0, std=0.2),
        lat("ort-static", "ort-static", "onnxruntime", 8, 25.0, std=0.2),
        lat("ort-dynamic", "ort-dynamic", "onnxruntime", 1, 6.0, std=0.2),
        lat("ort-dynamic", "ort-dynamic", "onnxruntime", 8, 40.0, std=0.2),  # dominated by int8-max
        lat("int8-max", "qdq", "tensorrt", 32, 3.0),
    ]


AMAX = {
    **{f"bert.encoder.layer.{i}.attention.self.query.input_quantizer": 5.0 + i for i in range(4)},
    **{f"bert.encoder.layer.{i}.attention.self.query.weight_quantizer": 0.3 for i in range(4)},
    **{
        f"bert.encoder.layer.{i}.output.add_residual_input_quantizer": v
        for i, v in enumerate((8.0, 9.0, 195.0, 10.0))
    },
}


def make_run(tmp_path: Path, recs: list[Record], amax: dict | None = AMAX) -> Path:
    run_dir = tmp_path / "run"
    store = ResultStore(run_dir / "results.jsonl")
    for r in recs:
        store.append(r)
    write_json_atomic(run_dir / "run.json", RUN_INFO)
    if amax is not None:
        write_json_atomic(run_dir / AMAX_PATH, amax)
    return run_dir


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> dict[str, str]:
    run_dir = make_run(tmp_path_factory.mktemp("views"), records())
    return {p.name: p.read_text(encoding="utf-8") for p in write_report(run_dir)}


def element(html: str, tag: str, element_id: str) -> str:
    m = re.search(rf'<{tag} id="{re.escape(element_id)}"[^>]*>.*?</{tag}>', html, re.DOTALL)
    assert m, f"no <{tag}> {element_id}"
    return m.group(0)


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """Visible text of each body row of a table."""

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.inside, self.depth, self.cell = [], False, 0, None

        def handle_starttag(self, tag, attrs):
            if tag == "table" and dict(attrs).get("id") == table_id:
                self.inside = True
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag == "td":
                self.cell = ""

        def handle_endtag(self, tag):
            if self.inside and tag == "td":
                self.rows[-1].append(" ".join(self.cell.split()))
                self.cell = None
            elif self.inside and tag == "table":
                self.inside = False

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    p = Rows()
    p.feed(html)
    return [r for r in p.rows if r]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ----------------------------------------------------------------------------------------------
# engines beside fake-quant


def test_side_by_side_rows_and_the_gap_badge(out):
    report = build_report(records(), RUN_INFO)
    assert report.engines == ("onnxruntime", "tensorrt")
    row = next(r for r in report.side_by_side if r.scheme == "int8-max")
    assert (row.fp32_value, row.fakequant_value) == (BASE, 0.9050)
    ort, trt = row.engine("onnxruntime"), row.engine("tensorrt")
    assert ort.gap == pytest.approx(-0.001) and ort.ci_half_width == pytest.approx(0.008)
    assert ort.flagged is False and ort.changed_vs_torch == 3
    assert trt.gap == pytest.approx(-0.012) and trt.ci_half_width == pytest.approx(0.010)
    assert trt.flagged is True and trt.max_abs_diff_vs_torch == 0.4
    peer = next(r for r in report.side_by_side if r.scheme == "ort-static")
    assert (
        peer.is_peer and peer.fakequant_value is None and peer.engine("onnxruntime").flagged is None
    )

    html = out["report.html"]
    assert "≠ fake-quant</span>" in element(html, "td", "sxs-bert-sst2-int8-max--tensorrt")
    ort_cell = element(html, "td", "sxs-bert-sst2-int8-max--onnxruntime")
    assert "≠ fake-quant" not in ort_cell and "3 changed vs torch" in ort_cell
    assert ">90.40<" in ort_cell and "-0.10 vs FQ" in ort_cell
    # the badge appears exactly once in the engines table: only tensorrt's gap exceeds its CI
    engines = element(html, "section", "engines")
    assert engines.count('<span class="badge gap" title=') == 1
    assert 'class="flagged"' in element(html, "tr", "sxs-bert-sst2-int8-max")
    assert "| bert | sst2 | int8-max | accuracy | 91.00 | 90.50 |" in out["report.md"]
    assert "89.30 (-1.20 vs FQ, 11 changed vs torch) ⚠️ ≠ fake-quant |" in out["report.md"]
    eng = {(r["scheme"], r["backend"]): r for r in csv_rows(out["engines.csv"])}
    assert eng[("int8-max", "tensorrt")]["flagged"] == "true"
    assert eng[("int8-max", "onnxruntime")]["flagged"] == "false"
    assert eng[("int8-max", "onnxruntime")]["changed_vs_torch"] == "3"
    assert eng[("ort-static", "onnxruntime")]["flagged"] == ""


def test_gap_badge_needs_the_gap_to_exceed_the_half_width():
    def score(gap, ci):
        return EngineScore("trt", "int8", "a", 0.9, True, ci[0], ci[1], gap, None, None)

    assert score(0.01, (0.0, 0.02)).flagged is False  # equal to the half-width: not flagged
    assert score(-0.0101, (0.0, 0.02)).flagged is True  # either sign
    assert score(0.05, (None, None)).flagged is None  # no interval: unknown, no badge
    assert score(None, (0.0, 0.02)).flagged is None


# ----------------------------------------------------------------------------------------------
# peers


def test_peer_statement_wins_on_accuracy_loses_on_speed(out):
    report = build_report(records(), RUN_INFO)
    (pc,) = report.peers
    assert pc.anchor == "peer-bert-sst2" and pc.peers == ("ort-static", "ort-dynamic")
    (c,) = pc.engines
    assert (c.backend, c.qdq.scheme, c.peer.scheme) == ("onnxruntime", "int8-max", "ort-static")
    assert (c.accuracy_outcome, c.speed_outcome, c.beats) == ("wins", "loses", "accuracy")
    assert c.accuracy_gap == pytest.approx(0.004)
    assert c.shapes_where("slower") == ["1×128", "8×128"] and c.shapes_where("faster") == []
    assert c.headline == "QDQBERT beats the best peer on accuracy but not on speed"
    expected = (
        "On onnxruntime: QDQBERT beats the best peer on accuracy but not on speed — accuracy "
        "90.40 (int8-max) vs 90.00 (ort-static), +0.40 pts; mean latency 1×128: 5.00 vs 4.00 ms "
        "(slower), 8×128: 30.0 vs 25.0 ms (slower)."
    )
    assert c.statement == expected
    html = out["report.html"]
    verdict_section = element(html, "section", "verdict")
    assert 'id="peer-bert-sst2"' in verdict_section
    li = element(verdict_section, "li", "peer-bert-sst2--onnxruntime")
    assert 'data-beats="accuracy"' in li and expected in li.replace("&#x27;", "'")
    assert f"- bert · sst2: **accuracy** — {expected}" in out["report.md"]
    peers = csv_rows(out["peers.csv"])
    assert [(p["batch"], p["shape_outcome"]) for p in peers] == [("1", "slower"), ("8", "slower")]
    assert {p["beats"] for p in peers} == {"accuracy"} and peers[0]["peer_value"] == "0.9"


def test_peer_statement_mixed_speed_and_passing_first():
    recs = [
        acc("fp32", "fp32", "torch", BASE),
        # the best QDQBERT scheme passes; a higher-scoring failing one is not "best"... (none here)
        # intervals and spreads clearly apart, so the claims rule decides as the numbers do
        acc("q", "qdq", "onnxruntime", 0.9000, ci=(0.008, 0.012)),  # fails
        acc("peer-a", "ort-static", "onnxruntime", 0.9020),  # passes: beats the failing higher one
        acc("peer-b", "ort-dynamic", "onnxruntime", 0.9080, ci=(0.0, 0.004)),  # passes, best peer
        lat("q", "qdq", "onnxruntime", 1, 3.0, std=0.1),
        lat("q", "qdq", "onnxruntime", 8, 30.0, std=0.1),
        lat("peer-b", "ort-dynamic", "onnxruntime", 1, 4.0, std=0.1),
        lat("peer-b", "ort-dynamic", "onnxruntime", 8, 20.0, std=0.1),
    ]
    (c,) = build_report(recs, RUN_INFO).peers[0].engines
    assert c.peer.scheme == "peer-b" and c.beats == "neither" and c.speed_outcome == "mixed"
    assert c.headline == (
        "QDQBERT beats the best peer on neither accuracy nor speed (faster only at 1×128; "
        "not at 8×128)"
    )
    # the passing rule: among passing schemes when any passes, even if a failing one scores higher
    recs2 = [
        acc("fp32", "fp32", "torch", BASE),
        acc("q-pass", "qdq", "onnxruntime", 0.9010),
        acc("q-fail-high", "qdq", "onnxruntime", 0.9005, ci=(0.0, 0.0)),
        acc("p", "ort-static", "onnxruntime", 0.9500),
    ]
    (c2,) = build_report(recs2, RUN_INFO).peers[0].engines
    assert c2.qdq.scheme == "q-pass" and c2.beats == "neither" and c2.speed_outcome == "unknown"
    assert "speed not compared" in c2.headline


def test_peer_badges_and_csv_column(out):
    html = out["report.html"]
    acc_row = element(html, "tr", "acc-bert-sst2-ort-static-onnxruntime-accuracy")
    assert '<span class="badge peer"' in acc_row
    assert '<span class="badge peer"' not in element(
        html, "tr", "acc-bert-sst2-int8-max-torch-accuracy"
    )
    assert '<span class="badge peer"' in element(
        html, "tr", "lat-bert-sst2-ort-dynamic-onnxruntime-b8s128-latency"
    )
    rows = csv_rows(out["accuracy.csv"])
    assert {r["scheme"]: r["peer"] for r in rows if r["backend"] == "onnxruntime"} == {
        "fp32": "false", "int8-max": "false", "int8-entropy": "false", "int8-pct": "false",
        "ort-static": "true", "ort-dynamic": "true",
    }  # fmt: skip
    assert {r["peer"] for r in csv_rows(out["latency.csv"]) if r["scheme"].startswith("ort-")} == {
        "true"
    }
    assert "| bert | sst2 | ort-static (peer) | onnxruntime |" in out["report.md"]


# ----------------------------------------------------------------------------------------------
# calibrators and Pareto


def test_calibrator_chart_groups_by_method_with_its_table(out):
    report = build_report(records(), RUN_INFO)
    (chart,) = report.calibrators
    assert chart.methods == ("max", "entropy", "percentile")
    assert [(r.scheme, r.calibrator) for r in chart.rows] == [
        ("int8-max", "max"), ("int8-entropy", "entropy"), ("int8-pct", "percentile"),
        ("int8-auto", "percentile-99.99"),  # the recipe's calibrator, not the scheme default
    ]  # fmt: skip
    assert chart.fp32_value == BASE and chart.threshold == pytest.approx(0.9009)
    html = out["report.html"]
    figure = element(html, "figure", "calib-bert-sst2")
    assert 'id="calibsvg-bert-sst2"' in figure and "<circle" in figure and "<rect" in figure
    assert "fp32 91.00" in figure and "bound 90.09" in figure  # the two lines, labelled
    rows = table_rows(html, "calibtable-bert-sst2")
    assert rows[1][:9] == ["entropy", "entropy", "int8-entropy", "128", "1.50", "89.90", "1.10",
                           "FAIL", "89.85"]  # fmt: skip
    assert rows[3][:6] == ["percentile", "percentile-99.99", "int8-auto", "128", "1.50", "90.60"]
    assert rows[3][8] == "—"  # no onnxruntime score for the auto scheme
    cal = csv_rows(out["calibrators.csv"])
    assert [(r["method"], r["torch_value"], r["engine_value"]) for r in cal] == [
        ("max", "0.905", "0.904"), ("entropy", "0.899", "0.8985"), ("percentile", "0.903", "0.902"),
        ("percentile", "0.906", ""),
    ]  # fmt: skip
    assert (
        "| bert | sst2 | entropy | entropy | int8-entropy | 89.90 | ❌ FAIL | 89.85 |"
        in out["report.md"]
    )


def test_pareto_points_flag_only_the_frontier(out):
    report = build_report(records(), RUN_INFO)
    (chart,) = report.pareto
    points = {(p.scheme, p.backend): p for p in chart.points}
    assert set(points) == {
        ("fp32", "onnxruntime"),
        ("int8-max", "onnxruntime"),
        ("int8-pct", "onnxruntime"),
        ("ort-static", "onnxruntime"),
        ("ort-dynamic", "onnxruntime"),
        ("int8-max", "tensorrt"),
    }  # fmt: skip  (int8-entropy and int8-auto were not timed; torch was not timed)
    assert (points[("int8-max", "onnxruntime")].batch, points[("int8-max", "tensorrt")].batch) == (
        8,
        32,
    )
    optimal = {k for k, p in points.items() if p.optimal}
    assert (
        "ort-dynamic",
        "onnxruntime",
    ) not in optimal  # 89.50 at 40 ms: int8-max is better in both
    assert optimal == set(points) - {("ort-dynamic", "onnxruntime")}
    html = out["report.html"]
    svg = element(html, "svg", "paretosvg-bert-sst2")
    assert svg.count('class="pareto-optimal"') == 5 and svg.count('class="pareto-dominated"') == 1
    dominated = element(html, "tr", "paretorow-bert-sst2-ort-dynamic-onnxruntime")
    assert 'class="dominated"' in dominated and "Pareto-optimal" not in dominated
    assert "Pareto-optimal" in element(html, "tr", "paretorow-bert-sst2-int8-max-onnxruntime")
    rows = {(r["scheme"], r["backend"]): r for r in csv_rows(out["pareto.csv"])}
    assert rows[("ort-dynamic", "onnxruntime")]["optimal"] == "false"
    assert (
        rows[("int8-max", "tensorrt")]["mean_ms"] == "3.0"
        and rows[("int8-max", "tensorrt")]["peer"] == "false"
    )
    assert (
        "| bert | sst2 | ort-dynamic (peer) | onnxruntime | 8×128 | 89.50 | 40.0 | no |"
        in out["report.md"]
    )


def test_pareto_optimal_helper():
    assert pareto_optimal([(0.9, 10.0), (0.8, 20.0), (0.95, 30.0), (0.9, 10.0)]) == [
        True, False, True, True,  # equal points do not dominate each other
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# per-layer views


def test_amax_table_shows_values_and_the_outlier(out, tmp_path):
    html = out["report.html"]
    details = element(html, "details", "amax-bert-sst2-int8-max")
    assert " open>" in details.split("\n")[0] or "open><summary>" in details
    rows = table_rows(html, "amaxtable-bert-sst2-int8-max")
    assert rows[2] == ["layer 2", "7.00", "0.300", "195"]
    assert rows[0] == ["layer 0", "5.00", "0.300", "8.00"]
    cell = re.search(r'<td class="num amax outlier"[^>]*>195</td>', details)
    assert cell and "bert.encoder.layer.2.output.add_residual_input_quantizer" in cell.group(0)
    assert details.count("amax outlier") == 1
    assert "output.add_residual_input" in details  # the column names the quantizer type
    amax = csv_rows(out["amax.csv"])
    assert len(amax) == 12 and [r["amax"] for r in amax if r["outlier"] == "true"] == ["195.0"]
    assert (
        "| bert | sst2 | int8-max | bert.encoder.layer.2.output.add_residual_input_quantizer | 195 |"
        in out["report.md"]
    )
    # without a run folder the report still builds, just without amax tables
    assert build_report(records(), RUN_INFO).amax == ()
    # a missing artifact is said, not crashed on
    report = build_report(records(), RUN_INFO, run_dir=make_run(tmp_path, records(), amax=None))
    assert report.amax[0].problem == f"{AMAX_PATH}: not found"


def test_sensitivity_ranks_and_trace_chosen(out):
    report = build_report(records(), RUN_INFO)
    (view,) = report.sensitivity
    assert [(p.rank, p.part) for p in view.parts] == [
        (1, "layer.2.residual"), (2, "layer.1.linear"), (3, "all.matmul"),
    ]  # fmt: skip
    html = out["report.html"]
    rows = table_rows(html, "senstable-bert-sst2-int8-auto")
    assert [r[:2] for r in rows] == [["1", "layer.2.residual"], ["2", "layer.1.linear"],
                                     ["3", "all.matmul"]]  # fmt: skip
    assert rows[0][6:8] == ["21.2", "27.5"] and rows[2][6] == "—"
    svg = element(html, "svg", "senssvg-bert-sst2-int8-auto")
    assert svg.count("<rect") == 5 + 2  # five finite scores, two legend swatches
    (trace,) = report.traces
    assert [s.chosen for s in trace.steps] == [False, True, False]
    chosen = element(html, "tr", "tracerow-bert-sst2-int8-auto--1")
    assert "chosen" in chosen.split(">")[0] and '<span class="badge chosen">chosen</span>' in chosen
    assert "chosen" not in element(html, "tr", "tracerow-bert-sst2-int8-auto--0")
    assert table_rows(html, "tracetable-bert-sst2-int8-auto")[1][3:6] == ["90.62", "pass", "29.7"]
    md = out["report.md"]
    assert "| 1 | layer.2.residual | layer | 4 | 21.2 | 27.5 |" in md
    assert "| 2 | percentile-99.99 ⭐ chosen | calibrate | 90.62 | pass | 29.7 | 1 | 2.10 |" in md
    assert next(r["part"] for r in csv_rows(out["sensitivity.csv"])) == "layer.2.residual"
    assert [r["chosen"] for r in csv_rows(out["recipe_trace.csv"])] == ["false", "true", "false"]
    assert trace.full_int8_ms == 29.7 and trace.chosen_ms == 31.0
    assert table_rows(html, "partcosts-bert-sst2-int8-auto") == [["layer.2.residual", "4", "30.2", "+0.500"],
                                                                 ["layer.1.linear", "12", "29.5", "−0.200"]]
    assert "every part in INT8 29.7, as chosen 31.0" in html
    # each candidate's drop on the selection data with its interval, and its Q/DQ structure
    assert table_rows(html, "tracetable-bert-sst2-int8-auto")[1][8:10] == [
        "0.45 [0.10, 0.80]", "int8 60 (linear 36, matmul 24); w7/a8; weights max, linear mse"]
    step = csv_rows(out["recipe_trace.csv"])[1]
    assert step["drop_ci_high"] == "0.008"
    assert step["structure"] == "int8 60 (linear 36, matmul 24); w7/a8; weights max, linear mse"
    assert csv_rows(out["recipe_trace.csv"])[0]["drop"] == ""
    assert "| layer.2.residual | 4 | 30.2 | +0.500 |" in md
    costs = csv_rows(out["float_part_costs.csv"])
    assert [(r["part"], r["delta_ms"], r["full_int8_ms"]) for r in costs] == [
        ("layer.2.residual", "0.5", "29.7"), ("layer.1.linear", "-0.2", "29.7")]


# ----------------------------------------------------------------------------------------------
# escaping, ids, self-containment


def evil_records() -> list[Record]:
    recipe = {
        "chosen": EVIL,
        "sensitivity": {"proxy": EVIL, "unit": EVIL, "ranking_rule": EVIL,
                        "parts": [{"rank": 1, "part": EVIL, "kind": EVIL, "group": EVIL,
                                   "only_quantized": 1.0, "only_float": 2.0}]},
        "trace": [{"name": EVIL, "stage": EVIL, "value": 0.5, "passed": True, "error": EVIL}],
    }  # fmt: skip
    kw = {"model": EVIL, "task": EVIL}
    return [
        acc(EVIL, "fp32", "torch", BASE, **kw),
        acc(
            EVIL + "q",
            "qdq",
            "torch",
            0.905,
            details=cal(EVIL, amax="evil/amax.json", recipe=recipe),
            **kw,
        ),
        acc(EVIL + "q", "qdq", EVIL, 0.80, ci=(0.0, 0.001), details=engine(5), **kw),
        acc(EVIL + "p", "ort-static", EVIL, 0.79, **kw),
        lat(EVIL + "q", "qdq", EVIL, 1, 2.0, **kw),
        lat(EVIL + "p", "ort-static", EVIL, 1, 3.0, **kw),
        lat(EVIL, "fp32", EVIL, 1, 5.0, **kw),
        acc(EVIL, "fp32", EVIL, BASE, **kw),
    ]


def test_new_sections_escape_everything(tmp_path):
    run_dir = make_run(tmp_path, evil_records(), amax=None)
    write_json_atomic(run_dir / "evil" / "amax.json", {f"x.layer.0.{EVIL}_quantizer": 3.0})
    report = build_report(evil_records(), RUN_INFO, run_dir=run_dir)
    assert report.side_by_side and report.peers[0].engines and report.calibrators
    assert report.pareto and report.amax and report.sensitivity and report.traces
    html, md = render_html(report), render_markdown(report)
    assert "<script>alert" not in html and "<script>alert" not in md
    assert html.count("<script") == 1  # the page's own sorter only
    for section in ("engines", "calibrators", "pareto", "layers", "peers"):
        assert f'id="{section}"' in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in element(
            html, "div" if section == "peers" else "section", section
        )
    ids = re.findall(r'\sid="([^"]*)"', html)
    assert len(ids) == len(set(ids)), "element ids must be unique"
    assert "http://" not in html and "https://" not in html


def test_a_quantizer_outside_the_run_folder_is_not_read(tmp_path):
    recs = records()
    recs[2] = acc("int8-max", "qdq", "torch", 0.9050, details=cal("max", amax="../../etc/passwd"))
    report = build_report(recs, RUN_INFO, run_dir=make_run(tmp_path, recs))
    assert report.amax[0].problem == "../../etc/passwd: outside the run folder, not read"


def test_amax_under_the_runs_artifacts_folder_is_read_and_elsewhere_is_not(tmp_path):
    # `run --artifacts DIR` stores artifacts outside the run folder and names the folder in
    # run.json: the report reads amax.json there, and still nowhere else.
    shared = tmp_path / "shared" / "r1"
    write_json_atomic(shared / "m" / "amax.json", AMAX)
    recs = records()
    recs[2] = acc("int8-max", "qdq", "torch", 0.9050, details=cal("max", amax=str(shared / "m" / "amax.json")))
    run_dir = make_run(tmp_path, recs, amax=None)
    info = {**RUN_INFO, "artifacts": str(shared)}
    assert build_report(recs, info, run_dir=run_dir).amax[0].problem is None
    assert build_report(recs, RUN_INFO, run_dir=run_dir).amax[0].problem.endswith(
        "outside the run folder, not read")
    merged = {**RUN_INFO, "shards": [{"artifacts": str(shared)}]}
    assert build_report(recs, merged, run_dir=run_dir).amax[0].problem is None
    recs[2] = acc("int8-max", "qdq", "torch", 0.9050, details=cal("max", amax=str(tmp_path / "elsewhere.json")))
    assert build_report(recs, info, run_dir=run_dir).amax[0].problem.endswith(
        "outside the run folder and its artifacts folder, not read")
