"""--executor ray on a local Ray instance (2 CPUs, started once for the module): same cells and
statuses as a local run; a worker lost mid-group (exiting, or killed from outside by its PID) is
retried without recomputing or duplicating a cell; a group that keeps dying becomes failed cells
and the run goes on; a driver killed mid-run loses nothing and its run folder resumes, with Ray or
in process, to every cell exactly once, artifacts under --artifacts verified there; a suite asking
for GPUs the cluster lacks is one line and exit 2. Skipped when Ray is not installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from qdqbench.cli.main import main  # noqa: E402
from qdqbench.config.suite import load_suite  # noqa: E402
from qdqbench.run.ray_executor import RayExecutor  # noqa: E402
from qdqbench.run.runner import Runner  # noqa: E402

pytestmark = pytest.mark.ray


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    # A driver in a subprocess joins this instance by address: no token to hand over.
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             ignore_reinit_error=True)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if old is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = old


def _raw_lines(path: Path) -> list[dict]:
    """Every line of results.jsonl parsed strictly: a torn or binary line fails the test."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "results.jsonl does not end on a whole line"
    return [json.loads(line.decode("utf-8")) for line in data.splitlines() if line.strip()]


def _dying_work(work, marker: Path, times: int):
    """A GroupWork that kills its own Ray worker process after its first record, ``times`` times
    (counted in ``marker``). A local class, so Ray pickles it by value."""

    class Dying:
        suite = work.suite

        def __call__(self, job, hooks):
            for rec in work(job, hooks):
                yield rec
                died = int(marker.read_text()) if marker.exists() else 0
                if died < times:
                    marker.write_text(str(died + 1))
                    import time

                    time.sleep(1.0)  # let the record reach the driver
                    os._exit(1)
    return Dying()


class _BlockOnCell:
    """A GroupWork that, the first time ``target`` starts, writes its Ray worker's PID to
    ``pidfile`` and waits there to be killed from outside; and logs each record it yields to
    ``computed`` (so a cell computed twice shows twice). A local class: Ray pickles it by value."""

    def __init__(self, work, target: str, pidfile: Path, computed: Path):
        self.work, self.suite = work, work.suite
        self.target, self.pidfile, self.computed = target, pidfile, computed

    def __call__(self, job, hooks):
        from qdqbench.run.executor import GroupHooks

        def started(cell):
            if cell.id == self.target and not self.pidfile.exists():
                self.pidfile.write_text(str(os.getpid()))
                time.sleep(300)  # killed long before this ends
            hooks.started(cell)

        for rec in self.work(job, GroupHooks(started=started, say=hooks.say)):
            with self.computed.open("a") as fh:
                fh.write(rec.cell + "\n")
            yield rec


def test_worker_killed_from_outside_mid_group_ends_with_every_cell_once(make_tiny_suite, tmp_path, local_ray):
    from qdqbench.run.group import GroupRun

    suite = load_suite(make_tiny_suite(schemes={"fp32": {"kind": "fp32"}}))
    run_dir, pidfile, computed = tmp_path / "run", tmp_path / "worker.pid", tmp_path / "computed.log"
    runner = Runner(suite, run_dir, show_progress=False, executor=RayExecutor())
    ids = [c.id for c in runner.cells]
    target = ids[2]  # the third cell: two records are stored before its worker dies
    work = _BlockOnCell(GroupRun(suite, run_dir), target, pidfile, computed)
    inner = runner.executor.run
    runner.executor.run = lambda jobs, _work, hooks: inner(jobs, work, hooks)
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            stored = len(_raw_lines(run_dir / "results.jsonl")) if (run_dir / "results.jsonl").exists() else 0
            if pidfile.exists() and pidfile.read_text() and stored >= 2:
                pid = int(pidfile.read_text())
                assert pid != os.getpid()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = runner.run()
    thread.join(timeout=5)
    assert killed, "the worker was never killed"
    lines = _raw_lines(run_dir / "results.jsonl")
    assert [r["cell"] for r in lines] == ids  # every cell exactly once, in order, none missing
    assert summary.failed == 0 and all(r["status"] == "ok" for r in lines)
    assert computed.read_text().split() == ids  # none computed twice (the killed cell never finished)
    assert all(r["details"]["node"]["host"] for r in lines)


def test_ray_run_matches_the_local_run(tiny_suite, tmp_path, local_ray):
    assert main(["run", str(tiny_suite), "--out", str(tmp_path / "local"), "--quiet"]) == 0
    (local_dir,) = list((tmp_path / "local").iterdir())
    local = {r["cell"]: r["status"] for r in _raw_lines(local_dir / "results.jsonl")}
    # The CLI path: --executor ray joins the instance this test started.
    assert main(["run", str(tiny_suite), "--out", str(tmp_path / "ray"), "--quiet", "--executor", "ray"]) == 0
    (ray_dir,) = list((tmp_path / "ray").iterdir())
    lines = _raw_lines(ray_dir / "results.jsonl")
    assert {r["cell"]: r["status"] for r in lines} == local
    assert len(lines) == len(local)
    # Each record names its node: hostname, CPU flags, GPU (this local instance has none).
    from qdqbench.core.env import node_facts

    assert all(r["details"]["node"] == node_facts() for r in lines)
    assert node_facts()["gpu"] == "none" or os.environ.get("CUDA_VISIBLE_DEVICES") is not None


