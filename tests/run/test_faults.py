"""Fault injection: torn tails, short writes, a full disk, two writers, signals, damaged folders.

In the spirit of SQLite's crash tests: inject the fault, then prove nothing measured was lost,
nothing was duplicated, and nothing turned into a pass. The store-level tests are fast; the
process-level ones run the real CLI on the tiny suite.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qdqbench.cli import main
from qdqbench.config.suite import expand, load_suite
from qdqbench.core import results
from qdqbench.core.results import Record, ResultStore, ResultStoreError, load_records
from qdqbench.core.runlock import RunFolderBusy, RunLock, create_run_dir


def _rec(cell: str, status: str = "ok", **details) -> Record:
    return Record(cell=cell, status=status, model="m", task="t", scheme="s", backend="torch", kind="accuracy",
                  details=details)


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "qdqbench.cli", *args], capture_output=True, text=True,
                          env=env, timeout=kwargs.pop("timeout", 300), **kwargs)


def _only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def _raw_lines(path: Path) -> list[dict]:
    """Every line of results.jsonl parsed strictly: a torn or binary line fails the test."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "results.jsonl does not end on a whole line"
    return [json.loads(line.decode("utf-8")) for line in data.splitlines() if line.strip()]


# --------------------------------------------------------------------------- the store


