"""Merge: shard run folders joined into one; different suites or code and conflicts refused."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from qdqbench import merge
from qdqbench.errors import QdqbenchError
from qdqbench.results import Metric, Record, ResultStore, load_records, load_run_info, write_json_atomic
from qdqbench.shard import shard_cells
from qdqbench.suite import expand, parse_suite

SUITE = {
    "name": "glue",
    "models": {"a": {"path": "/models/a", "tasks": ["sst2"]}, "b": {"path": "/models/b", "tasks": ["rte"]},
               "c": {"path": "/models/c", "tasks": ["mrpc"]}},
    "tasks": {"sst2": {}, "rte": {}, "mrpc": {}},
    "schemes": {"fp32": {"kind": "fp32"}, "int8": {}},
    "backends": ["torch"],
}


def record(cell, value: float = 0.9, status: str = "ok", duration: float = 1.0) -> Record:
    return Record(cell=cell.id, status=status, model=cell.model, task=cell.task, scheme=cell.scheme,
                  scheme_kind="fp32" if cell.scheme == "fp32" else "qdq", backend=cell.backend, kind=cell.kind,
                  metrics=[Metric(name="accuracy", value=value, unit="ratio", higher_is_better=True)]
                  if status == "ok" else [],
                  error=None if status == "ok" else "CUDA out of memory", duration_s=duration,
                  started_at="2025-03-01T02:10:00+00:00", details={"primary_metric": "accuracy"})


def make_shard(root: Path, k: int, n: int, *, suite: dict = SUITE, commit: str = "c" * 40,
               gpu: str = "NVIDIA A100", started: str = "2025-03-01T02:00:00+00:00",
               finished: str | None = "2025-03-01T03:00:00+00:00", records=None, artifact: bytes | None = None) -> Path:
    path = root / f"glue-shard{k}"
    cells = shard_cells(expand(parse_suite(suite)), k, n)
    store = ResultStore(path / "results.jsonl")
    for r in (records if records is not None else [record(c) for c in cells]):
        store.append(r)
    path.mkdir(parents=True, exist_ok=True)
    (path / "suite.json").write_text(json.dumps(suite, indent=2), encoding="utf-8")
    write_json_atomic(path / "run.json", {
        "run_id": path.name, "suite": {"name": suite["name"]}, "started_at": started, "finished_at": finished,
        "shard": {"index": k, "count": n}, "versions": {"python": "3.11.7", "torch": "2.5.1"},
        "machine": {"cpu": "EPYC", "gpu": gpu}, "git": {"commit": commit, "dirty": False}})
    if artifact is not None:
        (path / "artifacts" / "shared").mkdir(parents=True, exist_ok=True)
        (path / "artifacts" / "shared" / "x.bin").write_bytes(artifact)
    for c in cells:
        amax = path / "artifacts" / c.model / c.task / c.scheme / "amax.json"
        amax.parent.mkdir(parents=True, exist_ok=True)
        amax.write_text("{}", encoding="utf-8")
    return path


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="qdqbench")
    merge.add_parser(parser.add_subparsers(dest="command"))
    try:
        return merge.run(parser.parse_args(["merge", *argv]))
    except QdqbenchError:
        return 2


def test_merge_joins_shards(tmp_path):
    s1 = make_shard(tmp_path, 1, 2, started="2025-03-01T02:00:00+00:00", finished="2025-03-01T04:00:00+00:00")
    s2 = make_shard(tmp_path, 2, 2, started="2025-03-01T01:59:00+00:00", finished="2025-03-01T03:00:00+00:00",
                    gpu="NVIDIA H100")
    out = tmp_path / "merged"
    assert cli([str(s1), str(s2), "--out", str(out)]) == 0
    ids = [r.cell for r in load_records(out)]
    assert ids == [c.id for c in expand(parse_suite(SUITE))]  # the suite's order, every cell once
    info = load_run_info(out)
    assert info["run_id"] == "merged" and "shard" not in info
    assert info["started_at"] == "2025-03-01T01:59:00+00:00" and info["finished_at"] == "2025-03-01T04:00:00+00:00"
    assert [s["run_id"] for s in info["shards"]] == ["glue-shard1", "glue-shard2"]
    assert info["shards"][1]["shard"] == {"index": 2, "count": 2}
    assert info["machine"]["gpu"] == "NVIDIA A100 | NVIDIA H100"  # compare will flag mixed machines
    assert json.loads((out / "suite.json").read_text()) == SUITE
    amaxes = (out / "artifacts").rglob("amax.json")
    assert {p.relative_to(out / "artifacts").parts[0] for p in amaxes} == {"a", "b", "c"}
    assert (out / "report.html").is_file()


def test_different_suite_is_refused_unless_forced(tmp_path):
    other = json.loads(json.dumps(SUITE))
    other["schemes"]["int8"] = {"calibration": {"method": "entropy"}}
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2, suite=other)
    with pytest.raises(QdqbenchError) as info:
        merge.merge_runs([s1, s2], tmp_path / "out")
    msg = str(info.value)
    assert "\n" not in msg and "suite.json differs at schemes.int8.calibration" in msg and "--force" in msg
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass
    res = merge.merge_runs([s1, s2], tmp_path / "out", force=True)
    assert res.cells == len(expand(parse_suite(SUITE))) and any("different suite" in n for n in res.notes)
    assert load_run_info(tmp_path / "out")["merge"]["forced"] is True


def test_different_code_is_refused_unless_forced(tmp_path):
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2, commit="d" * 40)
    with pytest.raises(QdqbenchError, match=r"different code \(git.commit: c+ vs d+\)"):
        merge.merge_runs([s1, s2], tmp_path / "out")
    assert cli([str(s1), str(s2), "--out", str(tmp_path / "out")]) == 2
    assert cli([str(s1), str(s2), "--out", str(tmp_path / "out"), "--force"]) == 0


def test_identical_duplicate_is_fine_and_conflict_is_refused(tmp_path):
    cells = expand(parse_suite(SUITE))
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2)
    # The same shard given twice (a re-downloaded artifact): fine.
    res = merge.merge_runs([s1, s2, s1], tmp_path / "twice")
    assert res.cells == len(cells)
    # A copy of shard 2 that re-ran one cell and got another record: a conflict.
    dup = tmp_path / "dup"
    part2 = shard_cells(cells, 2, 2)
    make_shard(dup, 2, 2, records=[record(c) for c in part2[1:]] + [record(part2[0], status="failed")])
    with pytest.raises(QdqbenchError, match=f"conflict: cell {part2[0].id} differs between"):
        merge.merge_runs([s1, dup / "glue-shard2", s2], tmp_path / "out")
    res = merge.merge_runs([s1, s2, dup / "glue-shard2"], tmp_path / "forced", force=True)
    kept = {r.cell: r for r in load_records(tmp_path / "forced")}[part2[0].id]
    assert kept.status == "ok" and any("kept the ok record" in n for n in res.notes)


def test_conflicting_artifact_is_refused(tmp_path):
    s1 = make_shard(tmp_path, 1, 2, artifact=b"one")
    s2 = make_shard(tmp_path, 2, 2, artifact=b"two")
    with pytest.raises(QdqbenchError, match="artifact shared/x.bin differs"):
        merge.merge_runs([s1, s2], tmp_path / "out")
    same = make_shard(tmp_path / "same", 2, 2, artifact=b"one")
    merge.merge_runs([s1, same], tmp_path / "out")
    assert (tmp_path / "out" / "artifacts" / "shared" / "x.bin").read_bytes() == b"one"


def test_bad_inputs(tmp_path):
    s1 = make_shard(tmp_path, 1, 2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for argv, message in (
        ([str(s1), "--out", str(tmp_path / "full")], "exists and is not an empty folder"),
        ([str(s1), "--out", str(s1)], "is one of the inputs"),
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "run folder not found"),
    ):
        with pytest.raises(QdqbenchError, match=message):
            merge.merge_runs([Path(a) for a in argv[:-2]], Path(argv[-1]))
        assert cli(argv) == 2


def test_empty_shard_and_unfinished_shard(tmp_path):
    s1 = make_shard(tmp_path, 1, 4, finished=None)
    empty = make_shard(tmp_path, 4, 4, records=[])  # 3 groups, 4 shards: shard 4 has no cells
    (empty / "results.jsonl").unlink(missing_ok=True)
    res = merge.merge_runs([s1, empty], tmp_path / "out")
    info = load_run_info(tmp_path / "out")
    assert res.cells == len(shard_cells(expand(parse_suite(SUITE)), 1, 4))
    assert info["finished_at"] is None and info["merge"]["unfinished_shards"] == ["glue-shard1"]
