"""Gates: the --fail-on grammar and its errors, and the boundaries of every check."""

from __future__ import annotations

import pytest

from qdqbench.core.results import Metric, Record, Shape
from qdqbench.core.verdict import make_verdict
from qdqbench.review.comparison import build_comparison
from qdqbench.review.gates import (
    GATES,
    GateError,
    GateFailure,
    GateOutcome,
    check_compare_gates,
    check_gates,
    evaluate_compare_gates,
    evaluate_gates,
    format_outcomes,
    parse_gate,
    parse_gates,
)

INFO = {"run_id": "r", "versions": {"onnxruntime": "1.20.0"},
        "machine": {"cpu": "Xeon", "cores": 2, "gpu": None}, "timing": {"threads_used": 2}}


def acc(cell: str, value: float, baseline: float | None = 0.9, scheme_kind: str = "qdq",
        mode: str = "relative", status: str = "ok") -> Record:
    """An accuracy record; a verdict against ``baseline`` unless it is None."""
    verdict = None if baseline is None else make_verdict("accuracy", baseline, value, 0.01, mode, (0.0, 0.01))
    return Record(cell=cell, status=status, model="m", task="sst2", scheme=cell.split("/")[2],
                  scheme_kind=scheme_kind, backend="torch", kind="accuracy",
                  metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True,
                                  ci_low=value - 0.02, ci_high=value + 0.02)],
                  verdict=verdict, details={"primary_metric": "accuracy", "examples": 872},
                  error=None if status == "ok" else "boom")


def lat(cell: str, mean: float, *, p99: float | None = None, thr: float = 100.0, std: float = 0.01,
        n: int = 1000, backend: str = "onnxruntime") -> Record:
    """A latency record with the metrics the timing module writes."""
    p99 = mean * 1.2 if p99 is None else p99
    ms = [("latency_mean_ms", mean), ("latency_median_ms", mean), ("latency_p90_ms", mean * 1.1),
          ("latency_p95_ms", mean * 1.15), ("latency_p99_ms", p99), ("latency_min_ms", mean * 0.9),
          ("latency_max_ms", mean * 1.5), ("latency_std_ms", std)]
    metrics = [Metric(name=k, value=v, unit="ms", higher_is_better=False) for k, v in ms]
    metrics += [Metric(name="cov", value=std / mean, unit="ratio", higher_is_better=False),
                Metric(name="throughput", value=thr, unit="seq/s", higher_is_better=True)]
    return Record(cell=cell, status="ok", model="m", task="sst2", scheme="int8", scheme_kind="qdq",
                  backend=backend, kind="latency", shape=Shape(batch=1, seq=128), metrics=metrics,
                  details={"iterations": n})


def compare(base: list[Record], cand: list[Record], cand_info=None, force=False):
    return build_comparison(base, INFO, cand, cand_info or INFO, force=force)


# ----------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize("text, name, limit, unit", [
    ("accuracy-drop>1%", "accuracy-drop", 1.0, "%"),
    ("accuracy-drop>0.5pt", "accuracy-drop", 0.5, "pt"),
    ("accuracy-drop>0.5pts", "accuracy-drop", 0.5, "pt"),
    ("latency-p99+5%", "latency-p99", 5.0, "%"),
    ("latency-mean+10%", "latency-mean", 10.0, "%"),
    ("latency-p50+0.25ms", "latency-p50", 0.25, "ms"),
    ("throughput-5%", "throughput", 5.0, "%"),
    ("accuracy-1%", "accuracy", 1.0, "%"),
    ("failed-cells>0", "failed-cells", 0.0, ""),
    ("  Latency-P99 + 5 %  ", "latency-p99", 5.0, "%"),
])
def test_parse_valid(text, name, limit, unit):
    g = parse_gate(text)
    assert (g.name, g.limit, g.unit) == (name, limit, unit)
    assert g.describe()


