"""Claims with their uncertainty (report.claims): "beats", "faster", "best" and "dominated" only
beyond the intervals; otherwise "ties (within the intervals)", the same in HTML, Markdown and CSV.
"""

from __future__ import annotations

import csv
import io

from qdqbench.core.results import Metric, Record, Shape, Verdict
from qdqbench.report import build_report
from qdqbench.report.render.csv import render_csv
from qdqbench.report.render.html import render_html
from qdqbench.report.render.markdown import render_markdown

M, T = "bert", "mrpc"
BASE = 0.8500
RUN_INFO = {"accuracy_bound": {"bound": 0.10, "mode": "relative"}, "run_id": "r1"}


def acc(scheme, kind, value, drop_ci, backend="onnxruntime"):
    drop = BASE - value
    verdict = None
    if kind != "fp32":
        verdict = Verdict(
            metric="accuracy", bound=0.10, mode="relative", baseline=BASE, value=value, drop=drop,
            relative_drop=drop / BASE, threshold=BASE * 0.9, passed=value >= BASE * 0.9,
            drop_ci_low=drop_ci[0], drop_ci_high=drop_ci[1],
            within_noise=drop_ci[0] <= 0 <= drop_ci[1],
        )  # fmt: skip
    return Record(
        cell=f"{M}/{T}/{scheme}/{backend}/accuracy", status="ok", model=M, task=T, scheme=scheme,
        scheme_kind=kind, backend=backend, precision="fp32" if kind == "fp32" else "int8",
        kind="accuracy",
        metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True,
                        ci_low=value - 0.06, ci_high=value + 0.06)],  # ±6 pts: a small dev set
        verdict=verdict, details={"primary_metric": "accuracy", "examples": 408},
    )  # fmt: skip


def lat(scheme, kind, mean, std, batch=8):
    return Record(
        cell=f"{M}/{T}/{scheme}/onnxruntime/b{batch}s128/latency", status="ok", model=M, task=T,
        scheme=scheme, scheme_kind=kind, backend="onnxruntime",
        precision="fp32" if kind == "fp32" else "int8", shape=Shape(batch=batch, seq=128),
        kind="latency",
        metrics=[Metric(name="latency_mean_ms", value=mean, unit="ms", higher_is_better=False),
                 Metric(name="latency_std_ms", value=std, unit="ms", higher_is_better=False)],
        details={"iterations": 100, "warmup_iters": 10, "threads": 2},
    )  # fmt: skip


def peer_claim(recs):
    report = build_report(recs, RUN_INFO)
    (c,) = report.peers[0].engines
    return report, c


def rendered(report):
    return render_html(report), render_markdown(report), render_csv(report)


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_the_issue_case_two_points_inside_six_point_intervals_is_a_tie():
    # 2-point difference; each drop interval about ±6 points wide and overlapping the other's.
    # The speed difference is clear (20 vs 30 ms, std 1 ms over 100 iterations).
    recs = [
        acc("fp32", "fp32", BASE, (0.0, 0.0)),
        acc("int8-max", "qdq", 0.8400, (-0.05, 0.07)),
        acc("ort-static", "ort-static", 0.8200, (-0.03, 0.09)),
        lat("int8-max", "qdq", 20.0, 1.0),
        lat("ort-static", "ort-static", 30.0, 1.0),
    ]
    report, c = peer_claim(recs)
    assert c.accuracy_outcome == "ties" and c.speed_outcome == "wins" and c.beats == "speed"
    assert "both accuracy and speed" not in c.headline
    assert c.headline == (
        "QDQBERT beats the best peer on speed; accuracy ties (within the intervals)"
    )
    html, md, files = rendered(report)
    assert "accuracy ties (within the intervals)" in html
    assert f"**speed** — {c.statement}" in md and "ties (within the intervals)" in md
    (row,) = csv_rows(files["peers.csv"])
    assert (row["accuracy_outcome"], row["beats"]) == ("ties", "speed")
    assert "ties (within the intervals)" in row["statement"]


def test_a_clear_win_beats():
    recs = [
        acc("fp32", "fp32", BASE, (0.0, 0.0)),
        acc("int8-max", "qdq", 0.8450, (0.0, 0.01)),
        acc("ort-static", "ort-static", 0.7800, (0.05, 0.09)),  # disjoint: QDQBERT's drop smaller
        lat("int8-max", "qdq", 20.0, 1.0),
        lat("ort-static", "ort-static", 30.0, 1.0),
    ]
    _, c = peer_claim(recs)
    assert (c.accuracy_outcome, c.speed_outcome, c.beats) == ("wins", "wins", "both")
    assert c.headline == "QDQBERT beats the best peer on both accuracy and speed"


