"""History: idempotent SQLite ingest, trend ordering by start time, the trend report."""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from qdqbench.cli import history as history_cli
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import Metric, Record, ResultStore, Shape, write_json_atomic
from qdqbench.review import history

EVIL = "<script>alert(1)</script>"


def acc(model: str, scheme: str, value: float) -> Record:
    return Record(cell=f"{model}/sst2/{scheme}/torch/accuracy", status="ok", model=model, task="sst2",
                  scheme=scheme, scheme_kind="fp32" if scheme == "fp32" else "qdq", backend="torch",
                  kind="accuracy", metrics=[
                      Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True),
                      Metric(name="f1", value=value - 0.01, unit="ratio", higher_is_better=True)],
                  details={"primary_metric": "accuracy"})


def lat(model: str, scheme: str, mean: float) -> Record:
    return Record(cell=f"{model}/sst2/{scheme}/onnxruntime/latency/b1s128", status="ok", model=model,
                  task="sst2", scheme=scheme, scheme_kind="fp32" if scheme == "fp32" else "qdq",
                  backend="onnxruntime", kind="latency", shape=Shape(batch=1, seq=128), metrics=[
                      Metric(name="latency_mean_ms", value=mean, unit="ms", higher_is_better=False),
                      Metric(name="throughput", value=1000 / mean, unit="seq/s", higher_is_better=True)])


def make_run(root: Path, run_id: str, started: str, int8_acc: float, int8_ms: float,
             model: str = "bert", extra: list[Record] = ()) -> Path:
    path = root / run_id
    store = ResultStore(path / "results.jsonl")
    for r in [acc(model, "fp32", 0.92), acc(model, "int8", int8_acc), lat(model, "fp32", 20.0),
              lat(model, "int8", int8_ms), *extra]:
        store.append(r)
    write_json_atomic(path / "run.json", {
        "run_id": run_id, "started_at": started, "finished_at": None, "suite": {"name": "glue"},
        "git": {"commit": "c" * 40, "dirty": False}, "machine": {"cpu": "Xeon", "gpu": None}})
    return path


def counts(db: Path) -> tuple[int, int, int]:
    with closing(sqlite3.connect(db)) as conn:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "cells", "metrics"))


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="qdqbench")
    history_cli.add_parser(parser.add_subparsers(dest="command"))
    try:
        return history_cli.run(parser.parse_args(argv))
    except QdqbenchError:
        return 2


def test_ingest_is_idempotent(tmp_path):
    db = tmp_path / "h.sqlite"
    a = make_run(tmp_path, "run-a", "2025-03-01T02:00:00+00:00", 0.91, 8.0)
    b = make_run(tmp_path, "run-b", "2025-03-02T02:00:00+00:00", 0.90, 7.5)
    first = history.ingest(db, [a, b])
    assert [(r.run_id, r.cells, r.metrics, r.replaced) for r in first] == [
        ("run-a", 4, 8, False), ("run-b", 4, 8, False)]
    assert counts(db) == (2, 8, 16)
    again = history.ingest(db, [a, b, a])
    assert all(r.replaced for r in again) and counts(db) == (2, 8, 16)
    # A resumed run that finished one more cell replaces its earlier copy, adding one cell.
    ResultStore(a / "results.jsonl").append(lat("bert", "int8-b", 9.0))
    history.ingest(db, [a])
    assert counts(db) == (2, 9, 18)


def test_ingest_checks_every_folder_first(tmp_path):
    db = tmp_path / "h.sqlite"
    a = make_run(tmp_path, "run-a", "2025-03-01T02:00:00+00:00", 0.91, 8.0)
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(QdqbenchError, match="not a run folder"):
        history.ingest(db, [a, tmp_path / "not-a-run"])
    assert not db.exists() or counts(db) == (0, 0, 0)
    assert cli(["history", "ingest", str(tmp_path / "missing"), "--db", str(db)]) == 2


def test_trends_follow_started_at_not_ingest_order(tmp_path):
    db = tmp_path / "h.sqlite"
    # Ingested newest first; one start time written with another UTC offset (earlier than it reads).
    c = make_run(tmp_path, "run-c", "2025-03-03T02:00:00+00:00", 0.89, 7.0)
    b = make_run(tmp_path, "run-b", "2025-03-02T03:30:00+02:00", 0.90, 7.5)  # 01:30 UTC
    a = make_run(tmp_path, "run-a", "2025-03-02T02:00:00Z", 0.91, 8.0)  # 02:00 UTC
    history.ingest(db, [c, b, a])
    with closing(history.connect(db)) as conn:
        runs = history.runs(conn)
        assert [r.run_id for r in runs] == ["run-b", "run-a", "run-c"]
        trends = {t.title: t for t in history.trends(conn, runs)}
        assert [r.run_id for r in history.runs(conn, last=2)] == ["run-a", "run-c"]
    acc_trend = trends["bert · sst2: accuracy"]
    series = dict(acc_trend.series)
    assert series["int8 · torch"] == ((0, 0.90), (1, 0.91), (2, 0.89))
    assert acc_trend.baselines == ("fp32 · torch",)
    lat_trend = trends["bert · sst2 · onnxruntime · batch 1 × seq 128: mean latency"]
    assert dict(lat_trend.series)["int8"] == ((0, 7.5), (1, 8.0), (2, 7.0))


