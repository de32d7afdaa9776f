"""The one way qdqbench writes a file that a reader may see: whole or not at all.

Every run-folder file (``run.json``, ``suite.json``, reports, comparisons, amaxes, timing inputs,
ONNX exports, engines) goes through ``save_atomic`` (``write_bytes_atomic`` and the text and JSON
writers call it): a unique temporary file beside the target, then ``publish`` (fsync, rename). A
tool that writes to a file name itself gets a ``temp_path`` and ends in ``publish`` too. A crash
leaves the old file or the new one; a failure (disk full) removes the temporary file and leaves
the old one untouched. ``file_sha256`` is the hash recorded for artifacts and checked on resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (indented, UTF-8) atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))


def write_text_atomic(path: Path, text: str) -> None:
    """Write text (UTF-8, newlines kept) atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` atomically: a crash leaves the old file or the new one, never half of either;
    a failure (disk full) removes the temporary file and raises OSError with the old file untouched."""
    save_atomic(path, lambda fh: fh.write(data))


def save_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """The one atomic writer: ``write(binary file)`` into a temporary file beside ``path``, then
    ``publish`` it (fsync, rename).

    Also for writers that stream (``np.save``, ``torch.save``, ``onnx.save``); a run killed
    mid-write leaves no truncated file for a resume to trust.
    """
    path = Path(path)
    tmp = temp_path(path, suffix=".tmp", prefix=f".{path.name}.")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def temp_path(path: Path, suffix: str | None = None, prefix: str | None = None) -> Path:
    """A unique temporary name beside ``path`` for a tool that must write to a file name itself
    (``onnx.save``, ONNX Runtime's quantizers); hand it to ``publish`` when complete. By default
    it keeps ``path``'s suffix, which some tools read to choose a format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=prefix if prefix is not None else f".{path.stem}.",
        suffix=suffix if suffix is not None else (path.suffix or ".tmp"),
        dir=path.parent,
    )
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: Path) -> None:
    """fsync a completed temporary file and rename it to ``path``: the last step of every atomic
    write (fsync syncs the file's data whichever descriptor asks, so reopening it is enough)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (artifacts are checked on every resume)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
