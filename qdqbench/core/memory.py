"""Resident memory of this process, from the kernel (stdlib only).

``peak_rss_mb`` is the peak resident memory of this process image: ``VmHWM`` of
``/proc/self/status`` on Linux, else ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux, bytes on
macOS). Not ``ru_maxrss`` first: Linux carries it across fork and exec, so a worker started by a
process holding 1.9 GB reports a 1.9 GB "peak" while its own image peaked at 11 MB (measured here,
tests/core/test_memory.py); ``VmHWM`` belongs to the new image. ``current_rss_mb`` is the resident
set now (``/proc/self/statm`` on Linux). Either is None where the platform does not offer it;
callers record "not available on this engine/machine" then, never a failed cell.
"""

from __future__ import annotations

import os
import sys

NOT_AVAILABLE = "not available on this engine/machine"


def _vm_hwm_kib() -> int | None:
    """``VmHWM`` (peak resident set of this process image) from ``/proc/self/status``, or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_method() -> str:
    """How ``peak_rss_mb`` is measured on this machine (recorded beside the figure)."""
    if _vm_hwm_kib() is not None:
        return "VmHWM of /proc/self/status (peak resident set of this process image)"
    return "getrusage ru_maxrss (lifetime peak; may include the parent's memory at fork)"


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process image in MiB, or None where not offered."""
    hwm = _vm_hwm_kib()
    if hwm is not None and hwm > 0:
        return hwm / 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if peak <= 0:
        return None
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes / KiB


def current_rss_mb() -> float | None:
    """Resident memory of this process now in MiB (Linux ``/proc/self/statm``), or None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
