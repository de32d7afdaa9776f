"""The exceptions qdqbench raises for bad input; each carries one line that names the culprit."""

from __future__ import annotations

import difflib
from typing import Iterable


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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
