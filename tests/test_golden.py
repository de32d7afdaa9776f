"""Golden behaviour: the shipped suites' cell ids and a small real run's scores and verdicts.

``tests/golden/*.json`` were written by this module's ``--write`` mode (``python
tests/test_golden.py --write``) before the structural step, so a restructuring that changes a
cell id, a score, a verdict or an export's graph fails here. Regenerate them only for a change
that means to alter behaviour, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
SUITES = sorted((REPO / "suites").glob("*.yaml"))


def cell_ids() -> dict[str, list[str]]:
    """Every shipped suite's expanded cell ids, in run order."""
    from qdqbench.config.suite import expand, load_suite

    return {p.name: [c.id for c in expand(load_suite(p))] for p in SUITES}


def summarise(run_dir: Path) -> dict[str, dict]:
    """What must not move: per non-latency cell, status, precision, metric values and verdict."""
    from qdqbench.core.results import load_records

    out = {}
    for r in load_records(run_dir):
        if r.kind == "latency":
            out[r.cell] = {"status": r.status, "precision": r.precision}
            continue
        entry = {"status": r.status, "precision": r.precision,
                 "metrics": {m.name: m.value for m in r.metrics if m.name != "onnx_mb"}}
        if r.verdict is not None:
            entry["verdict"] = {"passed": r.verdict.passed, "value": r.verdict.value,
                                "baseline": r.verdict.baseline}
        if r.kind == "export":
            entry["op_counts"] = r.details.get("op_counts")
        out[r.cell] = entry
    return out


def real_suite(tmp: Path) -> Path:
    """MiniLM-L6 SST-2 (../shared), 256 dev sentences, fp32 and two INT8 schemes, torch and ORT."""
    import yaml

    shared = (REPO / ".." / "shared").resolve()
    suite = {
        "name": "golden-sst2",
        "models": {"minilm-l6-sst2": {"path": str(shared / "models" / "minilm-l6-sst2"), "tasks": ["sst2"]}},
        "tasks": {"sst2": {"data_dir": str(shared / "data" / "glue"), "eval_limit": 256}},
        "schemes": {"fp32": {"kind": "fp32"},
                    "int8-max": {"calibration": {"method": "max", "samples": 64}},
                    "int8-p9999-lm": {"groups": ["linear", "matmul"],
                                      "calibration": {"method": "percentile", "percentile": 99.99, "samples": 64}}},
        "backends": ["torch", "onnxruntime"],
        "shapes": {"batch": [1], "seq": [32]},
        "accuracy": {"bootstrap": 0},
        "timing": {"warmup_s": 0.0, "warmup_iters": 1, "min_iters": 2, "min_duration_s": 0.0, "threads": 1,
                   "best_fp32": False},
    }
    path = tmp / "golden-sst2.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def run_real(tmp: Path) -> dict[str, dict]:
    from qdqbench.cli import main

    out = tmp / "runs"
    assert main(["run", str(real_suite(tmp)), "--out", str(out), "--quiet"]) == 0
    (run_dir,) = list(out.iterdir())
    return summarise(run_dir)


def test_shipped_suites_expand_to_the_same_cell_ids():
    golden = json.loads((GOLDEN / "cell_ids.json").read_text(encoding="utf-8"))
    assert cell_ids() == golden


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_small_real_run_scores_and_judges_as_before(tmp_path, shared_path):
    shared_path("models", "minilm-l6-sst2")
    golden = json.loads((GOLDEN / "real_sst2.json").read_text(encoding="utf-8"))
    got = run_real(tmp_path)
    assert set(got) == set(golden)
    for cell, want in golden.items():
        have = got[cell]
        assert have["status"] == want["status"] and have["precision"] == want["precision"], cell
        qdq = ("QuantizeLinear", "DequantizeLinear")
        assert {k: (have.get("op_counts") or {}).get(k) for k in qdq} == \
            {k: (want.get("op_counts") or {}).get(k) for k in qdq}, cell
        # torch scores over 256 fixed sentences are multiples of 1/256: identical, not "close". An
        # integer engine may round differently on another CPU (VNNI vs AVX2 kernels): one sentence.
        on_torch = "/torch/" in cell
        tol = 1e-9 if on_torch else 1 / 256 + 1e-9
        if on_torch:
            assert have.get("verdict", {}).get("passed") == want.get("verdict", {}).get("passed"), cell
        for name, value in want.get("metrics", {}).items():
            assert have["metrics"][name] == pytest.approx(value, abs=tol), (cell, name)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "cell_ids.json").write_text(json.dumps(cell_ids(), indent=1) + "\n", encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        data = run_real(Path(tmp))
    (GOLDEN / "real_sst2.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
