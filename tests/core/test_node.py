"""The node a cell ran on (``core.env.node_facts``): hostname, CPU flags, GPU or "none"; its one-line
label, and compare treating a different label (host, flags or GPU) as a different machine."""

from __future__ import annotations

import socket

from qdqbench.core.env import CPU_FLAGS, cpu_info, node_facts, node_label


def test_node_facts_name_host_cpu_flags_and_gpu(monkeypatch):
    monkeypatch.setattr("qdqbench.core.env.shutil.which", lambda name: None)  # no nvidia-smi: no GPU
    facts = node_facts()
    assert facts["host"] == socket.gethostname() and facts["gpu"] == "none"
    flags = cpu_info()["flags"]
    assert facts["cpu_flags"] == (" ".join(flags) if flags else "none")
    assert all(f in CPU_FLAGS for f in facts["cpu_flags"].split()) or facts["cpu_flags"] == "none"


def test_gpu_is_the_one_cuda_visible_devices_names(monkeypatch):
    import subprocess

    monkeypatch.setattr("qdqbench.core.env.shutil.which", lambda name: "/usr/bin/nvidia-smi")
    out = "0, NVIDIA A100-SXM4-80GB, 550.54\n1, NVIDIA H200, 550.54\n"
    monkeypatch.setattr("qdqbench.core.env.subprocess.run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=out, stderr=""))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert node_facts()["gpu"] == "NVIDIA H200"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert node_facts()["gpu"] == "NVIDIA A100-SXM4-80GB"


def test_node_label():
    a = {"host": "gpu-01", "cpu_flags": "avx2 avx512f", "gpu": "NVIDIA H200"}
    assert node_label(a) == "gpu-01 (CPU flags: avx2 avx512f; GPU: NVIDIA H200)"
    assert node_label("gpu-01") == "gpu-01" and node_label(None) is None and node_label({}) is None
