"""Without Ray installed, --executor ray is one line saying how to install it (exit 2); the
node-wide timing lock serializes timed workers."""

from __future__ import annotations

import sys
import threading
import time

from qdqbench.cli.main import main
from qdqbench.engines.timing import timing_lock


def test_executor_ray_without_ray_is_one_line(tiny_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    rc = main(["run", str(tiny_suite), "--out", str(tmp_path / "runs"), "--quiet", "--executor", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: --executor ray needs Ray: pip install 'qdqbench[ray]'\n"
    assert not (tmp_path / "runs").exists()


def test_ray_address_needs_executor_ray(tiny_suite, capsys):
    assert main(["run", str(tiny_suite), "--quiet", "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_timing_lock_lets_one_timed_worker_run_at_a_time(tmp_path):
    lock = tmp_path / "timing.lock"
    inside, overlaps = [], []

    def timed():
        with timing_lock(lock):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=timed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps
    with timing_lock(None):  # without a path or QDQBENCH_TIMING_LOCK: nothing is locked
        pass