def test_report_writes_charts_and_csv(tmp_path):
    db = tmp_path / "h.sqlite"
    runs = [make_run(tmp_path, f"run-{i}", f"2025-03-{i + 1:02d}T02:00:00+00:00", 0.9 - i / 1000, 8 + i / 10,
                     model=EVIL) for i in range(3)]
    failed = Record(cell="x/sst2/int8/torch/accuracy", status="failed", error="OOM", model="x", task="sst2",
                    scheme="int8", backend="torch", kind="accuracy")
    runs.append(make_run(tmp_path, "run-3", "2025-03-04T02:00:00+00:00", 0.85, 9.0, model=EVIL, extra=[failed]))
    assert cli(["history", "ingest", *map(str, runs), "--db", str(db)]) == 0
    out = tmp_path / "report"
    assert cli(["history", "report", "--db", str(db), "--out", str(out)]) == 0
    html = (out / "history.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 2 and "<polyline" in html and "stroke-dasharray" in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    assert "2025-03-04" in html and "http://" not in html and "https://" not in html
    rows = list(csv.DictReader((out / "history.csv").open(encoding="utf-8")))
    int8 = [r for r in rows if r["series"] == "int8 · torch"]
    assert [r["run_id"] for r in int8] == ["run-0", "run-1", "run-2", "run-3"]
    assert float(int8[-1]["value"]) == 0.85
    assert cli(["history", "report", "--db", str(tmp_path / "none.sqlite"), "--out", str(out)]) == 2
    assert cli(["history", "report", "--db", str(db), "--out", str(out), "--last", "0"]) == 2


def test_a_foreign_file_is_refused(tmp_path):
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_text("not sqlite at all " * 100, encoding="utf-8")
    with pytest.raises(QdqbenchError, match="not a qdqbench history database"):
        history.connect(bogus)


def test_fidelity_cells_chart_their_sqnr(tmp_path):
    fid = Record(cell="mini/pydoc/int8/torch/fidelity", status="ok", model="mini", task="pydoc", scheme="int8",
                 scheme_kind="qdq", backend="torch", kind="fidelity", metrics=[
                     Metric(name="cosine_mean", value=0.999, unit="ratio", higher_is_better=True),
                     Metric(name="sqnr_db", value=31.5, unit="dB", higher_is_better=True)])
    db = tmp_path / "h.sqlite"
    history.ingest(db, [make_run(tmp_path, "run-a", "2025-03-01T02:00:00+00:00", 0.9, 8.0, extra=[fid])])
    out = tmp_path / "report"
    history.write_history_report(db, out)
    html = (out / "history.html").read_text(encoding="utf-8")
    assert 'id="fidelity"' in html and "mini · pydoc: sqnr_db" in html and "31.5" in html


def damage(path: Path) -> None:
    """Binary garbage as line 2 and a torn last line (no newline), as a crash would leave it."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1, b"\x89PNG\x1a\x00\xff\xfe\n")
    path.write_bytes(b"".join(lines) + b'{"cell": "bert/sst2/int8/torch/acc')


def test_ingest_warns_about_every_unreadable_line(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    a = make_run(tmp_path, "run-a", "2025-03-01T02:00:00+00:00", 0.91, 8.0)
    damage(a / "results.jsonl")  # 4 records + garbage at line 2 + torn line 6
    capsys.readouterr()
    assert cli(["history", "ingest", str(a), "--db", str(db)]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning: ")]
    assert len(warnings) == 2  # once each, not once per read
    assert warnings[0].startswith(f"warning: {a / 'results.jsonl'}: line 2 skipped: not UTF-8")
    assert warnings[1].startswith(f"warning: {a / 'results.jsonl'}: line 6 skipped: torn last line")
    assert "added run-a: 4 cells, 8 metrics (2 lines of results.jsonl skipped: see the warnings above)" in err
    assert counts(db) == (1, 4, 8)
    (res,) = history.ingest(db, [a])
    assert res.skipped_lines == 2 and res.cells == 4


def test_a_damaged_run_json_ingests_nothing(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    a = make_run(tmp_path, "run-a", "2025-03-01T02:00:00+00:00", 0.91, 8.0)
    b = make_run(tmp_path, "run-b", "2025-03-02T02:00:00+00:00", 0.90, 7.5)
    (b / "run.json").write_bytes(b'{"run_id": "run-b", "machine": \x00\xff')
    with pytest.raises(QdqbenchError) as exc:
        history.ingest(db, [a, b])
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"{b / 'run.json'}: run.json is damaged")
    assert not db.exists() or counts(db) == (0, 0, 0)
    assert cli(["history", "ingest", str(a), str(b), "--db", str(db)]) == 2


def test_odd_run_json_values_are_stored_as_text(tmp_path):
    db = tmp_path / "h.sqlite"
    a = make_run(tmp_path, "run-a", "2025-03-01T02:00:00+00:00", 0.91, 8.0)
    info = json.loads((a / "run.json").read_text(encoding="utf-8"))
    info["machine"] = {"cpu": ["Xeon", "Xeon"], "gpu": {"name": "A100"}}
    info["git"]["commit"] = 12345
    write_json_atomic(a / "run.json", info)
    history.ingest(db, [a])
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT cpu, gpu, git_commit FROM runs").fetchone() == (
            '["Xeon", "Xeon"]', '{"name": "A100"}', "12345")
