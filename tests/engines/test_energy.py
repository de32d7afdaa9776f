"""Energy of the timed loop (qdqbench.engines.energy): RAPL on a fake powercap tree, NVML absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qdqbench.core.memory import NOT_AVAILABLE
from qdqbench.engines import energy, resources
from qdqbench.engines.timing import TimingSettings, loop_probe, measure


def _domain(root: Path, name: str, uj: int, max_range: int | None = 2**32) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(f"{uj}\n")
    if max_range is not None:
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def _set(domain: Path, uj: int) -> None:
    (domain / "energy_uj").write_text(f"{uj}\n")


def test_rapl_reads_package_domains_only_and_undoes_wrap_around(tmp_path):
    pkg0 = _domain(tmp_path, "intel-rapl:0", 1_000_000)
    pkg1 = _domain(tmp_path, "intel-rapl:1", 999_000, max_range=1_000_000)
    core = _domain(tmp_path, "intel-rapl:0:0", 5)  # inside package 0: never added twice
    meter = energy.rapl_meter(tmp_path)
    meter.start()
    _set(pkg0, 3_500_000)  # +2.5 J
    _set(pkg1, 1_000)  # wrapped at 1 J: +0.002 J
    _set(core, 10**9)
    meter.stop()
    out = meter.result(iterations=10, batch=4)
    assert out["status"] == "ok"
    assert out["joules"] == pytest.approx(2.502)
    assert out["joules_per_inference"] == pytest.approx(0.2502)
    assert out["joules_per_sequence"] == pytest.approx(0.2502 / 4)
    assert "intel-rapl:0" in out["counter"] and "intel-rapl:0:0" not in out["counter"]
    assert "package-wide" in out["scope"]


def test_rapl_joules_is_pure():
    assert energy.rapl_joules({"a": 90}, {"a": 10}, {"a": 100}) == pytest.approx(20e-6)
    assert energy.rapl_joules({"a": 10, "b": 0}, {"a": 30, "b": 5}, {"a": 100, "b": 100}) == pytest.approx(25e-6)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_rapl_says_why(tmp_path):
    d = _domain(tmp_path, "intel-rapl:0", 1)
    (d / "energy_uj").chmod(0o000)
    try:
        out = energy.rapl_meter(tmp_path).result(5, 1)
    finally:
        (d / "energy_uj").chmod(0o644)
    assert out["status"] == NOT_AVAILABLE and "root only" in out["why"]


def test_unreadable_rapl_says_why_as_any_user(tmp_path, monkeypatch):
    # The same check without relying on file modes (the tests may run as root).
    _domain(tmp_path, "intel-rapl:0", 1)
    real = Path.read_text

    def denied(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied)
    out = energy.rapl_meter(tmp_path).result(5, 1)
    assert out == {"status": NOT_AVAILABLE,
                   "why": f"{NOT_AVAILABLE}: RAPL energy_uj of intel-rapl:0 is readable by root only "
                          "(Linux >= 5.10 restricts it); run as root or grant read access"}


def test_missing_powercap_tree_and_garbage(tmp_path):
    out = energy.rapl_meter(tmp_path / "nope").result(5, 1)
    assert out["status"] == NOT_AVAILABLE and "does not exist" in out["why"]
    _domain(tmp_path, "intel-rapl:0", 1)
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("garbage\n")
    out = energy.rapl_meter(tmp_path).result(5, 1)
    assert out["status"] == NOT_AVAILABLE and "unreadable" in out["why"]


def test_a_counter_that_did_not_move_is_not_a_measurement(tmp_path):
    _domain(tmp_path, "intel-rapl:0", 7)
    meter = energy.rapl_meter(tmp_path)
    meter.start()
    meter.stop()
    out = meter.result(5, 1)
    assert out["status"] == NOT_AVAILABLE and "did not advance" in out["why"]


def test_nvml_absent_or_unusable_says_why():
    out = energy.nvml_meter().result(5, 1)
    if out["status"] == "ok":  # pragma: no cover - a GPU machine with the counter
        pytest.skip("NVML energy counter present")
    assert out["status"] == NOT_AVAILABLE and ("NVML" in out["why"] or "pynvml" in out["why"])


class _Counting:
    def __init__(self):
        self.calls = []

    def start(self):
        self.calls.append("start")

    def stop(self):
        self.calls.append("stop")


def test_the_probe_wraps_the_timed_loop_only():
    ran = []
    probe = _Counting()

    def fn():
        ran.append(list(probe.calls))

    settings = TimingSettings(warmup_s=0.0, warmup_iters=3, min_iters=4, min_duration_s=0.0)
    with loop_probe(probe):
        stats = measure(fn, settings, batch=1, seq=1)
    assert probe.calls == ["start", "stop"]
    assert [c for c in ran[:3]] == [[], [], []]  # warm-up before start
    assert all(c == ["start"] for c in ran[3:]) and stats.n == 4
    measure(fn, settings, batch=1, seq=1)  # outside the block: no probe
    assert probe.calls == ["start", "stop"]


def test_measure_session_records_rapl_energy_of_the_timed_loop(tmp_path, monkeypatch):
    pkg = _domain(tmp_path, "intel-rapl:0", 0)
    monkeypatch.setattr(energy, "POWERCAP_ROOT", tmp_path)
    counter = {"uj": 0}

    class _Session:
        info: dict = {}
        precision = "fp32"

    def time_it(session):
        def fn():  # every inference "uses" 0.5 J
            counter["uj"] += 500_000
            _set(pkg, counter["uj"])

        return measure(fn, TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=6, min_duration_s=0.0),
                       batch=2, seq=8)

    _, stats, res = resources.measure_session("onnxruntime", _Session, time_it)
    out = res["energy"]
    assert out["status"] == "ok" and stats.n == 6
    assert out["joules"] == pytest.approx(3.0)  # the 2 warm-up inferences are not counted
    assert out["joules_per_inference"] == pytest.approx(0.5)
    assert out["joules_per_sequence"] == pytest.approx(0.25)
    assert res["energy_j_per_inference"] == pytest.approx(0.5)  # the metric the record carries


def test_this_machine_records_energy_or_why(tmp_path):
    meter = energy.meter_for(False)
    out = meter.result(0, 1)
    assert out["status"] == NOT_AVAILABLE and out["why"].startswith(NOT_AVAILABLE)


def test_nvml_meter_reads_millijoules_around_the_loop(monkeypatch):
    import sys
    import types

    # mJ since driver load: one reading when the meter checks the counter, then 4 J over the loop.
    readings = iter([999, 1_000_000, 1_004_000])
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetHandleByUUID=lambda u: ("gpu", u),
        nvmlDeviceGetTotalEnergyConsumption=lambda h: next(readings, 0))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    meter = energy.meter_for(True)
    meter.start()
    meter.stop()
    out = meter.result(iterations=8, batch=2)
    assert out["status"] == "ok" and out["joules"] == pytest.approx(4.0)
    assert out["joules_per_inference"] == pytest.approx(0.5) and "NVML" in out["counter"]
    assert "device-wide" in out["scope"]


def test_nvml_without_the_counter_says_why(monkeypatch):
    import sys
    import types

    def unsupported(handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    fake = types.SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
                                 nvmlDeviceGetTotalEnergyConsumption=unsupported)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = energy.meter_for(True).result(5, 1)
    assert out["status"] == NOT_AVAILABLE and "NOT_SUPPORTED" in out["why"]
