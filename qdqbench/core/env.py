"""Facts about the code and machine a run used: versions, git commit, CPU, GPU; the node a cell ran on.

Package versions are read from installed metadata, so nothing heavy is imported just to print a
version (importing tensorrt or openvino can take seconds and allocate a GPU context).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
            "numpy", "tokenizers", "qdqbench")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape results (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info() -> dict[str, object]:
    """CPU model, logical cores and the SIMD flags that decide INT8 kernel choice."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags],
            "platform": platform.platform()}


def gpu_info() -> dict[str, object]:
    """GPU name, driver and CUDA version when a GPU and nvidia-smi are present.

    The GPU is the first one this process may use: the first index of ``CUDA_VISIBLE_DEVICES``
    when it names one (Ray and Slurm set it per task), else the first GPU.
    """
    info: dict[str, object] = {"gpu": None, "driver": None, "cuda": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip().splitlines()
            rows = [[s.strip() for s in line.split(",", 2)] for line in out if line.count(",") >= 2]
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            row = next((r for r in rows if r[0] == visible), rows[0] if rows else None)
            if row:
                info.update(gpu=row[1], driver=row[2])
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["cuda"] = torch.version.cuda
    return info


def git_info(start: Path | None = None) -> dict[str, object]:
    """Commit and dirty flag of the qdqbench checkout (None outside a git checkout)."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict[str, object]:
    """Everything ``run.json`` records about the environment."""
    machine = cpu_info()
    machine.update(gpu_info())
    return {"versions": versions(), "machine": machine, "git": git_info()}


def node_facts() -> dict[str, str]:
    """The node a cell ran on, as a distributed run's records name it (``details.node``): its
    hostname, the CPU flags that decide INT8 kernels (``cpu_info``) and the GPU this process may
    use (``gpu_info``), ``"none"`` for either when there is none."""
    flags = cpu_info()["flags"]
    return {"host": socket.gethostname(), "cpu_flags": " ".join(flags) if flags else "none",  # type: ignore[arg-type]
            "gpu": str(gpu_info()["gpu"] or "none")}


def node_label(node: object) -> str | None:
    """One line for a record's ``details.node`` (``node_facts``, or an older record's hostname);
    None when the record names no node. Two cells ran on the same machine when the labels match."""
    if not node:
        return None
    if isinstance(node, dict):
        return f"{node.get('host', '?')} (CPU flags: {node.get('cpu_flags', '?')}; GPU: {node.get('gpu', '?')})"
    return str(node)