def test_lost_worker_is_retried_without_recomputing_or_duplicating(tiny_suite, tmp_path, local_ray):
    from qdqbench.run.group import GroupRun

    suite = load_suite(tiny_suite)
    run_dir = tmp_path / "run"
    marker = tmp_path / "died"
    runner = Runner(suite, run_dir, show_progress=False, executor=RayExecutor())
    work = _dying_work(GroupRun(suite, run_dir), marker, times=1)
    runner_run = runner.executor.run

    def run(jobs, _work, hooks):
        return runner_run(jobs, work, hooks)

    runner.executor.run = run
    summary = runner.run()
    assert marker.read_text() == "1"
    lines = _raw_lines(run_dir / "results.jsonl")
    ids = [r["cell"] for r in lines]
    assert len(ids) == len(set(ids)) == len(runner.cells)
    assert summary.failed == 0 and all(r["status"] == "ok" for r in lines)


def test_a_group_that_keeps_dying_becomes_failed_cells(tiny_suite, tmp_path, local_ray):
    from qdqbench.config.suite import RayExecutorSpec
    from qdqbench.run.group import GroupRun

    suite = load_suite(tiny_suite)
    run_dir = tmp_path / "run"
    executor = RayExecutor(spec=RayExecutorSpec(max_retries=1))
    work = _dying_work(GroupRun(suite, run_dir), tmp_path / "died", times=100)
    inner = executor.run
    executor.run = lambda jobs, _work, hooks: inner(jobs, work, hooks)
    summary = Runner(suite, run_dir, show_progress=False, executor=executor).run()
    lines = _raw_lines(run_dir / "results.jsonl")
    ids = [r["cell"] for r in lines]
    assert len(ids) == len(set(ids)) == len(summary.records)
    failed = [r for r in lines if r["status"] == "failed"]
    assert failed and summary.exit_code == 3
    assert all("Ray worker was lost 2 times" in r["error"] for r in failed)
    assert (tmp_path / "died").read_text() == "2"  # the first try and one retry


def _kill_driver_after_first_record(suite: Path, out: Path, address: str, artifacts: Path) -> Path:
    """Start ``qdqbench run --executor ray`` in a subprocess joined to ``address``, SIGKILL it once
    its first record is stored; the run folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-m", "qdqbench.cli", "run", str(suite), "--out", str(out),
                               "--quiet", "--executor", "ray", "--ray-address", address,
                               "--artifacts", str(artifacts)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            found = list(out.glob("*/results.jsonl"))
            if found and _raw_lines(found[0]):
                break
            time.sleep(0.05)
    finally:
        driver.kill()  # SIGKILL: the driver gets no chance to tidy up
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read().decode()[-2000:]
    (run_dir,) = list(out.iterdir())
    return run_dir


@pytest.mark.parametrize("resume_with", ["local", "ray"])
def test_killed_driver_loses_nothing_and_resumes(make_tiny_suite, tmp_path, local_ray, resume_with):
    """SIGKILL the driver after its first stored record; nothing stored is lost, and --resume (in
    process or with Ray) finishes with every cell exactly once, its artifacts under --artifacts."""
    suite = make_tiny_suite(schemes={"fp32": {"kind": "fp32"}})
    shared = tmp_path / "shared"
    run_dir = _kill_driver_after_first_record(suite, tmp_path / "runs", local_ray, shared)
    before = _raw_lines(run_dir / "results.jsonl")
    ids = [c.id for c in Runner(load_suite(suite), run_dir).cells]
    assert 1 <= len(before) < len(ids)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "running" and info["artifacts"] == str(shared.absolute() / run_dir.name)
    extra = ["--executor", "ray"] if resume_with == "ray" else []
    assert main(["run", "--resume", str(run_dir), "--quiet", *extra]) == 0
    lines = _raw_lines(run_dir / "results.jsonl")
    assert lines[:len(before)] == before  # what was stored stays as it was
    assert sorted(r["cell"] for r in lines) == sorted(ids) and len(lines) == len(ids)
    assert all(r["status"] == "ok" for r in lines)
    assert not (run_dir / "artifacts").exists()  # every artifact went to --artifacts
    (export,) = [r for r in lines if r["kind"] == "export"]
    onnx = Path(export["details"]["path"])
    assert onnx.is_absolute() and onnx.is_relative_to(shared.absolute() / run_dir.name)
    assert onnx.stat().st_size == export["details"]["bytes"]
    assert json.loads((run_dir / "run.json").read_text())["state"] == "finished"
    latency = [r for r in lines if r["kind"] == "latency"]
    assert latency and all(Path(r["details"]["inputs"]["path"]).is_relative_to(shared.absolute())
                           for r in latency)


def test_suite_asking_for_more_gpus_than_the_cluster_has(tiny_suite, tmp_path, capsys, local_ray):
    data = yaml.safe_load(tiny_suite.read_text())
    data["executor"] = {"ray": {"num_gpus": 1}}
    tiny_suite.write_text(yaml.safe_dump(data))
    out = tmp_path / "runs"
    rc = main(["run", str(tiny_suite), "--out", str(out), "--quiet", "--executor", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: executor.ray.num_gpus is 1 but the Ray cluster has 0 GPUs\n"
    assert not out.exists()  # no run folder was made


def test_unreachable_address_is_one_line_and_exit_2(tiny_suite, tmp_path, capsys):
    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "runs"
    rc = main(["run", str(tiny_suite), "--out", str(out), "--quiet", "--executor", "ray",
               "--ray-address", "ray://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --ray-address ray://127.0.0.1:1: cannot connect")
    assert err.count("\n") == 1
    assert not out.exists() or not list(out.iterdir())  # no run folder was started
