"""The exceptions qdqbench raises for bad input; each carries one line that names the culprit."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QdqbenchError(Exception):
    """Base class: a user-facing error whose message is one clear line."""


class SuiteError(QdqbenchError):
    """A suite file or override is malformed or inconsistent."""


class ModelResolutionError(QdqbenchError):
    """A model reference cannot be resolved to local weights."""


class TaskError(QdqbenchError):
    """A task name, task data or label mapping is wrong."""


class CalibrationError(QdqbenchError):
    """Calibration produced no usable range (no data, NaN, zero or negative amax)."""


class ExportError(QdqbenchError):
    """ONNX export or its structural check failed."""


class Interrupted(KeyboardInterrupt):
    """A signal (SIGTERM, SIGHUP) that unwinds a run like Ctrl-C; ``signum`` sets the exit code."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


class BackendError(QdqbenchError):
    """An engine is missing, failed to build, or rejected an input."""


def one_line(exc: BaseException, limit: int = 400, *, typed: bool = True, join: bool = False) -> str:
    """An exception as one line: how every error reaches a record, a console or a report.

    qdqbench's own errors are already one line and pass unchanged. Others give their first line
    (``join``: every line, for runtimes whose C++ traces spread the message over several; OpenVINO's
    "Exception from src/...:NN:" frame lines carry no meaning and are dropped), prefixed with the
    exception type unless ``typed`` is false (engine messages that name their runtime already), cut
    to ``limit`` characters.
    """
    if isinstance(exc, QdqbenchError):
        text = str(exc).strip().splitlines()
        return text[0] if text else type(exc).__name__
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith("Exception from ")]
    text = " ".join(lines) if join else (lines[0] if lines else "")
    if typed:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    elif not text:
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
