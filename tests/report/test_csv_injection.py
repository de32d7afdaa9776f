"""CSV output is safe to open in a spreadsheet: text that would start a formula is quoted with a
leading ', numbers (negative ones too) are left as numbers."""

from __future__ import annotations

import csv
import io

import pytest

from qdqbench.core.results import Metric, Record, Verdict
from qdqbench.report import build_report
from qdqbench.report.render.csv import render_csv

BASE = 0.90
PAYLOADS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
            "\tx=1", "\rx=1"]


def _acc(model: str, scheme: str, kind: str, value: float, details: dict | None = None) -> Record:
    quantized = kind != "fp32"
    drop = BASE - value
    return Record(
        cell=f"{model}/sst2/{scheme}/torch/accuracy", status="ok", model=model, task="sst2",
        scheme=scheme, scheme_kind=kind, backend="torch",
        precision="int8-fakequant" if quantized else "fp32", kind="accuracy",
        metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True)],
        verdict=Verdict(metric="accuracy", bound=0.01, mode="relative", baseline=BASE, value=value,
                        drop=drop, relative_drop=drop / BASE, threshold=BASE * 0.99, passed=True,
                        drop_ci_low=-0.5, drop_ci_high=0.01, within_noise=True) if quantized else None,
        details={"primary_metric": "accuracy", "examples": 10, **(details or {})},
    )


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _written(text: str) -> str:
    """What a text cell reads back as: a leading quote added, line breaks as "\\n"."""
    return "'" + text.replace("\r", "\n")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_text_that_starts_a_formula_gets_a_leading_quote(payload):
    trace = {"trace": [{"name": payload, "stage": "calibrate", "value": 0.9, "passed": True,
                        "error": payload}]}
    records = [_acc(payload, "fp32", "fp32", BASE),
               _acc(payload, "int8", "qdq", 0.905, details={"recipe": trace})]
    out = render_csv(build_report(records, {"accuracy_bound": {"bound": 0.01, "mode": "relative"}}))
    acc = _rows(out["accuracy.csv"])
    assert len(acc) == 2 and {r["model"] for r in acc} == {_written(payload)}
    (step,) = _rows(out["recipe_trace.csv"])
    assert step["name"] == step["error"] == step["model"] == _written(payload)
    # A cell id starting with the payload is text too.
    assert all(r["cell"].startswith(_written(payload) + "/sst2/") for r in acc)


def test_negative_numbers_stay_numbers_and_plain_text_is_untouched():
    records = [_acc("bert-sst2", "fp32", "fp32", BASE), _acc("bert-sst2", "int8", "qdq", 0.905)]
    out = render_csv(build_report(records, {"accuracy_bound": {"bound": 0.01, "mode": "relative"}}))
    int8 = next(r for r in _rows(out["accuracy.csv"]) if r["scheme"] == "int8")
    # INT8 above fp32: a negative drop, written as the bare number.
    assert float(int8["drop"]) == pytest.approx(-0.005) and int8["drop"].startswith("-")
    assert int8["drop_ci_low"] == "-0.5"
    assert int8["model"] == "bert-sst2" and int8["cell"] == "bert-sst2/sst2/int8/torch/accuracy"
    assert "'" not in out["accuracy.csv"]