@pytest.mark.parametrize("text, expected", [
    ("latncy-p99+5%", "unknown metric 'latncy-p99' (did you mean 'latency-p99'?)"),
    ("acuracy-drop>1%", "(did you mean 'accuracy-drop'?)"),
    ("latency_p99+5%", "(did you mean 'latency-p99'?)"),
    ("latency-99+5%", "(did you mean 'latency-p99'?)"),
    ("__import__('os')", "unknown metric"),
    ("throughput+5%", "higher throughput is better, so a regression is a decrease: write throughput-5%"),
    ("latency-p99-5%", "lower latency-p99 is better, so a regression is an increase: write latency-p99+5%"),
    ("latency-p99>5%", "gated on its change against BASE: write latency-p99+5%"),
    ("accuracy-drop+1%", "a threshold on one run: write accuracy-drop>1%"),
    ("accuracy-drop>1", "give a unit: % (relative) or pt (percentage points)"),
    ("accuracy-drop>1ms", "takes % (relative) or pt (percentage points), not 'ms'"),
    ("failed-cells>1%", "failed-cells takes a plain count"),
    ("throughput-5ms", "throughput takes % (relative), not 'ms'"),
    ("accuracy-drop>-1%", "expected NAME>VALUE"),
    ("accuracy-drop>>1%", "expected NAME>VALUE"),
    ("accuracy-drop>=1%", "expected NAME>VALUE"),
    ("", "empty expression"),
])
def test_parse_errors_are_one_line(text, expected):
    with pytest.raises(GateError) as info:
        parse_gate(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert expected in msg
    if text:
        assert msg.startswith(f"--fail-on '{' '.join(text.split())}'")


def test_change_gates_are_refused_for_a_single_run():
    assert parse_gates(["accuracy-drop>1%", "failed-cells>0"], "run")
    with pytest.raises(GateError, match="qdqbench compare BASE CAND"):
        parse_gate("latency-p99+5%", "run")
    with pytest.raises(GateError, match="qdqbench compare"):
        evaluate_gates([], [parse_gate("latency-p99+5%")])


def test_every_gate_has_a_valid_example():
    for spec in GATES.values():
        assert parse_gate(spec.example()).spec is spec


# ----------------------------------------------------------------------------------------------
# one run


def test_accuracy_drop_relative_boundaries():
    records = [
        acc("m/sst2/fp32/torch/accuracy", 0.9, baseline=None, scheme_kind="fp32"),
        acc("m/sst2/ok/torch/accuracy", 0.8955),  # 0.5% relative
        acc("m/sst2/edge/torch/accuracy", 0.891),  # exactly 1% (1.000000000000001 in floats)
        acc("m/sst2/bad/torch/accuracy", 0.8865),  # 1.5%
        acc("m/sst2/better/torch/accuracy", 0.95),  # an improvement: negative drop
    ]
    failures = evaluate_gates(records, [parse_gate("accuracy-drop>1%")])
    assert [f.cell for f in failures] == ["m/sst2/bad/torch/accuracy"]
    assert "drop 1.50% > 1%" in failures[0].message
    assert evaluate_gates(records, [parse_gate("accuracy-drop>1.5%")]) == []
    assert [f.cell for f in evaluate_gates(records, [parse_gate("accuracy-drop>0%")])] == [
        "m/sst2/ok/torch/accuracy", "m/sst2/edge/torch/accuracy", "m/sst2/bad/torch/accuracy"]


def test_accuracy_drop_points_boundaries():
    records = [acc("m/sst2/edge/torch/accuracy", 0.895), acc("m/sst2/bad/torch/accuracy", 0.8939)]
    failures = evaluate_gates(records, [parse_gate("accuracy-drop>0.5pt")])
    assert [f.cell for f in failures] == ["m/sst2/bad/torch/accuracy"]
    assert "0.61 pts" in failures[0].message


def test_accuracy_drop_ignores_fp32_failed_and_verdictless_cells():
    ignored = [
        acc("m/sst2/fp32/onnxruntime/accuracy", 0.5, scheme_kind="fp32"),  # an export check
        acc("m/sst2/int8/torch/accuracy", 0.5, status="failed"),
        acc("m/sst2/int8/onnxruntime/accuracy", 0.5, baseline=None),
    ]
    good = acc("m/sst2/int8-b/torch/accuracy", 0.9)
    (o,) = check_gates([*ignored, good], [parse_gate("accuracy-drop>1%")])
    assert o.status == "passed" and o.checked == 1  # only the one judgeable cell was checked
    # With nothing judgeable the gate is not a pass: not checked, and `run` counts it as failed.
    (o,) = check_gates(ignored, [parse_gate("accuracy-drop>1%")], unchecked_fails=False)
    assert o.status == "not-checked" and not o.passed and o.checked == 0 and o.failures == []
    (f,) = evaluate_gates(ignored, [parse_gate("accuracy-drop>1%")])
    assert f.cell is None and f.message.startswith("checked on 0 cells (no finished quantized accuracy cell")


def test_a_gate_over_no_cells_is_not_a_pass_in_run():
    for text in ("accuracy-drop>1%", "failed-cells>0"):
        (o,) = check_gates([], [parse_gate(text)])
        assert o.status == "failed" and not o.passed and o.checked == 0
        assert format_outcomes([o]) == [f"gate failed: {text}: checked on 0 cells ({o.why_not_checked()})"]


def test_failed_cells_gate():
    ok = acc("m/sst2/a/torch/accuracy", 0.9)
    bad = [acc(f"m/sst2/f{i}/torch/accuracy", 0.9, status="failed") for i in range(4)]
    assert evaluate_gates([ok], [parse_gate("failed-cells>0")]) == []
    (o,) = check_gates([ok, *bad], [parse_gate("failed-cells>4")])
    assert o.passed and o.checked == 5  # every cell was looked at
    (failure,) = evaluate_gates([ok, *bad], [parse_gate("failed-cells>0")])
    assert failure.cell is None and failure.message.startswith("4 failed cells") and "1 more" in failure.message
    assert evaluate_gates([ok, *bad], [parse_gate("failed-cells>4")]) == []
    assert evaluate_gates([ok, *bad], [parse_gate("failed-cells>3")])


# ----------------------------------------------------------------------------------------------
# two runs

CELL = "m/sst2/int8/onnxruntime/latency/b1s128"


def test_latency_gate_boundary_and_direction():
    gate = [parse_gate("latency-p99+5%")]
    assert evaluate_compare_gates(compare([lat(CELL, 8, p99=10.0)], [lat(CELL, 8, p99=10.5)]), gate) == []
    (f,) = evaluate_compare_gates(compare([lat(CELL, 8, p99=10.0)], [lat(CELL, 8.5, p99=10.6)]), gate)
    assert f.cell == CELL and "+6.00% > 5%" in f.message and "significant" in f.message
    # A decrease never fails, however large.
    assert evaluate_compare_gates(compare([lat(CELL, 8, p99=10.0)], [lat(CELL, 4, p99=5.0)]), gate) == []


def test_latency_gate_in_ms():
    gate = [parse_gate("latency-mean+0.5ms")]
    assert evaluate_compare_gates(compare([lat(CELL, 10.0)], [lat(CELL, 10.5)]), gate) == []
    assert evaluate_compare_gates(compare([lat(CELL, 10.0)], [lat(CELL, 10.51)]), gate)


def test_latency_regression_within_noise_does_not_fail():
    noisy_base, noisy_cand = lat(CELL, 10.0, std=30.0, n=50), lat(CELL, 11.0, std=30.0, n=50)
    (outcome,) = check_compare_gates(compare([noisy_base], [noisy_cand]), [parse_gate("latency-mean+5%")])
    assert outcome.passed and outcome.checked == 1
    assert len(outcome.within_noise) == 1 and "within the runs' spread" in outcome.within_noise[0].message


def test_throughput_gate_boundary_and_direction():
    gate = [parse_gate("throughput-5%")]
    assert evaluate_compare_gates(compare([lat(CELL, 10, thr=100.0)], [lat(CELL, 10.5, thr=95.0)]), gate) == []
    assert evaluate_compare_gates(compare([lat(CELL, 10, thr=100.0)], [lat(CELL, 10.6, thr=94.0)]), gate)
    assert evaluate_compare_gates(compare([lat(CELL, 10, thr=100.0)], [lat(CELL, 5, thr=200.0)]), gate) == []


def test_accuracy_change_gate_never_fails_on_improvement():
    c = "m/sst2/int8/torch/accuracy"
    gate = [parse_gate("accuracy-1%")]
    assert evaluate_compare_gates(compare([acc(c, 0.80)], [acc(c, 0.95)]), gate) == []
    assert evaluate_compare_gates(compare([acc(c, 0.90)], [acc(c, 0.891)]), gate) == []  # exactly 1%
    (f,) = evaluate_compare_gates(compare([acc(c, 0.90)], [acc(c, 0.88)]), gate)
    assert "90.00 → 88.00" in f.message
    assert evaluate_compare_gates(compare([acc(c, 0.90)], [acc(c, 0.88)]), [parse_gate("accuracy-2pt")]) == []


def test_threshold_gates_in_compare_check_cand():
    base = [acc("m/sst2/int8/torch/accuracy", 0.70)]  # BASE's own drop does not matter
    cand = [acc("m/sst2/int8/torch/accuracy", 0.895)]
    assert evaluate_compare_gates(compare(base, cand), [parse_gate("accuracy-drop>1%")]) == []
    assert evaluate_compare_gates(compare(cand, base), [parse_gate("accuracy-drop>1%")])


def test_incomparable_latency_is_skipped_unless_forced():
    other = {**INFO, "machine": {**INFO["machine"], "gpu": "NVIDIA H100"}}
    base, cand = [lat(CELL, 8, p99=10.0)], [lat(CELL, 9, p99=12.0)]
    gate = [parse_gate("latency-p99+5%")]
    (outcome,) = check_compare_gates(compare(base, cand, other), gate)
    assert outcome.status == "not-checked" and not outcome.passed and outcome.checked == 0
    assert "machine.gpu" in outcome.skipped[0].message and "--force" in outcome.skipped[0].message
    assert outcome.why_not_checked().startswith("every latency cell in both runs was skipped (1; first: ")
    assert evaluate_compare_gates(compare(base, cand, other, force=True), gate)


def test_cells_failed_in_one_run_are_not_checked():
    failed = lat(CELL, 8).model_copy(update={"status": "failed", "metrics": [], "error": "OOM"})
    (outcome,) = check_compare_gates(compare([lat(CELL, 8)], [failed]), [parse_gate("latency-p99+5%")])
    assert outcome.status == "not-checked" and outcome.skipped[0].message == "failed in CAND"
    other = CELL.replace("b1s128", "b8s128")
    (outcome,) = check_compare_gates(compare([lat(CELL, 8), lat(other, 8)], [failed, lat(other, 8)]),
                                     [parse_gate("latency-p99+5%")])
    assert outcome.passed and outcome.checked == 1 and len(outcome.skipped) == 1


def test_gates_with_nothing_of_their_kind_are_not_checked_in_compare():
    c = "m/sst2/int8/torch/accuracy"
    comparison = compare([acc(c, 0.9)], [acc(c, 0.9)])
    lat_gate, drop_gate = check_compare_gates(comparison, [parse_gate("latency-p99+5%"),
                                                           parse_gate("accuracy-drop>1%")])
    assert lat_gate.status == "not-checked" and lat_gate.checked == 0
    assert lat_gate.why_not_checked() == "no latency cell is in both runs (1 matched cell: 1 accuracy)"
    assert drop_gate.status == "passed" and drop_gate.checked == 1
    # A threshold gate in compare with nothing in CAND to check: not checked (compare exits 2), not failed.
    (o,) = check_compare_gates(compare([lat(CELL, 8)], [lat(CELL, 8)]), [parse_gate("accuracy-drop>1%")])
    assert o.status == "not-checked" and o.failures == []
    assert o.why_not_checked().startswith("CAND has no finished quantized accuracy cell")
    (o,) = check_compare_gates(compare([], []), [parse_gate("accuracy-1%")])
    assert o.status == "not-checked" and o.why_not_checked() == "no cell is in both runs"


# ----------------------------------------------------------------------------------------------
# printing


def test_format_outcomes_says_how_many_cells_each_gate_checked():
    drop, p99 = parse_gate("accuracy-drop>1%"), parse_gate("latency-p99+5%")
    passed = GateOutcome(drop, checked=12)
    one = GateOutcome(drop, checked=1)
    failed = GateOutcome(p99, checked=3, failures=[GateFailure(p99.text, "c1", "p99 up 6%"),
                                                   GateFailure(p99.text, "c2", "p99 up 7%")],
                         skipped=[GateFailure(p99.text, "c3", "failed in CAND")])
    unchecked = GateOutcome(p99, checked=0, unchecked_reason="no latency cell is in both runs")
    noisy = GateOutcome(p99, checked=2, within_noise=[GateFailure(p99.text, "c4", "within")])
    assert format_outcomes([passed, one, failed, unchecked, noisy]) == [
        "gate passed: accuracy-drop>1%: checked on 12 cells",
        "gate passed: accuracy-drop>1%: checked on 1 cell",
        "gate failed: latency-p99+5%: c1: p99 up 6% (checked on 3 cells; 1 cell not checked, first: c3: "
        "failed in CAND)",
        "gate failed: latency-p99+5%: c2: p99 up 7% (checked on 3 cells)",
        "gate not checked: latency-p99+5%: checked on 0 cells (no latency cell is in both runs)",
        "gate passed: latency-p99+5%: checked on 2 cells; 1 cell past the limit but within the runs' spread",
    ]
    assert [o.status for o in (passed, failed, unchecked)] == ["passed", "failed", "not-checked"]
    assert format_outcomes([]) == []
    # Without a stored reason the skipped cells explain it.
    skipped_only = GateOutcome(p99, skipped=[GateFailure(p99.text, "c3", "failed in CAND")])
    assert format_outcomes([skipped_only]) == [
        "gate not checked: latency-p99+5%: checked on 0 cells (1 cell it applies to could not be checked "
        "(first: c3: failed in CAND))"]
