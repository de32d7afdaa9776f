"""run --artifacts DIR: artifacts go under DIR/<run id> (recorded with size and sha256), run.json
names the folder, a resume verifies them there; a bad DIR is one line and exit 2, before any run
folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdqbench.cli.main import main
from qdqbench.core.files import file_sha256


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines() if x.strip()]


def test_artifacts_go_to_dir_and_resume_verifies_them_there(make_tiny_suite, tmp_path):
    suite = make_tiny_suite(schemes={"fp32": {"kind": "fp32"}})
    shared = tmp_path / "shared" / "not-yet"  # created on demand
    assert main(["run", str(suite), "--out", str(tmp_path / "runs"), "--quiet", "--artifacts", str(shared)]) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    root = shared / run_dir.name
    assert json.loads((run_dir / "run.json").read_text())["artifacts"] == str(root)
    assert not (run_dir / "artifacts").exists()
    records = _records(run_dir)
    (export,) = [r for r in records if r["kind"] == "export"]
    onnx = Path(export["details"]["path"])
    assert onnx == root / "tiny" / "sst2" / "fp32" / "model.onnx"
    assert export["details"]["bytes"] == onnx.stat().st_size and export["details"]["sha256"] == file_sha256(onnx)
    for r in (r for r in records if r["kind"] == "latency"):
        inputs = r["details"]["inputs"]
        assert Path(inputs["path"]).parent == root / "inputs"
        assert inputs["bytes"] == Path(inputs["path"]).stat().st_size
        assert inputs["sha256"] == file_sha256(Path(inputs["path"]))
    # Damage the export where it lives: the resume finds it there, and only that cell runs again.
    onnx.write_bytes(b"not an onnx file")
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    after = _records(run_dir)
    assert len(after) == len(records) + 1
    assert after[-1]["cell"] == export["cell"] and "is damaged" in after[-1]["details"]["rerun"]
    assert file_sha256(onnx) == after[-1]["details"]["sha256"]
    assert not (run_dir / "artifacts").exists()


def test_the_default_stays_the_run_folder(make_tiny_suite, tmp_path):
    from qdqbench.run.paths import RunPaths

    paths = RunPaths(tmp_path / "run")
    assert paths.onnx("m", "t", "s") == tmp_path / "run" / "artifacts" / "m" / "t" / "s" / "model.onnx"
    assert paths.rel(paths.onnx("m", "t", "s")) == "artifacts/m/t/s/model.onnx"
    assert paths.resolve("artifacts/m/t/s/model.onnx") == paths.onnx("m", "t", "s")
    shared = RunPaths(tmp_path / "run", tmp_path / "shared" / "run")
    target = shared.onnx("m", "t", "s")
    assert shared.rel(target) == str(target) and shared.resolve(shared.rel(target)) == target


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: (p.write_text("x"), p)[1], "not a folder"),
    (lambda p: (p.write_text("x"), p / "sub")[1], "cannot create it (Not a directory)"),
])
def test_bad_artifacts_dir_is_one_line_and_no_run_folder(tiny_suite, tmp_path, capsys, make_bad, message):
    bad = make_bad(tmp_path / "file")
    out = tmp_path / "runs"
    rc = main(["run", str(tiny_suite), "--out", str(out), "--quiet", "--artifacts", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --artifacts {bad}: {message}\n"
    assert not out.exists()


def test_unwritable_artifacts_dir(tmp_path, monkeypatch):
    import tempfile

    from qdqbench.core.errors import QdqbenchError
    from qdqbench.run.paths import check_artifacts_dir

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)  # root may write anywhere: simulate
    with pytest.raises(QdqbenchError, match=r"^--artifacts .*: not writable \(Permission denied\)$"):
        check_artifacts_dir(tmp_path / "ro")


def test_resume_takes_the_stored_artifacts_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    rc = main(["run", "--resume", str(tmp_path / "run"), "--artifacts", str(tmp_path / "x")])
    assert rc == 2 and "--resume takes the suite, shard and artifacts folder" in capsys.readouterr().err


def test_resume_with_an_unusable_or_different_artifacts_folder(tiny_suite, tmp_path):
    from qdqbench.config.suite import load_suite
    from qdqbench.core.errors import QdqbenchError
    from qdqbench.run.runner import Runner

    suite = load_suite(tiny_suite)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "file").write_text("x")
    stored = tmp_path / "file" / "run"  # its parent is a file: the shared mount is gone
    (run_dir / "run.json").write_text(json.dumps({"run_id": "run", "artifacts": str(stored)}))
    with pytest.raises(QdqbenchError, match=r"its artifacts folder .*file/run \(run\.json\) cannot be used: "
                                            r"not a folder$"):
        Runner(suite, run_dir, show_progress=False).run()
    (run_dir / "run.json").write_text(json.dumps({"run_id": "run", "artifacts": str(tmp_path / "a" / "run")}))
    with pytest.raises(QdqbenchError, match=r"keeps its artifacts in .*a/run; resume it without --artifacts$"):
        Runner(suite, run_dir, show_progress=False, artifacts=tmp_path / "b").run()
    assert not (run_dir / "results.jsonl").exists()
