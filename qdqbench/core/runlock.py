"""One writer per run folder: an advisory ``flock`` on ``<run>/.lock`` held for the whole run.

The kernel drops a ``flock`` when its holder dies, SIGKILL included, so a crashed run never leaves
a stale lock: the next ``run --resume`` simply takes it. The file also holds the holder's PID and
host, so a second writer can say who is using the folder. The descriptor is close-on-exec, so the
latency worker processes never inherit (and never prolong) the lock.

New run folders are created with ``mkdir`` without ``exist_ok``: two runs started in the same
second get two folders, never one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from qdqbench.core.errors import QdqbenchError

LOCK_FILE = ".lock"


class RunFolderBusy(QdqbenchError):
    """Another qdqbench process holds the run folder's lock."""


class RunLock:
    """``with RunLock(run_dir):`` — exclusive for the block, or RunFolderBusy naming the holder."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock now (never waits)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise QdqbenchError(f"{self.path}: cannot create the run folder's lock: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"{self.run_dir} is in use by another qdqbench run ({holder}); "
                                "wait for it to finish or stop it, then resume") from None
        # Best effort: a full disk must not stop the run from holding its lock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its content is only a hint)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


def create_run_dir(root: Path, name: str) -> Path:
    """Create ``root/name`` exclusively, or ``root/name-2``, ``-3``, … when taken; the new folder."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QdqbenchError(f"{root}: cannot create the output folder: {exc.strerror or exc}") from None
    for n in range(1, 10_000):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise QdqbenchError(f"{path}: cannot create the run folder: {exc.strerror or exc}") from None
        return path
    raise QdqbenchError(f"{root}: no free run folder name for {name}")
