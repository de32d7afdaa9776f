"""A driver whose Ray cluster goes away mid-run stops with one line and exit 2, keeps every record
it stored, and the run folder resumes in process with each cell exactly once. A Ray head of its own
(``ray start --head --block`` in a new session) is killed as a whole; skipped without Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from qdqbench.cli.main import main  # noqa: E402

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), "results.jsonl does not end on a whole line"
    return [json.loads(x) for x in data.splitlines() if x.strip()]


def test_lost_cluster_stops_with_one_line_and_resumes(make_tiny_suite, tmp_path):
    suite = make_tiny_suite(schemes={"fp32": {"kind": "fp32"}})
    port = _free_port()
    ray_exe = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp = tempfile.mkdtemp(prefix="qr", dir="/tmp")  # Ray's socket paths must stay short
    head = subprocess.Popen([ray_exe, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    out = tmp_path / "runs"
    try:
        driver, results = None, None
        deadline = time.monotonic() + 240
        while driver is None and time.monotonic() < deadline:
            probe = subprocess.run([ray_exe, "status", f"--address=127.0.0.1:{port}"], env=env,
                                   capture_output=True, timeout=60)
            if probe.returncode == 0:
                driver = subprocess.Popen(
                    [sys.executable, "-m", "qdqbench.cli", "run", str(suite), "--out", str(out), "--quiet",
                     "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            else:
                time.sleep(1)
        assert driver is not None, "the Ray head did not come up"
        while time.monotonic() < deadline and driver.poll() is None:
            found = list(out.glob("*/results.jsonl")) if out.exists() else []
            if found and _lines(found[0]):
                results = found[0]
                break
            time.sleep(0.05)
        assert results is not None, driver.communicate()
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the whole cluster: head, GCS, raylet, its workers
        head.wait()
        if driver is not None and results is None:
            driver.kill()
        shutil.rmtree(temp, ignore_errors=True)
    try:
        _, stderr = driver.communicate(timeout=150)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert driver.returncode == 2, stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: --executor ray: lost the connection to 127.0.0.1:")
    assert f"qdqbench run --resume {results.parent}" in errors[0]
    kept = _lines(results)
    info = json.loads((results.parent / "run.json").read_text())
    assert info["state"] == "stopped" and not info["finished_at"]
    # The folder resumes in process: what was stored stays, every cell ends up exactly once.
    assert main(["run", "--resume", str(results.parent), "--quiet"]) == 0
    lines = _lines(results)
    assert lines[:len(kept)] == kept and len(kept) >= 1
    from qdqbench.config.suite import expand, load_suite

    ids = [c.id for c in expand(load_suite(suite))]
    assert sorted(r["cell"] for r in lines) == sorted(ids) and len(lines) == len(ids)
    assert all(r["status"] == "ok" for r in lines)
