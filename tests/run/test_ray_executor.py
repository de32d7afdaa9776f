"""--executor ray on a local Ray instance (2 CPUs): same cells and statuses as a local run; a
worker lost mid-group is retried without recomputing or duplicating a cell; a group that keeps
dying becomes failed cells and the run goes on. Skipped when Ray is not installed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from qdqbench.cli.main import main  # noqa: E402
from qdqbench.config.suite import load_suite  # noqa: E402
from qdqbench.run.ray_executor import RayExecutor  # noqa: E402
from qdqbench.run.runner import Runner  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             ignore_reinit_error=True)
    yield
    ray.shutdown()


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
    assert all(r["details"].get("node") for r in lines)


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
