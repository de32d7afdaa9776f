"""Peak resident memory (qdqbench.core.memory): a worker's own peak, never its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qdqbench.core import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's /proc/self/status")
def test_a_child_reports_its_own_peak_not_the_memory_its_parent_held():
    # Linux carries ru_maxrss across fork + exec: a worker started by a process holding this much
    # memory would report it as its own peak. The child here imports only the memory module.
    held = np.ones(600 * 1024 * 1024 // 8)  # 600 MiB, every page touched
    code = ("from qdqbench.core.memory import peak_rss_mb, peak_rss_method; "
            "print(peak_rss_mb()); print(peak_rss_method())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert held.sum() > 0
    assert memory.peak_rss_mb() >= 600  # this process did hold it
    assert 1 < float(out[0]) < 200, out  # the child's own image: Python and one module
    assert out[1].startswith("VmHWM")


def test_peak_follows_what_this_process_touches():
    before = memory.peak_rss_mb()
    block = np.ones(256 * 1024 * 1024 // 8)  # 256 MiB more than anything before, if needed
    block += 1
    after = memory.peak_rss_mb()
    assert after >= before and after >= memory.current_rss_mb() - 1
