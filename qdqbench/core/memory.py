"""Resident memory of this process, from the kernel (stdlib only).

``peak_rss_mb`` is ``getrusage(RUSAGE_SELF).ru_maxrss``: the *lifetime* peak of the process (KiB on
Linux, bytes on macOS). ``current_rss_mb`` is the resident set now (``/proc/self/statm`` on Linux).
Either is None where the platform does not offer it; callers record "not available on this
engine/machine" then, never a failed cell.
"""

from __future__ import annotations

import os
import sys

NOT_AVAILABLE = "not available on this engine/machine"


def peak_rss_mb() -> float | None:
    """Lifetime peak resident memory of this process in MiB, or None where not offered."""
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
