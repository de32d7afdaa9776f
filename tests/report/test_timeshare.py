"""The "Where the time goes" data (qdqbench.report.timeshare): records in, a plain table out."""

from __future__ import annotations

import pytest

from qdqbench.core.results import Metric, Record, Shape
from qdqbench.engines.profile import CATEGORIES, OpTime, not_available, summarize
from qdqbench.report import timeshare


def _lat(scheme: str, kind: str, times: list[OpTime] | None, *, backend="onnxruntime", floor=None,
         energy=None, precision=None) -> Record:
    details = {"op_profile": summarize(times, 1, "test") if times is not None else not_available("no profiler"),
               "resources": {"energy": energy or not_available("no counter")}}
    if floor is not None:
        details["gemm_floor"] = floor
    return Record(cell=f"m/t/{scheme}/{backend}/latency/b8s128", status="ok", model="m", task="t",
                  scheme=scheme, scheme_kind=kind, backend=backend, shape=Shape(batch=8, seq=128),
                  precision=precision or ("fp32" if kind == "fp32" else "int8"), kind="latency",
                  metrics=[Metric(name="latency_mean_ms", value=10.0, unit="ms", higher_is_better=False)],
                  details=details)


INT8 = [OpTime("MatMulIntegerToFloat", 6.0, "int8", input_ranks=(3, 0)),
        OpTime("QLinearMatMul", 1.0, "int8", input_ranks=(4, 4)),
        OpTime("Softmax", 0.5, "fp32"), OpTime("LayerNormalization", 0.5, "fp32"), OpTime("BiasGelu", 0.5, "fp32"),
        OpTime("QuantizeLinear", 1.0, "fp32"), OpTime("Add", 0.5, "fp32")]
FP32 = [OpTime("MatMul", 20.0, "fp32", input_ranks=(3, 2)), OpTime("Softmax", 2.0, "fp32"), OpTime("Add", 2.0, "fp32")]


def test_fp32_rows_come_first_next_to_their_int8_rows():
    recs = [_lat("int8-max", "ptq", INT8), _lat("fp32", "fp32", FP32),
            _lat("int8-max", "ptq", INT8, backend="openvino"), _lat("fp32", "fp32", FP32, backend="openvino")]
    table = timeshare.where_time_goes(recs)
    assert [(r[2], r[5]) for r in table.rows] == [("onnxruntime", "fp32"), ("onnxruntime", "int8-max"),
                                                  ("openvino", "fp32"), ("openvino", "int8-max")]
    assert table.columns == timeshare.BASE_COLUMNS  # no floor measured: no floor columns
    row = dict(zip(table.columns, table.rows[1]))
    assert row["profiled_ms"] == pytest.approx(10.0)
    assert row["share_matmul"] == pytest.approx(0.6) and row["share_attention"] == pytest.approx(0.1)
    assert row["share_qdq"] == pytest.approx(0.1) and row["share_other"] == pytest.approx(0.05)
    assert sum(row[f"share_{c}"] for c in CATEGORIES) == pytest.approx(1.0, abs=1e-3)
    assert row["top_non_gemm_op"].startswith("QLinearMatMul (attention")
    text = dict(zip(table.columns, table.text_rows()[1]))
    assert text["share_matmul"] == "60.0%" and text["batch"] == "8"


def test_floor_columns_and_what_makes_up_the_difference():
    floor = {"status": "ok", "floor_ms": 5.0, "ratio": 2.0, "precision": "int8", "gemms": []}
    recs = [_lat("int8-max", "ptq", INT8, floor=floor), _lat("fp32", "fp32", FP32,
                                                              floor={"status": "failed", "error": "x"})]
    table = timeshare.where_time_goes(recs)
    assert table.columns[-3:] == ("floor_ms", "x_floor", "beyond_gemms")
    fp32, int8 = (dict(zip(table.columns, r)) for r in table.rows)
    assert (int8["floor_ms"], int8["x_floor"]) == (5.0, 2.0)
    assert int8["beyond_gemms"] == "attention 1 ms, Q/DQ 1 ms, LayerNorm 0.5 ms"
    assert fp32["x_floor"] is None and fp32["beyond_gemms"] == ""
    assert any("floor" in n for n in table.notes)
    # At (or below) the floor: said in words, never read as faster than the hardware.
    at = timeshare.where_time_goes([_lat("int8-max", "ptq", INT8, floor={**floor, "ratio": 0.97})])
    row = dict(zip(at.columns, at.rows[0]))
    assert row["beyond_gemms"] == "at the floor within the timing noise; attention 1 ms, Q/DQ 1 ms, LayerNorm 0.5 ms"


def test_unprofiled_cells_are_named_in_a_note_and_no_profile_means_no_table():
    recs = [_lat("int8-max", "ptq", INT8), _lat("fp32", "fp32", None, backend="tensorrt")]
    table = timeshare.where_time_goes(recs)
    assert len(table.rows) == 1
    assert "tensorrt: not available on this engine/machine: no profiler" in table.notes[-1]
    assert timeshare.where_time_goes([_lat("fp32", "fp32", None)]) is None
    assert timeshare.csv_table(None) == (timeshare.BASE_COLUMNS, [])


def test_latency_extras_and_export_size_ratios():
    energy = {"status": "ok", "joules_per_inference": 0.25}
    floor = {"status": "ok", "floor_ms": 4.0, "ratio": 2.5}
    recs = [_lat("int8-max", "ptq", INT8, floor=floor, energy=energy), _lat("fp32", "fp32", FP32)]
    extras = timeshare.latency_extras(recs)
    assert extras[recs[0].cell] == {"x_floor": 2.5, "energy_j": 0.25}
    assert extras[recs[1].cell] == {"x_floor": None, "energy_j": None}

    def export(scheme, kind, mb, model="m"):
        return Record(cell=f"{model}/t/{scheme}/onnx/export", status="ok", model=model, task="t", scheme=scheme,
                      scheme_kind=kind, backend="onnx", kind="export",
                      metrics=[Metric(name="onnx_mb", value=mb, unit="MB", higher_is_better=False)])

    ratios = timeshare.export_size_ratios([export("fp32", "fp32", 86.8), export("int8", "ptq", 56.6),
                                           export("int8", "ptq", 10.0, model="other")])
    assert ratios["m/t/int8/onnx/export"] == pytest.approx(56.6 / 86.8)
    assert ratios["m/t/fp32/onnx/export"] == pytest.approx(1.0)
    assert ratios["other/t/int8/onnx/export"] is None  # no fp32 export of that model