def test_speed_within_the_spread_ties_and_beyond_it_is_faster():
    def claim(qdq_ms, std):
        recs = [
            acc("fp32", "fp32", BASE, (0.0, 0.0)),
            acc("int8-max", "qdq", 0.8450, (0.0, 0.01)),
            acc("ort-static", "ort-static", 0.7800, (0.05, 0.09)),
            lat("int8-max", "qdq", qdq_ms, std),
            lat("ort-static", "ort-static", 30.0, std),
        ]
        return peer_claim(recs)[1]

    # 29.5 vs 30 ms with std 2 ms over 100 iterations: 2·sqrt(2·4/100) = 0.57 ms > 0.5 ms
    tie = claim(29.5, 2.0)
    assert tie.shapes[0].outcome == "tie" and tie.speed_outcome == "ties"
    assert tie.beats == "accuracy"
    assert tie.headline == (
        "QDQBERT beats the best peer on accuracy; speed ties (within the intervals)"
    )
    # the same 0.5 ms with std 0.5 ms: 2·sqrt(2·0.25/100) = 0.14 ms < 0.5 ms → faster
    fast = claim(29.5, 0.5)
    assert fast.shapes[0].outcome == "faster" and fast.speed_outcome == "wins"
    assert fast.beats == "both"


def test_best_scheme_is_a_tie_unless_it_beats_the_runner_up():
    tied = [
        acc("fp32", "fp32", BASE, (0.0, 0.0)),
        acc("int8-max", "qdq", 0.8400, (-0.05, 0.07)),
        acc("int8-pct", "qdq", 0.8200, (-0.03, 0.09)),
    ]
    report = build_report(tied, RUN_INFO)
    (pair,) = report.pairs
    assert pair.best.scheme == "int8-max" and [a.scheme for a in pair.tied] == ["int8-pct"]
    html, md, _ = rendered(report)
    text = "tied best: int8-max (onnxruntime, int8), int8-pct (onnxruntime, int8)"
    assert text in html and text in md
    clear = [*tied[:2], acc("int8-pct", "qdq", 0.7800, (0.08, 0.12))]
    (pair,) = build_report(clear, RUN_INFO).pairs
    assert pair.best.scheme == "int8-max" and pair.tied == ()
    _, md, _ = rendered(build_report(clear, RUN_INFO))
    assert "tied best" not in md and "| int8-max (onnxruntime, int8) |" in md


def test_pareto_dominated_only_when_clearly_worse_on_both_axes():
    recs = [
        acc("fp32", "fp32", BASE, (0.0, 0.0)),
        acc("int8-max", "qdq", 0.8450, (0.0, 0.01)),
        # within the intervals of int8-max on accuracy, and slower: not dominated
        acc("int8-pct", "qdq", 0.8300, (-0.01, 0.05)),
        # clearly less accurate and clearly slower than int8-max: dominated
        acc("ort-dynamic", "ort-dynamic", 0.7800, (0.05, 0.09)),
        lat("fp32", "fp32", 60.0, 1.0),
        lat("int8-max", "qdq", 20.0, 1.0),
        lat("int8-pct", "qdq", 25.0, 1.0),
        lat("ort-dynamic", "ort-dynamic", 30.0, 1.0),
    ]
    report = build_report(recs, RUN_INFO)
    (chart,) = report.pareto
    optimal = {p.scheme: p.optimal for p in chart.points}
    assert optimal == {"fp32": True, "int8-max": True, "int8-pct": True, "ort-dynamic": False}
    rows = {r["scheme"]: r["optimal"] for r in csv_rows(render_csv(report)["pareto.csv"])}
    assert rows["int8-pct"] == "true" and rows["ort-dynamic"] == "false"
    # the same points without a spread: no speed claim, so nothing is dominated
    bare = [
        r if r.kind != "latency" else lat(r.scheme, r.scheme_kind, r.metric("latency_mean_ms").value, float("nan"))
        for r in recs
    ]
    (chart,) = build_report(bare, RUN_INFO).pareto
    assert all(p.optimal for p in chart.points)
