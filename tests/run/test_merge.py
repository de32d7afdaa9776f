"""Merge: shard run folders joined into one; different suites or code and conflicts refused."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from qdqbench.cli import merge as merge_cli
from qdqbench.config.suite import expand, parse_suite
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import Metric, Record, ResultStore, load_records, load_run_info, write_json_atomic
from qdqbench.run import merge
from qdqbench.run.shard import shard_cells

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
    merge_cli.add_parser(parser.add_subparsers(dest="command"))
    try:
        return merge_cli.run(parser.parse_args(["merge", *argv]))
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
    with pytest.raises(QdqbenchError, match="shards 2/4, 3/4 missing"):
        merge.merge_runs([s1, empty], tmp_path / "out")
    res = merge.merge_runs([s1, empty], tmp_path / "out", partial=True)
    info = load_run_info(tmp_path / "out")
    assert res.cells == len(shard_cells(expand(parse_suite(SUITE)), 1, 4))
    assert info["finished_at"] is None and info["merge"]["unfinished_shards"] == ["glue-shard1"]
    assert info["partial"]["missing_shards"] == ["2/4", "3/4"] and info["partial"]["have"] == ["1/4", "4/4"]
    assert info["partial"]["unfinished_shards"] == ["glue-shard1"]
    # An empty shard (no results.jsonl) of a whole, finished set is fine.
    rest = [make_shard(tmp_path / "rest", k, 4) for k in (1, 2, 3)]
    assert merge.merge_runs([*rest, empty], tmp_path / "whole").partial is None
    assert "partial" not in load_run_info(tmp_path / "whole")


# ----------------------------------------------------------------------------------------------
# incomplete shard sets


def test_one_shard_of_two_is_refused_naming_the_missing_one(tmp_path, capsys):
    s1 = make_shard(tmp_path, 1, 2)
    out = tmp_path / "out"
    with pytest.raises(QdqbenchError) as exc:
        merge.merge_runs([s1], out)
    assert str(exc.value) == "merge: refused: shard 2/2 missing (have 1/2); use --partial to merge what is here"
    assert not out.exists()  # refused before anything is written
    assert cli([str(s1), "--out", str(out)]) == 2 and not out.exists()


def test_missing_shards_of_four_are_all_named(tmp_path):
    shards = [make_shard(tmp_path, k, 4) for k in (3, 1)]
    with pytest.raises(QdqbenchError) as exc:
        merge.merge_runs(shards, tmp_path / "out")
    assert str(exc.value) == ("merge: refused: shards 2/4, 4/4 missing (have 1/4, 3/4); "
                              "use --partial to merge what is here")


def test_partial_merge_says_so_in_run_json_and_report(tmp_path, capsys):
    s1 = make_shard(tmp_path, 1, 2)
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli([str(s1), "--out", str(out), "--partial"]) == 0
    err = capsys.readouterr().err
    assert "warning: partial merge: shard 2/2 missing (have 1/2): the merged run does not cover the whole suite" in err
    info = load_run_info(out)
    assert info["partial"]["missing_shards"] == ["2/2"] and info["partial"]["have"] == ["1/2"]
    assert [r.cell for r in load_records(out)] == [c.id for c in shard_cells(expand(parse_suite(SUITE)), 1, 2)]
    banner = "Partial merge: shard 2/2 missing — this report does not cover the whole suite"
    md = (out / "report.md").read_text(encoding="utf-8")
    lines = md.splitlines()
    assert lines[2] == f"> ⚠️ **{banner}**"  # right under the title, before the verdict
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="warnings"' in html and banner in html
    assert html.index('id="warnings"') < html.index('id="verdict"')


def test_mixed_shard_counts_are_refused(tmp_path):
    s1 = make_shard(tmp_path, 1, 2)
    s3 = make_shard(tmp_path / "three", 2, 3)
    with pytest.raises(QdqbenchError) as exc:
        merge.merge_runs([s1, s3], tmp_path / "out")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("merge: refused: mixed shard counts (")
    assert f"{s1} is 1/2" in msg and f"{s3} is 2/3" in msg and "--partial" in msg
    assert cli([str(s1), str(s3), "--out", str(tmp_path / "out")]) == 2
    res = merge.merge_runs([s1, s3], tmp_path / "out", partial=True)
    assert res.partial["missing_shards"] == ["2/2", "1/3", "3/3"]


def test_a_plain_run_among_shards_is_refused(tmp_path):
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2)
    plain = make_shard(tmp_path / "plain", 1, 1)
    info = load_run_info(plain)
    info["shard"] = None  # what an unsharded run writes
    write_json_atomic(plain / "run.json", info)
    with pytest.raises(QdqbenchError, match=r"is not a shard \(its run.json has no shard\)"):
        merge.merge_runs([s1, s2, plain], tmp_path / "out")


def test_an_unfinished_shard_is_refused(tmp_path, capsys):
    s1 = make_shard(tmp_path, 1, 2, finished=None)  # still running, interrupted or crashed
    s2 = make_shard(tmp_path, 2, 2)
    with pytest.raises(QdqbenchError) as exc:
        merge.merge_runs([s1, s2], tmp_path / "out")
    assert str(exc.value) == (f"merge: refused: shard 1/2 ({s1}) has not finished (no finished_at in its "
                              "run.json: still running, interrupted or crashed); use --partial to merge what is here")
    assert cli([str(s1), str(s2), "--out", str(tmp_path / "out")]) == 2
    assert cli([str(s1), str(s2), "--out", str(tmp_path / "out"), "--partial"]) == 0
    info = load_run_info(tmp_path / "out")
    assert info["finished_at"] is None and info["partial"]["unfinished_shards"] == ["glue-shard1"]
    assert info["partial"]["missing_shards"] == []
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Partial merge: unfinished shard glue-shard1 — this report does not cover the whole suite" in md


# ----------------------------------------------------------------------------------------------
# damaged inputs


def test_unreadable_lines_of_a_shard_are_reported_not_dropped(tmp_path, capsys):
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2)
    results = s2 / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    n = len(lines)
    lines.insert(1, b"\x00\xff\xfe\x89PNG\x1a\n")  # binary garbage as line 2
    results.write_bytes(b"".join(lines) + b'{"cell": "c/mrpc/int8/tor')  # a torn last line
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli([str(s1), str(s2), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {results}: line 2 skipped: not UTF-8" in err
    torn = n + 2  # every record, the garbage line, then the torn one
    assert f"warning: {results}: line {torn} skipped: torn last line" in err
    info = load_run_info(out)
    skipped = info["merge"]["skipped_lines"]
    assert [(x["run_id"], x["line"]) for x in skipped] == [("glue-shard2", 2), ("glue-shard2", torn)]
    assert sum(note.startswith("skipped: ") for note in info["merge"]["notes"]) == 2
    md = (out / "report.md").read_text(encoding="utf-8")
    assert ("Merged from shards with unreadable lines: 2 lines skipped: "
            "glue-shard2 results.jsonl line 2: not UTF-8") in md
    assert 'id="warnings"' in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("name, data, expected", [
    ("run.json", b'{"run_id": "x", \xff\xfe', "run.json is damaged (not UTF-8"),
    ("run.json", b'{"run_id": "x",', "run.json is damaged (not valid JSON"),
    ("run.json", b'["not", "an", "object"]', "run.json is damaged (a JSON list"),
    ("suite.json", b'{"name": "glue", "models": {', "suite.json is damaged (not valid JSON"),
    ("suite.json", b"\x89PNG\r\n\x1a\n\x00\x00", "suite.json is damaged (not UTF-8"),
])
def test_a_damaged_json_file_is_one_line_naming_it(tmp_path, capsys, name, data, expected):
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2)
    (s2 / name).write_bytes(data)
    with pytest.raises(QdqbenchError) as exc:
        merge.merge_runs([s1, s2], tmp_path / "out")
    msg = str(exc.value)
    assert "\n" not in msg and str(s2 / name) in msg and expected in msg
    assert cli([str(s1), str(s2), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_damaged_shard_info_is_one_line(tmp_path):
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2)
    info = load_run_info(s2)
    info["shard"] = {"index": 3, "count": 2}
    write_json_atomic(s2 / "run.json", info)
    with pytest.raises(QdqbenchError, match=r"run.json is damaged \(shard is .*1 <= K <= N\)"):
        merge.merge_runs([s1, s2], tmp_path / "out", partial=True)


def test_a_shard_whose_state_is_not_finished_is_refused(tmp_path):
    s1 = make_shard(tmp_path, 1, 2)
    s2 = make_shard(tmp_path, 2, 2)
    info = load_run_info(s2)
    info["state"] = "stopped"  # the disk filled up; finished_at may even be stale
    write_json_atomic(s2 / "run.json", info)
    with pytest.raises(QdqbenchError, match=r'shard 2/2 \(.*\) has not finished \(its run.json says state "stopped"\)'):
        merge.merge_runs([s1, s2], tmp_path / "out")
    merge.merge_runs([s1, s2], tmp_path / "out", partial=True)
    merged = load_run_info(tmp_path / "out")
    assert merged["state"] == "partial" and merged["partial"]["unfinished_shards"] == ["glue-shard2"]
    assert merged["finished_at"] is None
    info["state"] = "finished"
    write_json_atomic(s2 / "run.json", info)
    merge.merge_runs([s1, s2], tmp_path / "whole")
    assert load_run_info(tmp_path / "whole")["state"] == "finished"