def test_torn_tail_is_cut_aside_before_the_next_append(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(_rec("a"))
    store.append(_rec("b"))
    whole = store.path.read_bytes()
    # A crash mid-write of the third record leaves half a line.
    third = _rec("c").model_dump_json().encode()
    store.path.write_bytes(whole + third[: len(third) // 2])
    records, skipped = store.scan()
    assert [r.cell for r in records] == ["a", "b"]
    assert len(skipped) == 1 and skipped[0].line == 3 and "torn last line" in skipped[0].reason

    cut = store.repair()
    assert cut is not None and cut.line == 3 and "results.jsonl.torn-1" in cut.reason
    assert store.path.read_bytes() == whole
    assert (tmp_path / "results.jsonl.torn-1").read_bytes() == third[: len(third) // 2]
    store.append(_rec("c"))  # the redone cell lands on a clean line, not on the fragment
    assert [x["cell"] for x in _raw_lines(store.path)] == ["a", "b", "c"]
    assert store.repair() is None


def test_short_writes_are_looped_until_the_whole_line_is_down(tmp_path, monkeypatch):
    calls = []

    def short_write(fd, data):
        calls.append(len(data))
        return os.write(fd, bytes(data[:7]))  # the kernel may take fewer bytes than asked

    monkeypatch.setattr(results, "_write", short_write)
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(_rec("a", note="x" * 100))
    assert len(calls) > 10
    assert [r.cell for r in store.read()] == ["a"] and store.scan()[1] == []


@pytest.mark.parametrize("fault", ["enospc-midway", "zero-bytes"])
def test_a_failed_append_leaves_the_file_parseable_and_says_so(tmp_path, monkeypatch, fault):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(_rec("a"))
    before = store.path.read_bytes()
    written = {"n": 0}

    def failing(fd, data):
        if fault == "zero-bytes":
            return 0
        if written["n"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["n"] += 1
        return os.write(fd, bytes(data[:20]))  # part of the line reaches the disk first

    monkeypatch.setattr(results, "_write", failing)
    with pytest.raises(ResultStoreError) as err:
        store.append(_rec("b"))
    msg = str(err.value)
    assert "results.jsonl" in msg and "record of b" in msg and "\n" not in msg
    assert store.path.read_bytes() == before  # cut back to the last whole line


def test_readers_name_every_line_they_skip(tmp_path, capsys):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(_rec("a"))
    with open(store.path, "ab") as fh:
        fh.write(b"\xff\xfe\x00binary\n")
        fh.write(b'{"cell": "x"}\n')
        fh.write(b"{not json\n")
    store.append(_rec("b"))
    records = load_records(tmp_path)
    assert [r.cell for r in records] == ["a", "b"]
    err = capsys.readouterr().err
    for line, why in ((2, "not UTF-8"), (3, "not a result record"), (4, "not valid JSON")):
        assert f"line {line} skipped: {why}" in err


def test_a_real_full_disk_keeps_results_parseable(tmp_path):
    """A 64 KiB tmpfs fills up mid-run of appends: every byte on it still parses."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        store = ResultStore(mnt / "results.jsonl")
        stored = 0
        with pytest.raises(ResultStoreError, match="No space left on device"):
            for i in range(10_000):
                store.append(_rec(f"cell-{i}", payload="y" * 1500))
                stored += 1
        assert stored > 10
        assert len(_raw_lines(store.path)) == stored
        assert store.repair() is None
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- one writer per folder


def test_new_run_folders_are_created_exclusively(tmp_path):
    a = create_run_dir(tmp_path, "suite-20261129-000000")
    b = create_run_dir(tmp_path, "suite-20261129-000000")
    assert a != b and a.is_dir() and b.is_dir() and b.name == "suite-20261129-000000-2"


def test_two_runs_in_the_same_second_get_two_folders(tiny_suite, tmp_path):
    from qdqbench.run.runner import new_run_dir

    suite = load_suite(tiny_suite)
    dirs = {new_run_dir(suite, tmp_path) for _ in range(5)}
    assert len(dirs) == 5


def test_a_second_writer_is_refused_naming_the_pid_and_a_killed_holder_leaves_no_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from qdqbench.core.runlock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid}"):
            RunLock(run_dir).acquire()
        r = _cli("run", "--resume", str(run_dir), "--quiet", timeout=60)
        assert r.returncode == 2, r.stderr
        assert f"pid {holder.pid}" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run_dir):  # the kernel released the dead holder's lock: no stale lock
        pass


# --------------------------------------------------------------------------- damaged run folders


def _tiny_run(tiny_suite, tmp_path) -> Path:
    out = tmp_path / "runs"
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 0
    return _only_run_dir(out)


def test_a_damaged_artifact_makes_its_cell_run_again_once(tiny_suite, tmp_path, capsys):
    run_dir = _tiny_run(tiny_suite, tmp_path)
    export = "tiny/sst2/int8-max/onnx/export"
    rec = {r.cell: r for r in load_records(run_dir)}[export]
    onnx = run_dir / rec.details["path"]
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # truncated on disk
    lines_before = len(_raw_lines(run_dir / "results.jsonl"))

    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "damaged" in err and export in err
    lines = _raw_lines(run_dir / "results.jsonl")
    assert len(lines) == lines_before + 1  # only the export ran again
    redo = lines[-1]
    assert redo["cell"] == export and redo["status"] == "ok" and "damaged" in redo["details"]["rerun"]
    assert results.file_sha256(onnx) == redo["details"]["sha256"]
    info = json.loads((run_dir / "run.json").read_text())
    assert any(export in r for r in info["repairs"])
    # A third resume finds everything intact and runs nothing.
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert len(_raw_lines(run_dir / "results.jsonl")) == lines_before + 1


@pytest.mark.parametrize("damage, expected", [
    ("suite-truncated", "suite.json is damaged"),
    ("suite-empty-object", "suite.json is damaged"),
    ("suite-missing", "no suite.json"),
    # run.json records the shard a folder holds: without it the resume cannot know its cells.
    ("run-json-binary", "run.json is damaged (not UTF-8"),
])
def test_damaged_run_folder_is_one_line_never_a_traceback(tiny_suite, tmp_path, damage, expected):
    run_dir = _tiny_run(tiny_suite, tmp_path)
    suite_json = run_dir / "suite.json"
    if damage == "suite-truncated":
        suite_json.write_text(suite_json.read_text()[:40])
    elif damage == "suite-empty-object":
        suite_json.write_text("{}")
    elif damage == "suite-missing":
        suite_json.unlink()
    else:
        (run_dir / "run.json").write_bytes(b"\x00\xff garbage")
    r = _cli("run", "--resume", str(run_dir), "--quiet")
    assert "Traceback" not in r.stderr
    assert r.returncode == 2 and expected in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_binary_results_never_crash_report_and_are_named(tiny_suite, tmp_path):
    run_dir = _tiny_run(tiny_suite, tmp_path)
    with open(run_dir / "results.jsonl", "ab") as fh:
        fh.write(os.urandom(64).replace(b"\n", b"") + b"\n")
    r = _cli("report", str(run_dir))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "skipped" in r.stderr


def test_torn_tail_then_resume_redoes_only_the_torn_cell(tiny_suite, tmp_path, capsys):
    run_dir = _tiny_run(tiny_suite, tmp_path)
    path = run_dir / "results.jsonl"
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn_cell = json.loads(data[last_start:])["cell"]
    path.write_bytes(data[: last_start + 30])  # the last record torn by a crash
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert "torn last line" in capsys.readouterr().err
    lines = _raw_lines(path)
    cells = [x["cell"] for x in lines]
    assert sorted(cells) == sorted({c.id for c in expand(load_suite(tiny_suite))})
    assert cells[-1] == torn_cell and len(set(cells)) == len(cells)
    assert (run_dir / "results.jsonl.torn-1").stat().st_size == 30


def test_store_failure_mid_run_stops_with_exit_2_and_resume_completes(tiny_suite, tmp_path, monkeypatch, capsys):
    """The disk fills after 3 records: the run stops (exit 2), nothing stored is lost, resume finishes."""
    original = ResultStore.append
    count = {"n": 0}

    def fills_up(self, record):
        count["n"] += 1
        if count["n"] > 3:
            raise ResultStoreError(f"{self.path}: the record of {record.cell} could not be written "
                                   "(No space left on device); the file was left at its last whole line")
        return original(self, record)

    monkeypatch.setattr(ResultStore, "append", fills_up)
    out = tmp_path / "runs"
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err
    run_dir = _only_run_dir(out)
    assert len(_raw_lines(run_dir / "results.jsonl")) == 3
    assert json.loads((run_dir / "run.json").read_text())["state"] == "stopped"
    monkeypatch.setattr(ResultStore, "append", original)
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    cells = [x["cell"] for x in _raw_lines(run_dir / "results.jsonl")]
    assert sorted(cells) == sorted(c.id for c in expand(load_suite(tiny_suite)))


# --------------------------------------------------------------------------- exit codes


def test_internal_error_is_exit_70_with_a_log(tiny_suite, tmp_path, monkeypatch, capsys):
    from qdqbench.run import runner

    def bug(self):
        raise ZeroDivisionError("a bug in qdqbench")

    monkeypatch.setattr(runner.Runner, "_run_locked", bug)
    out = tmp_path / "runs"
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 70
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("run folder:")  # rich's line, then one error line
    assert err[1].startswith("error: internal error: ZeroDivisionError: a bug in qdqbench; traceback in ")
    log = Path(err[1].rsplit("traceback in ", 1)[1])
    assert log.parent == _only_run_dir(out) and "Traceback" in log.read_text()


def test_non_utf8_suite_and_ls_into_a_closed_pipe(tmp_path, tiny_suite):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(tiny_suite.read_bytes().replace(b"name: tiny", b"name: tiny\xff"))
    r = _cli("validate", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "bad.yaml" in r.stderr

    proc = subprocess.run(f"{sys.executable} -m qdqbench.cli ls {tiny_suite} | head -1", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


# --------------------------------------------------------------------------- signals and crashes


def _workers_of(run_dir: Path) -> list[int]:
    """PIDs of latency workers timing an artifact of ``run_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qdqbench.engines.worker" in cmd and any(str(run_dir).encode() in c for c in cmd):
            pids.append(int(proc.name))
    return pids


def _wait_for(predicate, timeout: float = 120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, None)])
def test_no_worker_outlives_its_run(make_tiny_suite, tmp_path, sig, code):
    """Stop the CLI while a latency worker times (for 60 s): the worker goes with it."""
    suite = make_tiny_suite(timing={"min_duration_s": 60.0, "max_duration_s": 60.0})
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "qdqbench.cli", "run", str(suite), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = _wait_for(lambda: next(iter(out.iterdir()), None) if out.exists() else None)
        workers = _wait_for(lambda: _workers_of(run_dir))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if code is not None:
        assert proc.returncode == code, stderr
        assert f"qdqbench run --resume {run_dir}" in stderr and "Traceback" not in stderr
    _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), timeout=10)
    assert _workers_of(run_dir) == []
    records = _raw_lines(run_dir / "results.jsonl")
    assert records and all(r["status"] in ("ok", "failed") for r in records)


@pytest.mark.slow
def test_crash_soak_sigkill_at_20_random_moments(make_tiny_suite, tmp_path):
    """SQLite-style: SIGKILL runs at 20 random moments and resume after each; every run folder
    ends with every cell exactly once, every line parseable, and the same cells and statuses as a
    run that was never interrupted. A run that finishes before its kill is checked and a new one
    started, until 20 kills have landed."""
    import random

    suite = make_tiny_suite()
    t0 = time.perf_counter()
    ref = _cli("run", str(suite), "--out", str(tmp_path / "ref"), "--quiet")
    full_s = time.perf_counter() - t0
    assert ref.returncode == 0, ref.stderr
    reference = {(x["cell"], x["status"]) for x in _raw_lines(_only_run_dir(tmp_path / "ref") / "results.jsonl")}

    def check_complete(run_dir: Path) -> None:
        lines = _raw_lines(run_dir / "results.jsonl")
        cells = [x["cell"] for x in lines]
        torn = sorted(p.name for p in run_dir.glob("results.jsonl.torn-*"))
        assert len(cells) == len(set(cells)), f"{run_dir.name}: a cell stored twice (torn tails aside: {torn})"
        assert {(x["cell"], x["status"]) for x in lines} == reference, run_dir.name

    rng = random.Random(20261129)
    out = tmp_path / "soak"
    out.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    kills, current, finished = 0, None, []
    for _ in range(80):
        if kills >= 20:
            break
        cmd = ["run", "--resume", str(current)] if current else ["run", str(suite), "--out", str(out)]
        before = set(out.iterdir())
        proc = subprocess.Popen([sys.executable, "-m", "qdqbench.cli", *cmd, "--quiet"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.5, 0.6 * full_s))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if current is None:
            new = [p for p in set(out.iterdir()) - before]
            if new and (new[0] / "suite.json").is_file():
                current = new[0]
            for p in new:  # killed before it wrote suite.json: nothing to resume, start again
                if p != current:
                    subprocess.run(["rm", "-rf", str(p)], check=True)
        if current is not None:
            _wait_for(lambda current=current: not _workers_of(current), timeout=10)  # no orphan keeps timing
            ResultStore(current / "results.jsonl").scan()  # readable at every moment
            if proc.returncode == 0:
                check_complete(current)
                finished.append(current)
                current = None
    assert kills == 20
    if current is not None:
        final = _cli("run", "--resume", str(current), "--quiet")
        assert final.returncode == 0, final.stderr
        check_complete(current)
        finished.append(current)
    assert finished
